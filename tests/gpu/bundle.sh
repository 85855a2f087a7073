#!/bin/sh
# Packs the GPU test for a machine that has a GPU, the CUDA 13 runtime and
# cuDNN 9 but not this project's build dependencies (oneDNN, libpng, OpenMPI,
# ...), such as the lent device machines: build/tests/gpu/test_cuda with every
# shared library it loads except the CUDA ones and the driver, and this
# machine's dynamic loader (so that its C library comes along), into
# build/gpu-bundle.tar.xz. Run it there with tests/gpu/run-bundle.sh. NCCL
# (200 MB) is not packed: the test loads it at run time from the machine's
# own installation (pip's nvidia-nccl wheel or the CUDA toolkit's folders).
set -eu
cd "$(dirname "$0")/../.."
make -s USE_CUDA=1 build/tests/gpu/test_cuda
out=build/gpu-bundle
rm -rf "$out" build/gpu-bundle.tar.xz
mkdir -p "$out/lib"
cp build/tests/gpu/test_cuda "$out/"
ldd build/tests/gpu/test_cuda | awk '$2 == "=>" && $3 ~ /^\// {print $3}' | while read -r lib; do
    case "${lib##*/}" in libcudnn* | libcublas* | libcudart* | libcuda.so* | libnvidia*) continue ;; esac
    cp -L "$lib" "$out/lib/"
done
loader=$(ldd build/tests/gpu/test_cuda | awk '$1 ~ /ld-linux/ {print $1}')
cp -L "$loader" "$out/lib/ld-linux.so"
tar -C build -cJf build/gpu-bundle.tar.xz gpu-bundle
rm -rf "$out"
echo "build/gpu-bundle.tar.xz: $(du -k build/gpu-bundle.tar.xz | cut -f1) KiB"
