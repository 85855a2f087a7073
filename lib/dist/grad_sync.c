// Bucketed, overlapped gradient allreduce (grad_sync.h).
#include "dist/grad_sync.h"

#include "core/error.h"
#include "core/progress.h" // fu_now

#include <mpi.h>
#include <stdbool.h>
#include <stdlib.h>
#include <string.h>

typedef struct {
    size_t off, len; // floats of the gradient buffer
    size_t left;     // floats not yet final this step
    bool started;
    MPI_Request req;
} bucket;

struct fu_grad_sync {
    fu_comm *c;
    MPI_Comm comm;
    float *grads; // (n)
    size_t n;
    bucket *b;
    int nb, started;
    double scale, t_first;
    fu_grad_sync_stats st;
};

int fu_grad_sync_create(fu_comm *c, float *grads, size_t n, size_t bucket_bytes, fu_grad_sync **out) {
    *out = NULL;
    size_t per = bucket_bytes / sizeof(float);
    if (per < 1) per = 1;
    if (per > ((size_t)1 << 30)) per = (size_t)1 << 30; // MPI counts are ints
    fu_grad_sync *g = fu_calloc(1, sizeof *g);
    if (!g) return -1;
    g->c = c, g->grads = grads, g->n = n;
    g->nb = (int)((n + per - 1) / per);
    g->b = fu_calloc((size_t)g->nb, sizeof *g->b);
    if (!g->b) return free(g), -1;
    // Backward finishes the last parameters (the head) first, so buckets are
    // cut from the end: bucket 0 holds the last `per` floats.
    for (int k = 0; k < g->nb; k++) {
        size_t end = n - (size_t)k * per;
        g->b[k].len = end < per ? end : per;
        g->b[k].off = end - g->b[k].len;
    }
    if (c->mpi) g->comm = (MPI_Comm)fu_comm_grad_comm(c);
    g->st.buckets = g->nb;
    g->st.mb_per_step = (double)n * sizeof(float) / 1e6;
    *out = g;
    return 0;
}

void fu_grad_sync_free(fu_grad_sync *g) {
    if (!g) return;
    free(g->b);
    free(g);
}

void fu_grad_sync_begin(fu_grad_sync *g, double scale) {
    g->scale = scale;
    g->started = 0;
    g->t_first = -1;
    for (int k = 0; k < g->nb; k++) g->b[k].left = g->b[k].len, g->b[k].started = false;
}

static void start(fu_grad_sync *g, bucket *b) {
    float *v = g->grads + b->off; // (len)
    if (g->started++ == 0 && g->t_first < 0) g->t_first = fu_now(); // scaling is part of the cost
    if (g->scale != 1.0) {
        float s = (float)g->scale;
        for (size_t i = 0; i < b->len; i++) v[i] *= s;
    }
    b->started = true;
    if (g->c->mpi) MPI_Iallreduce(MPI_IN_PLACE, v, (int)b->len, MPI_FLOAT, MPI_SUM, g->comm, &b->req);
    else b->req = MPI_REQUEST_NULL;
}

// Lets MPI move the buckets in flight along.
static void poke(fu_grad_sync *g) {
    for (int k = 0; k < g->nb; k++)
        if (g->b[k].started && g->b[k].req != MPI_REQUEST_NULL) {
            int done;
            MPI_Test(&g->b[k].req, &done, MPI_STATUS_IGNORE);
        }
}

void fu_grad_sync_ready(fu_grad_sync *g, size_t off, size_t len) {
    size_t end = off + len;
    for (int k = 0; k < g->nb; k++) {
        bucket *b = &g->b[k];
        size_t lo = off > b->off ? off : b->off, hi = end < b->off + b->len ? end : b->off + b->len;
        if (lo >= hi) continue;
        b->left -= hi - lo;
        if (b->left == 0 && !b->started) start(g, b);
    }
    if (g->c->mpi) poke(g);
}

int fu_grad_sync_end(fu_grad_sync *g) {
    double t0 = fu_now();
    if (g->t_first < 0) g->t_first = t0; // nothing started during backward
    // Every rank starts the same buckets in the same order: those reported
    // complete (in report order, identical across ranks), then the rest.
    for (int k = 0; k < g->nb; k++)
        if (!g->b[k].started) start(g, &g->b[k]);
    int rc = MPI_SUCCESS;
    if (g->c->mpi)
        for (int k = 0; k < g->nb && rc == MPI_SUCCESS; k++) rc = MPI_Wait(&g->b[k].req, MPI_STATUS_IGNORE);
    double t1 = fu_now();
    g->st.exposed += t1 - t0;
    g->st.seconds += t1 - g->t_first;
    if (rc != MPI_SUCCESS) return fu_fail("MPI", "gradient allreduce failed (error %d)", rc);
    return 0;
}

fu_grad_sync_stats fu_grad_sync_stats_of(const fu_grad_sync *g) { return g->st; }

static int cmp_double(const void *a, const void *b) {
    double x = *(const double *)a, y = *(const double *)b;
    return (x > y) - (x < y);
}

int fu_grad_sync_calibrate(fu_grad_sync *g, int reps, double *seconds) {
    *seconds = 0;
    if (!g->c->mpi) return 0;
    float *tmp = fu_calloc(g->n, sizeof *tmp);
    double *t = fu_calloc((size_t)reps, sizeof *t);
    if (!tmp || !t) return free(tmp), free(t), -1;
    int rc = MPI_SUCCESS;
    for (int r = 0; r < reps && rc == MPI_SUCCESS; r++) {
        MPI_Barrier(g->comm);
        double t0 = fu_now();
        for (size_t off = 0; off < g->n && rc == MPI_SUCCESS; off += (size_t)1 << 30) {
            size_t len = g->n - off < ((size_t)1 << 30) ? g->n - off : (size_t)1 << 30;
            rc = MPI_Allreduce(MPI_IN_PLACE, tmp + off, (int)len, MPI_FLOAT, MPI_SUM, g->comm);
        }
        t[r] = fu_now() - t0;
    }
    qsort(t, (size_t)reps, sizeof *t, cmp_double);
    *seconds = t[reps / 2];
    free(tmp), free(t);
    if (rc != MPI_SUCCESS) return fu_fail("MPI", "allreduce failed (error %d)", rc);
    return 0;
}
