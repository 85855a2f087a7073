#!/bin/sh
# All benchmarks; each prints its own figures (see bench/README.md).
set -eu
cd "$(dirname "$0")/.."
"${PYTHON:-/usr/bin/python3}" bench/preproc.py
"${PYTHON:-/usr/bin/python3}" bench/train_cpu.py   # ~8 min: ours in fp32 and bf16, PyTorch in three modes
sh bench/data_parallel.sh   # ~3 min: 1 vs 2 ranks of one thread
sh bench/model_parallel.sh   # ~3 min: 2 pipelined stages against the unsplit model, ours and PyTorch Pipe
