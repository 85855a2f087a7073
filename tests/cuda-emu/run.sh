#!/bin/sh
# The cuda backend's own kernels (lib/cuda/cuda_ops.cu, cuda_optim.cu) run on
# the host under an emulation of CUDA (emu.h), so that they are tested on
# machines without a GPU: test_ops against the reference ops in double,
# test_optim against the host's clipping and AdamW. Needs g++, python3 and
# CUDA's headers (cuda_fp16.h, cuda_bf16.h, vector_types.h) under
# ${CUDA_HOME:-/usr/local/cuda}/include; without them it prints one skip line.
# Builds in a temporary directory; prints the tests' ok / not ok lines.
#   sh tests/cuda-emu/run.sh
set -u
cd "$(dirname "$0")/../.."
here=tests/cuda-emu
cuda_inc=${CUDA_HOME:-/usr/local/cuda}/include
python=${PYTHON:-python3}

skip() {
    echo "skip - cuda kernels under host emulation: $1"
    exit 0
}
command -v g++ >/dev/null 2>&1 || skip "no g++ (Debian: apt-get install g++)"
command -v gcc >/dev/null 2>&1 || skip "no gcc"
command -v "$python" >/dev/null 2>&1 || skip "no $python to rewrite the kernel launches"
for h in cuda_fp16.h cuda_bf16.h vector_types.h; do
    [ -f "$cuda_inc/$h" ] || skip "no $h in $cuda_inc (set CUDA_HOME)"
done

tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
# As the project's build: no fused multiply-adds, whose rounding would break
# the bit-identical AdamW comparison.
cflags="-O2 -ffp-contract=off -Ilib"
cxxflags="-std=c++17 $cflags -Wall -Wextra -Wno-unused-parameter -I$here -isystem $cuda_inc"

fail() {
    echo "not ok - cuda-emu: $*"
    exit 1
}
for cu in cuda_ops cuda_optim; do
    "$python" $here/rewrite_launches.py lib/cuda/$cu.cu "$tmp/$cu.cpp" || fail "rewriting lib/cuda/$cu.cu"
done

# Each object in the background: the g++ compiles of CUDA's headers dominate.
compile() { # output, compiler and flags, source
    out=$1
    shift
    "$@" -c -o "$tmp/$out" >"$tmp/$out.log" 2>&1 || echo "$out" >>"$tmp/failed"
}
compile cuda_ops.o g++ $cxxflags "$tmp/cuda_ops.cpp" &
compile cuda_optim.o g++ $cxxflags "$tmp/cuda_optim.cpp" &
compile emu.o g++ $cxxflags $here/emu.cpp &
compile test_ops.o g++ $cxxflags $here/test_ops.cpp &
compile test_optim.o g++ $cxxflags $here/test_optim.cpp &
# The host side the tests compare with (adamw.c needs model.c for its
# parameter groups, model.c the rng, both error.c).
for c in nn/ref_ops nn/adamw nn/model core/error core/rng; do
    compile "$(basename $c).o" gcc -std=c11 -D_GNU_SOURCE $cflags -fopenmp lib/$c.c &
done
wait
if [ -f "$tmp/failed" ]; then
    failed=$(cat "$tmp/failed")
    for o in $failed; do cat "$tmp/$o.log"; done
    fail "compiling" $failed
fi
for o in "$tmp"/*.log; do cat "$o"; done # warnings, if any

cd "$tmp" || exit 1
g++ -fopenmp test_ops.o cuda_ops.o emu.o ref_ops.o -o test_ops -lpthread -lm || fail "linking test_ops"
g++ -fopenmp test_optim.o cuda_optim.o emu.o adamw.o model.o rng.o error.o -o test_optim -lpthread -lm ||
    fail "linking test_optim"
status=0
./test_ops || status=1
./test_optim || status=1
exit $status
