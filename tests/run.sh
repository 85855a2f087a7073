#!/bin/sh
# Runs every test: C unit tests (build/tests/*), CLI tests (tests/cli/*.sh),
# oracle tests (tests/ref/*.py), the CUDA kernels and the whole cuda backend
# under host emulation (tests/cuda-emu/run.sh, backend.sh: the latter in the
# background from the start, its line last). Each prints "ok - NAME", "not ok - NAME" or
# "skip - NAME: why" lines; this script counts them and ends with the line
# "N passed, N failed, N skipped". A test program that exits non-zero without
# reporting a failure counts as one failure.
#   sh tests/run.sh [PATTERN]   runs only tests whose file name contains PATTERN
set -u
cd "$(dirname "$0")/.."
PYTHON=${PYTHON:-/usr/bin/python3}
export PYTHON FU_BIN="$PWD/bin" FU_ROOT="$PWD"
# glibc hands every block over 32 MB back to the kernel when freed (mmap),
# and the next one comes as fresh pages that the kernel zeroes. The tests
# make and drop model-sized buffers (22.5 M floats: 90 MB) over and over, in
# one process (trainers, backends, the emulated GPU's memory): kept in the
# heap instead, they are reused; a seventh less time for the emulated GPU's
# suite.
export MALLOC_MMAP_MAX_=0 MALLOC_TRIM_THRESHOLD_=1073741824
pattern=${1:-}
log=$(mktemp)
passed=0 failed=0 skipped=0

run_one() { # name, command...
    name=$1
    shift
    case "$name" in *"$pattern"*) ;; *) return ;; esac
    start=$(date +%s)
    "$@" >"$log" 2>&1
    count "$name" "$log" $? "$start"
}

count() { # name, log, exit status, start time: adds up and prints the suite's line
    name=$1 log_=$2 rc=$3 start=$4
    p=$(grep -c '^ok ' "$log_")
    f=$(grep -c '^not ok ' "$log_")
    s=$(grep -c '^skip ' "$log_")
    if [ "$rc" != 0 ] && [ "$f" = 0 ]; then
        echo "not ok - $name exited with status $rc" >>"$log_"
        f=1
    fi
    passed=$((passed + p)) failed=$((failed + f)) skipped=$((skipped + s))
    printf '%-40s %4d ok %3d failed %3d skipped  %3ds\n' "$name" "$p" "$f" "$s" $(($(date +%s) - start))
    if [ "$f" != 0 ]; then sed 's/^/    /' "$log_" | grep -v '^    ok ' | tail -40; fi
}

# The emulated cuda backend (the longest suite, about 6 min) runs beside the
# others from the start: the machine's two cores are otherwise a third idle
# (many suites are one process, one thread). Its OpenMP threads wait
# passively, so that they yield a core rather than spin against the
# foreground's. Its line comes last.
bg_name=cuda-emu/backend.sh bg_log=$(mktemp) bg_rc=$(mktemp) bg_start=$(date +%s) bg=
trap 'rm -f "$log" "$bg_log" "$bg_rc"' EXIT
case "$bg_name" in *"$pattern"*)
    (OMP_WAIT_POLICY=passive sh tests/cuda-emu/backend.sh >"$bg_log" 2>&1; echo $? >"$bg_rc") &
    bg=$!
    ;;
esac

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
if [ -n "$bg" ]; then
    wait "$bg"
    count "$bg_name" "$bg_log" "$(cat "$bg_rc")" "$bg_start"
fi
echo "$passed passed, $failed failed, $skipped skipped"
[ "$failed" = 0 ]
