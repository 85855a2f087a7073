#!/bin/sh
# Everything a session lent a GPU machine runs there, in one call (docs/gpu.md):
# what the machine is, our speed and PyTorch's beside it, `make test-gpu`
# (the packed test), then the DAG on real data: 2 model-parallel stages
# sharing the GPU with AMP, the study's recipe with AMP on ACRIMA (`make
# results/<gpu>x1_amp.csv DATA=acrima`), and a 4 x V100 request that must be
# refused. Logs and the results rows go to $OUT.
#   here:  sh tests/gpu/bundle.sh && rm -rf build/acrima && cp -rL ../shared/data/acrima build/acrima
#   there: sh tests/gpu/device.sh        (carry: build/gpu-bundle.tar.xz, build/acrima)
# Parts, in order, each with its own limit in seconds and all within TOTAL_S
# (default 490, so that the summary is written before the device call's own
# limit: give the call timeout_s 520): short runs of the default path (at
# most 90 s; where they fail, the rest runs with FU_CUDNN_API=legacy), our speed and PyTorch's beside it (BENCH_S 330; TORCH_ARGS,
# by default eager at batch 32 and 256 and torch.compile at 256 in fp16, each run at most 150 s;
# FU_BENCH_TRAINER_ONLY=1: our trainer's steps alone, unsplit and 2 stages), the checks and memcheck
# (TEST_S 90), the model-parallel run (MP_S 60, 2 epochs), the study's recipe with AMP on ACRIMA (ACRIMA_S 60, EPOCHS 2),
# the refusal. At most 8 files come back from a device call: $OUT holds
# summary.txt, probe.txt, bench.log, test-gpu.log, mp.log, acrima.log,
# results.csv (every results row made) and conv-algos.txt (the convolution
# engines the bench measured, --conv-algos).
set -u
OUT=${OUT:-/tmp/device-out}
mkdir -p "$OUT"
start=$(date +%s)
say() { echo "[$(($(date +%s) - start)) s] $*" | tee -a "$OUT/summary.txt"; }
# A part's limit: its own, or what TOTAL_S leaves (less 15 s for the summary), at least 5.
limit() {
    left=$((${TOTAL_S:-490} - ($(date +%s) - start) - 15))
    [ "$left" -lt 5 ] && left=5
    [ "$left" -lt "$1" ] && echo "$left" || echo "$1"
}

{
    nvidia-smi
    nvidia-smi --query-gpu=name,memory.total,driver_version,compute_cap --format=csv
    ldconfig -p | grep -E 'cudnn|cublas|nccl|libmpi|libdnnl' || true
    python3 -c 'import torch; print("torch", torch.__version__, "cuda", torch.version.cuda, torch.cuda.is_available())'
    command -v make mpirun nvcc compute-sanitizer
    ls -d /usr/local/cuda*/bin/compute-sanitizer /opt/nvidia/*/compute-sanitizer 2>/dev/null
    uname -r
    nproc; free -g; df -h .
} >"$OUT/probe.txt" 2>&1
say "probe: $(nvidia-smi --query-gpu=name --format=csv,noheader | paste -sd, -)"

# 0. Short training runs (test_cuda --sanitize, no sanitizer) on the default
# path, whose convolutions go through cuDNN's graph API (first run on a GPU
# by this call, if nothing has run it since 2026-12-07). Where they fail,
# everything after runs on the legacy API (FU_CUDNN_API=legacy), so that the
# bench still measures; the failure is at the end of probe.txt.
echo "# the default path (cuDNN's graph API), test_cuda --sanitize:" >>"$OUT/probe.txt"
PROBE=1 timeout "$(limit 90)" sh tests/gpu/run-bundle.sh >>"$OUT/probe.txt" 2>&1
probe=$?
if [ "$probe" = 0 ]; then
    say "default path (graph API) short runs: ok"
else
    export FU_CUDNN_API=legacy
    say "default path (graph API) short runs: exit $probe; FU_CUDNN_API=legacy from here (probe.txt)"
    grep -E '^not ok|cuda backend' "$OUT/probe.txt" | head -5 >>"$OUT/summary.txt"
fi

# 1. Our speed and PyTorch's beside it, on the same GPU (and where our step's
# GPU time goes: the "# profile" lines).
CHECKS=0 FU_BENCH_TRAINER_ONLY=${FU_BENCH_TRAINER_ONLY:-1} \
    TORCH_ARGS=${TORCH_ARGS:---batches 32,256 --steps 10 --compile-batches 256 --compile-amps fp16 --timeout 150} \
    FU_BENCH_CONV_ALGOS="$OUT/conv-algos.txt" \
    timeout "$(limit "${BENCH_S:-330}")" sh tests/gpu/run-bundle.sh >"$OUT/bench.log" 2>&1
say "bench: exit $?"
grep -E '^# bench|x$|img/s|^not ok' "$OUT/bench.log" | head -90 >>"$OUT/summary.txt"

# 2. The GPU checks and a short run under compute-sanitizer's memcheck.
BENCH=0 timeout "$(limit "${TEST_S:-90}")" sh tests/gpu/run-bundle.sh >"$OUT/test-gpu.log" 2>&1
say "test-gpu: exit $?; $(grep -E '^[0-9]+ passed' "$OUT/test-gpu.log")"
grep -E '^not ok|^skip|ERROR SUMMARY|^# sanitizer' "$OUT/test-gpu.log" | head -40 >>"$OUT/summary.txt"

# The tools, started by wrappers with the packed loader; make takes them as built.
dir=$(mktemp -d)
. tests/gpu/bundle-env.sh
unpack_bundle build/gpu-bundle.tar.xz "$dir" || exit 1
mkdir -p bin
for t in "$b"/bin/*; do
    printf '#!/bin/sh\nexec "%s/lib/ld-linux.so" --library-path "%s" "%s" "$@"\n' "$b" "$path" "$t" >"bin/${t##*/}"
    chmod +x "bin/${t##*/}"
done
old=$(for t in bin/*; do printf -- '-o %s ' "$t"; done)
gpu=$(nvidia-smi --query-gpu=name --format=csv,noheader | head -1 | grep -oiE '\b[a-z][0-9]{2,4}\b' | head -1 | tr A-Z a-z)
V="DATA=acrima ACRIMA_DIR=build/acrima WORK=build/dev-work RESULTS=build/dev-results PLOTS=build/dev-plots"
if ! command -v make >/dev/null; then
    say "no make here: the DAG parts are skipped"
    exit 0
fi
# The rows made, the columns that matter here.
rows() {
    set -- build/dev-results/*.csv
    [ -e "$1" ] || return 0
    python3 -c '
import csv, sys
keys = "config amp model_parallel micro_batches epochs train_seconds images_per_second data_wait_seconds test_auc peak_gpu_mb stage_busy_seconds".split()
print(" ".join(keys))
for f in sys.argv[1:]:
    for r in csv.DictReader(open(f)):
        print(" ".join(r.get(k, "?") or "-" for k in keys))
' "$@" 2>&1
}

# 3. Two stages sharing the GPU, with AMP (2 epochs).
timeout "$(limit "${MP_S:-60}")" make $old $V EPOCHS=2 "build/dev-results/${gpu}x1_amp_mp.csv" >"$OUT/mp.log" 2>&1
say "results/${gpu}x1_amp_mp.csv (2 epochs): exit $?"

# 4. The study's recipe with AMP on ACRIMA on this GPU; then its checkpoint
# on the CPU: cnn-predict with the cpu backend on the test split must give
# the GPU run's test predictions (issue 5: checkpoints move between devices).
timeout "$(limit "${ACRIMA_S:-60}")" make $old $V EPOCHS="${EPOCHS:-2}" "build/dev-results/${gpu}x1_amp.csv" \
    >"$OUT/acrima.log" 2>&1
say "results/${gpu}x1_amp.csv (ACRIMA, ${EPOCHS:-2} epochs): exit $?"
run=build/dev-work/acrima/runs/${gpu}x1_amp
if [ -s "$run/model.safetensors" ]; then
    bin/cnn-predict --backend cpu -m "$run/model.safetensors" -o "$dir/cpu-predictions-test.csv" \
        build/dev-work/acrima/ready/test.shard 2>>"$OUT/acrima.log"
    gpu_auc=$(bin/metrics-report "$run/predictions-test.csv" 2>/dev/null | awk '$1 == "auc" {print $2}')
    cpu_auc=$(bin/metrics-report "$dir/cpu-predictions-test.csv" 2>/dev/null | awk '$1 == "auc" {print $2}')
    diff=$(paste -d, "$run/predictions-test.csv" "$dir/cpu-predictions-test.csv" |
        awk -F, 'NR > 1 {d = $3 - $7; if (d < 0) d = -d; if (d > m) m = d} END {printf "%.2g", m}')
    say "the GPU checkpoint on the CPU: test AUC ${cpu_auc:-?} (GPU run ${gpu_auc:-?}), largest |p_glaucoma difference| $diff"
fi
for f in build/dev-results/*.csv; do [ -e "$f" ] && { echo "# $f"; cat "$f"; }; done >"$OUT/results.csv"
rows >>"$OUT/summary.txt"
grep -h 'cnn-train:' "$OUT/acrima.log" "$OUT/mp.log" | tail -12 >>"$OUT/summary.txt"

# 5. Asking for GPUs that are not there: one line, no run.
make $old $V "build/dev-results/v100x4_amp.csv" >"$dir/refuse.log" 2>&1
say "v100x4_amp: exit $? ($(tail -1 "$dir/refuse.log"))"
