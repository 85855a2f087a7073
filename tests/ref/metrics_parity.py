"""metrics-report against scikit-learn 1.2.

Prediction files of several kinds (random and tied scores, imbalanced sets,
perfect, inverted and constant classifiers, tiny sets) go through
`metrics-report --csv --roc`; accuracy, sensitivity, specificity, precision,
F1 and ROC AUC must agree with sklearn.metrics to 1e-12, the confusion matrix
exactly, and the ROC points must be identical to
roc_curve(drop_intermediate=False). Bootstrap intervals: the same seed gives
the same bytes, each interval holds its point estimate, and its width is
within 30% of a numpy bootstrap's. A single-class file: AUC undefined, said
on stderr, the rest still reported.
"""
import csv
import io
import os
import sys
import tempfile

import numpy as np
from sklearn import metrics as skm

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import common  # noqa: E402

TOL = 1e-12


def write_pred(path, y, p, pred=None):
    if pred is None:
        pred = (p >= 0.5).astype(int)
    with open(path, "w") as f:
        f.write("id,label,p_glaucoma,prediction\n")
        for i, (a, b, c) in enumerate(zip(y, p, pred)):
            f.write("img%d,%d,%r,%d\n" % (i, a, float(b), c))


def run_report(args):
    rc, out, err = common.run("metrics-report", args, check=False)
    return rc, out.decode(), err


def read_roc(path):
    with open(path) as f:
        rows = list(csv.reader(f))
    assert rows[0] == ["fpr", "tpr", "threshold"], rows[0]
    a = np.array([[float(v) for v in r] for r in rows[1:]])
    return a[:, 0], a[:, 1], a[:, 2]


def sk_metrics(y, p, pred):
    tn, fp, fn, tp = skm.confusion_matrix(y, pred, labels=[0, 1]).ravel()
    return dict(
        accuracy=skm.accuracy_score(y, pred),
        sensitivity=skm.recall_score(y, pred, zero_division=0),
        specificity=skm.recall_score(y, pred, pos_label=0, zero_division=0),
        precision=skm.precision_score(y, pred, zero_division=0),
        f1=skm.f1_score(y, pred, zero_division=0),
        auc=skm.roc_auc_score(y, p) if len(set(y)) == 2 else float("nan"),
        tn=tn, fp=fp, fn=fn, tp=tp)


def check_case(name, y, p, pred=None, threshold=None, tmp="."):
    y = np.asarray(y, dtype=int)
    p = np.asarray(p, dtype=float)
    path = os.path.join(tmp, "pred.csv")
    roc = os.path.join(tmp, "roc.csv")
    write_pred(path, y, p, pred)
    args = ["--csv", "--roc", roc, path] + (["--threshold", repr(threshold)] if threshold is not None else [])
    rc, out, err = run_report(args)
    if rc != 0:
        return common.report(name, False, "exit %d: %s" % (rc, err.strip()))
    row = next(csv.DictReader(io.StringIO(out)))
    if threshold is not None:
        decided = (p >= threshold).astype(int)
    else:
        decided = np.asarray(pred if pred is not None else (p >= 0.5).astype(int))
    want = sk_metrics(y, p, decided)
    bad = []
    for k in ("accuracy", "sensitivity", "specificity", "precision", "f1", "auc"):
        got = float(row[k])
        if np.isnan(want[k]) != np.isnan(got) or (not np.isnan(got) and abs(got - want[k]) > TOL):
            bad.append("%s %r != %r" % (k, got, want[k]))
    for k in ("tn", "fp", "fn", "tp"):
        if int(row[k]) != want[k]:
            bad.append("%s %s != %d" % (k, row[k], want[k]))
    fpr, tpr, thr = read_roc(roc)
    if len(set(y)) == 2:
        sfpr, stpr, sthr = skm.roc_curve(y, p, drop_intermediate=False)
        if not (np.array_equal(fpr, sfpr) and np.array_equal(tpr, stpr) and np.array_equal(thr, sthr)):
            bad.append("ROC points differ (%d vs %d points)" % (len(fpr), len(sfpr)))
    detail = "n=%d auc=%s" % (len(y), row["auc"])
    return common.report(name, not bad, "; ".join(bad) if bad else detail)


def main():
    rng = np.random.default_rng(7)
    with tempfile.TemporaryDirectory() as tmp:
        y = rng.integers(0, 2, 500)
        p = np.clip(0.5 * y + rng.random(500) * 0.7 - 0.1, 0, 1)
        check_case("random scores", y, p, tmp=tmp)
        check_case("random scores, --threshold 0.37", y, p, threshold=0.37, tmp=tmp)
        pt = np.round(p, 1)
        check_case("tied scores (one decimal)", y, pt, tmp=tmp)
        check_case("heavily tied scores (0, 0.5, 1)", y, np.round(p * 2) / 2, tmp=tmp)
        yi = (rng.random(400) < 0.05).astype(int)
        pi = np.clip(rng.normal(0.3 + 0.3 * yi, 0.2), 0, 1)
        check_case("imbalanced 5% positives", yi, pi, tmp=tmp)
        check_case("imbalanced, threshold 0.9 (no predicted positive)", yi, pi, threshold=0.9, tmp=tmp)
        check_case("perfect classifier", y, y * 0.8 + 0.1, tmp=tmp)
        check_case("inverted classifier", y, 0.9 - y * 0.8, tmp=tmp)
        check_case("constant score", y, np.full(500, 0.5), tmp=tmp)
        check_case("two samples", [0, 1], [0.3, 0.3], tmp=tmp)
        check_case("prediction column disagreeing with p", y, p, pred=1 - (p >= 0.5).astype(int), tmp=tmp)
        check_case("scores 0 and 1 exactly", y, (rng.random(500) < 0.5).astype(float), tmp=tmp)

        # Bootstrap: deterministic, holds the point estimate, sensible width.
        path = os.path.join(tmp, "boot.csv")
        yb = rng.integers(0, 2, 200)
        pb = np.clip(0.3 * yb + rng.random(200) * 0.7, 0, 1)
        write_pred(path, yb, pb)
        a = run_report(["--csv", "--ci", "--seed", "5", path])
        b = run_report(["--csv", "--ci", "--seed", "5", path])
        c = run_report(["--csv", "--ci", "--seed", "6", path])
        common.report("bootstrap deterministic for a seed", a == b and a[0] == 0, a[2].strip())
        common.report("bootstrap depends on the seed", a[1] != c[1])
        row = next(csv.DictReader(io.StringIO(a[1])))
        names = ["accuracy", "sensitivity", "specificity", "precision", "f1", "auc"]
        inside = [k for k in names if float(row[k + "_lo"]) <= float(row[k]) <= float(row[k + "_hi"])]
        common.report("bootstrap intervals hold the point estimates", len(inside) == len(names),
                      "" if len(inside) == len(names) else "outside: %s" % sorted(set(names) - set(inside)))
        boot = np.random.default_rng(1)
        acc, aucs = [], []
        for _ in range(1000):
            i = boot.integers(0, 200, 200)
            acc.append(np.mean((pb[i] >= 0.5) == yb[i]))
            aucs.append(skm.roc_auc_score(yb[i], pb[i]))
        for k, v in (("accuracy", acc), ("auc", aucs)):
            want = np.percentile(v, 97.5) - np.percentile(v, 2.5)
            got = float(row[k + "_hi"]) - float(row[k + "_lo"])
            common.report("bootstrap %s interval width like numpy's" % k, abs(got - want) <= 0.3 * want,
                          "%.4f vs %.4f" % (got, want))

        # One class only.
        write_pred(path, np.zeros(20, int), rng.random(20))
        rc, out, err = run_report([path])
        common.report("single class: AUC undefined, said on stderr, the rest reported",
                      rc == 0 and "ROC AUC is undefined" in err and "accuracy" in out and "undefined" in out,
                      "exit %d, stderr %r" % (rc, err))
        rc, out, err = run_report(["--csv", path])
        row = next(csv.DictReader(io.StringIO(out)))
        common.report("single class --csv: auc nan, specificity = accuracy",
                      rc == 0 and row["auc"] == "nan" and float(row["specificity"]) == float(row["accuracy"]),
                      out.strip().splitlines()[-1])
    return common.exit_status()


if __name__ == "__main__":
    sys.exit(main())
