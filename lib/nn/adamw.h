// AdamW over the flat parameter buffer, as torch.optim.AdamW (the
// single-tensor path of PyTorch 1.13): decoupled weight decay
// p -= lr * wd * p before the Adam update, bias-corrected moments, and
// gradient clipping by total norm as torch.nn.utils.clip_grad_norm_.
#ifndef FU_NN_ADAMW_H
#define FU_NN_ADAMW_H

#include "nn/model.h"

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

typedef struct {
    double beta1, beta2, eps, weight_decay;
} fu_adamw_opts;

fu_adamw_opts fu_adamw_defaults(void); // 0.9, 0.999, 1e-8, 1e-4

// Which parameters get weight decay, as runs of the flat buffer.
typedef struct {
    size_t offset, count;
    bool decay;
} fu_param_group;

// One run per parameter tensor in forward order; with no_decay_bn_bias,
// BatchNorm weights and biases and Linear biases get no decay. *groups is
// allocated here (free it); returns the number of runs, -1 on failure.
int fu_param_groups(const fu_model *m, bool no_decay_bn_bias, fu_param_group **groups);

// Step t (1, 2, ...) at learning rate lr on n parameters p with gradients
// g and moments m1, m2 (zero before step 1). Elementwise, so the result
// does not depend on the thread count.
void fu_adamw_step(const fu_adamw_opts *o, double lr, int64_t t, const fu_param_group *groups, int n_groups,
                   float *p, const float *g, float *m1, float *m2);

// The L2 norm of all n gradients (accumulated in double over fixed chunks, so
// it is the same for any thread count), and, when it exceeds max_norm, the
// gradients scaled by max_norm / (norm + 1e-6). Returns the norm before clipping.
double fu_clip_grad_norm(float *g, size_t n, double max_norm);

#endif
