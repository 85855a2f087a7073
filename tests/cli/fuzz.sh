# A short libFuzzer run over the shard reader and the decoders (make fuzz runs
# longer: FUZZ_SECONDS=300 make fuzz).
FUZZ_SECONDS=${FUZZ_SECONDS:-10} sh tests/fuzz/run.sh
