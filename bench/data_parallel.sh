#!/bin/sh
# Data-parallel scaling on this machine: the same training (synthetic
# 224x224 images, the recipe, batch 32 per rank, EPOCHS epochs) as 1 rank x
# 1 thread and as 2 ranks x 1 thread, one after the other in one run.
# Prints training seconds, speedup, efficiency (the study: 1.93x, 0.97 on 2
# CPU workers) and how much of the gradient allreduce backward hid; then the
# peer, PyTorch DDP (gloo) at 1 and 2 ranks of one thread (bench/ddp_torch.py:
# random pixels, no data loading, which favours it), and the ratio.
#   sh bench/data_parallel.sh [TRAIN_IMAGES [EPOCHS]]
set -eu
cd "$(dirname "$0")/.."
n=${1:-128} epochs=${2:-2}
out=bench/out/data-parallel
rm -rf "$out" && mkdir -p "$out"
mpi="mpirun --oversubscribe"
[ "$(id -u)" = 0 ] && mpi="$mpi --allow-run-as-root"
# n train images after a 80/10/10 split.
bin/fundus-synth --quiet --count $((n * 10 / 8)) --size 224 --seed 7 --format pixels -o "$out/all.shard"
bin/shard-split --quiet --ratios 80,10,10 --stratify --seed 1 -o "$out/s" "$out/all.shard"
args="--train $out/s/train.shard --val $out/s/val.shard --epochs $epochs --threads 1 --backend cpu --quiet"
bin/cnn-train $args --out "$out/cpu1"
$mpi -np 2 bin/cnn-train $args --out "$out/cpux2"
"${PYTHON:-/usr/bin/python3}" bench/ddp_torch.py --steps 3 --ranks 1,2 >"$out/torch.txt"
"${PYTHON:-/usr/bin/python3}" - "$out/cpu1/results.csv" "$out/cpux2/results.csv" "$out/torch.txt" <<'PY'
import csv, sys
one, two = (next(csv.DictReader(open(p))) for p in sys.argv[1:3])
torch = {int(f["ranks"]): float(f["img_per_s"]) for f in
         (dict(kv.split("=") for kv in line.split()[1:]) for line in open(sys.argv[3]))}
t1, t2 = float(one["train_seconds"]), float(two["train_seconds"])
steps = int(two["steps"])
ar, exposed = float(two["allreduce_seconds"]), float(two["allreduce_exposed_seconds"])
full = float(two["allreduce_full_seconds"])
print(f"train images {one['train_images']}, {one['epochs']} epochs, batch 32 per rank, 224x224")
print(f"1 rank x 1 thread : {t1:8.1f} s  ({one['images_per_second']} img/s)")
print(f"2 ranks x 1 thread: {t2:8.1f} s  ({two['images_per_second']} img/s)")
print(f"speedup {t1 / t2:.2f}x, efficiency {t1 / t2 / 2:.2f}   (the study: 1.93x, 0.97)")
hidden = max(0.0, full - exposed / steps)
print(f"allreduce of {float(two['grad_mb']):.0f} MB per step: one blocking allreduce {full * 1e3:.0f} ms; the step "
      f"waited {exposed / steps * 1e3:.0f} ms for it after backward (buckets in flight {ar / steps * 1e3:.0f} ms "
      f"per step): about {hidden * 1e3:.0f} ms ({100 * hidden / full if full > 0 else 0:.0f}%) hidden behind backward")
print(f"PyTorch DDP (gloo, 1 thread per rank, random pixels): 1 rank {torch[1]:.2f} img/s, 2 ranks {torch[2]:.2f} "
      f"img/s, speedup {torch[2] / torch[1]:.2f}x; ours / PyTorch at 2 ranks: "
      f"{float(two['images_per_second']) / torch[2]:.2f}x")
PY
