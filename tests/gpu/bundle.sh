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
# compute-sanitizer (a short run must be clean under memcheck), from NVIDIA's
# wheel of this toolkit's release, fetched once into build/ when pip reaches
# PyPI; without it, run-bundle.sh uses the GPU machine's own, if any.
release=$("${NVCC:-nvcc}" --version 2>/dev/null | sed -n 's/.*release \([0-9]*\.[0-9]*\).*/\1/p')
san=build/compute-sanitizer
if [ ! -x "$san/compute-sanitizer" ] && [ -n "$release" ]; then
    wheels=build/wheels
    if pip download -q --no-deps -d "$wheels" "nvidia-cuda-sanitizer-api==$release.*" 2>/dev/null; then
        rm -rf "$san.tmp" && mkdir -p "$san.tmp"
        ${PYTHON:-/usr/bin/python3} -m zipfile -e "$(ls "$wheels"/nvidia_cuda_sanitizer_api-"$release".*.whl | tail -1)" "$san.tmp"
        # One folder, as the toolkit lays it out (the wheels put the binary
        # in compute-sanitizer/ or in bin/ beside a lib/, by release).
        exe=$(find "$san.tmp" -type f -name compute-sanitizer | head -1)
        rm -rf "$san" && mkdir -p "$san"
        for part in "${exe%/*}" "${exe%/*/*}/lib"; do
            [ -d "$part" ] && find "$part" -maxdepth 1 -type f -exec cp {} "$san/" \;
        done
        [ -d "${exe%/*}/x86" ] && cp -r "${exe%/*}/x86" "$san/"
        rm -rf "$san.tmp"
        chmod +x "$san/compute-sanitizer" "$san"/TreeLauncher* 2>/dev/null || true
    else
        echo "bundle: no compute-sanitizer $release from pip; the GPU machine's own will be used, if it has one" >&2
    fi
fi
[ -x "$san/compute-sanitizer" ] && cp -r "$san" "$out/compute-sanitizer"
loader=$(ldd build/tests/gpu/test_cuda | awk '$1 ~ /ld-linux/ {print $1}')
cp -L "$loader" "$out/lib/ld-linux.so"
tar -C build -cJf build/gpu-bundle.tar.xz gpu-bundle
rm -rf "$out"
echo "build/gpu-bundle.tar.xz: $(du -k build/gpu-bundle.tar.xz | cut -f1) KiB"
