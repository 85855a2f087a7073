# cnn-train --model-parallel on synthetic 32x32 images, on the CPU (each
# stage a thread; docs/model-parallel.md): 2 stages train the plain run's
# weights bit for bit; K stages x M micro-batches equal 1 stage x M; a hand
# cut by module names; deferred BN; results.csv says stages, micro-batches
# and each stage's busy time; 2 ranks x 2 stages combine; bad options get one
# line.
. tests/cli/lib.sh

fundus-synth --count 40 --size 32 --seed 5 --format pixels -q -o "$T/all.shard"
shard-split --ratios 60,20,20 --stratify --seed 1 -q -o "$T/s" "$T/all.shard" # 24 / 8 / 8
S="--train $T/s/train.shard --val $T/s/val.shard --test $T/s/test.shard --threads 1 -q --epochs 1 --batch 8"
B=${MP_BACKEND:-cpu}

check "plain run" cnn-train $S --backend "$B" --out "$T/plain"
check "2 stages" cnn-train $S --backend "$B" --model-parallel 2 --out "$T/mp2"
same "2 stages = the plain run: the kept weights, bit for bit" "$T/plain/model.safetensors" "$T/mp2/model.safetensors"
same "2 stages = the plain run: the last weights, bit for bit" "$T/plain/last.safetensors" "$T/mp2/last.safetensors"
same "2 stages = the plain run: the test predictions" "$T/plain/predictions-test.csv" "$T/mp2/predictions-test.csv"
# results.csv: model_parallel (8th), and near the end micro_batches, each stage's busy seconds, GPUs per
# rank (then fp16's skipped steps).
row=$(sed -n 2p "$T/mp2/results.csv")
busy=$(echo "$row" | awk -F, '{print $(NF-2)}')
if echo "$row" | grep -q '^cpu1_mp2,' && [ "$(echo "$row" | cut -d, -f8)" = 2 ] &&
    [ "$(echo "$row" | awk -F, '{print $(NF-3)}')" = 1 ] && [ "$(echo "$row" | awk -F, '{print $(NF-1)}')" = 0 ] &&
    echo "$busy" | grep -Eq '^[0-9]+\.[0-9]{3};[0-9]+\.[0-9]{3}$'; then
    ok "results.csv: cpu1_mp2, 2 stages, 1 micro-batch, 2 busy times ($busy)"
else not_ok "results.csv: cpu1_mp2, 2 stages, 1 micro-batch, 2 busy times" "$row"; fi
if [ "$(sed -n 2p "$T/plain/results.csv" | cut -d, -f8)" = 1 ]; then ok "results.csv: a plain run is 1 stage"
else not_ok "results.csv: a plain run is 1 stage" "$(sed -n 2p "$T/plain/results.csv")"; fi

# Micro-batches: the cut changes nothing, the split into micro-batches does (BatchNorm).
M="--max-steps 2"
check "1 stage x 2 micro-batches" cnn-train $S $M --backend "$B" --micro-batches 2 --out "$T/mb2"
check "3 stages by hand x 2 micro-batches" cnn-train $S $M --backend "$B" --micro-batches 2 --model-parallel 3 \
    --stages 'stem,stage1,stage2|stage3_res,stage3_md|stage4_res,fc' --out "$T/mp3mb2"
same "3 stages x 2 micro-batches = 1 stage x 2, bit for bit" "$T/mb2/last.safetensors" "$T/mp3mb2/last.safetensors"
check "plain, 2 steps" cnn-train $S $M --backend "$B" --out "$T/plain2"
if cmp -s "$T/mb2/last.safetensors" "$T/plain2/last.safetensors"; then
    not_ok "2 micro-batches differ from 1 (BatchNorm on each one's images)" "identical"
else ok "2 micro-batches differ from 1 (BatchNorm on each one's images)"; fi
check_fails "resuming with other micro-batches refused" 1 "started with micro_batches 2, this one has 1" \
    cnn-train $S --backend "$B" --resume --out "$T/mb2"
# Deferred BN: running statistics once per batch: other BN state, a run of its own to resume.
check "1 stage x 2 micro-batches, deferred BN" cnn-train $S $M --backend "$B" --micro-batches 2 --deferred-bn --out "$T/mb2d"
if cmp -s "$T/mb2/last.safetensors" "$T/mb2d/last.safetensors"; then
    not_ok "deferred BN changes the running statistics" "identical"
else ok "deferred BN changes the running statistics"; fi
check_fails "resuming without --deferred-bn refused" 1 "started with deferred_bn yes, this one has no" \
    cnn-train $S --backend "$B" --micro-batches 2 --resume --out "$T/mb2d"

# Data parallel x model parallel: 2 ranks of 2 stages.
if command -v mpirun >/dev/null 2>&1; then
    MPIRUN="mpirun --oversubscribe"
    [ "$(id -u)" = 0 ] && MPIRUN="$MPIRUN --allow-run-as-root"
    check "2 ranks x 2 stages" $MPIRUN -np 2 cnn-train $S --backend "$B" --model-parallel 2 --out "$T/x2mp2"
    row=$(sed -n 2p "$T/x2mp2/results.csv")
    if echo "$row" | grep -q '^cpux2_mp2,' && [ "$(echo "$row" | cut -d, -f5,8)" = "2,2" ]; then
        ok "results.csv: cpux2_mp2, 2 ranks, 2 stages"
    else not_ok "results.csv: cpux2_mp2, 2 ranks, 2 stages" "$row"; fi
else
    echo "skip - 2 ranks x 2 stages: no mpirun (Debian openmpi-bin)"
fi

# Bad options: one line each, nothing written.
check_fails "--stages without --model-parallel" 2 "cnn-train: --stages needs --model-parallel" \
    cnn-train $S --stages 'stem|fc' --out "$T/bad1"
check_fails "a module that is not there" 1 "cnn-train: stages: 'stage9' names no module" \
    cnn-train $S --backend "$B" --model-parallel 2 --stages 'stem,stage1|stage9' --out "$T/bad2"
check_fails "stages out of order" 1 "forward order" \
    cnn-train $S --backend "$B" --model-parallel 2 \
    --stages 'stem,stage2|stage1,stage3_res,stage3_md,stage4_res,fc' --out "$T/bad3"
check_fails "too many micro-batches for the batch" 2 "micro-batches 5: a batch of 8 makes at most 4" \
    cnn-train $S --micro-batches 5 --out "$T/bad4"
check_fails "sync-BN with stages" 2 "sync-bn cannot go with --model-parallel" \
    cnn-train $S --model-parallel 2 --sync-bn --out "$T/bad5"
check_fails "more stages than GPUs" 1 "cnn-train: (model parallel: 2 stages on GPUs 0-1 need 2 GPUs|cuda backend)" \
    cnn-train $S --device cuda --model-parallel 2 --out "$T/bad6"
if [ ! -e "$T/bad2/state.safetensors" ] && [ ! -e "$T/bad6/results.csv" ]; then ok "refused runs write nothing"
else not_ok "refused runs write nothing" "$(ls "$T/bad2" "$T/bad6" 2>&1)"; fi
finish
