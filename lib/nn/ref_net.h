// The whole network on the reference ops: forward and backward over the op
// list of a fu_model, with the activation arena planned once for a batch
// size. Slow and plain on purpose: the oracle the fast backends and the
// PyTorch parity test are measured against. Like the ops, it exists in float
// (_f32, the trainer's) and double (_f64: exact enough that a comparison with
// PyTorch in double is free of ReLU-kink and max-pool-tie flips, which in
// float make single gradients differ legitimately); one source, ref_net.inc.
#ifndef FU_NN_REF_NET_H
#define FU_NN_REF_NET_H

#include "nn/model.h"

#include <stdbool.h>
#include <stdint.h>

// How one pass runs: train = BN on batch statistics (and running stats
// updated), dropout = draw masks from (seed, step, op index); with dropout
// false, dropout is the identity even in training.
typedef struct {
    bool train, dropout;
    uint64_t seed, step;
} fu_pass;

// fu_ref_net_S_init: plans and allocates for `batch` images.
// fu_ref_forward_S: x (n, 3, H, W), 1 <= n <= batch (the last batch of an
//   epoch may be smaller). With labels (n) and class_w (classes)
//   the loss goes to *loss; training needs them, and a batch >= 2
//   (BatchNorm1d on batch statistics needs two values per channel). In
//   training, state and counts are updated (running stats, num_batches_tracked).
// fu_ref_logits_S: (n, classes) logits of the last forward.
// fu_ref_backward_S: gradient of the last training forward's loss; overwrites
//   grads (n_params).
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
    } fu_ref_net_##S;                                                                                             \
    int fu_ref_net_init_##S(fu_ref_net_##S *net, const fu_model *m, int batch);                                   \
    void fu_ref_net_free_##S(fu_ref_net_##S *net);                                                                \
    int fu_ref_forward_##S(fu_ref_net_##S *net, int n, const T *params, T *state, int64_t *counts,                \
                           const T *x, const int *labels, const T *class_w, const fu_pass *pass, T *loss);        \
    const T *fu_ref_logits_##S(const fu_ref_net_##S *net);                                                        \
    int fu_ref_backward_##S(fu_ref_net_##S *net, const T *params, T *grads);

FU_REF_NET(float, f32)
FU_REF_NET(double, f64)
#undef FU_REF_NET

#endif
