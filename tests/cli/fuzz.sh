# A short libFuzzer run over the shard reader, the decoders, the safetensors
# reader and the CSV and results-table readers (make fuzz runs longer:
# FUZZ_SECONDS=300 make fuzz).
FUZZ_SECONDS=${FUZZ_SECONDS:-10} sh tests/fuzz/run.sh
