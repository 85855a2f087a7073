"""The reference C network against PyTorch on the same weights and batch.

tests/ref/nn_dump.c (compiled here against build/libfundus.a) initialises
MedicalCNN from a seed, writes the state_dict as safetensors, runs one
training-mode forward and backward (BN on batch statistics, dropout off) and
dumps logits, loss, every parameter gradient, the BN state after the step and
eval-mode logits. PyTorch (tests/ref/medicalcnn.py, the study's module) loads
the same file with load_state_dict(strict=True) and runs the same batch.

- double (C in double, PyTorch .double()), on a 2x3x45x37 batch (odd,
  non-square sides) and a 4x3x64x64 one: relative L2 error <= 1e-9 per
  tensor. In double no value lands on the other side of a ReLU kink or a
  max-pool tie than in PyTorch, so this checks the mathematics exactly.
- float, as the issue asks, on the same 4x3x64x64 batch: <= 1e-3 per tensor.
  In float, in most batches some of the millions of pre-activations lies
  within rounding of a ReLU's kink and may fall either way in either library;
  behind a training-mode BatchNorm over few values (the head's BatchNorm1d
  sees 4) that one decision moves a whole channel's gradient by percents,
  legitimately (PyTorch float vs PyTorch double shows it too). So the batch is
  the first (numpy seeds 0, 1, ...) on which each library's float gradients
  agree with its own double ones within 3e-4, a batch well-conditioned in
  float. A float-only defect in our code fails that search, and the test.
"""
import json
import os
import shutil
import struct
import subprocess
import sys
import tempfile

import numpy as np

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from common import build_c_driver, report, root, skip, exit_status, torch_oracle_missing  # noqa: E402

TOL = {"f32": 1e-3, "f64": 1e-9}
WELL_CONDITIONED = 3e-4  # float vs double gradients, in each library, for the float batch
SEED = 42
CLASS_W = [0.4, 0.6]

DTYPES = {"F32": np.float32, "F64": np.float64, "I64": np.int64}


def read_safetensors(path):
    """An independent reader: checks the layout our writer promises (8-byte
    aligned data, tensors packed in header order, no gaps) and returns
    (dict name -> array, header order)."""
    with open(path, "rb") as f:
        data = f.read()
    (hlen,) = struct.unpack_from("<Q", data, 0)
    header = json.loads(data[8:8 + hlen])
    header.pop("__metadata__", None)
    body = data[8 + hlen:]
    if (8 + hlen) % 8:
        raise ValueError("data does not start 8-byte aligned")
    out, at = {}, 0
    for name, e in header.items():
        begin, end = e["data_offsets"]
        if begin != at:
            raise ValueError("tensor %s does not follow the previous one" % name)
        dt = np.dtype(DTYPES[e["dtype"]]).newbyteorder("<")
        out[name] = np.frombuffer(body[begin:end], dtype=dt).reshape(e["shape"])
        at = end
    if at != len(body):
        raise ValueError("data length %d, tensors cover %d" % (len(body), at))
    return out, list(header.keys())


def rel(a, b, floor=0.0):
    a = np.asarray(a, dtype=np.float64)
    b = np.asarray(b, dtype=np.float64)
    return float(np.linalg.norm(a - b) / max(np.linalg.norm(b), floor, 1e-300))


def torch_step(init, x, labels, double):
    """PyTorch's training step: (model after the step, logits, loss, grads by name)."""
    import torch
    import torch.nn as nn
    import torch.nn.functional as F
    from medicalcnn import MedicalCNN
    model = MedicalCNN()
    model.load_state_dict({k: torch.from_numpy(v.copy()) for k, v in init.items()}, strict=True)
    dtype = torch.float64 if double else torch.float32
    model.to(dtype)
    for m in model.modules():
        if isinstance(m, nn.Dropout):
            m.p = 0.0
    model.train()
    logits = model(torch.from_numpy(x.copy()).to(dtype))
    loss = F.cross_entropy(logits, torch.tensor(labels), weight=torch.tensor(CLASS_W, dtype=dtype))
    loss.backward()
    grads = {n: q.grad.numpy().astype(np.float64) for n, q in model.named_parameters()}
    return model, logits.detach().numpy(), loss.item(), grads


def grad_errors(ours, theirs):
    """Per-tensor relative errors. Linear biases that feed a BatchNorm on batch
    statistics have an exactly zero gradient; there the error is measured
    against 1e-4 of the largest gradient norm instead of against noise."""
    floor = 1e-4 * max(np.linalg.norm(g) for g in theirs.values())
    return {n: rel(ours[n], g, floor) for n, g in theirs.items()}


def nn_dump(exe, tmp, prec, x, labels):
    """Runs nn_dump on batch x; returns (stderr, init, order, {prec: out})."""
    n, _, h, w = x.shape
    x.tofile(os.path.join(tmp, "x.f32"))
    p = subprocess.run([exe, prec, str(SEED), str(n), str(h), str(w), os.path.join(tmp, "x.f32"),
                        ",".join(map(str, labels)), ",".join(map(str, CLASS_W)), tmp],
                       stderr=subprocess.PIPE, text=True)
    if p.returncode != 0:
        raise RuntimeError("nn_dump failed: %s" % p.stderr.strip())
    init, order = read_safetensors(os.path.join(tmp, "init.safetensors"))
    outs = {q: read_safetensors(os.path.join(tmp, "out-%s.safetensors" % q))[0]
            for q in ("f32", "f64") if prec in (q, "both")}
    return p.stderr.strip().replace("\n", "; "), init, order, outs


def check_names(init, order):
    from medicalcnn import MedicalCNN
    model = MedicalCNN()
    sd = model.state_dict()
    nparams = sum(q.numel() for q in model.parameters())
    ours = sum(v.size for k, v in init.items() if k in dict(model.named_parameters()))
    report("parameter count", nparams == 22494274 and ours == nparams, "%d in PyTorch, %d in ours" % (nparams, ours))
    report("state_dict keys", set(sd) == set(init) and len(init) == 294,
           "%d keys" % len(init) if set(sd) == set(init) else
           "missing %s, extra %s" % (sorted(set(sd) - set(init))[:3], sorted(set(init) - set(sd))[:3]))
    bad = [k for k in sd if k in init and tuple(sd[k].shape) != init[k].shape]
    report("state_dict shapes", not bad, "mis-shaped: %s" % bad[:3] if bad else "")
    report("tensors in the module's state_dict order (= forward order)", order == list(sd),
           "" if order == list(sd) else "first difference at %s" % next((a for a, b in zip(order, sd) if a != b), None))


def compare(tag, prec, out, step, x):
    """Reports our dump `out` against PyTorch's training step `step`."""
    import torch
    model, logits, loss, grads = step
    tol = TOL[prec]
    e = rel(out["logits"], logits)
    report("%s: train-mode logits" % tag, e <= tol, "relative error %.2g" % e)
    e = rel(out["loss"], loss)
    report("%s: weighted cross-entropy loss" % tag, e <= tol,
           "relative error %.2g (ours %.6f, PyTorch %.6f)" % (e, float(out["loss"]), loss))
    errs = grad_errors({n: out["grad." + n] for n in grads}, grads)
    if os.environ.get("FU_VERBOSE"):
        for name, err in errs.items():
            print("#   %-40s |g| %.3g  error %.2g" % (name, np.linalg.norm(grads[name]), err))
    worst = max(errs, key=errs.get)
    over = ["%s %.2g" % (k, v) for k, v in errs.items() if v > tol]
    report("%s: every parameter gradient (%d tensors)" % (tag, len(errs)), not over,
           "max relative error %.2g (%s)%s" % (errs[worst], worst, "; over: " + ", ".join(over[:5]) if over else ""))
    worst, worst_name, counts_ok = 0.0, "", True
    for name, v in model.state_dict().items():
        if name.endswith("num_batches_tracked"):
            counts_ok &= int(out["count." + name]) == int(v) == 1
        elif name.endswith(("running_mean", "running_var")):
            err = rel(out["state." + name], v.numpy())
            if err > worst:
                worst, worst_name = err, name
    report("%s: BN running stats after the step" % tag, worst <= tol and counts_ok,
           "max relative error %.2g (%s), num_batches_tracked %s" % (worst, worst_name,
                                                                    "all 1" if counts_ok else "differ"))
    model.eval()
    with torch.no_grad():
        ev = model(torch.from_numpy(x.copy()).to(next(model.parameters()).dtype)).numpy()
    e = rel(out["eval_logits"], ev)
    report("%s: eval-mode logits" % tag, e <= tol, "relative error %.2g" % e)


def main():
    why = torch_oracle_missing()
    if why:
        skip("model parity", why)
        return 0
    tmp = tempfile.mkdtemp(prefix="fu-parity-")
    try:
        exe = os.path.join(tmp, "nn_dump")
        build_c_driver(os.path.join(root(), "tests", "ref", "nn_dump.c"), exe)

        # Double, odd non-square sides: every stride-2 layer sees an odd input.
        labels = [1, 0]
        x = np.random.default_rng(0).standard_normal((2, 3, 45, 37)).astype("<f4")
        times, init, order, outs = nn_dump(exe, tmp, "f64", x, labels)
        report("nn_dump runs", True, times)
        check_names(init, order)
        compare("double 2x3x45x37", "f64", outs["f64"], torch_step(init, x, labels, True), x)

        # Float and double on the first well-conditioned 4x3x64x64 batch.
        labels, tried = [0, 1, 1, 0], []
        for seed in range(8):
            x = np.random.default_rng(seed).standard_normal((4, 3, 64, 64)).astype("<f4")
            times, init, _, outs = nn_dump(exe, tmp, "both", x, labels)
            t32, t64 = torch_step(init, x, labels, False), torch_step(init, x, labels, True)
            ours = max(grad_errors({n: outs["f32"]["grad." + n] for n in t64[3]},
                                   {n: outs["f64"]["grad." + n].astype(np.float64) for n in t64[3]}).values())
            theirs = max(grad_errors(t32[3], t64[3]).values())
            tried.append("seed %d: ours %.2g, PyTorch's %.2g" % (seed, ours, theirs))
            if max(ours, theirs) <= WELL_CONDITIONED:
                report("a 4x3x64x64 batch well-conditioned in float", True,
                       "float vs double gradients, %s; %s" % ("; ".join(tried[-2:]), times))
                compare("double 4x3x64x64", "f64", outs["f64"], t64, x)
                compare("float 4x3x64x64", "f32", outs["f32"], t32, x)
                break
        else:
            report("a 4x3x64x64 batch well-conditioned in float", False,
                   "float vs double gradients: %s" % "; ".join(tried))
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return exit_status()


if __name__ == "__main__":
    sys.exit(main())
