#!/bin/sh
# Runs every test: C unit tests (build/tests/*), CLI tests (tests/cli/*.sh),
# oracle tests (tests/ref/*.py), the CUDA kernels under host emulation
# (tests/cuda-emu/run.sh). Each prints "ok - NAME", "not ok - NAME" or
# "skip - NAME: why" lines; this script counts them and ends with the line
# "N passed, N failed, N skipped". A test program that exits non-zero without
# reporting a failure counts as one failure.
#   sh tests/run.sh [PATTERN]   runs only tests whose file name contains PATTERN
set -u
cd "$(dirname "$0")/.."
PYTHON=${PYTHON:-/usr/bin/python3}
export PYTHON FU_BIN="$PWD/bin" FU_ROOT="$PWD"
pattern=${1:-}
log=$(mktemp)
trap 'rm -f "$log"' EXIT
passed=0 failed=0 skipped=0

run_one() { # name, command...
    name=$1
    shift
    case "$name" in *"$pattern"*) ;; *) return ;; esac
    start=$(date +%s)
    "$@" >"$log" 2>&1
    rc=$?
    p=$(grep -c '^ok ' "$log")
    f=$(grep -c '^not ok ' "$log")
    s=$(grep -c '^skip ' "$log")
    if [ "$rc" != 0 ] && [ "$f" = 0 ]; then
        echo "not ok - $name exited with status $rc" >>"$log"
        f=1
    fi
    passed=$((passed + p)) failed=$((failed + f)) skipped=$((skipped + s))
    printf '%-40s %4d ok %3d failed %3d skipped  %3ds\n' "$name" "$p" "$f" "$s" $(($(date +%s) - start))
    if [ "$f" != 0 ]; then sed 's/^/    /' "$log" | grep -v '^    ok ' | tail -40; fi
}

for t in build/tests/*; do
    [ -x "$t" ] && [ -f "$t" ] && run_one "unit/$(basename "$t")" "$t"
done
for t in tests/cli/*.sh; do
    case "$t" in */lib.sh) continue ;; esac
    run_one "cli/$(basename "$t")" sh "$t"
done
for t in tests/ref/*.py; do
    case "$t" in */common.py) continue ;; esac
    run_one "ref/$(basename "$t")" "$PYTHON" "$t"
done
run_one "cuda-emu/run.sh" sh tests/cuda-emu/run.sh
run_one "cuda-emu/backend.sh" sh tests/cuda-emu/backend.sh
echo "$passed passed, $failed failed, $skipped skipped"
[ "$failed" = 0 ]
