#!/bin/sh
# Runs every test: C unit tests (build/tests/*), CLI tests (tests/cli/*.sh),
# oracle tests (tests/ref/*.py), the CUDA kernels and the whole cuda backend
# under host emulation (tests/cuda-emu/run.sh, backend.sh). Each prints
# "ok - NAME", "not ok - NAME" or "skip - NAME: why" lines; this script
# counts them, prints a line per suite as it ends, and ends with the line
# "N passed, N failed, N skipped". A test program that exits non-zero without
# reporting a failure counts as one failure.
#
# Suites run FU_TEST_JOBS at a time (default: the cores), the long ones
# first, so that the last to start are short and the cores finish together:
# most suites are one process of one thread, and one after another they left
# a core idle.
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
# With suites side by side, a waiting thread yields its core to the other
# suites instead of spinning on it: OpenMP's at a barrier, an MPI rank's in
# a receive.
export OMP_WAIT_POLICY=passive OMPI_MCA_mpi_yield_when_idle=1
pattern=${1:-}
# As many as the cores, or one per 5 GB of free memory (the largest suites
# peak at 5 GB), but two at least: that is how CI has always run them.
cores=$(nproc 2>/dev/null || echo 1)
mem_gb=$(awk '/^MemAvailable:/ {print int($2 / 1048576)}' /proc/meminfo 2>/dev/null)
by_mem=$((${mem_gb:-0} / 5))
[ "$by_mem" -lt 2 ] && by_mem=2
jobs_max=${FU_TEST_JOBS:-$((cores < by_mem ? cores : by_mem))}
dir=$(mktemp -d)
trap 'rm -rf "$dir"' EXIT
# Ctrl-C or a kill ends the running suites too (started in the background,
# they ignore SIGINT): each job passes SIGTERM on to its suite.
pids=
trap 'kill -TERM $pids 2>/dev/null; exit 130' INT TERM
passed=0 failed=0 skipped=0 running=0 n=0

# The suites, "NAME COMMAND..." a line: the known long ones first (in
# minutes on two busy cores: the emulated backend ~8, the others ~1), then
# the rest in name order.
LONG="cuda-emu/backend.sh cli/data-parallel.sh unit/test_pipe unit/test_resident unit/test_bf16 ref/train_parity.py
      unit/test_dist_hooks cli/cnn-train.sh cuda-emu/run.sh cli/fuzz.sh cli/model-parallel.sh"
suites() {
    for t in build/tests/*; do
        [ -x "$t" ] && [ -f "$t" ] && echo "unit/${t##*/} $t"
    done
    for t in tests/cli/*.sh; do
        case "$t" in */lib.sh) ;; *) echo "cli/${t##*/} sh $t" ;; esac
    done
    for t in tests/ref/*.py; do
        case "$t" in */common.py) ;; *) echo "ref/${t##*/} $PYTHON $t" ;; esac
    done
    echo "cuda-emu/run.sh sh tests/cuda-emu/run.sh"
    echo "cuda-emu/backend.sh sh tests/cuda-emu/backend.sh"
}
ordered() {
    all=$(suites)
    for name in $LONG; do echo "$all" | grep "^$name "; done
    echo "$all" | while read -r name cmd; do
        case " $(echo $LONG) " in *" $name "*) ;; *) echo "$name $cmd" ;; esac
    done
}

count() { # name, log, exit status, seconds: adds up and prints the suite's line
    name=$1 log=$2 rc=$3 secs=$4
    p=$(grep -c '^ok ' "$log")
    f=$(grep -c '^not ok ' "$log")
    s=$(grep -c '^skip ' "$log")
    if [ "$rc" != 0 ] && [ "$f" = 0 ]; then
        echo "not ok - $name exited with status $rc" >>"$log"
        f=1
    fi
    passed=$((passed + p)) failed=$((failed + f)) skipped=$((skipped + s))
    printf '%-40s %4d ok %3d failed %3d skipped  %3ds\n' "$name" "$p" "$f" "$s" "$secs"
    if [ "$f" != 0 ]; then sed 's/^/    /' "$log" | grep -v '^    ok ' | tail -40; fi
}

wait_below() { # N: counts the suites that end until fewer than N run
    while [ "$running" -ge "$1" ]; do
        sleep 0.2
        for end in "$dir"/*.end; do
            [ -e "$end" ] || break
            read -r rc secs suite_name <"$end"
            rm -f "$end"
            count "$suite_name" "${end%.end}.log" "$rc" "$secs"
            running=$((running - 1))
        done
    done
}

list=$(ordered)
while read -r suite cmd; do # (count sets name)
    case "$suite" in *"$pattern"*) ;; *) continue ;; esac
    wait_below "$jobs_max"
    n=$((n + 1))
    (
        start=$(date +%s)
        # shellcheck disable=SC2086 # cmd is a command and its arguments
        $cmd >"$dir/$n.log" 2>&1 </dev/null &
        child=$!
        trap 'kill -TERM $child' TERM
        wait $child
        rc=$?
        { echo "$rc $(($(date +%s) - start)) $suite" >"$dir/$n.tmp" && mv "$dir/$n.tmp" "$dir/$n.end"; } 2>/dev/null
    ) &
    pids="$pids $!" running=$((running + 1))
done <<EOF
$list
EOF
wait_below 1
echo "$passed passed, $failed failed, $skipped skipped"
[ "$failed" = 0 ]
