#!/usr/bin/env python3
"""Paired bootstrap of the test-AUC difference between two runs' predictions
of the same images (cnn-train's predictions-test.csv: id,label,p_glaucoma,...):
2000 resamples of the images, numpy's default_rng(42), scikit-learn's
roc_auc_score. Prints both AUCs, their difference (first minus second) and its
95% interval.
    python3 bench/auc_diff.py A/predictions-test.csv B/predictions-test.csv
"""
import csv
import sys

import numpy as np
from sklearn.metrics import roc_auc_score


def load(path):
    with open(path, newline="") as f:
        return {r["id"]: (int(r["label"]), float(r["p_glaucoma"])) for r in csv.DictReader(f)}


def main():
    if len(sys.argv) != 3:
        sys.exit("usage: auc_diff.py A.csv B.csv")
    a, b = load(sys.argv[1]), load(sys.argv[2])
    if sorted(a) != sorted(b):
        sys.exit(f"auc_diff.py: {sys.argv[2]}: not the same images as {sys.argv[1]}")
    ids = sorted(a)
    y = np.array([a[i][0] for i in ids])
    pa, pb = np.array([a[i][1] for i in ids]), np.array([b[i][1] for i in ids])
    rng = np.random.default_rng(42)
    diffs = []
    for _ in range(2000):
        k = rng.integers(0, len(ids), len(ids))
        if len(set(y[k])) == 2:  # an AUC needs both classes
            diffs.append(roc_auc_score(y[k], pa[k]) - roc_auc_score(y[k], pb[k]))
    auc_a, auc_b = roc_auc_score(y, pa), roc_auc_score(y, pb)
    lo, hi = np.percentile(diffs, [2.5, 97.5])
    print(f"AUC {auc_a:.4f} - {auc_b:.4f} = {auc_a - auc_b:+.4f}, 95% interval {lo:+.3f} to {hi:+.3f} "
          f"({len(diffs)} resamples)")


if __name__ == "__main__":
    main()
