// The scaling model: training time, speedup and efficiency of data-parallel
// runs on N ranks, predicted from a measured 1-rank run and a measured
// 2-rank run of the same recipe (docs/experiments.md states it in full).
//
// Every rank trains on a fixed batch per step (32), so an epoch takes
// ceil(images / (N x batch)) steps per rank. A step costs what it costs on
// one rank (compute and data wait per step; each rank has its own cores),
// plus the part of the gradient allreduce that backward does not hide. A
// ring allreduce of B bytes takes 2(N-1)/N x B / bandwidth + 2(N-1) x
// latency; the 2-rank run's blocking allreduce of the whole gradient (or,
// without that column, its allreduce time per step) gives B / bandwidth for
// a chosen latency. Run time that is not steps (set-up) stays as measured.
#ifndef FU_METRICS_SCALING_H
#define FU_METRICS_SCALING_H

#include "metrics/table.h"

typedef struct {
    double images, epochs, batch; // train images, epochs, images per rank per step
    double step_compute;          // s per step: forward, backward, update on one rank
    double step_wait;             // s per step waiting for data
    double fixed;                 // s per run besides the steps
    double bytes_per_bw;          // s: bytes all-reduced per step / bandwidth
    double latency;               // s per ring hop
    double hide;                  // s per step of backward an allreduce can hide behind
    double allreduce2, exposed2;  // s per step at 2 ranks, as measured (for the record)
} fu_scaling_model;

typedef struct {
    int ranks;
    double steps;     // per rank
    double allreduce; // s per step
    double exposed;   // s per step the step waits for it
    double seconds;   // training time
} fu_scaling_point;

// Seconds of one ring allreduce on `ranks` ranks (0 on one).
double fu_ring_allreduce_seconds(int ranks, double bytes_per_bw, double latency);

// Optimizer steps per rank of the whole run.
double fu_scaling_steps(const fu_scaling_model *m, int ranks);

fu_scaling_point fu_scaling_predict(const fu_scaling_model *m, int ranks);

// Fits the model to a 1-rank run and a 2-rank run (the allreduce columns of
// cnn-train over MPI) of one recipe; latency in s per hop. Steps and compute
// time missing from an older 1-rank file are derived from its other columns.
// The fit reproduces the 1-rank run's time exactly; without
// allreduce_full_seconds, also the 2-rank run's allreduce and exposed times
// per step (with it, they differ by what the training's allreduce costs
// beyond one blocking allreduce). -1 + message when the runs do not fit
// (different recipe, missing columns).
int fu_scaling_fit(const fu_run *one, const fu_run *two, double latency, fu_scaling_model *m);

// The same from a 1-rank run alone and a nominal link: grad_bytes all-reduced
// per step at `bandwidth` bytes/s of ring bus bandwidth (NCCL's busbw, e.g. a
// GPU's NVLink figure) and `latency` s per hop, overlapping up to backward's
// share of the step. For GPUs where only one is at hand: a prediction, no fit.
int fu_scaling_fit_nominal(const fu_run *one, double grad_bytes, double bandwidth, double latency,
                           fu_scaling_model *m);

#endif
