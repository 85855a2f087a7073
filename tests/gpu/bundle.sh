#!/bin/sh
# Packs the GPU test and the tools for a machine that has a GPU, the CUDA 13
# runtime and cuDNN 9 but not this project's build dependencies (oneDNN,
# libpng, OpenMPI, ...), such as the lent device machines: build/tests/gpu/
# test_cuda and bin/* with every shared library they load except the CUDA
# ones (cuDNN, cuBLAS, the runtime, NCCL: found there) and the driver, and
# this machine's dynamic loader (so that its C library comes along), into
# build/gpu-bundle.tar.xz. There, tests/gpu/run-bundle.sh runs the test and
# tests/gpu/device.sh everything (the tools get wrappers in bin/ that start
# them with the packed loader). NCCL (200 MB) is not packed: the programs
# load it at run time (dlopen, lib/cuda/nccl_sync.h) from the machine's own
# installation (pip's nvidia-nccl wheel or the CUDA toolkit's folders).
# compute-sanitizer is the machine's own: the one from NVIDIA's wheel, packed
# here until 2026-12, could not start the run on the H200 ("Target
# application terminated before first instrumented API call"), the image's
# 2025.3.1 could (bench/logs/h200-2026-12-04/run2-test-gpu.log).
set -eu
cd "$(dirname "$0")/../.."
make -s USE_CUDA=1 all build/tests/gpu/test_cuda
out=build/gpu-bundle
rm -rf "$out" build/gpu-bundle.tar.xz
mkdir -p "$out/lib" "$out/bin"
cp build/tests/gpu/test_cuda "$out/"
cp bin/* "$out/bin/"
for exe in build/tests/gpu/test_cuda bin/*; do
    ldd "$exe" | awk '$2 == "=>" && $3 ~ /^\// {print $3}'
done | sort -u | while read -r lib; do
    case "${lib##*/}" in libcudnn* | libcublas* | libcudart* | libcuda.so* | libnvidia* | libnccl*) continue ;; esac
    cp -L "$lib" "$out/lib/"
done
loader=$(ldd build/tests/gpu/test_cuda | awk '$1 ~ /ld-linux/ {print $1}')
cp -L "$loader" "$out/lib/ld-linux.so"
tar -C build -cJf build/gpu-bundle.tar.xz gpu-bundle
rm -rf "$out"
echo "build/gpu-bundle.tar.xz: $(du -k build/gpu-bundle.tar.xz | cut -f1) KiB"
