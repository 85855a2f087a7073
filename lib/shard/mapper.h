// Parallel record processing with ordered output and bounded memory.
//
// The image tools all have one shape: read records, turn each into zero or
// more records, write them in input order. fu_map_run reads a batch of
// records (4 per thread), processes the batch on `threads` OpenMP threads and
// writes the results in order, so memory is O(threads x one image) and the
// output bytes do not depend on the thread count.
#ifndef FU_SHARD_MAPPER_H
#define FU_SHARD_MAPPER_H

#include "core/progress.h"
#include "shard/shard.h"

typedef struct fu_emitter fu_emitter;

// Called on worker threads, so it must only touch `ctx` read-only.
// `index` counts records over all inputs from 0; `in` is NULL when the
// records are generated (fu_map_opts.generate). Return -1 with fu_fail() set.
typedef int (*fu_map_fn)(void *ctx, const fu_record *in, uint64_t index, fu_emitter *out);

// Queue an output record; its id and payload are copied.
int fu_emit(fu_emitter *e, const fu_record *rec);

// Receives each output record on the calling thread, in input order, for
// tools whose output is not one shard (shard-unpack writes files).
typedef int (*fu_sink_fn)(void *ctx, const fu_record *rec);

typedef struct {
    const char *const *inputs; // paths, "-" for stdin; none means stdin
    int n_inputs;
    uint64_t generate;         // > 0: no inputs; fn makes records 0..generate-1
    fu_shard_writer *writer;   // finished (end record) on success; or NULL with a sink
    fu_sink_fn sink;           // used instead of the writer when set
    void *sink_ctx;
    int threads;               // >= 1
    fu_map_fn fn;
    void *ctx;
    bool verify;               // check payload CRCs while reading
    fu_progress *progress;     // may be NULL
} fu_map_opts;

// Returns 0, or -1 with the error of the first failing record in input order.
int fu_map_run(const fu_map_opts *o);

#endif
