#!/bin/sh
# Model parallelism on the CPU (nn/pipe.h): the cost of cutting MedicalCNN
# into stages and pipelining micro-batches, against the unsplit model on the
# same threads, in one run. Each stage is a thread with its share of the
# threads; what a stage does not compute of a step is the pipeline's bubble.
#   sh bench/model_parallel.sh [THREADS] [STEPS]   (2 and 3; batch 32, 224x224)
set -eu
cd "$(dirname "$0")/.."
threads=${1:-2} steps=${2:-3}
make -s build/libfundus.a
mkdir -p build/bench
cc -std=c11 -D_GNU_SOURCE -O3 -fopenmp -Ilib bench/train_step.c build/libfundus.a -o build/bench/train_step \
    $(make -s --no-print-directory print-ldlibs)
run() { # LABEL ARGS...: one line of figures, then each stage's busy time
    label=$1
    shift
    out=$(build/bench/train_step --threads "$threads" --steps "$steps" --warmup 1 "$@")
    step=$(echo "$out" | head -1 | tr ' ' '\n' | sed -n 's/^step_s=//p')
    rate=$(echo "$out" | head -1 | tr ' ' '\n' | sed -n 's/^img_per_s=//p')
    busy=$(echo "$out" | sed -n 's/^stage=\([0-9]*\) name=\([^ ]*\) busy_s_per_step=\(.*\)/s\1 \2 \3 s/p' | paste -sd, - | sed 's/,/, /g')
    printf '%-28s %6s s/step  %6s img/s  %s\n' "$label" "$step" "$rate" "${busy:+busy per step: $busy}"
}
echo "MedicalCNN 224x224, batch 32, $threads threads in all, $steps timed steps after 1 warm-up"
run "unsplit"
run "2 stages, 1 micro-batch" --stages 2 --micro 1
run "2 stages, 4 micro-batches" --stages 2 --micro 4
run "2 stages, 8 micro-batches" --stages 2 --micro 8
run "1 stage, 4 micro-batches" --stages 1 --micro 4
