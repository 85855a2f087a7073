// libFuzzer harness: the shard reader, streamed (fmemopen) and mapped (a
// temporary file), plus the index and random access.
#include "input_file.h"
#include "shard/shard.h"

#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>

static void read_stream(const uint8_t *data, size_t size) {
    FILE *f = fmemopen((void *)data, size, "rb");
    if (!f) return;
    fu_shard_reader *r = fu_shard_open_stream(f, "fuzz", true);
    fu_record rec;
    while (r && fu_shard_next(r, &rec, true) == 1) {
    }
    fu_shard_close(r);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    if (size) read_stream(data, size);
    char path[] = "/tmp/fuzz_shard.XXXXXX";
    if (!fuzz_input_file(data, size, path)) return 0;
    fu_shard_reader *r = fu_shard_open(path);
    if (r) {
        fu_record rec;
        uint64_t sum = 0;
        while (fu_shard_next(r, &rec, true) == 1)
            for (uint64_t i = 0; i < rec.payload_len; i += 61) sum += rec.payload[i] + (uint8_t)rec.id[0] * 0u;
        fu_shard_index idx;
        if (fu_shard_build_index(r, &idx) == 0) {
            for (size_t i = 0; i < idx.count; i++) fu_shard_read_at(r, idx.offsets[i], &rec, true);
            fu_shard_index_free(&idx);
        }
        fu_shard_close(r);
        (void)sum;
    }
    unlink(path);
    return 0;
}
