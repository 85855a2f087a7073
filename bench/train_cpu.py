"""MedicalCNN training speed on the CPU: our oneDNN backend against PyTorch,
side by side in one run, same model, batch, image size and thread count.

A step is forward + backward + gradient clipping + AdamW, on random
normalised pixels (the data loader is not part of it). Ours: bench/train_step.c
(built here against build/libfundus.a), the cpu backend of lib/nn/dnnl_net.c,
in fp32 and, when the CPU has AVX512-BF16, with --amp bf16. PyTorch 1.13
(Debian python3-torch): tests/ref/medicalcnn.py, fp32 NCHW, fp32
channels_last, and bf16 autocast channels_last (AVX512-BF16 only). Each side
runs in its own process (peak RSS is per process); the sides alternate
`--rounds` times. Reported: the best single step of each side (the figure
least disturbed by other work on a shared machine) and the best mean over a
round; ours fp32 is compared with every PyTorch mode, ours bf16 with
PyTorch bf16.

    /usr/bin/python3 bench/train_cpu.py [--batch 32] [--size 224] [--threads 2]
                                        [--steps 3] [--rounds 2] [--no-nchw] [--no-bf16] [--bf16-only]
"""
import argparse
import os
import subprocess
import sys

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
BIN = os.path.join(ROOT, "build", "bench", "train_step")


def build():
    subprocess.run(["make", "-s", "-C", ROOT, "build/libfundus.a"], check=True)
    os.makedirs(os.path.dirname(BIN), exist_ok=True)
    # The Makefile's link line (it grows with MPI and, in GPU builds, CUDA).
    ldlibs = subprocess.run(["make", "-s", "--no-print-directory", "-C", ROOT, "print-ldlibs"], check=True,
                            capture_output=True, text=True).stdout.split()
    subprocess.run(["cc", "-std=c11", "-D_GNU_SOURCE", "-O3", "-fopenmp", "-I" + os.path.join(ROOT, "lib"),
                    os.path.join(ROOT, "bench", "train_step.c"), os.path.join(ROOT, "build", "libfundus.a"),
                    "-o", BIN, *ldlibs], check=True)


def ours(a, amp):
    out = subprocess.run([BIN, "--batch", str(a.batch), "--size", str(a.size), "--threads", str(a.threads),
                          "--steps", str(a.steps), "--warmup", "1", "--amp", amp], check=True, capture_output=True,
                         text=True)
    kv = dict(p.split("=") for p in out.stdout.split())
    return {k: float(v) for k, v in kv.items()}


TORCH_STEP = r"""
import resource, sys, time, torch
sys.path.insert(0, sys.argv[1] + "/tests/ref")
from medicalcnn import MedicalCNN
batch, size, threads, steps, mode = int(sys.argv[2]), int(sys.argv[3]), int(sys.argv[4]), int(sys.argv[5]), sys.argv[6]
torch.set_num_threads(threads)
torch.manual_seed(42)
model = MedicalCNN().train()
x = torch.randn(batch, 3, size, size)
y = torch.arange(batch) % 2
if mode != "fp32-nchw":
    model = model.to(memory_format=torch.channels_last)
    x = x.contiguous(memory_format=torch.channels_last)
opt = torch.optim.AdamW(model.parameters(), lr=1e-3, weight_decay=1e-4)
loss_fn = torch.nn.CrossEntropyLoss(weight=torch.tensor([0.5, 0.5]))
times = []
for s in range(steps + 1):
    t0 = time.perf_counter()
    opt.zero_grad(set_to_none=True)
    with torch.autocast("cpu", dtype=torch.bfloat16, enabled=mode == "bf16"):
        loss = loss_fn(model(x), y)
    loss.backward()
    torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
    opt.step()
    times.append(time.perf_counter() - t0)
step = sum(times[1:]) / steps
rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
print(f"img_per_s={batch / step:.3f} best_img_per_s={batch / min(times[1:]):.3f} step_s={step:.3f} peak_rss_mib={rss:.0f}")
"""


def torch_run(a, mode):
    out = subprocess.run([sys.executable, "-c", TORCH_STEP, ROOT, str(a.batch), str(a.size), str(a.threads),
                          str(a.steps), mode], check=True, capture_output=True, text=True)
    return {k: float(v) for k, v in (p.split("=") for p in out.stdout.split())}


def has_bf16():
    try:
        return "avx512_bf16" in open("/proc/cpuinfo").read()
    except OSError:
        return False


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--batch", type=int, default=32)
    ap.add_argument("--size", type=int, default=224)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--steps", type=int, default=3)
    ap.add_argument("--rounds", type=int, default=2)
    ap.add_argument("--no-nchw", action="store_true", help="skip PyTorch fp32 NCHW")
    ap.add_argument("--no-bf16", action="store_true", help="skip bf16 (ours and PyTorch's)")
    ap.add_argument("--bf16-only", action="store_true", help="only ours bf16 and PyTorch bf16")
    a = ap.parse_args()
    build()
    bf16 = not a.no_bf16 and has_bf16()
    if a.bf16_only and not bf16:
        sys.exit("train_cpu.py: --bf16-only needs a CPU with AVX512-BF16")
    modes = ([] if a.bf16_only else ["fp32-cl"] + ([] if a.no_nchw else ["fp32-nchw"])) + (["bf16"] if bf16 else [])
    sides = ([] if a.bf16_only else [("ours fp32", lambda: ours(a, "off"))]) + \
        ([("ours bf16", lambda: ours(a, "bf16"))] if bf16 else [])
    best = {}
    loads = []
    for r in range(a.rounds):
        for name, run in sides + [(f"torch {m}", lambda m=m: torch_run(a, m)) for m in modes]:
            loads.append(os.getloadavg()[0])
            res = run()
            print(f"round {r + 1} {name:16s} {res['img_per_s']:7.2f} img/s mean, {res['best_img_per_s']:7.2f} best step, "
                  f"peak RSS {res['peak_rss_mib']:.0f} MiB", flush=True)
            b = best.setdefault(name, dict(res))
            for k in ("img_per_s", "best_img_per_s"):
                b[k] = max(b[k], res[k])
            b["peak_rss_mib"] = max(b["peak_rss_mib"], res["peak_rss_mib"])
    print(f"\nbatch {a.batch}, {a.size}x{a.size}, {a.threads} threads, {a.rounds} rounds of {a.steps} timed steps "
          f"(+1 warm-up); 1-min load average during the run {min(loads):.1f}..{max(loads):.1f}")
    print(f"{'':18s}{'best step img/s':>16s}{'mean img/s':>12s}{'peak RSS MiB':>14s}{'ours / it (best)':>18s}")
    for name, res in best.items():
        # ours fp32 against every PyTorch mode, ours bf16 against PyTorch bf16
        o = best.get("ours bf16" if name == "torch bf16" else "ours fp32")
        ratio = f"{o['best_img_per_s'] / res['best_img_per_s']:17.2f}x" if o and not name.startswith("ours") else ""
        print(f"{name:18s}{res['best_img_per_s']:16.2f}{res['img_per_s']:12.2f}{res['peak_rss_mib']:14.0f}{ratio}")
    for name in ("ours fp32", "ours bf16"):
        if name in best:
            o = best[name]
            print(f"{name} per step (last round): forward {o['forward_s']:.2f} s, backward {o['backward_s']:.2f} s, "
                  f"clip+AdamW {o['adamw_s']:.2f} s; arenas {o['act_mib']:.0f} MiB")


if __name__ == "__main__":
    main()
