"""PyTorch's DistributedDataParallel on this machine, the peer of our
data-parallel runs (bench/data_parallel.sh): the same model
(tests/ref/medicalcnn.py), batch 32 per rank, 224x224, one thread per rank,
channels_last, gloo allreduce, the recipe's step (weighted cross-entropy,
clipping at 1.0, AdamW) on random normalised pixels, for 1 and 2 ranks.
Prints one line per rank count: images/s over all ranks (mean of the timed
steps after a warm-up).

    /usr/bin/python3 bench/ddp_torch.py [--steps 3] [--ranks 1,2]
"""
import argparse
import os
import sys
import time

import torch
import torch.distributed as dist
import torch.multiprocessing as mp

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, os.path.join(ROOT, "tests", "ref"))
from medicalcnn import MedicalCNN  # noqa: E402


def rank_main(rank, world, steps, port, out):
    os.environ["MASTER_ADDR"], os.environ["MASTER_PORT"] = "127.0.0.1", str(port)
    torch.set_num_threads(1)
    dist.init_process_group("gloo", rank=rank, world_size=world)
    torch.manual_seed(42)
    model = MedicalCNN().to(memory_format=torch.channels_last).train()
    ddp = torch.nn.parallel.DistributedDataParallel(model)
    opt = torch.optim.AdamW(ddp.parameters(), lr=1e-3, weight_decay=1e-4)
    loss_fn = torch.nn.CrossEntropyLoss(weight=torch.tensor([0.5, 0.5]))
    g = torch.Generator().manual_seed(rank)
    x = torch.randn(32, 3, 224, 224, generator=g).contiguous(memory_format=torch.channels_last)
    y = torch.arange(32) % 2
    times = []
    for _ in range(steps + 1):
        dist.barrier()
        t0 = time.perf_counter()
        opt.zero_grad(set_to_none=True)
        loss_fn(ddp(x), y).backward()
        torch.nn.utils.clip_grad_norm_(ddp.parameters(), 1.0)
        opt.step()
        times.append(time.perf_counter() - t0)
    if rank == 0:
        out.put(sum(times[1:]) / steps)
    dist.destroy_process_group()


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--steps", type=int, default=3)
    ap.add_argument("--ranks", default="1,2")
    a = ap.parse_args()
    ctx = mp.get_context("spawn")
    for i, world in enumerate(int(r) for r in a.ranks.split(",")):
        q = ctx.Queue()
        mp.start_processes(rank_main, args=(world, a.steps, 29500 + i, q), nprocs=world, start_method="spawn")
        step = q.get()
        print(f"torch_ddp ranks={world} img_per_s={32 * world / step:.3f} step_s={step:.3f}", flush=True)


if __name__ == "__main__":
    main()
