#!/bin/sh
# Runs the packed GPU test (tests/gpu/bundle.sh) on a machine with a GPU:
# unpacks it, finds cuDNN 9 and cuBLAS/cudart 13 there (pip's nvidia-* wheels
# of the python3 on PATH, else the CUDA toolkit's lib64), runs the test with
# the packed loader and libraries, and ends with "N passed, N failed, N
# skipped" as `make test-gpu` does; then, where every check passed, the
# timing lines of `test_cuda --bench` (BENCH=0: not) and PyTorch's beside
# them (bench/train_gpu.py; BENCH_TORCH=0: not); CHECKS=0 skips the checks
# and memcheck and goes straight to the bench; PROBE=1 runs only `test_cuda
# --sanitize`'s short training runs (no sanitizer), its status the script's.
# Run from the repository's root. FU_CUDA_SYNC=1 in the environment passes through (errors then name the
# op that faulted).
#   sh tests/gpu/run-bundle.sh [build/gpu-bundle.tar.xz]
set -u
tarball=${1:-build/gpu-bundle.tar.xz}
dir=$(mktemp -d)
trap 'rm -rf "$dir"' EXIT
. tests/gpu/bundle-env.sh
unpack_bundle "$tarball" "$dir" || exit 1
echo "# libraries:"
"$b/lib/ld-linux.so" --library-path "$path" --list "$b/test_cuda" | grep -E 'cud|cublas|nccl|not found' | sed 's/^/#   /'
# NCCL is loaded at run time (dlopen, lib/cuda/nccl_sync.h), from the same
# folders: without it the NCCL checks print one "skip" line.
nccl="not in these folders (the NCCL checks skip unless the loader's cache has it)"
old_ifs=$IFS
IFS=:
for d in $path; do
    if [ -e "$d/libnccl.so.2" ]; then
        nccl=$d/libnccl.so.2
        break
    fi
done
IFS=$old_ifs
echo "#   libnccl.so.2 (dlopen) => $nccl"
if [ "${PROBE:-0}" = 1 ]; then
    "$b/lib/ld-linux.so" --library-path "$path" "$b/test_cuda" --sanitize
    exit $?
fi
log=$dir/log
# CHECKS=0: straight to the bench (device.sh runs the checks and the bench apart).
if [ "${CHECKS:-1}" = 0 ]; then
    echo "# checks skipped (CHECKS=0)" >"$log"
    rc=0
else
    "$b/lib/ld-linux.so" --library-path "$path" "$b/test_cuda" >"$log" 2>&1
    rc=$?
fi
cat "$log"
p=$(grep -c '^ok ' "$log")
f=$(grep -c '^not ok ' "$log")
s=$(grep -c '^skip ' "$log")
if [ "$rc" != 0 ] && [ "$f" = 0 ]; then
    echo "not ok - test_cuda exited with status $rc"
    f=1
fi
# A short training run under compute-sanitizer's memcheck (test_cuda
# --sanitize: a few steps of a small net, fp32 and fp16, resident and host
# step): any invalid access, leak of device memory at exit or CUDA API error
# fails it. The machine's own sanitizer (bundle.sh says why).
san=$(command -v compute-sanitizer || ls "${CUDA_HOME:-/usr/local/cuda}/bin/compute-sanitizer" 2>/dev/null)
if [ "${CHECKS:-1}" = 0 ]; then
    :
elif [ "${SANITIZE:-1}" = 0 ] || [ "$p" = 0 ]; then
    echo "skip - compute-sanitizer memcheck: $([ "$p" = 0 ] && echo "no GPU check ran" || echo SANITIZE=0)"
    s=$((s + 1))
elif [ -n "$san" ]; then
    timeout "${SANITIZE_S:-240}" "$san" --tool memcheck --leak-check full --error-exitcode 3 \
        "$b/lib/ld-linux.so" --library-path "$path" "$b/test_cuda" --sanitize >"$dir/san" 2>&1
    src=$?
    echo "# sanitizer: $san, $("$san" --version 2>&1 | grep -i version | head -1)"
    tail -25 "$dir/san" | sed 's/^/# /'
    if [ "$src" = 0 ] && grep -q 'ERROR SUMMARY: 0 errors' "$dir/san"; then
        echo "ok - a short training run is clean under compute-sanitizer memcheck"
        p=$((p + 1))
    else
        echo "not ok - compute-sanitizer memcheck: exit $src (log above)"
        f=$((f + 1))
    fi
else
    echo "skip - compute-sanitizer memcheck: no compute-sanitizer on this machine"
    s=$((s + 1))
fi
echo "$p passed, $f failed, $s skipped"
[ "$f" = 0 ] || exit 1
# Speed, once the checks pass (BENCH=0: skip), then PyTorch's on the same GPU
# where python3 has a CUDA torch (BENCH_TORCH=0: skip; TORCH_ARGS: its options).
[ "${BENCH:-1}" = 0 ] && exit 0
"$b/lib/ld-linux.so" --library-path "$path" "$b/test_cuda" --bench | tee "$dir/ours"
[ "${BENCH_TORCH:-1}" = 0 ] && exit 0
if python3 -c 'import torch, sys; sys.exit(not torch.cuda.is_available())' 2>/dev/null; then
    python3 bench/train_gpu.py --ours "$dir/ours" ${TORCH_ARGS:---batches 32,256}
else
    echo "skip - PyTorch on the GPU: python3 has no CUDA torch"
fi
