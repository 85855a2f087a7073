#!/usr/bin/env python3
"""The peer of bench/model_parallel.sh: PyTorch's GPipe (torch.distributed.pipeline.sync.Pipe)
on the CPU, MedicalCNN (tests/ref/medicalcnn.py) cut where ours cuts it by default (after
stage3_res.0: stem..stage3_res.0 | stage3_res.1..fc), the same step (class-weighted
cross-entropy, clipping at 1, AdamW) on random pixels, channels_last.

  python3 bench/pipe_torch.py CHUNKS [--threads 2] [--steps 3] [--batch 32] [--size 224]

CHUNKS 0: the unsplit model, no Pipe. Prints step_s=... img_per_s=... (timed steps after one
warm-up). Pipe puts a worker thread per device: both partitions are on the CPU, so they share
one worker and intra-op threads (torch.set_num_threads) do the parallel work."""
import argparse
import os
import sys
import time

import torch
import torch.nn as nn

sys.path.insert(0, os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "tests", "ref"))
from medicalcnn import MedicalCNN  # noqa: E402


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("chunks", type=int)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--steps", type=int, default=3)
    ap.add_argument("--batch", type=int, default=32)
    ap.add_argument("--size", type=int, default=224)
    a = ap.parse_args()
    torch.set_num_threads(a.threads)
    torch.manual_seed(42)
    m = MedicalCNN().train().to(memory_format=torch.channels_last)
    model = m
    if a.chunks > 0:
        import torch.distributed.rpc as rpc
        from torch.distributed.pipeline.sync import Pipe
        os.environ.setdefault("MASTER_ADDR", "127.0.0.1")
        os.environ.setdefault("MASTER_PORT", str(29500 + os.getpid() % 1000))
        rpc.init_rpc("bench", rank=0, world_size=1)
        first = nn.Sequential(m.stem, m.stage1, m.stage2, m.stage3_res[0])
        rest = nn.Sequential(*m.stage3_res[1:], m.stage3_md, m.stage4_res, m.pool, nn.Flatten(1), m.fc)
        model = Pipe(nn.Sequential(first, rest), chunks=a.chunks)
    x = torch.randn(a.batch, 3, a.size, a.size).contiguous(memory_format=torch.channels_last)
    y = torch.arange(a.batch) % 2
    opt = torch.optim.AdamW(m.parameters(), lr=1e-3, weight_decay=1e-4)
    loss_fn = nn.CrossEntropyLoss(weight=torch.tensor([0.5, 0.5]))
    times = []
    for _ in range(a.steps + 1):
        t0 = time.perf_counter()
        opt.zero_grad(set_to_none=True)
        out = model(x)
        loss = loss_fn(out.local_value() if a.chunks > 0 else out, y)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(m.parameters(), 1.0)
        opt.step()
        times.append(time.perf_counter() - t0)
    step = sum(times[1:]) / a.steps
    print(f"step_s={step:.3f} img_per_s={a.batch / step:.3f}")
    if a.chunks > 0:
        import torch.distributed.rpc as rpc
        rpc.shutdown()


if __name__ == "__main__":
    main()
