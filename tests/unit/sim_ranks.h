// Data-parallel ranks simulated in one process, for tests of backend.h's
// fu_dist_hooks (tests/unit/test_dist_hooks.c, tests/gpu/test_cuda.c): ranks
// are threads whose `sum` hook meets at a barrier and adds the ranks' vectors
// in rank order, a log of what `grads_ready` announced, and the comparisons
// both tests make of a split batch against the whole one.
#ifndef TESTS_UNIT_SIM_RANKS_H
#define TESTS_UNIT_SIM_RANKS_H

#include "core/error.h"
#include "core/rng.h"
#include "nn/model.h"

#include <math.h>
#include <pthread.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define RANKS 2
#define MAX_SUM 2048 // doubles in one sum: 2 x 512 channels + 2

typedef struct {
    pthread_barrier_t barrier;
    int ranks;
    double slot[RANKS][MAX_SUM];
    int calls[RANKS]; // sum calls per rank
} world;

// The ranges grads_ready announced on one backend, in order, with a copy of
// the gradients at each announcement.
typedef struct {
    const float *grads; // the buffer backward writes
    size_t n_params;
    float *seen;        // (n_params) grads[off, off + len) when the range was announced
    int *times;         // (n_params) announcements per element
    size_t (*order)[2]; // (off, len) per call
    int n_order, cap_order;
    bool out_of_range;  // a range beyond n_params
} ready_log;

// What the hooks are handed: the rank's world (NULL: no sync-BN) and its log
// (NULL: no grads_ready).
typedef struct {
    world *w;
    int rank;
    ready_log *log;
} rank_ctx;

static inline world *world_make(int ranks) {
    world *w = calloc(1, sizeof *w);
    w->ranks = ranks;
    pthread_barrier_init(&w->barrier, NULL, (unsigned)ranks);
    return w;
}

static inline void world_free(world *w) {
    pthread_barrier_destroy(&w->barrier);
    free(w);
}

static inline int world_sum(void *ctx, double *v, int n) {
    rank_ctx *r = ctx;
    world *w = r->w;
    if (n > MAX_SUM) return fu_fail("test sum", "%d values, at most %d", n, MAX_SUM);
    w->calls[r->rank]++;
    memcpy(w->slot[r->rank], v, (size_t)n * sizeof *v);
    pthread_barrier_wait(&w->barrier);
    for (int i = 0; i < n; i++) {
        double s = 0;
        for (int k = 0; k < w->ranks; k++) s += w->slot[k][i];
        v[i] = s;
    }
    pthread_barrier_wait(&w->barrier); // nobody overwrites a slot still being read
    return 0;
}

// fu_dist_hooks.any over the world's ranks, as one more sum.
static inline int world_any(void *ctx, int *flag) {
    double v = *flag;
    if (world_sum(ctx, &v, 1) < 0) return -1;
    *flag = v > 0;
    return 0;
}

static inline void log_init(ready_log *l, size_t n_params, const float *grads) {
    memset(l, 0, sizeof *l);
    l->grads = grads;
    l->n_params = n_params;
    l->seen = calloc(n_params ? n_params : 1, sizeof(float));
    l->times = calloc(n_params ? n_params : 1, sizeof(int));
}

static inline void log_free(ready_log *l) { free(l->seen), free(l->times), free(l->order); }

static inline void log_range(ready_log *l, size_t off, size_t len) {
    if (off + len > l->n_params) {
        l->out_of_range = true;
        return;
    }
    if (l->n_order == l->cap_order) {
        l->cap_order = l->cap_order ? 2 * l->cap_order : 256;
        l->order = realloc(l->order, (size_t)l->cap_order * sizeof *l->order);
    }
    l->order[l->n_order][0] = off, l->order[l->n_order][1] = len;
    l->n_order++;
    memcpy(l->seen + off, l->grads + off, len * sizeof(float));
    for (size_t i = off; i < off + len; i++) l->times[i]++;
}

// The grads_ready hook: into the rank's log.
static inline void log_ready(void *ctx, size_t off, size_t len) { log_range(((rank_ctx *)ctx)->log, off, len); }

// Every parameter announced once, its value then the final one.
static inline bool ready_ok(const ready_log *l, const float *grads, char *why, size_t size) {
    if (l->out_of_range) {
        snprintf(why, size, "a range beyond the %zu parameters", l->n_params);
        return false;
    }
    for (size_t i = 0; i < l->n_params; i++)
        if (l->times[i] != 1) {
            snprintf(why, size, "parameter %zu announced %d times", i, l->times[i]);
            return false;
        }
    if (memcmp(l->seen, grads, l->n_params * sizeof(float))) {
        snprintf(why, size, "a range changed after it was announced");
        return false;
    }
    return true;
}

static inline bool same_order(const ready_log *a, const ready_log *b) {
    return a->n_order == b->n_order && !memcmp(a->order, b->order, (size_t)a->n_order * sizeof *a->order);
}

// ||a - ref|| / ||ref|| for two float vectors (absolute where ref is 0).
static inline double rel_ff(size_t n, const float *a, const float *ref) {
    double num = 0, den = 0;
    for (size_t i = 0; i < n; i++) {
        num += ((double)a[i] - ref[i]) * ((double)a[i] - ref[i]);
        den += (double)ref[i] * ref[i];
    }
    return den > 0 ? sqrt(num / den) : sqrt(num);
}

// The worst running-stat tensor's relative error, its name into *where.
static inline double worst_state(const fu_model *m, const float *a, const float *ref, const char **where) {
    double worst = 0;
    *where = "";
    for (int t = 0; t < m->n_tensors; t++) {
        const fu_tensor *ts = &m->tensors[t];
        if (ts->buffer != FU_BUF_STATE) continue;
        double e = rel_ff(ts->numel, a + ts->offset, ref + ts->offset);
        if (e > worst) worst = e, *where = ts->name;
    }
    return worst;
}

// Initial weights (seed 17) with the running stats and BN's gamma and beta
// moved away from their initial values, so that the running-stat update and
// gamma are really exercised. Returns the generator, for the inputs.
static inline fu_rng sim_weights(const fu_model *m, float *params, float *state) {
    int64_t *counts = calloc(m->n_counts, sizeof(int64_t));
    fu_model_init(m, 17, params, state, counts);
    free(counts);
    fu_rng r = fu_rng_make(17, 3, 0);
    for (size_t i = 0; i < m->n_state; i++) state[i] += (float)(0.1 * fu_rng_uniform(&r));
    for (int i = 0; i < m->n_ops; i++)
        if (m->ops[i].kind == FU_OP_BN)
            for (int c = 0; c < m->ops[i].c; c++) {
                params[m->ops[i].weight + c] = (float)(1 + 0.2 * fu_rng_normal(&r));
                params[m->ops[i].bias_off + c] = (float)(0.1 * fu_rng_normal(&r));
            }
    return r;
}

#endif
