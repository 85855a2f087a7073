// The training loop of the recipe over a backend: one optimizer step
// (forward, weighted cross-entropy, backward, clipping, AdamW), an epoch over
// a dataset with the next batch prepared in a background thread while the
// current one computes, and evaluation in eval mode. Owns the flat buffers
// (params, grads, AdamW moments, BN state, counts) and a real copy of the
// best weights.
//
// Where the backend can hold the training state itself (fu_backend.resident:
// the cuda backend, on its GPU), the steps run there and the host buffers
// are a copy brought up to date only when read: fu_trainer_pull before
// anything reads params, state, m1 or m2 (the trainer's own functions and
// fu_checkpoint_save do), fu_trainer_host_changed after anything writes
// them (fu_checkpoint_load does). grads then stays unused.
#ifndef FU_NN_TRAINER_H
#define FU_NN_TRAINER_H

#include "dist/comm.h"
#include "dist/grad_sync.h"
#include "nn/adamw.h"
#include "nn/backend.h"
#include "nn/loader.h"
#include "nn/model.h"

#include <stdbool.h>
#include <stdint.h>

typedef struct {
    int epochs, batch;
    double lr, weight_decay, max_grad_norm;
    bool no_decay_bn_bias;
    bool augment, dropout; // both on in the recipe; off for oracle tests
    uint64_t seed;
    fu_amp amp;
    int device; // the GPU of the cuda backend
    // Model parallelism (nn/pipe.h): stages > 1 or micro_batches > 1 run the
    // model as a pipe of stages; 0 counts as 1.
    int stages, micro_batches;
    const char *stage_cuts; // fu_stages_parse's spec; NULL: balanced
    bool shared_gpu;        // every stage on the rank's GPU
    bool deferred_bn;       // micro-batches: running statistics once per batch (nn/pipe.h)
    // Data parallel on the cuda backend: sum gradients through MPI on the
    // host (dist/grad_sync.h), not with NCCL on the GPUs (the default there);
    // other backends always use MPI.
    bool mpi_allreduce;
    // Clipping and AdamW on the host even where the backend could hold the
    // training state (fu_backend.resident): for comparisons.
    bool host_step;
    // Threads that make each batch (decoding, augmentation) in the loading
    // thread, beside the step; 0 counts as 1. A GPU backend leaves the host's
    // cores to them; a CPU backend's step wants them itself.
    int load_threads;
    // cuda: convolution algorithms measured and recorded in this file, or
    // taken from it (fu_backend_opts.conv_algos); NULL: cuDNN's heuristics.
    const char *conv_algos;
    // fp16: the loss scale to start at, as GradScaler's init_scale (0: 2^16,
    // its default); a power of two from FU_LEAST_LOSS_SCALE up.
    float loss_scale;
} fu_train_opts;

// The study's recipe: 10 epochs, batch 32, lr 1e-3, weight decay 1e-4 on
// every parameter, clipping at norm 1, augmentation and dropout on, seed 42.
fu_train_opts fu_train_defaults(void);

// What the host knows of a step whose figures the backend keeps.
typedef struct {
    int64_t step, seen;   // as people count them; the global batch's images
    double w_mine, w_all; // this rank's loss weight, the global batch's
} fu_kept_step;

typedef struct {
    const fu_model *m;
    fu_backend *be;
    fu_train_opts o;
    fu_adamw_opts adamw;
    float *params, *grads, *m1, *m2, *state; // (n_params) x 4, (n_state)
    int64_t *counts;
    float *best_params, *best_state; // the selected epoch's weights: a real copy
    int64_t *best_counts;
    fu_param_group *groups;
    int n_groups;
    float class_w[FU_MAX_CLASSES];
    int64_t step;    // training steps taken (batches)
    int64_t skipped; // of which skipped, the gradients having overflowed fp16 (AdamW's step: step - skipped)
    double grad_norm; // of the last step, before clipping
    float *x[2];  // two batch buffers (n, 3, H, W): one computes, one loads
    int *labels[2];
    // Data parallel (fu_trainer_distribute); comm NULL: one process.
    fu_comm *comm;
    fu_grad_sync *sync;  // gradients summed on the host (MPI), or
    bool nccl;           // on the GPUs by the backend (NCCL; fu_backend.nccl)
    fu_dist_hooks hooks;
    // The backend holds the live weights, state and moments (see above);
    // which side has the newer copy.
    bool resident, host_stale, device_stale;
    // Resident steps whose loss, hits and norm the backend keeps until read
    // (fu_resident_api.figures; fu_train_epoch's steps), to be finished then.
    fu_kept_step pending[FU_FIGURE_SLOTS];
    int n_pending;
    float last_loss; // the last finished step's loss (NAN before one)
    void (*x_free)(void *p); // how x[] was allocated (the backend's host_alloc, or malloc)
} fu_trainer;

// Allocates everything for batches of o->batch images of the model's size
// on backend `backend`, and initialises the weights from o->seed.
int fu_trainer_init(fu_trainer *t, const fu_model *m, const fu_train_opts *o, const char *backend, int threads);
// The same on a backend created by the caller, which t then owns (and
// destroys, also when this fails).
int fu_trainer_init_with(fu_trainer *t, const fu_model *m, const fu_train_opts *o, fu_backend *be);
void fu_trainer_free(fu_trainer *t);

// Brings params, state, m1 and m2 on the host up to date where the backend
// holds newer ones (no-op otherwise).
int fu_trainer_pull(fu_trainer *t);
// Says the host buffers were written (a resume): the backend takes them
// before the next step.
void fu_trainer_host_changed(fu_trainer *t);

// Makes t one rank of c's data-parallel job: rank 0's initial weights and
// BN state go to every rank (and are checked), gradients are summed across
// ranks in buckets of bucket_bytes overlapping backward (with NCCL on the
// GPUs where the backend has it, fu_backend.nccl, unless o.mpi_allreduce;
// else with MPI on the host), and with sync_bn BatchNorm uses the statistics
// of the global batch. Epochs then train each rank on its slice of the order
// (dist/sampler.h), and fu_evaluate splits a split across ranks and gathers
// every prediction on every rank.
int fu_trainer_distribute(fu_trainer *t, fu_comm *c, bool sync_bn, size_t bucket_bytes);

// How gradients are summed: "NCCL", "MPI", or NULL for one process.
const char *fu_trainer_allreduce_name(const fu_trainer *t);
// The gradient allreduce's figures so far (zeros for one process).
fu_grad_sync_stats fu_trainer_allreduce_stats(const fu_trainer *t);
// Seconds one blocking allreduce of every gradient takes (median of reps;
// 0 for one process). Collective.
int fu_trainer_allreduce_calibrate(fu_trainer *t, int reps, double *seconds);

// Whether every rank holds the same weights (a checksum compared across
// ranks); fails naming the first rank that differs.
int fu_trainer_check_in_sync(fu_trainer *t);

// Class weights from the train split's counts: inverse frequency, normalised
// to sum to 1. Fails on a split missing a class (its weight is infinite).
int fu_class_weights(const size_t *count, int classes, float *w);

// One optimizer step on n >= 2 images at learning rate lr. Fails, naming the
// step and leaving the weights as they were, when the loss or the gradient
// norm is not finite; but under fp16 loss scaling (fu_backend.loss_scaling)
// a norm that is not finite skips the step, as PyTorch's GradScaler does
// (the weights stay, t->skipped counts it, the backend halved its scale),
// and fails only once the scale is down to FU_LEAST_LOSS_SCALE. *loss: the
// batch's weighted loss; *correct: argmax hits; *seen: images. Data
// parallel, all three are of the global batch (every rank's n images), and
// every rank returns the same.
int fu_train_step(fu_trainer *t, int n, const float *x, const int *labels, double lr, float *loss, int *correct,
                  int *seen);

// fp16: the backend's loss scale (one wait for the GPU; a pipe keeps its on
// the host); NAN without loss scaling, or where the backend cannot say
// (fu_error says why).
float fu_trainer_loss_scale(const fu_trainer *t);

// Batches of an epoch of n samples: ceil(n / batch), less a final batch of
// one image (BatchNorm on batch statistics needs two), which is dropped.
int fu_epoch_batches(size_t n, int batch, bool *dropped_one);
// The same for t's share of n samples (all of them with one process).
int fu_trainer_batches(const fu_trainer *t, size_t n, bool *dropped_one);

// Running figures of an epoch (kept in the trainer state, so a run resumed
// in the middle of an epoch reports what an uninterrupted one does).
typedef struct {
    int epoch, next_batch; // where the epoch stands
    double loss_sum;       // sum over batches of loss x images
    int64_t seen, correct; // images trained on, argmax hits
    double seconds, wait;  // compute + load time, time spent waiting for data
} fu_epoch_stats;

// fu_train_step adding the step's loss (times its images), hits and images
// to st, but for where the backend can keep its steps' figures
// (fu_resident_api.figures: the cuda backend, resident): then the step never
// waits for the GPU (the "no host synchronisation inside a step"),
// and the figures come back, into st, every FU_FIGURE_SLOTS steps and at
// fu_train_settle; a non-finite loss or norm fails (or, fp16, skips) as
// there, but is found when the figures are read, naming the step it was,
// after the steps that followed it have run.
// *loss: this step's, or the last one read back (NAN before the first).
int fu_train_step_into(fu_trainer *t, int n, const float *x, const int *labels, double lr, fu_epoch_stats *st,
                       float *loss);

// Reads back the figures of the steps fu_train_step_into left on the backend
// (one wait for the GPU) and adds them to st; 0 where there are none.
int fu_train_settle(fu_trainer *t, fu_epoch_stats *st);

// Called after each step; loss: that step's, or on a backend that keeps
// its steps' figures (fu_resident_api.figures) the last one read back (NAN
// before the first), st's loss_sum and correct likewise up to that step.
typedef void (*fu_step_report)(void *ctx, const fu_epoch_stats *st, int batches, float loss);

// Trains epoch st->epoch from batch st->next_batch at learning rate lr,
// stopping before the step that would exceed max_steps (< 0: no limit).
// Returns 0 when the epoch is done, 1 when stopped by max_steps, -1 on error.
// Its steps are fu_train_step_into's, settled at the end.
int fu_train_epoch(fu_trainer *t, const fu_dataset *d, double lr, int64_t max_steps, fu_epoch_stats *st,
                   fu_step_report report, void *ctx);

// Eval mode (BN running statistics, no dropout) over a whole split with the
// given weights (params, state).
typedef struct {
    size_t n;
    double loss;     // weighted cross-entropy over the split (train class weights)
    double acc, auc; // auc NAN for a single-class split
    double sensitivity, specificity, f1; // class 1 = positive
    double *p1;      // (n) softmax probability of class 1
    int *pred;       // (n) argmax
    double wait;     // seconds waiting for data
} fu_eval;

int fu_evaluate(fu_trainer *t, const fu_dataset *d, const float *params, const float *state, fu_eval *out);
void fu_eval_free(fu_eval *e);

// Copies the live weights into the best-weights buffers.
int fu_trainer_keep_best(fu_trainer *t);

#endif
