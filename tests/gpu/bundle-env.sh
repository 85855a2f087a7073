# Sourced by the scripts that run tests/gpu/bundle.sh's tarball on a GPU
# machine. unpack_bundle TARBALL DIR unpacks it into DIR and sets $b (the
# bundle's folder) and $path (its libraries, then cuDNN, cuBLAS, the CUDA
# runtime and NCCL there: pip's nvidia-* wheels of the python3 on PATH, the
# CUDA toolkit's lib64, the driver's). bundle_run PROGRAM ARGS... runs one of
# its programs with the packed loader.
unpack_bundle() {
    tar -C "$2" -xJf "$1" || return 1
    b=$2/gpu-bundle
    # Every lib folder of pip's nvidia-* wheels (nvidia/cudnn/lib, nvidia/cu13/lib, nvidia/nccl/lib, ...).
    wheels=$(python3 -c '
import os, nvidia
for p in nvidia.__path__:
    for d in sorted(os.listdir(p)):
        if os.path.isdir(os.path.join(p, d, "lib")):
            print(os.path.join(p, d, "lib"))
' 2>/dev/null | tr '\n' ':')
    path=$b/lib:${wheels}${CUDA_HOME:-/usr/local/cuda}/lib64:/usr/local/nvidia/lib64:/usr/lib/x86_64-linux-gnu
}

bundle_run() {
    "$b/lib/ld-linux.so" --library-path "$path" "$@"
}
