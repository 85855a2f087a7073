#!/usr/bin/env python3
"""MedicalCNN training steps on a GPU with PyTorch, the peer of our cuda backend.

Each mode runs in a process of its own (its peak GPU memory is its own): the
study's model (tests/ref/medicalcnn.py), channels_last, cudnn.benchmark, AdamW
with clipping at norm 1 and class-weighted cross-entropy, as our trainer's
step; fp32 (TF32 off: our cuda backend computes IEEE fp32), fp16 autocast with
GradScaler (the study's AMP; gradients unscaled before clipping), bf16
autocast; eager and torch.compile; at batch 32 and the largest batch of
--batches that fits. Prints one line per run, then, given our figures
(--ours: the output of `test_cuda --bench`), ours / PyTorch's best per
precision at each batch both ran, and best against best.

  python3 bench/train_gpu.py [--steps 20] [--batches 32,128,256] [--no-compile] [--ours FILE]
  (torch.compile runs at --compile-batches, 32: each compilation takes a minute or more)

Run it beside ours in one go on the GPU machine: tests/gpu/run-bundle.sh does
(BENCH_TORCH=1), docs: bench/README.md.
"""
import argparse
import os
import re
import subprocess
import sys

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

TORCH_STEPS = r"""
import contextlib, sys, time, torch
sys.path.insert(0, sys.argv[1])
from medicalcnn import MedicalCNN
batch, size, steps, amp, compiled, device = int(sys.argv[2]), int(sys.argv[3]), int(sys.argv[4]), sys.argv[5], sys.argv[6] == "1", sys.argv[7]
torch.backends.cudnn.benchmark = True
torch.backends.cudnn.allow_tf32 = False
torch.backends.cuda.matmul.allow_tf32 = False
torch.manual_seed(42)
model = MedicalCNN().train().to(device).to(memory_format=torch.channels_last)
step_model = torch.compile(model) if compiled else model
x = torch.randn(batch, 3, size, size, device=device).contiguous(memory_format=torch.channels_last)
y = torch.arange(batch, device=device) % 2
opt = torch.optim.AdamW(model.parameters(), lr=1e-3, weight_decay=1e-4)
loss_fn = torch.nn.CrossEntropyLoss(weight=torch.tensor([0.5, 0.5], device=device))
dtype = {"fp16": torch.float16, "bf16": torch.bfloat16}.get(amp)
# torch.amp.GradScaler from 2.3; torch.cuda.amp's before (the same scaler)
scaler = torch.amp.GradScaler(device, enabled=amp == "fp16") if hasattr(torch.amp, "GradScaler") else torch.cuda.amp.GradScaler(enabled=amp == "fp16")
def step():
    opt.zero_grad(set_to_none=True)
    with torch.autocast(device, dtype=dtype) if dtype else contextlib.nullcontext():
        loss = loss_fn(step_model(x), y)
    scaler.scale(loss).backward()
    scaler.unscale_(opt)
    torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
    scaler.step(opt)
    scaler.update()
def sync():
    if device == "cuda":
        torch.cuda.synchronize()
try:
    for _ in range(5 if device == "cuda" else 1):  # warm-up: cudnn.benchmark's search, compilation
        step()
    sync()
    if device == "cuda":
        torch.cuda.reset_peak_memory_stats()
    t0 = time.perf_counter()
    for _ in range(steps):
        step()
    sync()
    dt = (time.perf_counter() - t0) / steps
except torch.cuda.OutOfMemoryError:
    print("oom=1")
    sys.exit(0)
mib = torch.cuda.max_memory_allocated() / 2**20 if device == "cuda" else 0
name = torch.cuda.get_device_name() if device == "cuda" else "cpu"
print(f"img_per_s={batch / dt:.1f} step_ms={1e3 * dt:.2f} peak_mib={mib:.0f} torch={torch.__version__} device={name.replace(' ', '_')}")
"""


def torch_run(a, batch, amp, compiled):
    out = subprocess.run([sys.executable, "-c", TORCH_STEPS, os.path.join(ROOT, "tests", "ref"), str(batch),
                          str(a.size), str(a.steps), amp, "1" if compiled else "0", a.device],
                         capture_output=True, text=True, timeout=a.timeout)
    if out.returncode != 0:
        return {"error": (out.stderr.strip().splitlines() or ["exit %d" % out.returncode])[-1]}
    return dict(p.split("=", 1) for p in out.stdout.split())


# "# bench: MedicalCNN 224x224, batch 32, amp off: 41.3 ms per training step ..." (the trainer's
# line, printed after the host-pointer interface's, wins)
OURS_LINE = re.compile(r"batch (\d+), amp (\w+): ([0-9.]+) ms per training step")
# "# bench: batch 256, amp fp16: prefetched (each next batch copied during the step, ...) 78.1 ms per step ..."
PREFETCHED_LINE = re.compile(r"batch (\d+), amp (\w+): prefetched \(.*?\) ([0-9.]+) ms per step")
# "# bench: batch 256, amp fp16: prefetched, figures kept (fu_train_step_into: ...) 75.0 ms per step ..." (cnn-train's step)
KEPT_LINE = re.compile(r"batch (\d+), amp (\w+): prefetched, figures kept \(.*?\) ([0-9.]+) ms per step")


def ours_figures(path, pattern):
    found = {}
    with open(path) as f:
        for line in f:
            m = pattern.search(line)
            if m:
                found[(int(m.group(1)), m.group(2))] = float(m.group(3))
    return found


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--size", type=int, default=224)
    ap.add_argument("--steps", type=int, default=20)
    ap.add_argument("--batches", default="32,128,256", help="batch sizes to try (the largest that fits is kept)")
    ap.add_argument("--amps", default="fp32,fp16,bf16")
    ap.add_argument("--no-compile", action="store_true", help="eager only")
    ap.add_argument("--compile-batches", default="32", help="batch sizes torch.compile runs at (compiling is slow)")
    ap.add_argument("--compile-amps", default="fp32,fp16,bf16", help="precisions torch.compile runs in")
    ap.add_argument("--device", default="cuda", help="cuda; cpu only to check this script")
    ap.add_argument("--timeout", type=int, default=600, help="seconds per run")
    ap.add_argument("--ours", help="our `test_cuda --bench` output, for the ratios")
    a = ap.parse_args()
    runs = []  # (amp, batch, img/s, what)
    for amp in a.amps.split(","):
        for compiled in ([False] if a.no_compile or amp not in a.compile_amps.split(",") else [False, True]):
            for batch in (int(b) for b in (a.compile_batches if compiled else a.batches).split(",")):
                r = torch_run(a, batch, amp, compiled)
                what = f"torch {amp} {'compile' if compiled else 'eager'} batch {batch}"
                if "error" in r or "oom" in r:
                    print(f"{what:34s} {'out of memory' if 'oom' in r else r['error']}", flush=True)
                    break
                print(f"{what:34s} {float(r['img_per_s']):8.1f} img/s  {float(r['step_ms']):8.2f} ms/step  "
                      f"peak {float(r['peak_mib']):7.0f} MiB  ({r['torch']}, {r['device']})", flush=True)
                runs.append((amp, batch, float(r["img_per_s"]), what))
    if a.ours:
        ratios(ours_figures(a.ours, OURS_LINE), runs, "ours")
        ratios(ours_figures(a.ours, PREFETCHED_LINE), runs, "ours prefetched")
        ratios(ours_figures(a.ours, KEPT_LINE), runs, "ours prefetched, figures kept")


def ratios(ours, runs, label):
    """Ours against PyTorch's best per precision: at each batch we ran, and best against best."""
    names = {"fp32": "off", "fp16": "fp16", "bf16": "bf16"}
    for amp in dict.fromkeys(r[0] for r in runs):
        mine = {b: b * 1e3 / ms for (b, our_amp), ms in ours.items() if our_amp == names[amp]}
        theirs = [r for r in runs if r[0] == amp]
        for batch in sorted(mine):
            same = [r for r in theirs if r[1] == batch]
            if same:
                rate, what = max((r[2], r[3]) for r in same)
                print(f"batch {batch} {amp}: {label} {mine[batch]:.1f} img/s vs PyTorch's best at that batch "
                      f"({what}) {rate:.1f}: {mine[batch] / rate:.2f}x")
        if mine and theirs:
            b = max(mine, key=mine.get)
            rate, what = max((r[2], r[3]) for r in theirs)
            print(f"best {amp}: {label} {mine[b]:.1f} img/s (batch {b}) vs PyTorch's best ({what}) {rate:.1f}: "
                  f"{mine[b] / rate:.2f}x")


if __name__ == "__main__":
    main()
