# The experiment targets (pipeline.mk): results names parsed into the runs
# they ask for (dry runs: no training here), GPU names refused with one line
# before any data are made (no GPU, and a fake nvidia-smi with an H100), the
# study's skip lines; then tables, the summary, the scaling model and the
# charts from hand-made results rows over a tiny real data DAG, and their
# reruns when a results file comes or goes.
. tests/cli/lib.sh
unset MAKEFLAGS MFLAGS MAKELEVEL
V="DATA=synth WORK=$T/work RESULTS=$T/results PLOTS=$T/plots SYNTH_COUNT=24 SYNTH_SIZE=128 SIZE=64 EPOCHS=1 BATCH=8"
# mk ARGS...: make in the checkout on the test's folders
mk() { make -s -C "$FU_ROOT" --no-print-directory $V "$@"; }
# joined: recipe lines continued with a backslash, as one line
joined() { sed -e :a -e '/\\$/N; s/\\\n *//; ta'; }
R=$T/results

# ---- names -> runs (make -n: the commands, nothing run) ------------------------------
cmd() { mk -n "$R/$1.csv" "$@" 2>&1 | joined | grep 'bin/cnn-train' | sed "s|$T|T|g"; }
got=$(cmd cpux2)
case "$got" in "mpirun "*"-np 2 bin/cnn-train "*" --threads 1 "*"--config cpux2 --out T/work/synth/runs/cpux2") ok "cpux2: 2 ranks x 1 thread under mpirun" ;;
*) not_ok "cpux2: 2 ranks x 1 thread under mpirun" "$got" ;; esac
got=$(cmd cpux4t2)
case "$got" in "mpirun "*"-np 4 bin/cnn-train "*" --threads 2 "*"--config cpux4t2 "*) ok "cpux4t2: 4 ranks x 2 threads" ;;
*) not_ok "cpux4t2: 4 ranks x 2 threads" "$got" ;; esac
got=$(cmd cpu1t2)
case "$got" in "bin/cnn-train "*" --threads 2 "*"--config cpu1t2 "*) ok "cpu1t2: one process, 2 threads" ;;
*) not_ok "cpu1t2: one process, 2 threads" "$got" ;; esac
got=$(cmd cpux2_bf16)
case "$got" in *"-np 2 bin/cnn-train "*" --amp bf16 --config cpux2_bf16 "*) ok "cpux2_bf16: --amp bf16" ;;
*) not_ok "cpux2_bf16: --amp bf16" "$got" ;; esac
got=$(cmd cpux2_mp)
case "$got" in *"-np 2 bin/cnn-train "*" --model-parallel 2 --micro-batches 4 --config cpux2_mp "*) ok "cpux2_mp: 2 ranks of 2 stages x 4 micro-batches" ;;
*) not_ok "cpux2_mp: 2 ranks of 2 stages x 4 micro-batches" "$got" ;; esac
got=$(cmd cpu1t2_bf16_mp MP_STAGES=3 MICRO_BATCHES=2)
case "$got" in "bin/cnn-train "*" --threads 2 --amp bf16 --model-parallel 3 --micro-batches 2 --config cpu1t2_bf16_mp "*) ok "cpu1t2_bf16_mp, MP_STAGES=3 MICRO_BATCHES=2" ;;
*) not_ok "cpu1t2_bf16_mp, MP_STAGES=3 MICRO_BATCHES=2" "$got" ;; esac
got=$(cmd cpux2 MPI_CMD='srun -n')
case "$got" in "srun -n 2 bin/cnn-train "*) ok "MPI_CMD overrides the launcher" ;; *) not_ok "MPI_CMD overrides the launcher" "$got" ;; esac
if [ "$(id -u)" = 0 ]; then
    case "$(cmd cpux2)" in *"--allow-run-as-root"*) ok "as root: mpirun --allow-run-as-root" ;;
    *) not_ok "as root: mpirun --allow-run-as-root" "$(cmd cpux2)" ;; esac
fi

# refused NAME PATTERN: one line, exit 2, no results file, no data made
refused() {
    mk "$R/$1.csv" >"$T/.out" 2>"$T/.err"
    rc=$?
    if [ $rc = 0 ] || [ "$(wc -l <"$T/.err")" != 1 ] || ! grep -Eq "$2" "$T/.err"; then
        not_ok "$1 refused" "exit $rc: $(head -c 300 "$T/.err")"
    elif [ -e "$R/$1.csv" ] || [ -e "$T/work/synth/raw.shard" ]; then not_ok "$1 refused" "left a file or made data"
    else ok "$1 refused: $(sed 's/.*\*\*\* //' "$T/.err" | head -c 90)"; fi
}
for bad in cpux0 cpu2 cpuxtt2 cpux2t cpux2_amp foo x4 v100x0; do refused "$bad" "$bad.csv: not a results name: cpu1, cpu1tT"; done

# GPUs: none here (PATH without nvidia-smi), then a fake one with an H100.
mkdir -p "$T/nogpu" "$T/h100"
if command -v nvidia-smi >/dev/null; then
    echo "skip - GPU names on a machine without NVIDIA GPUs: this one has $(nvidia-smi -L | wc -l)"
else
    refused v100x4_amp 'results/v100x4_amp.csv: needs 4 x V100; this machine has no NVIDIA GPU\.  Stop\.$'
    refused h100x2_amp_mp 'h100x2_amp_mp.csv: needs 2 x H100; this machine has no NVIDIA GPU'
fi
printf '#!/bin/sh\necho "NVIDIA H100 80GB HBM3"\n' >"$T/h100/nvidia-smi"
chmod +x "$T/h100/nvidia-smi"
PATH="$T/h100:$PATH"
refused v100x4_amp 'v100x4_amp.csv: needs 4 x V100; this machine has 1 x NVIDIA H100 80GB HBM3\.  Stop\.$'
refused h100x2_amp_mp 'h100x2_amp_mp.csv: needs 2 x H100; this machine has 1 x NVIDIA H100 80GB HBM3'
got=$(cmd h100x1_amp_mp)
case "$got" in "bin/cnn-train "*" --device cuda "*" --amp fp16 --model-parallel 2 --micro-batches 4 --allow-shared-gpu --config h100x1_amp_mp "*)
    ok "h100x1_amp_mp: 2 stages sharing the GPU" ;;
*) not_ok "h100x1_amp_mp: 2 stages sharing the GPU" "$got" ;; esac
got=$(cmd h100x1_amp)
case "$got" in "bin/cnn-train "*" --device cuda "*" --amp fp16 --config h100x1_amp "*) ok "h100x1_amp there: the cuda backend, fp16 AMP" ;;
*) not_ok "h100x1_amp there: the cuda backend, fp16 AMP" "$got" ;; esac
PATH=${PATH#"$T/h100:"}
printf '#!/bin/sh\nfor i in 0 1 2 3; do echo "NVIDIA H100 80GB HBM3"; done\n' >"$T/h100/nvidia-smi"
PATH="$T/h100:$PATH"
got=$(cmd h100x4_amp_mp)
case "$got" in "mpirun "*"-np 2 bin/cnn-train "*" --amp fp16 --model-parallel 2 --micro-batches 4 --config h100x4_amp_mp "*)
    ok "h100x4_amp_mp on 4 GPUs: 2 ranks of 2 stages" ;;
*) not_ok "h100x4_amp_mp on 4 GPUs: 2 ranks of 2 stages" "$got" ;; esac
refused h100x3_mp 'h100x3_mp.csv: 3 GPUs do not make ranks of MP_STAGES=2 stages'
PATH=${PATH#"$T/h100:"}

# The study's grid on a 2-core machine: what it runs, what it skips and why.
mk -n study STUDY_CPU="cpu1 cpux2 cpux4t2 cpux8" STUDY_GPU="v100x4_amp" CORES=2 2>&1 | joined >"$T/study"
if grep -q "cpux4t2: skipped: needs 4 x 2 cores, this machine has 2 (CORES=N to run it anyway)" "$T/study" &&
    grep -q "cpux8: skipped: needs 8 x 1 cores" "$T/study" && grep -q "v100x4_amp: needs 4 x V100" "$T/study" &&
    grep -q -- "-np 2 bin/cnn-train .*--config cpux2 " "$T/study" && grep -q "^bin/cnn-train .*--config cpu1 " "$T/study" &&
    ! grep -q -- "--config cpux8" "$T/study"; then ok "study: runs what fits, one line per skipped config"
else not_ok "study: runs what fits, one line per skipped config" "$(head -c 600 "$T/study")"; fi

# ---- tables, summary, model, charts from hand-made rows --------------------------------
check "tiny data DAG" mk data
mkdir -p "$R"
H=config,dataset,device,device_name,ranks,threads_per_rank,amp,model_parallel,batch_per_rank,epochs,image_size,train_images,train_seconds,images_per_second,data_wait_seconds,final_train_loss,val_acc,val_auc,test_acc,test_auc,test_sensitivity,test_specificity,test_f1,peak_rss_mb,peak_gpu_mb,git_rev,started_at,steps,allreduce_seconds,allreduce_exposed_seconds,grad_mb,compute_seconds
row() { # config device ranks threads seconds acc auc steps allreduce exposed compute
    echo "$1,synth,$2,x,$3,$4,fp32,0,8,1,64,48,$5,1,0.5,0.6,0.7,0.8,$6,$7,0.5,0.5,0.5,100,0,abc,2026,$8,$9,${10},90,${11}"
}
# Files of today's cnn-train: model parallelism's columns too.
H2=$H,micro_batches,stage_busy_seconds,gpus_per_rank
mrow() { # config device ranks threads amp model_parallel gpus_per_rank seconds steps allreduce exposed compute busy
    echo "$1,synth,$2,x,$3,$4,$5,$6,8,1,64,48,$8,1,0.5,0.6,0.7,0.8,0.7,0.8,0.5,0.5,0.5,100,900,abc,2026,$9,${10},${11},90,${12},4,${13},$7"
}
# The CPU rows in older files (no model-parallel columns). cpu1: 6 steps of
# 99.5 / 6 s compute, 0.5 s data wait in all. cpux2: 3 steps, 2 s of allreduce
# a step, 0.5 s of it exposed: 3 x (99.5 / 6 + 0.5 / 6 + 0.5) = 51.5 s, as the
# model has it. cpux2t2: 4 workers. cpux2_mp: 2 ranks of 2 stages sharing
# their thread, its own series.
{ echo "$H"; row cpu1 cpu 1 1 100 0.6 0.7 6 0 0 99.5; } >"$R/cpu1.csv"
{ echo "$H"; row cpux2 cpu 2 1 51.5 0.6 0.7 3 6 1.5 49.5; } >"$R/cpux2.csv"
{ echo "$H"; row cpux2t2 cpu 2 2 40 0.65 0.75 3 6 1.5 38; } >"$R/cpux2t2.csv"
{ echo "$H2"; mrow cpux2_mp cpu 2 1 fp32 2 0 60 3 6 1.5 57 "27.000;26.500"; } >"$R/cpux2_mp.csv"
# The study's GPU series: DDP and DDP+AMP on 1 and 2 GPUs, DDP+AMP+MP on 2
# (1 rank of 2 stages, a GPU each) and 4 (2 such ranks): workers are GPUs.
{ echo "$H2"; mrow v100x1 cuda 1 4 fp32 1 1 10 6 0 0 9.5 ""; } >"$R/v100x1.csv"
{ echo "$H2"; mrow v100x2 cuda 2 4 fp32 1 1 5.5 3 0.6 0.3 4.7 ""; } >"$R/v100x2.csv"
{ echo "$H2"; mrow v100x1_amp cuda 1 4 fp16 1 1 5 6 0 0 4.5 ""; } >"$R/v100x1_amp.csv"
{ echo "$H2"; mrow v100x2_amp cuda 2 4 fp16 1 1 2.5 3 0.6 0.3 1.7 ""; } >"$R/v100x2_amp.csv"
{ echo "$H2"; mrow v100x2_amp_mp cuda 1 4 fp16 2 2 4 6 0 0 3.5 "3.100;2.900"; } >"$R/v100x2_amp_mp.csv"
{ echo "$H2"; mrow v100x4_amp_mp cuda 2 4 fp16 2 2 2 3 0.6 0.3 1.2 "1.600;1.500"; } >"$R/v100x4_amp_mp.csv"
# A run folder for cpu1's curves and ROC.
mkdir -p "$T/work/synth/runs/cpu1"
printf 'epoch,lr,train_loss,train_acc,val_loss,val_acc,val_auc,epoch_seconds,images_per_second,data_wait_seconds\n1,0.001,0.7,0.5,0.69,0.5,0.6,50,1,0.2\n2,0.0005,0.6,0.6,0.65,0.6,0.7,50,1,0.3\n' \
    >"$T/work/synth/runs/cpu1/log.csv"
printf 'id,label,p_glaucoma,prediction\na,1,0.9,1\nb,0,0.2,0\nc,1,0.4,0\nd,0,0.6,1\n' >"$T/work/synth/runs/cpu1/predictions-test.csv"

check "make tables charts" mk tables charts
cat >"$T/want-cpu.csv" <<'CSV'
config,device,workers,runs,train_seconds,speedup,efficiency,test_acc,test_auc,baseline,series
cpu1,cpu,1,1,100.000,1.0000,1.0000,0.6000,0.7000,cpu1,CPU
cpux2,cpu,2,1,51.500,1.9417,0.9709,0.6000,0.7000,cpu1,CPU
cpux2t2,cpu,4,1,40.000,2.5000,0.6250,0.6500,0.7500,cpu1,CPU
cpux2_mp,cpu,2,1,60.000,1.6667,0.8333,0.7000,0.8000,cpu1,CPU+MP
CSV
same "cpu-scaling.csv: golden" "$R/cpu-scaling.csv" "$T/want-cpu.csv"
# By series, each by workers; v100x2_amp_mp: 1 rank x 2 GPUs = 2 workers.
cat >"$T/want-gpu.csv" <<'CSV'
config,device,workers,runs,train_seconds,speedup,efficiency,test_acc,test_auc,baseline,series
cpu1,cpu,1,1,100.000,1.0000,1.0000,0.6000,0.7000,cpu1,CPU
v100x1,cuda,1,1,10.000,10.0000,10.0000,0.7000,0.8000,cpu1,DDP
v100x2,cuda,2,1,5.500,18.1818,9.0909,0.7000,0.8000,cpu1,DDP
v100x1_amp,cuda,1,1,5.000,20.0000,20.0000,0.7000,0.8000,cpu1,DDP+AMP
v100x2_amp,cuda,2,1,2.500,40.0000,20.0000,0.7000,0.8000,cpu1,DDP+AMP
v100x2_amp_mp,cuda,2,1,4.000,25.0000,12.5000,0.7000,0.8000,cpu1,DDP+AMP+MP
v100x4_amp_mp,cuda,4,1,2.000,50.0000,12.5000,0.7000,0.8000,cpu1,DDP+AMP+MP
CSV
same "gpu-scaling.csv: golden: DDP, DDP+AMP, DDP+AMP+MP against cpu1" "$R/gpu-scaling.csv" "$T/want-gpu.csv"
# The model at N = 1 and 2 gives back the measured times; 32 rows for cpux*.
m1=$(grep '^cpux\*,1,' "$R/scaling-model.csv" | cut -d, -f7,10)
m2=$(grep '^cpux\*,2,' "$R/scaling-model.csv" | cut -d, -f6,7,10)
[ "$m1" = "100.000,100.000" ] && [ "$m2" = "0.5000,51.500,51.500" ] && [ "$(grep -c '^cpux\*,' "$R/scaling-model.csv")" = 32 ] &&
    ok "scaling-model.csv: N = 1, 2 as measured, N up to 32" || not_ok "scaling-model.csv" "$m1 / $m2"
# Model-parallel ranks of 2 GPUs: a family of their own, 2 GPUs a rank.
mp=$(grep '^v100x\*_amp_mp (2 GPUs/rank),' "$R/scaling-model.csv" | cut -d, -f2,3,7,10,13 | head -2 | tr '\n' ' ')
[ "$mp" = "1,2,4.000,4.000,DDP+AMP+MP 2,4,2.300,2.000,DDP+AMP+MP " ] &&
    ok "scaling-model.csv: v100x*_amp_mp: workers = ranks x 2 GPUs, its series" || not_ok "scaling-model.csv: MP family" "$mp"
if grep -q '^Baseline: \*\*cpu1\*\* (1 worker, 100.0 s)' "$R/summary.md" && grep -q '^## CPU scaling' "$R/summary.md" &&
    grep -q '^| cpux2t2 | CPU | 4 | 1 | 40.0 | 2.500 | 0.625 |' "$R/summary.md" &&
    grep -q '^| v100x2_amp_mp | DDP+AMP+MP | 2 | 1 | 4.0 | 25.000 | 12.500 |' "$R/summary.md" &&
    grep -q '^| v100x2_amp_mp | DDP+AMP+MP | 1 | 2 | 4 | 2 | 4.0 | 3.100, 2.900 |' "$R/summary.md" &&
    grep -q '^| cpux2_mp | CPU+MP | 2 | 2 | 4 | - | 60.0 | 27.000, 26.500 |' "$R/summary.md" &&
    grep -q 'The data are synthetic' "$R/summary.md" && grep -q '^- cpux\*: fitted to cpu1' "$R/summary.md" &&
    grep -q '^- cpux\*t2: not fitted: no 1-rank run' "$R/summary.md"; then ok "summary.md: runs, scaling tables, baseline, model"
else not_ok "summary.md: runs, scaling tables, baseline, model" "$(head -c 600 "$R/summary.md")"; fi
charts_ok=yes
for c in time speedup efficiency accuracy curves roc; do
    [ "$(head -c 4 "$T/plots/$c.png" | od -An -c | tr -d ' ')" = '211PNG' ] && [ "$(stat -c %s "$T/plots/$c.png")" -gt 5000 ] &&
        grep -q '<svg' "$T/plots/$c.svg" || { charts_ok="$c"; break; }
done
[ "$charts_ok" = yes ] && ok "charts: 6 PNG and 6 SVG files" || not_ok "charts: 6 PNG and 6 SVG files" "$charts_ok: $(ls -la "$T/plots")"
# One line per series, its model dashed in its colour (the SVG's legend).
legend=$(grep -o "<title>[^<]*</title>" "$T/plots/speedup.svg" | sed 's/<[^>]*>//g' | grep -E 'measured|model' | awk '!seen[$0]++' | tr '\n' ';')
[ "$legend" = "CPU, measured;CPU+MP, measured;DDP, measured;DDP+AMP, measured;DDP+AMP+MP, measured;CPU, scaling model;DDP, scaling model;DDP+AMP, scaling model;DDP+AMP+MP, scaling model;" ] &&
    ok "speedup chart: the series CPU, CPU+MP, DDP, DDP+AMP, DDP+AMP+MP" || not_ok "speedup chart: the series" "$legend"
# Some series or none: no GPU rows at all, then only DDP+AMP+MP (no model).
for set in "cpu1 cpux2" "cpu1 v100x2_amp_mp"; do
    rm -rf "$T/some" "$T/some-plots"
    mkdir -p "$T/some"
    for r in $set; do cp "$R/$r.csv" "$T/some/"; done
    mk tables charts RESULTS="$T/some" PLOTS="$T/some-plots" >"$T/.out" 2>"$T/.err"
    rc=$? got=
    for c in time speedup efficiency accuracy; do
        [ -s "$T/some-plots/$c.png" ] && grep -q '<svg' "$T/some-plots/$c.svg" || got="$got $c"
    done
    [ $rc = 0 ] && [ -z "$got" ] && ! grep -qi 'warning' "$T/.err" && ok "charts of $set: drawn, no warnings" ||
        not_ok "charts of $set" "exit $rc, missing:$got: $(head -c 300 "$T/.err")"
done
[ -s "$T/work/synth/runs/cpu1/roc-test.csv" ] && ok "the run's ROC points made for the chart" || not_ok "ROC points" "missing"
no_tmp_left "no temporaries left in plots" "$T/plots"
[ -z "$(mk -n tables charts)" ] && ok "make -n tables charts afterwards prints nothing" ||
    not_ok "make -n tables charts afterwards" "$(mk -n tables charts | head -3)"

# A results file comes: the tables follow, the charts of the runs' curves too; one goes: the same.
{ echo "$H"; row cpux4 cpu 4 1 35 0.6 0.7 2 4 1 33; } >"$R/cpux4.csv"
got=$(mk -n tables charts | grep -o 'metrics-report --quiet --[a-z]*' | sort | uniq -c | awk '{print $4 "=" $1}' | tr '\n' ' ')
[ "$got" = "--predict=1 --summary=1 --table=2 " ] && ok "a new results file reruns the tables" ||
    not_ok "a new results file reruns the tables" "$got"
mk tables >/dev/null 2>&1
grep -q '^cpux4,cpu,4,1,35.000' "$R/cpu-scaling.csv" && ok "... and the table has it" || not_ok "... and the table has it" "$(cat "$R/cpu-scaling.csv")"
rm "$R/cpux4.csv"
mk tables >/dev/null 2>&1
grep -q '^cpux4,' "$R/cpu-scaling.csv" && not_ok "a removed results file leaves the table" "$(cat "$R/cpu-scaling.csv")" ||
    ok "a removed results file leaves the table"

# A baseline that is not there is run first: make -n shows the training.
rm "$R/cpu1.csv"
mk -n "$R/cpu-scaling.csv" | joined | grep -q 'bin/cnn-train .*--config cpu1 ' && ok "a missing baseline is trained first" ||
    not_ok "a missing baseline is trained first" "$(mk -n "$R/cpu-scaling.csv" | head -3)"
finish
