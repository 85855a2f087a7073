// The arithmetic of AdamW (adamw.h) for one element, shared by the host loop
// (adamw.c) and the cuda backend's kernel (cuda/cuda_optim.cu), so that both
// apply PyTorch's formula in the same order with the same roundings: on the
// device every product and sum is rounded on its own (__fmul_rn, __fadd_rn:
// nvcc would otherwise fuse them into FMAs), as the host's -ffp-contract=off
// does; sqrtf and '/' are IEEE on both (nvcc's default -prec-sqrt,
// -prec-div). Same gradients in, same bytes out.
#ifndef FU_NN_ADAMW_MATH_H
#define FU_NN_ADAMW_MATH_H

#include <math.h>
#include <stdint.h>

#ifdef __CUDACC__
#define FU_HD __host__ __device__
#else
#define FU_HD
#endif

#if defined(__CUDA_ARCH__)
#define FU_MUL(a, b) __fmul_rn(a, b)
#define FU_ADD(a, b) __fadd_rn(a, b)
#else
#define FU_MUL(a, b) ((a) * (b))
#define FU_ADD(a, b) ((a) + (b))
#endif

// The step's scalars, formed as PyTorch forms them (Python floats, i.e.
// double) and applied to float tensors.
typedef struct {
    float b1, b2, a1, a2;  // beta1, beta2, 1 - beta1, 1 - beta2
    float step_size;       // lr / (1 - beta1^t)
    float bias2_sqrt;      // sqrt(1 - beta2^t)
    float eps;
    float decay;           // 1 - lr * weight_decay: a decayed group's factor (1 for the others)
} fu_adamw_coef;

static inline fu_adamw_coef fu_adamw_coef_of(double beta1, double beta2, double eps, double weight_decay, double lr,
                                             int64_t t) {
    double bias1 = 1 - pow(beta1, (double)t), bias2 = 1 - pow(beta2, (double)t);
    return (fu_adamw_coef){.b1 = (float)beta1, .b2 = (float)beta2, .a1 = (float)(1 - beta1),
                           .a2 = (float)(1 - beta2), .step_size = (float)(lr / bias1),
                           .bias2_sqrt = (float)sqrt(bias2), .eps = (float)eps,
                           .decay = (float)(1 - lr * weight_decay)};
}

// One element: weight p, gradient g, moments m and v, updated in place;
// decay says whether its group takes weight decay.
static inline FU_HD void fu_adamw_elem(const fu_adamw_coef *k, int decay, float g, float *p, float *m, float *v) {
    float q = decay ? FU_MUL(*p, k->decay) : *p;
    float mi = FU_ADD(FU_MUL(*m, k->b1), FU_MUL(g, k->a1));
    float vi = FU_ADD(FU_MUL(*v, k->b2), FU_MUL(FU_MUL(g, g), k->a2));
    float denom = FU_ADD(sqrtf(vi) / k->bias2_sqrt, k->eps);
    *m = mi;
    *v = vi;
    *p = FU_ADD(q, -FU_MUL(k->step_size, mi / denom));
}

// Gradient clipping's factor (torch.nn.utils.clip_grad_norm_): the gradients
// are multiplied by it where their norm exceeds max_norm, else left alone.
static inline FU_HD float fu_clip_coef(double norm, double max_norm) {
    return norm > max_norm ? (float)(max_norm / (norm + 1e-6)) : 1.0f;
}

#endif
