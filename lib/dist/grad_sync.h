// Gradient averaging across ranks that overlaps backward, as DDP does: the
// flat gradient buffer is cut into buckets of consecutive parameters; the
// backend reports ranges as they become final (fu_dist_hooks.grads_ready),
// and a bucket whose every value is final starts its nonblocking allreduce
// at once while backward goes on. Each later report also gives MPI a chance
// to progress the buckets in flight (Open MPI moves nonblocking collectives
// only inside MPI calls; a progress thread would spin on the cores the ranks
// compute on).
//
// What is summed is each rank's gradient times `scale` (fu_grad_sync_begin):
// the trainer passes its share of the global batch's loss weight, so the sum
// is the gradient of the global batch's weighted mean loss — what one process
// on the whole batch computes, not DDP's mean of per-rank means (they differ
// when ranks' class mixes differ).
#ifndef FU_DIST_GRAD_SYNC_H
#define FU_DIST_GRAD_SYNC_H

#include "dist/comm.h"

#include <stddef.h>

typedef struct fu_grad_sync fu_grad_sync;

// grads (n) is the buffer backward writes; buckets of about bucket_bytes.
int fu_grad_sync_create(fu_comm *c, float *grads, size_t n, size_t bucket_bytes, fu_grad_sync **out);
void fu_grad_sync_free(fu_grad_sync *g);

// Before backward: this step's gradients are to be multiplied by scale.
void fu_grad_sync_begin(fu_grad_sync *g, double scale);
// grads[off, off + len) are final (the backend's grads_ready hook).
void fu_grad_sync_ready(fu_grad_sync *g, size_t off, size_t len);
// After backward: starts what was not started (a backend that never reports
// still works, without overlap) and waits for every bucket. Afterwards grads
// hold the sum over ranks, the same bytes on every rank.
int fu_grad_sync_end(fu_grad_sync *g);

typedef struct {
    int buckets;
    double mb_per_step;  // gradient megabytes all-reduced per step
    double seconds;      // summed over steps: first bucket started -> last one done
    double exposed;      // summed over steps: time fu_grad_sync_end waited (not hidden by backward)
} fu_grad_sync_stats;

fu_grad_sync_stats fu_grad_sync_stats_of(const fu_grad_sync *g);

// Seconds one blocking allreduce of the whole gradient takes (median of
// `reps`): the bandwidth figure the scaling model extrapolates from.
int fu_grad_sync_calibrate(fu_grad_sync *g, int reps, double *seconds);

#endif
