#!/bin/sh
# Builds the libFuzzer harnesses (clang, ASan+UBSan) against the library
# sources and runs each for FUZZ_SECONDS, starting from a seed corpus of real
# files made by the tools: the shard reader, the image decoders, the
# safetensors reader (checkpoints), the CSV reader and the results tables.
# Prints "ok - fuzz NAME" per harness that found nothing; a crash leaves
# tests/fuzz/crash-* and prints "not ok".
set -u
cd "$(dirname "$0")/../.."
secs=${FUZZ_SECONDS:-20}
out=build/fuzz
mkdir -p "$out"
if ! command -v clang >/dev/null 2>&1; then
    echo "skip - fuzz: clang is not installed (make deps)"
    exit 0
fi
flags="-g -O1 -fsanitize=fuzzer,address,undefined -fno-sanitize-recover=undefined -std=c11 -D_GNU_SOURCE -Ilib -fopenmp"
# What the harnesses reach: the shard reader and the decoders; the safetensors
# reader; the CSV reader and the results tables.
core_src=$(find lib/core -name '*.c' | sort)
status=0
for h in shard decode safetensors csv; do
    bin="$out/fuzz_$h"
    case $h in
    safetensors) src="$core_src lib/nn/safetensors.c lib/nn/model.c lib/nn/loss_scale.c" ;;
    csv) src="$core_src $(find lib/metrics -name '*.c' | sort)" ;;
    *) src=$(find lib/core lib/shard lib/image -name '*.c' | sort) ;;
    esac
    if [ ! -x "$bin" ] || [ -n "$(find lib tests/fuzz -newer "$bin" -name '*.[ch]' | head -1)" ]; then
        # shellcheck disable=SC2086
        clang $flags tests/fuzz/fuzz_$h.c $src -o "$bin" -lpng -ltiff -ljpeg -ldeflate -lz -lm -lpthread 2>"$out/build-$h.log" ||
            { echo "not ok - fuzz $h: build failed (see $out/build-$h.log)"; status=1; continue; }
    fi
    corpus="tests/fuzz/corpus-$h"
    mkdir -p "$corpus"
    sh tests/fuzz/seed.sh "$h" "$corpus"
    if "$bin" -max_total_time="$secs" -max_len=65536 -rss_limit_mb=2048 -timeout=10 -print_final_stats=1 \
        -artifact_prefix=tests/fuzz/crash- "$corpus" >"$out/run-$h.log" 2>&1; then
        echo "ok - fuzz $h: $(grep -o 'stat::number_of_executed_units: [0-9]*' "$out/run-$h.log" | grep -o '[0-9]*$' || tail -1 "$out/run-$h.log" | cut -c1-60) runs in ${secs}s, no crash"
    else
        echo "not ok - fuzz $h: crash, see $out/run-$h.log and tests/fuzz/crash-*"
        tail -30 "$out/run-$h.log"
        status=1
    fi
done
exit $status
