// The whole network on the reference ops: forward and backward over the op
// list of a fu_model, with the activation arena planned once for a batch
// size. Slow and plain on purpose: the oracle the fast backends and the
// PyTorch parity test are measured against. Like the ops, it exists in float
// (_f32, the trainer's) and double (_f64: exact enough that a comparison with
// PyTorch in double is free of ReLU-kink and max-pool-tie flips, which in
// float make single gradients differ legitimately); one source, ref_net.inc.
#ifndef FU_NN_REF_NET_H
#define FU_NN_REF_NET_H

#include "core/rng.h"
#include "nn/model.h"

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

// How one pass runs: train = BN on batch statistics (and running stats
// updated), dropout = draw masks from (seed, step, op index); with dropout
// false, dropout is the identity even in training.
// image0: the index of this batch's first image in the step's batch, where a
// step runs in micro-batches (nn/pipe.h): dropout masks are then those of the
// whole batch, whatever the split.
typedef struct {
    bool train, dropout;
    uint64_t seed, step;
    int image0;
} fu_pass;

// The generator of op i's dropout mask, drawn in NCHW order one uniform per
// element: keyed by (seed, step, the op's index in the whole model) and moved
// to image pass->image0, so every backend, stage and micro-batch draws the
// masks a single whole-batch pass would.
fu_rng fu_dropout_rng(const fu_model *m, int i, const fu_pass *pass);

// fu_ref_net_S_init: plans and allocates for `batch` images.
// fu_ref_forward_S: x (n, 3, H, W), 1 <= n <= batch (the last batch of an
//   epoch may be smaller). With labels (n) and class_w (classes)
//   the loss goes to *loss; training needs them, and a batch >= 2
//   (BatchNorm1d on batch statistics needs two values per channel). In
//   training, state and counts are updated (running stats, num_batches_tracked).
// fu_ref_logits_S: (n, classes) logits of the last forward; for a stage
//   (model.h) that ends before the loss, its last op's output.
// fu_ref_backward_S: gradient of the last training forward's loss; overwrites
//   grads (n_params). dy: NULL where the model ends in the loss, else the
//   gradient of its output.
// fu_ref_input_grad_S: after backward, for a model with inner_input, the
//   gradient of its input x; else NULL.
#define FU_REF_NET(T, S)                                                                                          \
    typedef struct {                                                                                              \
        const fu_model *m;                                                                                        \
        fu_plan plan;                                                                                             \
        T *act;  /* op outputs, plan.act offsets */                                                              \
        T *dact; /* their gradients, same layout */                                                              \
        T *aux;  /* values saved for backward, plan.aux offsets */                                               \
        const int *labels; /* of the last training forward, for backward */                                      \
        const T *class_w;  /* (classes) */                                                                        \
        bool ready;        /* a training forward ran since the last backward */                                  \
        int n;             /* images in the last forward */                                                      \
        /* Data parallelism: backend.h's fu_dist_hooks, copied in by the caller                                   \
           before each pass (dist_sum NULL: BN statistics of this batch alone). */                               \
        void *dist_ctx;                                                                                           \
        int (*dist_sum)(void *ctx, double *v, int n);                                                             \
        void (*grads_ready)(void *ctx, size_t off, size_t len);                                                   \
        double *dist_v;    /* (2 * widest BN + 2): what sync-BN sums over ranks */                               \
        double dist_share; /* W_r / W of the last training forward (below) */                                   \
    } fu_ref_net_##S;                                                                                             \
    int fu_ref_net_init_##S(fu_ref_net_##S *net, const fu_model *m, int batch);                                   \
    void fu_ref_net_free_##S(fu_ref_net_##S *net);                                                                \
    int fu_ref_forward_##S(fu_ref_net_##S *net, int n, const T *params, T *state, int64_t *counts,                \
                           const T *x, const int *labels, const T *class_w, const fu_pass *pass, T *loss);        \
    const T *fu_ref_logits_##S(const fu_ref_net_##S *net);                                                        \
    int fu_ref_backward_##S(fu_ref_net_##S *net, const T *params, const T *dy, T *grads);                        \
    const T *fu_ref_input_grad_##S(const fu_ref_net_##S *net);

// Sync-BN and the ranks' loss weights: each rank's loss is normalised by its
// own label weight W_r (sum of class_w over its labels), and the caller adds
// the ranks' gradients scaled by W_r / W (W: all ranks' W_r), which is the
// full batch's gradient only if rank r's backward is the full loss's divided
// by share = W_r / W. Ranks' gradients meet only in sync-BN's backward: the
// values summed there are the full loss's (local sums * share), and each rank
// divides the global sums by its own share again. Sync-BN's forward sums
// carry the value count and W_r along (2C + 2 values: sum x, sum x^2, count,
// W_r); its backward sums 2C + 1 (sum dy, sum dy * xhat, count). Without
// sync-BN the ranks' backward passes are independent: nothing to weigh.

// Calls ready(ctx, off, len) for the parameter gradients of op i (weight and
// bias: one range when adjacent, as in fu_model's layout); nothing for an op
// without parameters. For backend.h's grads_ready hook, in every backend.
void fu_params_ready(const fu_model *m, int i, void (*ready)(void *ctx, size_t off, size_t len), void *ctx);

FU_REF_NET(float, f32)
FU_REF_NET(double, f64)
#undef FU_REF_NET

#endif
