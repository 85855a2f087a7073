// Optimizer kernels of the cuda backend (cuda_optim.h): the gradient norm as
// a two-level reduction (one block per chunk into a partial sum in double,
// then one thread adding the partials in order: deterministic, no atomics),
// and AdamW element-wise with grid-stride loops (a thread looks its
// element's parameter group up, by binary search over the groups' offsets,
// only when it leaves the last one's); the weighted sum of gradients
// element-wise too.
#include "cuda/cuda_optim.h"
#include "cuda/cuda_grid.h"

#include <cuda_runtime.h>

static const size_t NORM_CHUNK = (size_t)1 << 16; // as fu_clip_grad_norm's chunks

// ---- gradient norm --------------------------------------------------------------

size_t cu_grad_norm_part_size(size_t n) {
    size_t chunks = (n + NORM_CHUNK - 1) / NORM_CHUNK;
    return chunks ? chunks : 1;
}

// Block c: part[c] = sum of g[i]^2 over chunk c. Each thread sums its
// strided share in double, then a tree over the block's threads.
__global__ void k_sumsq_chunks(size_t n, const float *g, double *part) {
    __shared__ double s[THREADS];
    size_t start = blockIdx.x * NORM_CHUNK, end = start + NORM_CHUNK < n ? start + NORM_CHUNK : n;
    double acc = 0;
    for (size_t i = start + threadIdx.x; i < end; i += THREADS) {
        double v = g[i];
        acc += v * v;
    }
    s[threadIdx.x] = acc;
    __syncthreads();
    for (int half = THREADS / 2; half > 0; half /= 2) {
        if ((int)threadIdx.x < half) s[threadIdx.x] += s[threadIdx.x + half];
        __syncthreads();
    }
    if (threadIdx.x == 0) part[blockIdx.x] = s[0];
}

__global__ void k_sumsq_total(size_t chunks, const double *part, double *norm) {
    double sum = 0;
    for (size_t c = 0; c < chunks; c++) sum += part[c];
    *norm = sqrt(sum);
}

void cu_grad_norm(size_t n, const float *g, double *part, double *norm) {
    size_t chunks = cu_grad_norm_part_size(n);
    k_sumsq_chunks<<<(unsigned)chunks, THREADS>>>(n, g, part);
    k_sumsq_total<<<1, 1>>>(chunks, part, norm);
}

// ---- AdamW ----------------------------------------------------------------------

// The group holding element i (groups sorted by offset, not overlapping), or
// -1 where none does.
__device__ static int group_of(const fu_param_group *groups, int n_groups, size_t i) {
    int lo = 0, hi = n_groups; // the first group starting after i is at lo, once lo == hi
    while (lo < hi) {
        int mid = lo + (hi - lo) / 2;
        if (groups[mid].offset <= i) lo = mid + 1;
        else hi = mid;
    }
    return lo > 0 && i - groups[lo - 1].offset < groups[lo - 1].count ? lo - 1 : -1;
}

// Passed by value: the scalars of every step the kernel may turn out to be.
__global__ void k_adamw(size_t n, const fu_param_group *groups, int n_groups, cu_adamw_coefs ks, int *refused,
                        bool count_refusal, double max_norm, const double *norm, const float *g, float *p, float *m1,
                        float *m2) {
    double total = *norm;
    if (!isfinite(total)) { // the step is refused: weights and moments stay
        if (count_refusal && blockIdx.x == 0 && threadIdx.x == 0) *refused += 1; // nobody else reads it now
        return;
    }
    const fu_adamw_coef *k = &ks.k[*refused];
    float clip = fu_clip_coef(total, max_norm); // 1 where the norm is within max_norm: g unchanged
    int j = -1; // the group of this thread's last element: searched for again only once i has left it
    FOR_EACH(i, n) {
        if (j < 0 || i - groups[j].offset >= groups[j].count) j = group_of(groups, n_groups, i);
        if (j >= 0) fu_adamw_elem(k, groups[j].decay, FU_MUL(g[i], clip), &p[i], &m1[i], &m2[i]);
    }
}

void cu_adamw(size_t n, const fu_param_group *groups, int n_groups, const cu_adamw_coefs *ks, int *refused,
              bool count_refusal, double max_norm, const double *norm, const float *g, float *p, float *m1, float *m2) {
    k_adamw<<<blocks_for(n), THREADS>>>(n, groups, n_groups, *ks, refused, count_refusal, max_norm, norm, g, p, m1, m2);
}

// ---- fp16 loss scaling ------------------------------------------------------------

__global__ void k_loss_scale_update(fu_loss_scale *s, const int *nonfinite, float least, int growth_steps) {
    fu_loss_scale_next(s, *nonfinite != 0, least, growth_steps);
}

void cu_loss_scale_update(fu_loss_scale *s, const int *nonfinite, float least, int growth_steps) {
    k_loss_scale_update<<<1, 1>>>(s, nonfinite, least, growth_steps);
}

// ---- weighted sums of gradients ---------------------------------------------------

__global__ void k_scale_add(size_t n, float a, float *y, float w, const float *x) {
    FOR_EACH(i, n) y[i] = x ? FU_ADD(FU_MUL(a, y[i]), FU_MUL(w, x[i])) : FU_MUL(a, y[i]);
}

void cu_scale_add(size_t n, float a, float *y, float w, const float *x) {
    k_scale_add<<<blocks_for(n), THREADS>>>(n, a, y, w, x);
}
