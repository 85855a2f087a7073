# The DAG: a full run, nothing left to do after it, and a changed stage
# parameter reruns exactly that stage and the ones after it; the serial
# baseline's results row.
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
    sed -n 2p "$T/results/cpu1.csv" | grep -q '^cpu1,synth,cpu,.*,1,1,fp32,0,8,1,64,'; then ok "results row says what ran"
else not_ok "results row says what ran" "$(cat "$T/results/cpu1.csv")"; fi
[ -z "$(r -n)" ] && ok "make -n after the run prints nothing" || not_ok "make -n after the run" "$(r -n | head -3)"
got=$(r -n EPOCHS=2 | grep -o 'bin/[a-z-]*' | sort -u | tr '\n' ' ')
[ "$got" = "bin/cnn-train " ] && ok "EPOCHS reruns training only" || not_ok "EPOCHS reruns training only" "$got"
finish
