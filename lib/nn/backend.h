// What the trainer, cnn-predict and the tests call to run the network: one
// interface over the backends (ref: plain C loops, the oracle; cpu: oneDNN;
// later cuda). Every backend takes the same flat buffers (model.h) and the
// same input, so checkpoints, optimizer and tests do not care which runs.
//
// Layouts at this interface are fixed, whatever a backend uses inside:
//   x       (n, 3, H, W) fp32, normalised pixels, NCHW
//   labels  (n) int, 0..classes-1;  class_w (classes) fp32
//   params, grads (n_params) fp32; state (n_state) fp32; counts (n_counts) int64
//   logits  (n, classes) fp32
// A stage of a model cut for model parallelism (model.h's op_base,
// inner_input; nn/stages.h) runs on the same interface: its input x is the
// tensor it starts from, (n, C, H, W) NCHW fp32, and where it ends before the
// loss its output (what `logits` returns) is its last op's (n, C, H, W), whose
// gradient backward takes as dy.
#ifndef FU_NN_BACKEND_H
#define FU_NN_BACKEND_H

#include "nn/adamw.h"
#include "nn/loss_scale.h"
#include "nn/model.h"
#include "nn/ref_net.h" // fu_pass

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

typedef struct fu_backend fu_backend;
struct fu_nccl_api; // cuda/nccl_sync.h

// Mixed precision: OFF computes in fp32; BF16 runs convolutions and matmuls
// on bfloat16 inputs with fp32 accumulation, fp32 master weights, BN and loss
// (CPUs with AVX512-BF16; the cuda backend); FP16 likewise with loss scaling
// (cuda backend only).
typedef enum { FU_AMP_OFF, FU_AMP_BF16, FU_AMP_FP16 } fu_amp;

typedef struct {
    int batch;   // planned batch: forward accepts 1 <= n <= batch
    int threads; // OpenMP threads the backend may use (results do not depend on it)
    fu_amp amp;
    int device;  // the GPU the cuda backend runs on (a rank's local rank); others ignore it
    // cuda: compute with the weights and BN state another cuda backend of
    // the same model on the same GPU holds (its resident ones), instead of
    // holding a copy; it has no AdamW moments and no step of its own.
    // The model-parallel pipe's micro-batch backends of one stage share
    // their first one's this way. Others ignore it. NULL: its own.
    fu_backend *weights_of;
    // cuda: convolution algorithms measured by cuDNN, recorded in this file
    // and taken from it by every later run (cuda/conv_algos.h); NULL:
    // cuDNN's heuristics. Others ignore it.
    const char *conv_algos;
    // cuda, --amp fp16: backward unscales its gradients but leaves the loss
    // scale as it is, for whoever drives the backend to update (through
    // set_loss_scaling): the model-parallel pipe, whose stages' and
    // micro-batches' backends share one scale. Others ignore it.
    bool loss_scale_by_caller;
} fu_backend_opts;

// Data parallelism (lib/dist) reaches into a backend through these hooks;
// with none (fu_backend.dist NULL) a backend is one process on its own.
// Every rank runs the same op list, so the calls below come in the same
// order on every rank, which collectives need.
typedef struct {
    void *ctx;
    // Sync-BN (NULL: BatchNorm statistics stay per rank): sums v[0..n) over
    // all ranks in place; collective, blocking. Training-mode BN (2d and 1d)
    // calls it once in forward with (sum x, sum x^2) per channel and once in
    // backward with (sum dy, sum dy * xhat) per channel, so that statistics,
    // running averages and input gradients are those of the global batch.
    int (*sum)(void *ctx, double *v, int n);
    // Called in backward as soon as grads[off, off + len) hold their final
    // values: every parameter exactly once per backward, ranges in the same
    // order on every rank (NULL: not called). Lets gradient buckets start
    // their allreduce while backward goes on.
    void (*grads_ready)(void *ctx, size_t off, size_t len);
    // *flag = 1 on every rank where it is 1 on any; collective, blocking
    // (NULL: not called). The cuda backend in fp16 agrees on a gradient
    // overflow with it after each backward where the gradients are summed
    // on the host (over NCCL it agrees on the GPUs), so that every rank's
    // loss scale stays the same.
    int (*any)(void *ctx, int *flag);
} fu_dist_hooks;

// One training step's figures where a backend keeps them for the trainer to
// read later (fu_resident_api.figures): the step then never waits for the
// GPU. The same values forward's *loss and step's *norm would be.
typedef struct {
    float loss;       // this rank's weighted mean loss
    int hits;         // images whose logits' first largest is their label
    double norm;      // the gradients' norm before clipping
    float loss_scale; // fp16: the loss scale after the step (as loss_scaling would say); else unset
} fu_step_figures;
enum { FU_FIGURE_SLOTS = 16 }; // steps a backend keeps figures of between reads

// Optional (NULL in the ref and cpu backends, which compute in host memory):
// the live training state held where the backend computes (the cuda
// backend: on its GPU), so that a step's weights, gradients and AdamW
// moments never cross the bus. The trainer (trainer.h) then passes params,
// state and grads NULL to forward and backward, meaning "the ones the
// backend holds", and moves them to and from the host only for checkpoints,
// evaluation and the ranks' checks. A forward given host params and state
// still uploads them, and they replace the held ones.
typedef struct {
    // Host -> backend: weights (n_params), BN state (n_state), AdamW's
    // moments (n_params each); a NULL one stays as it is.
    int (*load)(fu_backend *b, const float *params, const float *state, const float *m1, const float *m2);
    // Backend -> host, the same four (a NULL one is not copied).
    int (*store)(fu_backend *b, float *params, float *state, float *m1, float *m2);
    // One optimizer step on the gradients of the last backward, as
    // fu_clip_grad_norm then fu_adamw_step (adamw.h) on the host; *norm: the
    // gradients' norm before clipping (norm NULL: kept with the step's
    // figures, below). Where it is not finite the step is refused: weights
    // and moments stay as they were (fp16 skips an overflowed step so). t is
    // the optimizer's step (1, 2, ...: refused steps do not count) as the
    // host knows it; a step whose norm stays on the backend may have been
    // refused unknown to the host, and the kept steps after it, up to the
    // next figures, count one step fewer than the t they are given.
    int (*step)(fu_backend *b, const fu_adamw_opts *o, const fu_param_group *groups, int n_groups, double lr,
                int64_t t, double max_norm, double *norm);
    // For a backend that drives several (the model-parallel pipe, whose
    // stages' gradients make one model's): the norm of the last backward's
    // gradients; step clipped with a norm given (the whole model's) instead
    // of its own; and dst's gradients = a * dst's + w * src's (src NULL:
    // a * dst's), src a backend of the same model on the same GPU, for the
    // sum over micro-batches.
    int (*grad_norm)(fu_backend *b, double *norm);
    int (*step_with_norm)(fu_backend *b, const fu_adamw_opts *o, const fu_param_group *groups, int n_groups,
                          double lr, int64_t t, double max_norm, double norm);
    int (*add_grads)(fu_backend *dst, float a, fu_backend *src, float w);
    // Optional (NULL: every step's loss and norm come back at once): a
    // training forward on the held weights (params NULL) of a model that
    // ends in the loss, given loss NULL, keeps the step's loss and hits where
    // the backend computes (logits() is then not updated), and the step after
    // it, given norm NULL, its norm; FU_FIGURE_SLOTS steps at most. figures
    // copies them back, in step order, into out (FU_FIGURE_SLOTS of them;
    // the one wait for the GPU), *steps how many, and starts over.
    int (*figures)(fu_backend *b, fu_step_figures *out, int *steps);
} fu_resident_api;

struct fu_backend {
    const char *name;   // "ref", "cpu", "cuda"
    const fu_model *m;
    int batch;          // planned batch: forward accepts 1 <= n <= batch
    fu_amp amp;
    const fu_dist_hooks *dist; // set by the caller after create; NULL: single process
    bool reports_grads; // backward calls dist->grads_ready for every parameter (else never)
    size_t act_bytes;   // activation memory it planned (for the start-up report)
    size_t grad_bytes;  // of which the activations' gradients
    // Optional, NULL but in the cuda backend: its gradient allreduce on the
    // GPU with NCCL (cuda/nccl_sync.h), used instead of dist->grads_ready and
    // a host-side sum. Function pointers, so that callers compiled without
    // CUDA (the trainer) link in every build.
    const struct fu_nccl_api *nccl;
    const fu_resident_api *resident; // optional (see above)
    // Optional: host memory the backend copies in from fastest (page-locked
    // for the cuda backend), for input batches; NULL: plain malloc/free.
    void *(*host_alloc)(size_t bytes);
    void (*host_free)(void *p);
    // Optional: starts copying input batch x (n images, in memory from
    // host_alloc) to where the backend computes, on a stream of its own, so
    // that the copy overlaps the step before; a later forward given the same
    // x and n waits for that copy instead of making its own. Called from the
    // trainer's loading thread while a forward or backward may be running on
    // another batch; x stays unchanged until that forward. NULL: none.
    int (*prefetch)(fu_backend *b, const float *x, int n);
    // Optional (cuda): the last forward's output (what logits() returns) and
    // the last backward's input gradient (input_grad()) where they are on the
    // GPU, NCHW fp32, valid until this backend's next forward or backward. A
    // backend that has these also takes x and dy in GPU memory (any GPU's),
    // so that model-parallel stages (nn/pipe.h) hand tensors over GPU to GPU,
    // peer to peer where the GPUs allow, instead of through the host.
    const float *(*device_output)(fu_backend *b);
    const float *(*device_input_grad)(fu_backend *b);
    size_t device_bytes; // memory it holds on its GPU (0 on the CPU), for results.csv's peak_gpu_mb
    // Optional (cuda): how its convolutions were chosen for the planned
    // batch, one phrase for the start-up report; NULL elsewhere.
    const char *conv_note;
    // Optional (cuda, --amp fp16, and a pipe of such stages): dynamic loss
    // scaling's state, for the run's log and checkpoints. A cuda backend's
    // backward updates it where it computes (no wait), and its gradients
    // come out unscaled: not finite where they overflowed. loss_scaling
    // copies it into *out; set_loss_scaling takes one back (a run's start,
    // a resumed run's; refused unless fu_loss_scale_valid). NULL elsewhere.
    int (*loss_scaling)(const fu_backend *b, fu_loss_scale *out);
    int (*set_loss_scaling)(fu_backend *b, const fu_loss_scale *in);
    // Optional (the model-parallel pipe of fp16 stages, whose backends leave
    // the scale to it: loss_scale_by_caller): told after every training step
    // whether its gradients overflowed, that is whether their norm, over
    // every stage, micro-batch and rank, is not finite; it then updates the
    // one scale all of them use, as GradScaler's update after a step. A
    // backend with it keeps no step figures (fu_resident_api.figures): the
    // caller must know every step's norm. NULL elsewhere.
    int (*loss_scale_update)(fu_backend *b, bool overflowed);
    void *impl;
    // Forward pass on n images. In training (pass->train), BN uses batch
    // statistics and updates state and counts, the loss of (labels, class_w)
    // goes to *loss, and the pass is remembered for backward (n >= 2: BN1d
    // needs two values per channel). In eval, labels may be NULL (no loss).
    // params and state NULL (backends with `resident` only): the held ones.
    int (*forward)(fu_backend *b, int n, const float *params, float *state, int64_t *counts, const float *x,
                   const int *labels, const float *class_w, const fu_pass *pass, float *loss);
    // The model's output of the last forward: the logits (n, classes) where
    // it ends in the loss, else its last op's output (n, C, H, W).
    const float *(*logits)(fu_backend *b);
    // Gradient of the last training forward's loss; overwrites grads. A model
    // that ends before the loss takes its output's gradient as dy (same shape
    // as logits()); one that ends in the loss takes dy NULL. params NULL uses
    // the held weights and grads NULL keeps the gradients where the backend
    // computes them, for resident->step (backends with `resident` only).
    int (*backward)(fu_backend *b, const float *params, const float *dy, float *grads);
    // After backward, for a model with inner_input: the gradient of its input
    // x (n, C, H, W) NCHW. NULL in backends or models without one.
    const float *(*input_grad)(fu_backend *b);
    void (*destroy)(fu_backend *b);
};

// name: "ref" or "cpu" ("auto" = the fastest available). Fails with a clear
// message for an amp mode the backend or this CPU cannot run.
int fu_backend_create(const char *name, const fu_model *m, const fu_backend_opts *o, fu_backend **out);

// What b runs on, for people and results.csv: the CPU's model name, or the
// GPU's with its compute capability and library versions.
void fu_backend_device_name(const fu_backend *b, char *out, size_t size);

// The checks every backend's forward makes of its arguments: 1 <= n <=
// b->batch, training with labels, class weights and n >= 2, labels within
// the classes.
int fu_backend_check_batch(const fu_backend *b, int n, const int *labels, const float *class_w, const fu_pass *pass);

// b's loss scale to start at scale, its clean passes at 0 (a run's start:
// GradScaler's init_scale); 0 where b has none.
int fu_backend_start_loss_scale(fu_backend *b, float scale);

// GPUs the cuda backend can use (0 in a build without it, or with no device
// or driver; `why` then says what the runtime answered).
int fu_backend_gpu_count(char *why, size_t size);

// "off", "bf16", "fp16" (for messages and results.csv).
const char *fu_amp_name(fu_amp amp);
// Parses "off"/"fp32", "bf16", "fp16"; -1 for anything else.
int fu_amp_parse(const char *s, fu_amp *out);
void fu_backend_destroy(fu_backend *b);

#endif
