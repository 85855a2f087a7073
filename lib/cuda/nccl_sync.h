// Gradient allreduce on the GPU with NCCL, overlapping backward: what
// dist/grad_sync.h does on the host with MPI, for the cuda backend's device
// gradient buffer. One rank per GPU; the communicator is bootstrapped from a
// fu_comm (rank 0's ncclUniqueId broadcast over MPI).
//
// The buffer is cut into buckets as grad_sync cuts it (from its end, since
// backward finishes the head first). The backend reports ranges as its ops
// enqueue their last write of them (fu_nccl_sync_ready); a bucket whose every
// value is reported records an event on the compute stream (the default
// stream, where the backend runs), and the NCCL stream (non-blocking, so it
// never serialises with the default stream) waits for that event, multiplies
// the bucket by the rank's share and starts ncclAllReduce (sum, in place),
// while the compute stream goes on with backward.
//
// The host never waits for the sums: the compute stream does (backward's
// last bucket, the fp16 flag's max), so that a step has no host wait. A
// stream made to wait for a collective that a dead rank never completes
// would hang the host's next synchronising call for ever, so a watchdog
// thread polls the work in flight and NCCL's asynchronous error state, and
// on an error or when nothing completes for the timeout (30 s,
// FU_NCCL_TIMEOUT=seconds in the environment) aborts the communicator: its
// kernels return, the host's call returns, and every later call on the
// sync fails naming NCCL's error or the timeout (fu_nccl_sync_check: what
// the backend asks after each synchronising call that hands results out,
// since values computed from an aborted sum are garbage). The communicator
// is non-blocking (ncclConfig_t.blocking = 0) so that its initialisation
// and finalisation can time out too; a mutex keeps the watchdog's calls on
// it apart from the host's (NCCL forbids concurrent ones).
//
// libnccl.so.2 is loaded at run time (dlopen), not linked: programs built
// with the GPU backend start on machines without NCCL, and only creating a
// sync there fails ("NCCL: cannot load libnccl.so.2: ...").
//
// C linkage, as cuda_backend.h: the trainer (C11) and C tests call it, the
// trainer through fu_backend.nccl (struct fu_nccl_api below) only, so that
// builds without CUDA link.
#ifndef FU_CUDA_NCCL_SYNC_H
#define FU_CUDA_NCCL_SYNC_H

#ifdef __cplusplus
// dist/comm.h is C11: its one _Noreturn is C++'s [[noreturn]].
#define _Noreturn [[noreturn]]
extern "C" {
#endif

#include "dist/comm.h"
#include "dist/grad_sync.h" // fu_grad_sync_stats
#include "nn/backend.h"

#include <stdbool.h>
#include <stddef.h>

typedef struct fu_nccl_sync fu_nccl_sync;

// A sync of the device buffer grads (n floats, on GPU `device`) over c's
// ranks, buckets of about bucket_bytes. Collective: every rank of c calls it.
// The ranks agree on failures (a rank that cannot load NCCL, or whose
// communicator does not come up) so that all fail together.
int fu_nccl_sync_create(fu_comm *c, int device, float *grads, size_t n, size_t bucket_bytes, fu_nccl_sync **out);
// Finalises (or, after an error, has aborted) the communicator.
void fu_nccl_sync_free(fu_nccl_sync *s);

// The trainer, before backward: gradients are multiplied by scale (the rank's
// share of the global batch's loss weight, as grad_sync) before the sum; 1
// until set.
void fu_nccl_sync_set_scale(fu_nccl_sync *s, double scale);
// The backend: at the start of each backward pass, after the pass has
// cleared the gradients.
void fu_nccl_sync_begin(fu_nccl_sync *s);
// The backend, in backward: grads[off, off + len) are written by work already
// enqueued on the compute stream. Errors are kept for fu_nccl_sync_end.
void fu_nccl_sync_ready(fu_nccl_sync *s, size_t off, size_t len);
// The backend, after the pass: starts the buckets not yet started (in bucket
// order; a backend that reports nothing still works, without overlap) and
// makes the compute stream wait for all of them. Work enqueued there after
// it sees in the buffer the sum over ranks of scale x gradient, the same
// bytes on every rank.
int fu_nccl_sync_end(fu_nccl_sync *s);
// The largest of a device int over the ranks, in place, for the compute
// stream's work enqueued after it (fp16: the ranks agree on an overflow, so
// that their loss scales stay equal).
int fu_nccl_sync_max(fu_nccl_sync *s, int *dev_value);
// The sum of n device doubles over the ranks, in place, likewise (sync-BN's
// sums, between backward's buckets in the same order on every rank).
int fu_nccl_sync_sum(fu_nccl_sync *s, double *dev, size_t n);
// -1 (with the error) once the watchdog gave up on the communicator, else 0;
// 0 for NULL. The host learns so late: check after a synchronising call
// whose results depend on the sums.
int fu_nccl_sync_check(fu_nccl_sync *s);

// Seconds: first bucket started -> last one done on the GPU, and the part of
// it after backward's last kernel (exposed), summed over backward passes
// (waits for the sums in flight).
fu_grad_sync_stats fu_nccl_sync_stats_of(fu_nccl_sync *s);

// Seconds one allreduce of the whole buffer's size takes on the GPU (median
// of reps, each timed from the end of a one-float allreduce that lines the
// ranks up), on a scratch buffer: the bandwidth figure the scaling model
// extrapolates from. Waits for it.
int fu_nccl_sync_calibrate(fu_nccl_sync *s, int reps, double *seconds);

// A bucket of the plan: floats [off, off + len) of the buffer, and whether
// the last backward pass started it before fu_nccl_sync_end (overlapping).
typedef struct {
    size_t off, len;
    bool early;
} fu_nccl_bucket;
// The buckets (at most max into out); returns how many there are.
int fu_nccl_sync_plan(const fu_nccl_sync *s, fu_nccl_bucket *out, int max);

// What code built without CUDA reaches through fu_backend.nccl (the cuda
// backend's, and the model-parallel pipe's where every stage is cuda). The
// syncs belong to the backend (freed with it), so calls name the backend.
struct fu_nccl_api {
    // Makes b's device gradients summed over c's ranks by NCCL; b then never
    // calls dist->grads_ready. Collective, as fu_nccl_sync_create. Without
    // `after`, b's backward sums them, bucket by bucket, overlapping itself.
    // With it, backward leaves them alone and only sum_start/sum_wait sum
    // them: for a caller that adds several backward passes first (pipe.c's
    // stages with micro-batches).
    int (*attach)(fu_backend *b, fu_comm *c, size_t bucket_bytes, bool after);
    // Attached `after`: starts the sum of the whole gradient buffer as the
    // work enqueued so far (by any thread) leaves it, from this thread; every
    // rank must start its sums in the same order. sum_wait waits for it.
    // (NULL in a backend whose attach takes no `after`: the pipe's.)
    int (*sum_start)(fu_backend *b);
    int (*sum_wait)(fu_backend *b);
    void (*set_scale)(fu_backend *b, double scale); // fu_nccl_sync_set_scale
    fu_grad_sync_stats (*stats_of)(const fu_backend *b);
    int (*calibrate)(fu_backend *b, int reps, double *seconds);
};

#ifdef __cplusplus
}
#undef _Noreturn
#endif

#endif
