// The cuda backend's optimizer kernels (its resident step, backend.h's
// fu_resident_api): gradient clipping's norm and AdamW over the flat
// parameter buffer, on the device, launched on the default stream. The
// arithmetic per element is adamw_math.h's, shared with the host's
// fu_adamw_step, so that the same gradients give the same bytes. The norm is
// summed in double in an order fixed by n alone (no atomics), so a rerun
// gives the same bytes; it is not the host's order (fu_clip_grad_norm sums
// each chunk in sequence), so the two norms may differ in the last bits.
#ifndef FU_CUDA_CUDA_OPTIM_H
#define FU_CUDA_CUDA_OPTIM_H

#include "nn/adamw_math.h" // fu_adamw_coef

extern "C" {
#include "nn/adamw.h"   // fu_param_group
#include "nn/backend.h" // fu_loss_scale, FU_FIGURE_SLOTS
}

#include <stddef.h>

// Doubles of scratch cu_grad_norm needs for n gradients (one per chunk of
// 65536, at least one).
size_t cu_grad_norm_part_size(size_t n);

// *norm (one double, device memory) = sqrt(sum of g[i]^2) over the n
// gradients g, accumulated in double: each chunk of 65536 by one block in a
// fixed order into part (cu_grad_norm_part_size(n) doubles), then the
// chunks' sums added in order.
void cu_grad_norm(size_t n, const float *g, double *part, double *norm);

// A step's AdamW scalars for optimizer steps t, t - 1, ..., t - 15: the
// kernel takes the one its step turns out to be, t less the steps refused
// before it that the host has not heard of yet (at most FU_FIGURE_SLOTS - 1:
// the figures of the steps it refused are read every FU_FIGURE_SLOTS steps).
typedef struct {
    fu_adamw_coef k[FU_FIGURE_SLOTS]; // k[j]: step t - j (those before step 1 unused)
} cu_adamw_coefs;

// One AdamW step on the weights p and moments m1, m2 (n each) with the
// gradients g (n; not written), as fu_clip_grad_norm then fu_adamw_step on
// the host: where *norm (device memory, from cu_grad_norm) is not finite
// nothing is written, and *refused (device memory) goes up by one where
// count_refusal is set; else each element of a group is updated by
// fu_adamw_elem with ks->k[*refused]'s scalars, its group's decay flag and
// g[i] times fu_clip_coef(*norm, max_norm). groups (device memory):
// n_groups runs of the buffer, sorted by offset, none empty, none
// overlapping; elements in no group are left alone.
void cu_adamw(size_t n, const fu_param_group *groups, int n_groups, const cu_adamw_coefs *ks, int *refused,
              bool count_refusal, double max_norm, const double *norm, const float *g, float *p, float *m1, float *m2);

// fp16's dynamic loss scaling after a backward pass, as GradScaler.update
// (both in device memory; nn/loss_scale.h's rule, which the model-parallel
// pipe applies on the host): where *nonfinite (a gradient overflowed) the
// scale is halved, to least at the lowest, else after growth_steps clean
// passes in a row it is doubled.
void cu_loss_scale_update(fu_loss_scale *s, const int *nonfinite, float least, int growth_steps);

// y = a * y + w * x over n elements (x NULL: y = a * y), each product and
// the sum rounded on their own (no FMA), as the host computes them: the
// model-parallel pipe's weighted sum of its micro-batches' gradients.
void cu_scale_add(size_t n, float a, float *y, float w, const float *x);

#endif
