# cnn-train and cnn-predict end to end with --device cuda, on the emulated
# GPU (run by backend.sh, which links them against the fakes and sets FU_BIN
# and LD_LIBRARY_PATH): what the unit-level GPU test cannot reach, the
# trainer's loading thread prefetching every batch, the resident weights
# pulled for checkpoints and evaluation and pushed back after a resume (also
# of model-parallel stages), and checkpoints moving between devices. On synthetic 32x32 images, batch 2.
. tests/cli/lib.sh

fundus-synth --count 12 --size 32 --seed 3 --format pixels -q -o "$T/all.shard"
shard-split --ratios 50,25,25 --stratify --seed 1 -q -o "$T/s" "$T/all.shard" # 6 / 3 / 3
S="--train $T/s/train.shard --val $T/s/val.shard --test $T/s/test.shard --epochs 2 --batch 2 -q"
PY=${PYTHON:-/usr/bin/python3}
field() { # FILE COLUMN: the value of a results.csv column (device_name holds commas: a real CSV reader)
    "$PY" -c 'import csv, sys; print(next(csv.DictReader(open(sys.argv[1])))[sys.argv[2]])' "$1" "$2"
}

check "cnn-train --device cuda trains (2 epochs)" cnn-train $S --device cuda --out "$T/a"
dev=$(field "$T/a/results.csv" device) mib=$(field "$T/a/results.csv" peak_gpu_mb)
if [ "$dev" = cuda ] && awk -v m="$mib" 'BEGIN {exit !(m > 0)}'; then
    ok "results.csv: device cuda, peak_gpu_mb $mib"
else not_ok "results.csv: device cuda, peak_gpu_mb > 0" "device '$dev', peak_gpu_mb '$mib'"; fi
if [ "$(wc -l <"$T/a/log.csv")" = 3 ]; then ok "log.csv: a row per epoch"; else not_ok "log.csv: a row per epoch"; fi

check "a rerun" cnn-train $S --device cuda --out "$T/b"
same "a rerun: the same weights, bit for bit" "$T/a/model.safetensors" "$T/b/model.safetensors"

# cuDNN's two APIs (lib/cuda/conv_graph.h): the default runs the graph API,
# and the legacy API where the graph API has no engine for a convolution
# (FAKE_CUDNN_GRAPH=none: the fake has none for any); FU_CUDNN_API picks one
# alone. The fake computes the same sums either way, so the weights are the
# same bytes: what differs is only which calls ran.
check "FU_CUDNN_API=legacy" env FU_CUDNN_API=legacy cnn-train $S --device cuda --out "$T/api1"
same "FU_CUDNN_API=legacy: the default's weights (graph API), bit for bit" "$T/a/model.safetensors" \
    "$T/api1/model.safetensors"
check "no graph engine for any convolution: the legacy API takes them" \
    env FAKE_CUDNN_GRAPH=none cnn-train $S --device cuda --out "$T/api2"
same "no graph engine: the default's weights, bit for bit" "$T/a/model.safetensors" "$T/api2/model.safetensors"
check_fails "FU_CUDNN_API=graph and no graph engine: one line naming the convolution" 1 \
    "^cnn-train: cuda backend: set-up of conv op [0-9]+ '[a-z0-9_.]+', \(2, [0-9]+, [0-9]+, [0-9]+\) -> \(2, [0-9]+, [0-9]+, [0-9]+\): cuDNN's graph API, forward plan: no engine of cuDNN's heuristics within our filters and the workspace cap: CUDNN_STATUS_NOT_SUPPORTED$" \
    env FAKE_CUDNN_GRAPH=none FU_CUDNN_API=graph cnn-train $S --device cuda --out "$T/api3"
startup_says() { # NAME PATTERN [VAR=VALUE...] [-- OPTION...]: a training step runs (in that environment, with
    # those options), and the start-up report has a line matching PATTERN
    name=$1 pat=$2 envs=
    shift 2
    while [ $# -gt 0 ] && [ "$1" != -- ]; do envs="$envs $1" && shift; done
    [ $# -gt 0 ] && shift
    # shellcheck disable=SC2086 # envs: VAR=VALUE words
    env $envs cnn-train --train "$T/s/train.shard" --val "$T/s/val.shard" --epochs 1 --batch 2 --max-steps 1 \
        --device cuda --out "$T/note" "$@" >/dev/null 2>"$T/note.err"
    rc=$?
    if [ "$rc" = 0 ] && grep -Eq "$pat" "$T/note.err"; then ok "$name"
    else not_ok "$name" "exit $rc: $(grep -E 'convolutions|cuDNN' "$T/note.err" | head -3)"; fi
    rm -rf "$T/note"
}
startup_says "start-up report: the graph API for every convolution" \
    "^cnn-train: convolutions: cuDNN's graph API, heuristics mode A, for all 41$"
startup_says "start-up report: the legacy API where the graph API has no engine" \
    "^cnn-train: convolutions: cuDNN's legacy API and its heuristics for all 41 \(graph API: forward plan: no engine of cuDNN's heuristics within our filters and the workspace cap: CUDNN_STATUS_NOT_SUPPORTED\)$" \
    FAKE_CUDNN_GRAPH=none
startup_says "start-up report: the legacy API where the graph API fails to plan, and why" \
    "^cnn-train: convolutions: cuDNN's legacy API and its heuristics for all 41 \(graph API: forward plan: building an execution plan: CUDNN_STATUS_BAD_PARAM\)$" \
    FAKE_CUDNN_GRAPH=broken
startup_says "start-up report: the fallback heuristics where mode A's engines will not do" \
    "^cnn-train: convolutions: cuDNN's graph API, heuristics mode A \(fallback heuristics for 41\), for all 41$" \
    FAKE_CUDNN_GRAPH=fallback
check_fails "FU_CUDNN_API=other: one line" 1 "^cnn-train: cuda backend: FU_CUDNN_API=other: graph \(the default\) or legacy$" \
    env FU_CUDNN_API=other cnn-train $S --device cuda --out "$T/api4"

# Convolution algorithms measured and recorded (--conv-algos): a rerun with
# the file leaves it as it was and trains the same weights (the fake cuDNN
# ranks two algorithms that sum in different orders by the process id).
check "--conv-algos FILE: measured, recorded" cnn-train $S --device cuda --conv-algos "$T/algos.txt" --out "$T/g"
cp "$T/algos.txt" "$T/algos-first.txt"
check "--conv-algos FILE: a rerun" cnn-train $S --device cuda --conv-algos "$T/algos.txt" --out "$T/g2"
same "--conv-algos: the rerun leaves the file as it was" "$T/algos-first.txt" "$T/algos.txt"
same "--conv-algos: the rerun's weights, bit for bit" "$T/g/model.safetensors" "$T/g2/model.safetensors"
startup_says "--conv-algos: the start-up report counts the shapes measured" \
    "^cnn-train: convolutions: cuDNN's graph API, engine configurations measured \([1-9][0-9]* shapes now\) and recorded, for all 41 in $T/note-algos.txt$" \
    -- --conv-algos "$T/note-algos.txt"
startup_says "--conv-algos: ... none where the file has them all" \
    "^cnn-train: convolutions: cuDNN's graph API, engine configurations measured \(0 shapes now\) and recorded, for all 41 in $T/note-algos.txt$" \
    -- --conv-algos "$T/note-algos.txt"
startup_says "--conv-algos with FU_CUDNN_API=legacy: cudnnFind's algorithms" \
    "^cnn-train: convolutions: cuDNN's legacy API and its algorithms measured \(cudnnFind\*\) and recorded for all 41 \(FU_CUDNN_API=legacy\) in $T/note-algos.txt$" \
    FU_CUDNN_API=legacy -- --conv-algos "$T/note-algos.txt"
# A pass the op does not need (the image's convolution has no input gradient)
# that no engine takes, measured for the record alone, is recorded as none;
# the convolutions that need it go to the legacy API, and a rerun takes both.
nodgrad="^cnn-train: convolutions: cuDNN's graph API, engine configurations measured \(%s shapes now\) and recorded, for 1 of 41; its legacy API's algorithms measured \(cudnnFind\*\) and recorded for 40 \(graph API: backward-data plan: no engine of cuDNN's heuristics within our filters and the workspace cap: CUDNN_STATUS_NOT_SUPPORTED\) in $T/nodgrad.txt$"
# shellcheck disable=SC2059 # the pattern is the format
startup_says "--conv-algos, no engine for backward data: the image's convolution recorded without one" \
    "$(printf "$nodgrad" '[1-9][0-9]*')" FAKE_CUDNN_GRAPH=no-dgrad -- --conv-algos "$T/nodgrad.txt"
# shellcheck disable=SC2059
startup_says "--conv-algos, no engine for backward data: a rerun takes every record" \
    "$(printf "$nodgrad" 0)" FAKE_CUDNN_GRAPH=no-dgrad -- --conv-algos "$T/nodgrad.txt"
if grep -Eq ':graph:[0-9]+x3x32x32:.* -2147483648 0 ' "$T/nodgrad.txt"; then
    ok "--conv-algos: the image's convolution's record says none for backward data"
else not_ok "--conv-algos: the image's convolution's record says none for backward data" "$(grep -v '^#' "$T/nodgrad.txt" | head -3)"; fi
if grep -q ':graph:' "$T/note-algos.txt" && grep -q ':legacy:' "$T/note-algos.txt"; then
    ok "--conv-algos: one file keeps both APIs' records, under their own keys"
else not_ok "--conv-algos: one file keeps both APIs' records, under their own keys" "$(head -5 "$T/note-algos.txt")"; fi

# Stopped after 3 of the 6 steps (mid-epoch 2), then resumed: the resident
# state went out with the checkpoint and comes back in.
check "--max-steps 3" cnn-train $S --device cuda --max-steps 3 --out "$T/c"
check "--resume" cnn-train $S --device cuda --resume --out "$T/c"
same "resumed: the uninterrupted run's last weights" "$T/a/last.safetensors" "$T/c/last.safetensors"
same "resumed: the uninterrupted run's test predictions" "$T/a/predictions-test.csv" "$T/c/predictions-test.csv"

# The optimizer on the host instead: the same arithmetic, so the same weights
# (up to the norm's summation order, which decides clipping's factor).
check "--host-optimizer" cnn-train $S --device cuda --host-optimizer --out "$T/h"
if out=$("$PY" tests/cli/compare_weights.py "$T/a/last.safetensors" "$T/h/last.safetensors" 1e-5 2>&1); then
    ok "--host-optimizer: the resident run's weights ($out)"
else not_ok "--host-optimizer: the resident run's weights" "$out"; fi

# Two stages sharing the GPU (resident: each stage's weights and moments on
# the device, pulled stage by stage for checkpoints, pushed back on resume):
# one micro-batch computes what the unsplit model does, and a resumed run
# ends where the uninterrupted one does.
MP="--model-parallel 2 --allow-shared-gpu"
check "--model-parallel 2 --allow-shared-gpu" cnn-train $S --device cuda $MP --out "$T/m"
if out=$("$PY" tests/cli/compare_weights.py "$T/a/last.safetensors" "$T/m/last.safetensors" 1e-5 2>&1); then
    ok "2 stages: the unsplit run's weights ($out)"
else not_ok "2 stages: the unsplit run's weights" "$out"; fi
check "2 stages, --max-steps 3" cnn-train $S --device cuda $MP --max-steps 3 --out "$T/n"
check "2 stages, --resume" cnn-train $S --device cuda $MP --resume --out "$T/n"
same "2 stages resumed: the uninterrupted run's last weights" "$T/m/last.safetensors" "$T/n/last.safetensors"
# shellcheck disable=SC2086 # MP: options
startup_says "2 stages: the start-up report says how each stage's convolutions run" \
    "^cnn-train: convolutions: stage 1: cuDNN's graph API, heuristics mode A, for all [0-9]+; stage 2: cuDNN's graph API, heuristics mode A, for all [0-9]+$" \
    -- $MP

# --amp fp16: each epoch's line says dynamic loss scaling's state (the
# scale, the steps skipped because a gradient overflowed), for the whole
# model and for 2 stages (their one scale). Batches of 3 (of 2, BatchNorm
# overflows half's range at every scale above 1/4: one run below does
# that), from 2^12 (--loss-scale): steps 1 and 2 overflow (emulated), and
# so does one of steps 3 and 4, the other taken (from 2^16 all 4 overflow).
F16="--amp fp16 --batch 3 --loss-scale 4096"
fp16_says() { # NAME DIR [OPTION...]
    name=$1 dir=$2
    shift 2
    cnn-train --train "$T/s/train.shard" --val "$T/s/val.shard" --epochs 2 $F16 --device cuda --out "$dir" "$@" \
        >/dev/null 2>"$dir.err"
    rc=$?
    lines=$(grep -Ec '^cnn-train: epoch [12]/2: train loss .*; fp16 loss scale [0-9.e+-]+, (no step skipped|[0-9]+ steps? skipped \(a gradient overflowed\))$' "$dir.err")
    if [ "$rc" = 0 ] && [ "$lines" = 2 ]; then ok "$name"
    else not_ok "$name" "exit $rc: $(grep -E 'epoch|cnn-train: [a-z]' "$dir.err" | head -3)"; fi
}
fp16_says "--amp fp16: each epoch's line says the loss scale and the steps skipped" "$T/f1"
n=$(field "$T/f1/results.csv" steps_skipped)
said=$(sed -n 's/.*, \([0-9]*\) steps* skipped (a gradient overflowed)$/\1/p' "$T/f1.err" | awk '{s += $1} END {print s + 0}')
if [ -n "$n" ] && [ "$n" = "$said" ] && [ "$n" -gt 0 ]; then ok "--amp fp16: results.csv's steps_skipped, the epochs' ($n)"
else not_ok "--amp fp16: results.csv's steps_skipped, the epochs'" "steps_skipped '$n', the epoch lines $said"; fi
# shellcheck disable=SC2086 # MP: options
fp16_says "--amp fp16, 2 stages: each epoch's line says the loss scale and the steps skipped" "$T/f2" $MP

# fp16 resumed mid-epoch: the loss scale and the steps skipped went out
# with the checkpoint and come back in (from 2^16 again, the steps after
# would scale otherwise, and AdamW would count the skipped steps: the
# weights differ without them; f1 is the uninterrupted run).
check "--amp fp16 --max-steps 3" cnn-train $S $F16 --device cuda --max-steps 3 --out "$T/f4"
cp -r "$T/f4" "$T/f5" # step 3's checkpoint, for scaling_of below
check "--amp fp16 --resume" cnn-train $S $F16 --device cuda --resume --out "$T/f4"
same "--amp fp16 resumed: the uninterrupted run's last weights" "$T/f1/last.safetensors" "$T/f4/last.safetensors"
# f4's checkpoint copied to DIR, its metadata KEY's value overwritten (the
# same length, so the header's size holds) by PREFIX then FILL repeated.
spoil() { # DIR KEY PREFIX FILL
    cp -r "$T/f4" "$1"
    "$PY" - "$1/state.safetensors" "$2" "$3" "$4" <<'EOF'
import json, struct, sys
path, key, prefix, fill = sys.argv[1:]
b = open(path, "rb").read()
n = struct.unpack("<Q", b[:8])[0]
head = b[8:8 + n].decode()
v = json.loads(head)["__metadata__"][key]
bad = head.replace('"%s":"%s"' % (key, v), '"%s":"%s"' % (key, (prefix + fill * len(v))[:len(v)]))
assert bad != head
open(path, "wb").write(b[:8] + bad.encode() + b[8 + n:])
EOF
}
spoil "$T/f7" fp16_loss_scaling "0x1p+8 x" 2
check_fails "a checkpoint's fp16_loss_scaling that is not one: one line" 1 \
    "^cnn-train: .*/state.safetensors: fp16_loss_scaling is not a loss scaling state: '0x1p\+8 x2*'$" \
    cnn-train $S $F16 --device cuda --resume --out "$T/f7"
spoil "$T/f9" fp16_steps_skipped "" -
check_fails "a checkpoint's fp16_steps_skipped that is not a count: one line" 1 \
    "^cnn-train: .*/state.safetensors: fp16_steps_skipped is not a count of the [0-9]+ steps: '-+'$" \
    cnn-train $S $F16 --device cuda --resume --out "$T/f9"
# f5's checkpoint (after step 3 of f1's run) copied to DIR, its
# fp16_loss_scaling set to VALUE, where {} stands for its own.
scaling_of() { # DIR VALUE
    cp -r "$T/f5" "$1"
    "$PY" - "$1/state.safetensors" "$2" <<'EOF'
import json, struct, sys
path, value = sys.argv[1:]
b = open(path, "rb").read()
n = struct.unpack("<Q", b[:8])[0]
head = json.loads(b[8:8 + n])
meta = head["__metadata__"]
meta["fp16_loss_scaling"] = value.replace("{}", meta["fp16_loss_scaling"])
new = json.dumps(head, separators=(",", ":")).encode()
new += b" " * (-len(new) % 8)
open(path, "wb").write(struct.pack("<Q", len(new)) + new + b[8 + n:])
EOF
}
# A model-parallel run's checkpoint from before its stages shared one scale
# (2026-12-08) holds one state per stage and micro-batch: the least goes on.
scaling_of "$T/f10" "0x1p+20 7;{};0x1p+18 0"
check "a checkpoint of 3 loss scaling states (a pipe's, before they were one): resumed" \
    cnn-train $S $F16 --device cuda --resume --out "$T/f10"
same "resumed from 3 loss scaling states: the least goes on, as the uninterrupted run" "$T/f1/last.safetensors" \
    "$T/f10/last.safetensors"
scaling_of "$T/f11" "{};"
check_fails "a checkpoint's fp16_loss_scaling that ends in ';': one line" 1 \
    "^cnn-train: .*/state.safetensors: fp16_loss_scaling is not a loss scaling state: '0x[0-9a-f.p+-]+ [0-9]+;'$" \
    cnn-train $S $F16 --device cuda --resume --out "$T/f11"
scaling_of "$T/f12" "0x1p-25 0"
check_fails "a checkpoint's fp16_loss_scaling under 2^-24: one line" 1 \
    "^cnn-train: .*/state.safetensors: fp16_loss_scaling is not a loss scaling state: '0x1p-25 0'$" \
    cnn-train $S $F16 --device cuda --resume --out "$T/f12"
# Batches of 2: BatchNorm overflows half's range even unscaled (the first
# step does at scale 1, emulated), so the scale must fall below 1 (it
# stopped at 1 once, and the run failed). From 2^16, 17 steps are skipped
# first (6 epochs of 3 steps, checked by hand); from 1, one.
check "--amp fp16, batches of 2" cnn-train --train "$T/s/train.shard" --val "$T/s/val.shard" --epochs 1 --batch 2 \
    --device cuda --amp fp16 --loss-scale 1 --out "$T/f8"
if grep -Eq '^cnn-train: epoch 1/1: .*; fp16 loss scale (0\.[0-9]+|[0-9.]+e-[0-9]+), (no step skipped|[0-9]+ steps? skipped \(a gradient overflowed\))$' "$T/.err"
then ok "--amp fp16, batches of 2: overflowing steps skipped until the loss scale fell below 1"
else not_ok "--amp fp16, batches of 2: overflowing steps skipped until the loss scale fell below 1" "$(grep epoch "$T/.err")"; fi

# Checkpoints between devices: a cpu run resumed on the GPU, and the GPU's
# model predicted on the CPU.
check "cpu run, --max-steps 3" cnn-train $S --backend cpu --max-steps 3 --out "$T/x"
check "... resumed with --device cuda" cnn-train $S --device cuda --resume --out "$T/x"
if [ "$(field "$T/x/results.csv" device)" = cuda ] && [ "$(wc -l <"$T/x/log.csv")" = 3 ]; then
    ok "a cpu checkpoint resumed on the GPU finishes the run"
else not_ok "a cpu checkpoint resumed on the GPU finishes the run" "$(cat "$T/x/results.csv")"; fi
check "cnn-predict --backend cpu on the GPU run's model" \
    cnn-predict --backend cpu --model "$T/a/model.safetensors" -o "$T/p.csv" "$T/s/test.shard"
d=$(paste -d, "$T/a/predictions-test.csv" "$T/p.csv" |
    awk -F, 'NR > 1 {d = $3 - $7; if (d < 0) d = -d; if (d > m) m = d} END {printf "%.2g", m + 0}')
if awk -v d="$d" 'BEGIN {exit !(d <= 1e-4)}'; then
    ok "the GPU run's model on the CPU: its test predictions within 1e-4 (largest difference $d)"
else not_ok "the GPU run's model on the CPU: its test predictions within 1e-4" "largest difference $d"; fi

# Errors: one line each (and a hint where there is one), exit 1, nothing
# written to the run's folder: no GPU; a batch the GPU's free memory cannot
# hold (FAKE_CUDA_FREE_MIB: what the fake runtime says is free); a cuDNN
# failure (FAKE_CUDNN_FAIL: the fake fails that call, as a GPU fault would),
# named with its op and shape, also in a model-parallel stage (no hang).
nothing_in() { # NAME DIR
    if [ -z "$(ls -A "$2" 2>/dev/null)" ]; then ok "$1"; else not_ok "$1" "$(ls "$2" | tr '\n' ' ')"; fi
}
check_fails "no GPU: one line" 1 "^cnn-train: cuda backend: no CUDA device" \
    env FAKE_CUDA_DEVICES=0 cnn-train $S --device cuda --out "$T/e1"
check_fails "out of GPU memory: one line, what the batch needs, and a hint" 1 \
    "^cnn-train: cuda backend: out of GPU memory: a batch of 2 needs [0-9]+ MiB \([0-9]+ MiB of it the weights\), and 400 MiB are free$" \
    env FAKE_CUDA_FREE_MIB=400 cnn-train $S --device cuda --out "$T/e2"
nothing_in "out of GPU memory: nothing written" "$T/e2"
shape="\(2, [0-9]+, [0-9]+, [0-9]+\) -> \(2, [0-9]+, [0-9]+, [0-9]+\)"
check_fails "a cuDNN failure: one line naming the op and its shape" 1 \
    "^cnn-train: cuda backend: backward of conv op [0-9]+ '[a-z0-9_.]+', $shape: cuDNN: CUDNN_STATUS_EXECUTION_FAILED$" \
    env FAKE_CUDNN_FAIL=cudnnConvolutionBackwardData:5 cnn-train $S --device cuda --out "$T/e3"
nothing_in "a cuDNN failure: nothing written" "$T/e3"
check_fails "a cuDNN failure in a model-parallel stage: the stage named too" 1 \
    "^cnn-train: stage [01] \([a-z0-9_.]+\.\.[a-z0-9_.]+\): cuda backend: forward of conv op [0-9]+ '[a-z0-9_.]+', $shape: cuDNN: CUDNN_STATUS_EXECUTION_FAILED$" \
    env FAKE_CUDNN_FAIL=cudnnConvolutionForward:70 timeout 120 cnn-train $S --device cuda $MP --out "$T/e4"

# Two ranks on two emulated GPUs under mpirun, their gradients summed with
# NCCL's calls (the fake NCCL sums through MPI): the weights of the same run
# summed through host memory (--allreduce mpi, whose optimizer runs on the
# host: equal up to clipping's rounding), and two stages on each rank's GPU
# (a communicator per stage) the weights of the unsplit run. (With several
# micro-batches, a stage's sum waits for them all: test_cuda's
# check_pipe_nccl.) One epoch: 3 steps per rank.
if command -v mpirun >/dev/null 2>&1; then
    MPIRUN="mpirun --oversubscribe -x LD_LIBRARY_PATH -x FAKE_CUDA_DEVICES=2"
    [ "$(id -u)" = 0 ] && MPIRUN="$MPIRUN --allow-run-as-root"
    fundus-synth --count 24 --size 32 --seed 4 --format pixels -q -o "$T/dp.shard"
    shard-split --ratios 50,25,25 --stratify --seed 1 -q -o "$T/dp" "$T/dp.shard" # 12 / 6 / 6
    D="--train $T/dp/train.shard --val $T/dp/val.shard --epochs 1 --batch 2 --threads 1 --device cuda"
    near() { # NAME A B: weights within 1e-5
        if out=$("$PY" tests/cli/compare_weights.py "$2" "$3" 1e-5 2>&1); then ok "$1 ($out)"
        else not_ok "$1" "$out"; fi
    }
    says_nccl() { # NAME: the last run's start-up note
        if grep -q "summed by NCCL on the GPUs" "$T/.err"; then ok "$1"
        else not_ok "$1" "$(grep 'data parallel' "$T/.err" | head -c 300)"; fi
    }
    check "2 ranks on 2 GPUs" $MPIRUN -np 2 cnn-train $D --out "$T/r1"
    says_nccl "2 ranks: gradients summed by NCCL"
    check "2 ranks, --allreduce mpi" $MPIRUN -np 2 cnn-train $D -q --allreduce mpi --out "$T/r2"
    near "2 ranks: NCCL's sums train MPI's weights" "$T/r2/last.safetensors" "$T/r1/last.safetensors"
    # fp16 with sync-BN: the ranks agree on every overflow, over NCCL or (any)
    # through MPI, so their loss scales stay equal (a rank whose scale stayed
    # where the other's halved rounded its gradients otherwise: 9e-10 apart,
    # before the agreement), and sync-BN's sums, over NCCL on the device or
    # through MPI on the host, are the same: the two train the same bytes.
    F16D="--train $T/dp/train.shard --val $T/dp/val.shard --epochs 2 --batch 3 --threads 1 --device cuda -q $F16"
    check "2 ranks, --amp fp16 --sync-bn" $MPIRUN -np 2 cnn-train $F16D --sync-bn --out "$T/r4"
    check "2 ranks, --amp fp16 --sync-bn --allreduce mpi" $MPIRUN -np 2 cnn-train $F16D --sync-bn --allreduce mpi \
        --out "$T/r5"
    same "2 ranks, --amp fp16 --sync-bn: MPI's sums train NCCL's weights, bit for bit" "$T/r4/last.safetensors" \
        "$T/r5/last.safetensors"
    # fp16 over 2 stages x 2 micro-batches of 3, summed through MPI: one
    # loss scale for every stage, micro-batch and rank, updated from the
    # summed gradients' norm, so a run resumed from rank 0's checkpoint after
    # step 1 goes on as the uninterrupted one. (From 2^8 step 1 overflows
    # where only some of them did, emulated: with a scale per stage and
    # micro-batch, rank 1's went on otherwise, and the resumed run, given rank
    # 0's, trained other bytes.) 2 epochs of 2 steps.
    fundus-synth --count 48 --size 32 --seed 4 --format pixels -q -o "$T/pq.shard"
    shard-split --ratios 50,25,25 --stratify --seed 1 -q -o "$T/pq" "$T/pq.shard" # 24 / 12 / 12
    PQ="--train $T/pq/train.shard --val $T/pq/val.shard --epochs 2 --batch 6 --threads 1 --device cuda -q --amp fp16
        --loss-scale 256 --allreduce mpi $MP --micro-batches 2"
    check "2 ranks x 2 stages x 2 micro-batches, --amp fp16 --allreduce mpi" $MPIRUN -np 2 cnn-train $PQ --out "$T/p1"
    check "the same, --max-steps 1" $MPIRUN -np 2 cnn-train $PQ --max-steps 1 --out "$T/p2"
    check "the same, --resume" $MPIRUN -np 2 cnn-train $PQ --resume --out "$T/p2"
    same "2 ranks x 2 stages, fp16 summed through MPI, resumed after step 1: the uninterrupted run's weights" \
        "$T/p1/last.safetensors" "$T/p2/last.safetensors"
    # The same over NCCL (a communicator per stage, the sums and the step on
    # the device): each rank's sum of two is the host's, bit for bit.
    check "the same over NCCL" $MPIRUN -np 2 cnn-train $PQ --allreduce nccl --out "$T/p3"
    same "2 ranks x 2 stages, fp16: NCCL's sums train MPI's weights, bit for bit" "$T/p1/last.safetensors" \
        "$T/p3/last.safetensors"
    # A peer dead in a gradient allreduce, as the fake NCCL plays it
    # (FAKE_NCCL_HANG_AT on both ranks: the 12th allreduce, a bucket of the
    # second step after the 6 of the start-up's calibration, never ends, and
    # the device hangs behind it): no host waits for the sums, so NCCL's
    # watchdog gives up after FU_NCCL_TIMEOUT (2 s) and aborts, and each rank
    # exits saying so; nothing written.
    t0=$(date +%s)
    timeout 120 $MPIRUN -x FAKE_NCCL_HANG_AT=12 -x FU_NCCL_TIMEOUT=2 -np 2 cnn-train $D -q --out "$T/r6" \
        >"$T/.out" 2>"$T/.err"
    rc=$? took=$(($(date +%s) - t0))
    line="NCCL: rank [01]: the gradient allreduce: no progress in 2 s: a rank died or hangs; communicator aborted"
    said=$(grep -Ec "^cnn-train( \(rank 1\))?: $line\$" "$T/.err")
    if [ "$rc" != 0 ] && [ "$rc" != 124 ] && [ "$said" = 2 ] && [ "$took" -lt 60 ]; then
        ok "2 ranks, a peer dead in an allreduce: both ranks fail in ${took} s naming the timeout"
    else
        not_ok "2 ranks, a peer dead in an allreduce" "exit $rc after $took s, $said ranks said so: $(head -c 300 "$T/.err")"
    fi
    nothing_in "2 ranks, a peer dead in an allreduce: nothing written" "$T/r6"
    check "2 ranks x 2 stages" $MPIRUN -np 2 cnn-train $D $MP --out "$T/r3"
    says_nccl "2 ranks x 2 stages: gradients summed by NCCL, per stage"
    near "2 ranks x 2 stages: the unsplit run's weights" "$T/r1/last.safetensors" "$T/r3/last.safetensors"
else
    echo "skip - data parallel on emulated GPUs: no mpirun (Debian openmpi-bin)"
fi
finish
