"""compare_weights.py A B TOL: every float tensor of two safetensors files
agrees within TOL (||a - b|| <= TOL * max(||b||, 1e-12), per tensor).
Prints the worst relative difference; exits 1 when a tensor is off.

Left out: the biases of the Linear layers that a BatchNorm1d follows
(fc.0, fc.4). BN subtracts the batch mean, so their true gradient is zero
and what they get is rounding noise, which AdamW (dividing by its RMS) turns
into full-size random steps: no two summation orders agree there."""
import json
import struct
import sys

import numpy as np


def tensors(path):
    with open(path, "rb") as f:
        n = struct.unpack("<Q", f.read(8))[0]
        head = json.loads(f.read(n))
        data = f.read()
    out = {}
    for name, t in head.items():
        if name == "__metadata__" or t["dtype"] != "F32" or name in ("fc.0.bias", "fc.4.bias"):
            continue
        a, b = t["data_offsets"]
        out[name] = np.frombuffer(data[a:b], dtype="<f4").astype(np.float64)
    return out


def main():
    a, b, tol = tensors(sys.argv[1]), tensors(sys.argv[2]), float(sys.argv[3])
    if a.keys() != b.keys():
        print("the files hold different tensors")
        return 1
    worst, where = 0.0, ""
    for name in a:
        rel = np.linalg.norm(a[name] - b[name]) / max(np.linalg.norm(b[name]), 1e-12)
        if rel > worst:
            worst, where = rel, name
    print(f"worst relative difference {worst:.2e} in {where}")
    return 0 if worst <= tol else 1


if __name__ == "__main__":
    sys.exit(main())
