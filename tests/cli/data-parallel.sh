# cnn-train under mpirun on synthetic 32x32 images: 2 ranks write one run
# folder (rank 0's) with metrics over every image; 2 ranks x batch 4 with
# --sync-bn train the same weights as 1 process x batch 8; one rank equals a
# plain run bit for bit; a killed rank ends the job within 30 s naming it;
# bad input is reported once.
. tests/cli/lib.sh

if ! command -v mpirun >/dev/null 2>&1; then
    echo "skip - data parallel: no mpirun (Debian openmpi-bin)"
    exit 0
fi
# Open MPI refuses root without the flag; two cores need --oversubscribe
# once the loader threads are counted.
MPIRUN="mpirun --oversubscribe"
[ "$(id -u)" = 0 ] && MPIRUN="$MPIRUN --allow-run-as-root"

fundus-synth --count 40 --size 32 --seed 5 --format pixels -q -o "$T/all.shard"
shard-split --ratios 60,20,20 --stratify --seed 1 -q -o "$T/s" "$T/all.shard" # 24 / 8 / 8
S="--train $T/s/train.shard --val $T/s/val.shard --test $T/s/test.shard --threads 1 -q"

check "2 ranks train" $MPIRUN -np 2 cnn-train $S --backend cpu --epochs 2 --batch 4 --out "$T/two"
row=$(sed -n 2p "$T/two/results.csv")
if echo "$row" | grep -q '^cpux2,' && [ "$(echo "$row" | cut -d, -f5,6)" = "2,1" ]; then
    ok "results.csv: config cpux2, 2 ranks x 1 thread"
else not_ok "results.csv: config cpux2, 2 ranks x 1 thread" "$row"; fi
# 24 images over 2 ranks, batch 4: 3 steps an epoch on each rank.
if [ "$(echo "$row" | cut -d, -f29)" = 6 ]; then ok "results.csv: 6 steps per rank in 2 epochs"
else not_ok "results.csv: 6 steps per rank in 2 epochs" "$row"; fi
if [ "$(wc -l <"$T/two/predictions-test.csv")" = 9 ] && [ "$(wc -l <"$T/two/predictions-val.csv")" = 9 ] &&
    [ "$(cut -d, -f1 "$T/two/predictions-test.csv" | sort -u | wc -l)" = 9 ]; then
    ok "predictions cover every image of both ranks once"
else not_ok "predictions cover every image of both ranks once" "$(cat "$T/two/predictions-test.csv")"; fi
if [ "$(awk -F, 'NR > 1 {print $3}' "$T/two/log.csv" | sort -u | wc -l)" = 2 ] &&
    awk -F, 'NR > 1 && $3 + 0 > 0 {n++} END {exit n != 2}' "$T/two/log.csv"; then
    ok "log.csv: one row per epoch, written once"
else not_ok "log.csv: one row per epoch, written once" "$(cat "$T/two/log.csv")"; fi
no_tmp_left "no temporaries left" "$T/two"

# The same sample order and global batch: 2 x 4 with sync-BN == 1 x 8, on
# the reference backend (the oracle: the cpu backend's batch-4 and batch-8
# primitives round differently, and AdamW magnifies that on parameters with
# near-zero gradients; test_dist_hooks checks its sync-BN gradients instead).
# Without sync-BN the ranks' BatchNorm sees 4 images, not 8: far off.
E="--epochs 1 --max-steps 3 --no-augment --no-dropout --backend ref"
check "1 process, batch 8" cnn-train $S $E --batch 8 --out "$T/one8"
check "2 ranks, batch 4, sync-BN" $MPIRUN -np 2 cnn-train $S $E --batch 4 --sync-bn --out "$T/two4"
check "2 ranks, batch 4, BatchNorm per rank" $MPIRUN -np 2 cnn-train $S $E --batch 4 --out "$T/two4b"
if out=$("$PYTHON" tests/cli/compare_weights.py "$T/one8/last.safetensors" "$T/two4/last.safetensors" 1e-2 2>&1); then
    ok "2 ranks x 4 with sync-BN = 1 x 8 after 3 steps ($out)"
else not_ok "2 ranks x 4 with sync-BN = 1 x 8 after 3 steps" "$out"; fi
if out=$("$PYTHON" tests/cli/compare_weights.py "$T/one8/last.safetensors" "$T/two4b/last.safetensors" 1e-1 2>&1); then
    not_ok "without sync-BN the weights differ (the comparison can fail)" "$out"
else ok "without sync-BN the weights differ (the comparison can fail: $out)"; fi

# One rank under mpirun is a plain run.
E="--epochs 1 --batch 8 --max-steps 2 --backend cpu"
check "plain run" cnn-train $S $E --out "$T/plain"
check "1 rank under mpirun" $MPIRUN -np 1 cnn-train $S $E --out "$T/mpi1"
same "1 rank under mpirun = a plain run, bit for bit" "$T/plain/last.safetensors" "$T/mpi1/last.safetensors"

# Bad input: every rank meets it; one line says it.
$MPIRUN -np 2 cnn-train $S --train "$T/missing.shard" --out "$T/bad" >"$T/bad.out" 2>"$T/bad.err"
rc=$?
n=$(grep -c 'missing.shard' "$T/bad.err")
if [ "$rc" != 0 ] && [ "$n" = 1 ] && [ ! -e "$T/bad/results.csv" ]; then ok "bad input: one message, non-zero exit"
else not_ok "bad input: one message, non-zero exit" "rc $rc, $n lines: $(head -c 400 "$T/bad.err")"; fi

# A rank killed mid-run: the job ends within 30 s and names it.
$MPIRUN -np 2 cnn-train $S --backend cpu --epochs 200 --batch 4 --out "$T/killed" >"$T/kill.out" 2>"$T/kill.err" &
job=$!
victim=""
for _ in $(seq 1 300); do # up to 60 s for rank 1 to start training
    if [ -s "$T/killed/log.csv" ]; then
        for p in $(pgrep -f "cnn-train.*$T/killed"); do
            tr '\0' '\n' <"/proc/$p/environ" 2>/dev/null | grep -qx 'OMPI_COMM_WORLD_RANK=1' && victim=$p
        done
        [ -n "$victim" ] && break
    fi
    sleep 0.2
done
if [ -z "$victim" ]; then
    not_ok "a killed rank ends the job" "rank 1 never started training: $(head -c 300 "$T/kill.err")"
    kill "$job" 2>/dev/null
else
    kill -9 "$victim"
    start=$(date +%s)
    ( sleep 40; kill -9 "$job" 2>/dev/null ) &
    watchdog=$!
    wait "$job"
    rc=$?
    took=$(($(date +%s) - start))
    kill "$watchdog" 2>/dev/null
    if [ "$rc" != 0 ] && [ "$took" -le 30 ] && grep -q 'rank 1' "$T/kill.err"; then
        ok "a killed rank ends the job in ${took}s, non-zero, naming rank 1"
    else not_ok "a killed rank ends the job" "rc $rc after ${took}s: $(head -c 400 "$T/kill.err")"; fi
fi
finish
