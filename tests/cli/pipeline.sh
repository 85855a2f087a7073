# The DAG: a full run, nothing left to do after it, and a changed stage
# parameter reruns exactly that stage and the ones after it; the serial
# baseline's results row and the tables over it; a 2-rank MPI run and the
# tables and scaling model over both.
. tests/cli/lib.sh
unset MAKEFLAGS MFLAGS MAKELEVEL
m() { make -s -C "$FU_ROOT" --no-print-directory data DATA=synth WORK="$T/work" SYNTH_COUNT=24 SYNTH_SIZE=128 SIZE=64 "$@"; }
r() { make -s -C "$FU_ROOT" --no-print-directory "$T/results/cpu1.csv" RESULTS="$T/results" DATA=synth WORK="$T/work" \
    SYNTH_COUNT=24 SYNTH_SIZE=128 SIZE=64 EPOCHS=1 BATCH=8 "$@"; }
check "full run on synthetic data" m
for s in train val test; do
    [ -s "$T/work/synth/ready/$s.shard" ] && ok "ready/$s.shard made" || not_ok "ready/$s.shard made" "missing"
done
[ -z "$(m -n)" ] && ok "make -n after a full run prints nothing" || not_ok "make -n after a full run" "$(m -n | head -3)"

stages() { m -n "$@" | grep -o 'bin/[a-z-]*' | sort | uniq -c | awk '{print $2 "=" $1}' | tr '\n' ' '; }
got=$(stages CLIP=3.0)
[ "$got" = "bin/fundus-augment=1 bin/fundus-clahe=3 " ] && ok "CLIP reruns CLAHE and augment only" || not_ok "CLIP reruns CLAHE and augment only" "$got"
got=$(stages SIZE=72)
[ "$got" = "bin/fundus-augment=1 bin/fundus-clahe=3 bin/fundus-resize=3 " ] && ok "SIZE reruns resize onwards" || not_ok "SIZE reruns resize onwards" "$got"
got=$(stages AUGMENT=0=3,1=3)
[ "$got" = "bin/fundus-augment=1 " ] && ok "AUGMENT reruns augment only" || not_ok "AUGMENT reruns augment only" "$got"
m CLIP=3.0 >/dev/null
[ -z "$(m -n CLIP=3.0)" ] && ok "after rerunning with CLIP=3.0 nothing is left" || not_ok "rerun settles" "$(m -n CLIP=3.0 | head -3)"

check "results/cpu1.csv: the serial baseline" r
if [ "$(wc -l <"$T/results/cpu1.csv")" = 2 ] && head -1 "$T/results/cpu1.csv" | grep -q '^config,dataset,device,' &&
    sed -n 2p "$T/results/cpu1.csv" | grep -q '^cpu1,synth,cpu,.*,1,1,fp32,1,8,1,64,'; then ok "results row says what ran"
else not_ok "results row says what ran" "$(cat "$T/results/cpu1.csv")"; fi
[ -z "$(r -n)" ] && ok "make -n after the run prints nothing" || not_ok "make -n after the run" "$(r -n | head -3)"
got=$(r -n EPOCHS=2 | grep -o 'bin/[a-z-]*' | sort -u | tr '\n' ' ')
[ "$got" = "bin/cnn-train " ] && ok "EPOCHS reruns training only" || not_ok "EPOCHS reruns training only" "$got"

# The tables over the real run; a changed EPOCHS reruns the training and the
# tables, no data stage.
t() { r tables PLOTS="$T/plots" "$@"; }
check "tables over the baseline's run" t
grep -q '^cpu1,cpu,1,1,' "$T/results/cpu-scaling.csv" && ok "cpu-scaling.csv has the baseline" ||
    not_ok "cpu-scaling.csv has the baseline" "$(cat "$T/results/cpu-scaling.csv")"
[ -z "$(t -n)" ] && ok "make -n tables afterwards prints nothing" || not_ok "make -n tables afterwards" "$(t -n | head -3)"
got=$(t -n EPOCHS=2 | grep -o 'bin/[a-z-]*' | sort -u | tr '\n' ' ')
[ "$got" = "bin/cnn-train bin/metrics-report " ] && ok "EPOCHS reruns training and the tables only" ||
    not_ok "EPOCHS reruns training and the tables only" "$got"

# A 2-rank run for real (MPI): its row, the tables and the model over both runs.
x2() { make -s -C "$FU_ROOT" --no-print-directory "$T/results/cpux2.csv" RESULTS="$T/results" DATA=synth WORK="$T/work" \
    SYNTH_COUNT=24 SYNTH_SIZE=128 SIZE=64 EPOCHS=1 BATCH=8 "$@"; }
check "results/cpux2.csv: 2 MPI ranks" x2
if sed -n 2p "$T/results/cpux2.csv" | grep -q '^cpux2,synth,cpu,.*,2,1,fp32,1,8,1,64,' &&
    head -1 "$T/results/cpux2.csv" | grep -q ',steps,.*allreduce_seconds,allreduce_exposed_seconds,'; then
    ok "cpux2 row: 2 ranks x 1 thread, the allreduce columns"
else not_ok "cpux2 row: 2 ranks x 1 thread, the allreduce columns" "$(cat "$T/results/cpux2.csv")"; fi
[ -s "$T/work/synth/runs/cpux2/log.csv" ] && [ -s "$T/work/synth/runs/cpux2/predictions-test.csv" ] &&
    ok "cpux2: the run's folder" || not_ok "cpux2: the run's folder" "$(ls "$T/work/synth/runs/cpux2")"
[ -z "$(x2 -n)" ] && ok "make -n after the 2-rank run prints nothing" || not_ok "make -n after the 2-rank run" "$(x2 -n | head -3)"
got=$(x2 -n EPOCHS=2 | grep -o 'mpirun\|bin/[a-z-]*' | sort -u | tr '\n' ' ')
[ "$got" = "bin/cnn-train mpirun " ] && ok "EPOCHS reruns the 2-rank training only" || not_ok "EPOCHS reruns the 2-rank training only" "$got"
check "tables over cpu1 and cpux2" t
grep -q '^cpux2,cpu,2,1,' "$T/results/cpu-scaling.csv" && grep -q '^cpux\*,32,32,' "$T/results/scaling-model.csv" &&
    grep -q '^- cpux\*: fitted to cpu1' "$T/results/summary.md" && ok "tables and the model over both runs" ||
    not_ok "tables and the model over both runs" "$(cat "$T/results/cpu-scaling.csv")"
finish
