#!/bin/sh
# Model parallelism on the CPU (nn/pipe.h): the cost of cutting MedicalCNN
# into stages and pipelining micro-batches, against the unsplit model on the
# same threads, and beside each the peer, PyTorch's GPipe (bench/pipe_torch.py:
# torch.distributed.pipeline.sync.Pipe, the same cut, chunks = micro-batches),
# in one run. Each of our stages is a thread with its share of the threads;
# what a stage does not compute of a step is the pipeline's bubble.
#   sh bench/model_parallel.sh [THREADS] [STEPS]   (2 and 3; batch 32, 224x224)
set -eu
cd "$(dirname "$0")/.."
threads=${1:-2} steps=${2:-3}
make -s build/libfundus.a
mkdir -p build/bench
cc -std=c11 -D_GNU_SOURCE -O3 -fopenmp -Ilib bench/train_step.c build/libfundus.a -o build/bench/train_step \
    $(make -s --no-print-directory print-ldlibs)
PY=${PYTHON:-/usr/bin/python3}
field() { tr ' ' '\n' | sed -n "s/^$1=//p" | head -1; }
run() { # LABEL CHUNKS ARGS...: ours, then PyTorch's on the same work
    label=$1 chunks=$2
    shift 2
    out=$(build/bench/train_step --threads "$threads" --steps "$steps" --warmup 1 "$@")
    step=$(echo "$out" | head -1 | field step_s)
    rate=$(echo "$out" | head -1 | field img_per_s)
    busy=$(echo "$out" | sed -n 's/^stage=\([0-9]*\) name=\([^ ]*\) busy_s_per_step=\(.*\)/s\1 \3 s/p' | paste -sd, - | sed 's/,/, /g')
    peer=$("$PY" bench/pipe_torch.py "$chunks" --threads "$threads" --steps "$steps" 2>/dev/null)
    pstep=$(echo "$peer" | field step_s)
    prate=$(echo "$peer" | field img_per_s)
    ratio=$(awk -v a="$rate" -v b="$prate" 'BEGIN {if (b > 0) printf "%.2f", a / b}')
    printf '%-26s ours %6s s/step %6s img/s | PyTorch %6s s/step %6s img/s | %5sx  %s\n' "$label" "$step" "$rate" \
        "${pstep:--}" "${prate:--}" "${ratio:--}" "${busy:+busy per step: $busy}"
}
echo "MedicalCNN 224x224, batch 32, $threads threads in all, $steps timed steps after 1 warm-up;"
echo "stages: stem..stage3_res.0 | stage3_res.1..fc (both sides); PyTorch: Pipe, chunks = micro-batches"
run "unsplit" 0
run "2 stages, 1 micro-batch" 1 --stages 2 --micro 1
run "2 stages, 4 micro-batches" 4 --stages 2 --micro 4
run "2 stages, 8 micro-batches" 8 --stages 2 --micro 8
