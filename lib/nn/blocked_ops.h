// The cpu backend's own loops (dnnl_net.c): the ops oneDNN does not run
// there, on its channel-blocked feature maps. A feature map is
// (n, C/16, hw, 16): nChw16c, every width a multiple of 16, hw = h * w; the
// flat loops take any array. Each loop gives threads whole (image, block)
// pairs or whole chunks and adds every sum in a fixed order, so results do
// not depend on the thread count; the inner bodies are compiled for AVX-512
// and AVX2 too (target_clones), picked at run time.
//
// Where a name says acc, the gradient is added to dx (acc true) or written
// over it (false): a tensor read by several ops gets the first gradient
// written and the others added.
#ifndef FU_NN_BLOCKED_OPS_H
#define FU_NN_BLOCKED_OPS_H

#include <stdbool.h>
#include <stddef.h>

// ---- element-wise, any array ----
void fu_blk_relu_fwd(size_t n, const float *x, float *y);
// dx (=|+=) dy where y > 0, else 0
void fu_blk_relu_bwd(size_t n, const float *y, const float *dy, float *dx, bool acc);
// dx (=|+=) dy
void fu_blk_pass_grad(size_t n, const float *dy, float *dx, bool acc);

// ---- layouts: x (n, C, hw) NCHW <-> y (n, C/16, hw, 16) nChw16c ----
void fu_blk_from_nchw(int n, int c, size_t hw, const float *x, float *y);
void fu_blk_to_nchw(int n, int c, size_t hw, const float *x, float *y);

// ---- global average pooling, SE scale, residual add ----
// y (n, C) = mean over hw of x (n, C/16, hw, 16); backward spreads dy / hw
void fu_blk_gap_fwd(int n, int c, size_t hw, const float *x, float *y);
void fu_blk_gap_bwd(int n, int c, size_t hw, const float *dy, float *dx, bool acc);
// y = x * s[n, c]: x, y (n, C/16, hw, 16), s (n, C)
void fu_blk_scale_fwd(int n, int c, size_t hw, const float *x, const float *s, float *y);
// dx (=|+=) dy * s;  ds[n, c] += sum over hw of dy * x
void fu_blk_scale_bwd(int n, int c, size_t hw, const float *x, const float *s, const float *dy, float *dx, bool acc,
                      float *ds);
// y = [relu](a * s[n, c] + b), s NULL: y = [relu](a + b); a, b, y (n, C/16, hw, 16)
void fu_blk_add_fwd(int n, int c, size_t hw, const float *a, const float *s, const float *b, bool relu, float *y);

// ---- BatchNorm on given statistics (sync-BN: the global batch's) ----
// part is scratch of n * 2C doubles: each (image, block)'s sums, added over
// images in order into v (2C).
// v[k] = sum over (n, hw) of x[., k], v[C + k] likewise of x^2
void fu_blk_bn_moments(int n, int c, size_t hw, const float *x, double *part, double *v);
// y = [relu](x * g[k] + b[k]); g, b (C)
void fu_blk_bn_affine(int n, int c, size_t hw, const float *x, const float *g, const float *b, bool relu, float *y);
// With dy masked where a fused ReLU gave y <= 0:
// v[k] = sum of dy, v[C + k] = sum of dy * (x - mean[k]); mean (C)
void fu_blk_bn_grad_sums(int n, int c, size_t hw, const float *x, const float *y, const float *dy, const float *mean,
                         bool relu, double *part, double *v);
// dx (=|+=) a[k] * dy - k1[k] - (x - mean[k]) * k2[k], dy masked as above;
// mean, a, k1, k2 (C)
void fu_blk_bn_dx(int n, int c, size_t hw, const float *x, const float *y, const float *dy, bool relu,
                  const float *mean, const float *a, const float *k1, const float *k2, float *dx, bool acc);

#endif
