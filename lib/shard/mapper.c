#include "shard/mapper.h"

#include "core/error.h"

#include <stdlib.h>
#include <string.h>

typedef struct {
    fu_record rec;
    uint8_t *owned; // copy of id + payload when the reader streams
} out_rec;

struct fu_emitter {
    out_rec *recs;
    int n, cap;
};

typedef struct {
    fu_record in;
    uint8_t *in_copy; // only for streamed input
    size_t in_cap;
    uint64_t index;
    fu_emitter out;
    int failed;
    char msg[1024], hint[512];
} job;

int fu_emit(fu_emitter *e, const fu_record *rec) {
    if (e->n == e->cap) {
        int cap = e->cap ? 2 * e->cap : 4;
        out_rec *r = fu_realloc(e->recs, (size_t)cap * sizeof *r);
        if (!r) return -1;
        e->recs = r;
        e->cap = cap;
    }
    uint8_t *copy = fu_malloc(rec->id_len + rec->payload_len);
    if (!copy) return -1;
    memcpy(copy, rec->id, rec->id_len);
    memcpy(copy + rec->id_len, rec->payload, rec->payload_len);
    out_rec *o = &e->recs[e->n++];
    o->rec = *rec;
    o->rec.id = (const char *)copy;
    o->rec.payload = copy + rec->id_len;
    o->owned = copy;
    return 0;
}

static void emitter_clear(fu_emitter *e) {
    for (int i = 0; i < e->n; i++) free(e->recs[i].owned);
    e->n = 0;
}

// Keep a private copy of a streamed record, whose bytes the reader reuses.
static int hold(job *j, const fu_record *rec, bool mapped) {
    j->in = *rec;
    if (mapped) return 0;
    size_t need = rec->id_len + rec->payload_len;
    if (need > j->in_cap) {
        uint8_t *b = fu_realloc(j->in_copy, need);
        if (!b) return -1;
        j->in_copy = b;
        j->in_cap = need;
    }
    memcpy(j->in_copy, rec->id, rec->id_len);
    memcpy(j->in_copy + rec->id_len, rec->payload, rec->payload_len);
    j->in.id = (const char *)j->in_copy;
    j->in.payload = j->in_copy + rec->id_len;
    return 0;
}

static int run_batch(const fu_map_opts *o, job *jobs, int n) {
#pragma omp parallel for schedule(dynamic, 1) num_threads(o->threads)
    for (int i = 0; i < n; i++) {
        job *j = &jobs[i];
        fu_clear_error();
        j->failed = o->fn(o->ctx, o->generate ? NULL : &j->in, j->index, &j->out) < 0;
        if (j->failed) {
            snprintf(j->msg, sizeof j->msg, "%s", fu_error());
            snprintf(j->hint, sizeof j->hint, "%s", fu_error_hint());
        }
    }
    for (int i = 0; i < n; i++) {
        job *j = &jobs[i];
        if (j->failed) {
            fu_set_error(j->msg, j->hint);
            if (o->generate) fu_error_prefix("record %llu", (unsigned long long)j->index);
            else fu_error_prefix("record %llu (%.*s)", (unsigned long long)j->index, (int)j->in.id_len, j->in.id);
            return -1;
        }
        for (int k = 0; k < j->out.n; k++) {
            const fu_record *rec = &j->out.recs[k].rec;
            if ((o->sink ? o->sink(o->sink_ctx, rec) : fu_shard_write(o->writer, rec)) < 0) return -1;
        }
        if (o->progress) fu_progress_add(o->progress, 1);
        emitter_clear(&j->out);
    }
    return 0;
}

// Records from the inputs, a batch at a time.
static int map_inputs(const fu_map_opts *o, job *jobs, int batch) {
    static const char *const stdin_only[] = {"-"};
    const char *const *inputs = o->n_inputs > 0 ? o->inputs : stdin_only;
    int n_inputs = o->n_inputs > 0 ? o->n_inputs : 1;
    uint64_t index = 0;
    for (int f = 0; f < n_inputs; f++) {
        fu_shard_reader *r = fu_shard_open(inputs[f]);
        if (!r) return -1;
        bool mapped = fu_shard_is_mapped(r);
        int rc = 0;
        for (;;) {
            int n = 0, got = 0;
            fu_record rec;
            while (n < batch && (got = fu_shard_next(r, &rec, o->verify)) == 1) {
                if (hold(&jobs[n], &rec, mapped) < 0) {
                    got = -1;
                    break;
                }
                jobs[n++].index = index++;
            }
            if (got < 0) {
                // Records before the fault are still processed, so the first
                // error in stream order is the one reported.
                rc = -1;
                if (n > 0) {
                    char msg[1024];
                    snprintf(msg, sizeof msg, "%s", fu_error());
                    char hint[512];
                    snprintf(hint, sizeof hint, "%s", fu_error_hint());
                    if (run_batch(o, jobs, n) == 0) fu_set_error(msg, hint);
                }
                break;
            }
            if (n > 0 && run_batch(o, jobs, n) < 0) {
                rc = -1;
                break;
            }
            if (got == 0) break;
        }
        fu_shard_close(r);
        if (rc < 0) return -1;
    }
    return 0;
}

// No inputs: records 0 .. generate-1 are made by the map function alone.
static int map_generated(const fu_map_opts *o, job *jobs, int batch) {
    for (uint64_t first = 0; first < o->generate; first += (uint64_t)batch) {
        int n = o->generate - first < (uint64_t)batch ? (int)(o->generate - first) : batch;
        for (int i = 0; i < n; i++) jobs[i].index = first + (uint64_t)i;
        if (run_batch(o, jobs, n) < 0) return -1;
    }
    return 0;
}

int fu_map_run(const fu_map_opts *o) {
    int batch = 4 * (o->threads > 0 ? o->threads : 1);
    job *jobs = fu_calloc((size_t)batch, sizeof *jobs);
    if (!jobs) return -1;
    int rc = o->generate ? map_generated(o, jobs, batch) : map_inputs(o, jobs, batch);
    for (int i = 0; i < batch; i++) {
        emitter_clear(&jobs[i].out);
        free(jobs[i].out.recs);
        free(jobs[i].in_copy);
    }
    free(jobs);
    if (rc == 0 && o->writer) rc = fu_shard_finish(o->writer);
    return rc;
}
