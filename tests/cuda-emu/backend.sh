#!/bin/sh
# The whole cuda backend (lib/cuda) under host emulation: tests/gpu/test_cuda.c
# runs on a machine without a GPU, against fake (host) implementations of
# the CUDA runtime (fake_cudart.cpp), cuDNN (fake_cudnn.cpp, its graph API
# fake_cudnn_graph.cpp), cuBLAS
# (fake_cublas.cpp) and NCCL (fake_nccl.c: a copy over one rank, MPI over
# several; a libnccl.so.2 put first on LD_LIBRARY_PATH for nccl_sync.cu's
# dlopen). The kernels
# (cuda_ops.cu, cuda_optim.cu, nccl_sync.cu's) run on the CPU through
# rewrite_launches.py --seq and emu_seq.h; cuda_net.cu, cuda_resident.cu, cuda_plan.cu,
# cuda_conv.cu and conv_graph.cu are plain C++ for g++.
# "Device memory" is malloc: FAKE_SAN=1 builds the backend, the kernels and
# the fakes with AddressSanitizer and UBSan, which then report what
# compute-sanitizer would (an access past a device buffer). This finds logic
# errors of the backend (plan offsets, layouts, the resident, prefetch and
# stage paths, error paths), not how a GPU behaves (streams, timing, cuDNN's
# own algorithms and numerics): see docs/gpu.md.
#
# Then cnn-train and cnn-predict, linked the same way, run cnn-train.sh: the
# tools end to end with --device cuda.
#
# Links the project's objects from `make` (build/lib/**/*.o) except
# backend.o (compiled here with the cuda backend on) and the nvcc-built
# lib/cuda ones. Needs g++, gcc, python3, CUDA's, cuDNN's, cuBLAS's and
# NCCL's headers under ${CUDA_HOME:-/usr/local/cuda}/include and dnnl.h;
# without one it prints one skip line. Builds in a temporary directory.
# FU_TEST_CUDA_QUICK=1 (the default here; 0 for everything) runs test_cuda's
# quick mode: fewer training steps.
#   sh tests/cuda-emu/backend.sh
# shellcheck disable=SC2086 # the flag and object lists are word lists
set -u
cd "$(dirname "$0")/../.." || exit 1
here=tests/cuda-emu
cuda_inc=${CUDA_HOME:-/usr/local/cuda}/include
python=${PYTHON:-python3}

skip() {
    echo "skip - cuda backend under host emulation: $1"
    exit 0
}
command -v g++ >/dev/null 2>&1 || skip "no g++ (Debian: apt-get install g++)"
command -v gcc >/dev/null 2>&1 || skip "no gcc"
command -v "$python" >/dev/null 2>&1 || skip "no $python to rewrite the kernel launches"
for h in cuda_runtime.h cuda_fp16.h cuda_bf16.h cudnn.h cublas_v2.h nccl.h; do
    [ -f "$cuda_inc/$h" ] || [ -f "/usr/include/$h" ] || skip "no $h in $cuda_inc or /usr/include (set CUDA_HOME)"
done
printf '#include <dnnl.h>\n' | gcc -E -x c - >/dev/null 2>&1 || skip "no dnnl.h (Debian: libdnnl-dev)"
[ -f build/lib/nn/model.o ] || skip "the library's objects are not built (run make first)"

tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT

fail() {
    echo "not ok - cuda backend under host emulation: $*"
    exit 1
}

san=
[ "${FAKE_SAN:-0}" = 1 ] && san="-fsanitize=address,undefined -fno-omit-frame-pointer"
# As the project's build: no fused multiply-adds (the resident AdamW is
# compared bit for bit with the host's).
cflags="-O2 -g -ffp-contract=off -Ilib -fopenmp $san"
cxxflags="-std=c++17 $cflags -Wall -Wextra -Wno-unused-parameter -Wno-deprecated-declarations -I$here -isystem $cuda_inc"
# The element-wise kernels' grids capped at 256 blocks, not 65535: the same
# values, a fifth less time (lib/cuda/cuda_grid.h).
cxxflags="$cxxflags -DFU_CU_MAX_BLOCKS=256"

for cu in cuda_ops cuda_optim nccl_sync; do
    "$python" $here/rewrite_launches.py --seq lib/cuda/$cu.cu "$tmp/$cu.cpp" || fail "rewriting lib/cuda/$cu.cu"
done

compile() { # output, compiler and flags, source
    out=$1
    shift
    "$@" -c -o "$tmp/$out" >"$tmp/$out.log" 2>&1 || echo "$out" >>"$tmp/failed"
}
# Two at a time: the g++ compiles of CUDA's headers dominate.
compile cuda_ops.o g++ $cxxflags "$tmp/cuda_ops.cpp" &
compile cuda_optim.o g++ $cxxflags "$tmp/cuda_optim.cpp" &
wait
compile nccl_sync.o g++ $cxxflags "$tmp/nccl_sync.cpp" &
compile cuda_net.o g++ $cxxflags -x c++ lib/cuda/cuda_net.cu &
wait
compile cuda_conv.o g++ $cxxflags -x c++ lib/cuda/cuda_conv.cu &
compile cuda_plan.o g++ $cxxflags -x c++ lib/cuda/cuda_plan.cu &
compile conv_graph.o g++ $cxxflags -x c++ lib/cuda/conv_graph.cu &
wait
compile cuda_profile.o g++ $cxxflags -x c++ lib/cuda/cuda_profile.cu &
compile cuda_resident.o g++ $cxxflags -x c++ lib/cuda/cuda_resident.cu &
wait
compile emu_seq.o g++ $cxxflags $here/emu_seq.cpp &
compile fake_cudart.o g++ $cxxflags $here/fake_cudart.cpp &
wait
compile fake_cudnn.o g++ $cxxflags $here/fake_cudnn.cpp &
compile fake_cudnn_graph.o g++ $cxxflags $here/fake_cudnn_graph.cpp &
wait
compile fake_cublas.o g++ $cxxflags $here/fake_cublas.cpp &
ccflags="-std=c11 -D_GNU_SOURCE -Wall -Wextra -Wno-unused-parameter $cflags -isystem $cuda_inc"
compile backend.o gcc $ccflags -DFU_HAVE_CUDA=1 lib/nn/backend.c &
compile test_cuda.o gcc $ccflags tests/gpu/test_cuda.c &
wait
# The fake NCCL sums over ranks with MPI (as the Makefile finds it).
mpi_cflags=$(pkg-config --cflags ompi-c 2>/dev/null || mpicc --showme:compile 2>/dev/null)
mpi_libs=$(pkg-config --libs ompi-c 2>/dev/null || mpicc --showme:link 2>/dev/null)
gcc -std=c11 -O2 -fPIC -shared -Wall -Wextra -Wno-unused-parameter -isystem "$cuda_inc" $mpi_cflags $here/fake_nccl.c \
    $mpi_libs -Wl,-soname,libnccl.so.2 -o "$tmp/libnccl.so.2" >"$tmp/libnccl.log" 2>&1 ||
    echo libnccl.so.2 >>"$tmp/failed"
if [ -f "$tmp/failed" ]; then
    failed=$(cat "$tmp/failed")
    for o in $failed; do cat "$tmp/$o.log" 2>/dev/null || cat "$tmp/libnccl.log"; done
    fail "compiling" $failed
fi
for o in "$tmp"/*.log; do cat "$o"; done # warnings, if any

# The library without its cuda backend; its link line without the CUDA
# libraries and their search paths (no runpath to the real libcudart or
# libnccl: the fakes stand in).
# (lib/cuda's C files, gcc-built, are the library's like any other.)
objs=$(find "$PWD/build/lib" -name '*.o' ! -path "$PWD/build/lib/nn/backend.o" | sort | while read -r o; do
    case $o in "$PWD"/build/lib/cuda/*) [ -f "lib/cuda/$(basename "$o" .o).cu" ] && continue ;; esac
    echo "$o"
done)
libs=
# (The last line: make may print a note about the GPU backend first.)
for w in $(make -s print-ldlibs 2>/dev/null | tail -n 1); do
    case "$w" in
    -lcudnn | -lcublas | -lcublasLt | -lcudart | -L*cuda* | -Wl,-rpath,*cuda*) ;;
    *) libs="$libs $w" ;;
    esac
done
cd "$tmp" || exit 1
emulated="backend.o cuda_net.o cuda_resident.o cuda_conv.o cuda_plan.o conv_graph.o cuda_profile.o cuda_ops.o cuda_optim.o nccl_sync.o emu_seq.o fake_cudart.o fake_cudnn.o fake_cudnn_graph.o fake_cublas.o"
# -rdynamic: the fake NCCL finds the fake runtime's fake_cuda_hang.
g++ -fopenmp -rdynamic $san test_cuda.o $emulated $objs -o test_cuda $libs || fail "linking test_cuda"
# cnn-train and cnn-predict on the emulated GPU too, beside the other tools,
# for the end-to-end checks (cnn-train.sh).
mkdir -p bin
for t in "$OLDPWD"/bin/*; do ln -s "$t" "bin/${t##*/}"; done
for t in cnn-train cnn-predict; do
    rm -f "bin/$t"
    g++ -fopenmp -rdynamic $san "$OLDPWD/build/tools/$t.o" "$OLDPWD/build/tools/toolkit.o" $emulated $objs -o "bin/$t" $libs ||
        fail "linking $t"
done
cd "$OLDPWD" || exit 1

# LeakSanitizer off: the library keeps process-lifetime allocations.
# FU_CUDNN_API=graph: every convolution through cuDNN's graph API (a plan
# that fails to build fails its check instead of falling back to the
# legacy API, which cnn-train.sh covers).
{
    LD_LIBRARY_PATH="$tmp${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}" FU_TEST_CUDA_QUICK=${FU_TEST_CUDA_QUICK:-1} \
        FU_CUDNN_API=${FU_CUDNN_API:-graph} \
        ASAN_OPTIONS=${ASAN_OPTIONS:-detect_leaks=0} UBSAN_OPTIONS=${UBSAN_OPTIONS:-print_stacktrace=1} \
        "$tmp/test_cuda" 2>&1
    echo "test_cuda exit $?"
} | awk '
    /^test_cuda exit [0-9]+$/ {
        rc = $3
        next
    }
    /^not ok - / { failed++ }
    { print; fflush() }
    END {
        if (rc != 0 && rc != 1) print "not ok - cuda backend under host emulation: test_cuda exited with status " rc
        exit failed || (rc != 0 && rc != 1) ? 1 : 0
    }'
checks=$?
LD_LIBRARY_PATH="$tmp${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}" FU_BIN="$tmp/bin" ASAN_OPTIONS=${ASAN_OPTIONS:-detect_leaks=0} \
    sh $here/cnn-train.sh
tools=$?
[ "$checks" = 0 ] && [ "$tools" = 0 ]
