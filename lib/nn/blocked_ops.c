// The cpu backend's own loops over nChw16c (blocked_ops.h).
#include "nn/blocked_ops.h"

#include <string.h>

// Compiled for AVX-512 and AVX2 too, picked at run time.
#define FU_CLONES __attribute__((target_clones("avx512f", "avx2", "default")))

// ---- global pooling, SE scale, add: one (image, block) of (hw, 16) ----

// sum[l] = sum over p of x[p, l]
FU_CLONES static void block_sum(size_t hw, const float *x, double sum[16]) {
    for (int l = 0; l < 16; l++)
        sum[l] = 0;
    for (size_t p = 0; p < hw; p++)
        for (int l = 0; l < 16; l++)
            sum[l] += x[p * 16 + l];
}

// dx (=|+=) g[l]
FU_CLONES static void block_fill(size_t hw, const float g[16], float *dx, bool acc) {
    for (size_t p = 0; p < hw; p++)
        for (int l = 0; l < 16; l++)
            dx[p * 16 + l] = (acc ? dx[p * 16 + l] : 0) + g[l];
}

// y = x * s[l]
FU_CLONES static void block_scale(size_t hw, const float *x, const float s[16], float *y) {
    for (size_t p = 0; p < hw; p++)
        for (int l = 0; l < 16; l++)
            y[p * 16 + l] = x[p * 16 + l] * s[l];
}

// dx (=|+=) dy * s[l];  sum[l] = sum over p of dy * x
FU_CLONES static void block_scale_bwd(size_t hw, const float *x, const float s[16], const float *dy, float *dx,
                                      bool acc, double sum[16]) {
    for (int l = 0; l < 16; l++)
        sum[l] = 0;
    for (size_t p = 0; p < hw; p++)
        for (int l = 0; l < 16; l++) {
            float g = dy[p * 16 + l];
            sum[l] += (double)g * x[p * 16 + l];
            dx[p * 16 + l] = (acc ? dx[p * 16 + l] : 0) + g * s[l];
        }
}

// y = [relu](a * s[l] + b)
FU_CLONES static void block_add(size_t hw, const float *a, const float s[16], const float *b, bool relu, float *y) {
    for (size_t p = 0; p < hw; p++)
        for (int l = 0; l < 16; l++) {
            float v = a[p * 16 + l] * s[l] + b[p * 16 + l];
            y[p * 16 + l] = relu && !(v > 0) ? 0 : v;
        }
}

// y (n, C) = mean over (h, w) of x (n, C/16, hw, 16)
void fu_blk_gap_fwd(int n, int c, size_t hw, const float *x, float *y) {
#pragma omp parallel for
    for (int nb = 0; nb < n * (c / 16); nb++) {
        double sum[16];
        block_sum(hw, x + (size_t)nb * hw * 16, sum);
        float *yb = y + (size_t)(nb / (c / 16)) * c + (nb % (c / 16)) * 16;
        for (int l = 0; l < 16; l++)
            yb[l] = (float)(sum[l] / (double)hw);
    }
}

void fu_blk_gap_bwd(int n, int c, size_t hw, const float *dy, float *dx, bool acc) {
#pragma omp parallel for
    for (int nb = 0; nb < n * (c / 16); nb++) {
        const float *dyb = dy + (size_t)(nb / (c / 16)) * c + (nb % (c / 16)) * 16;
        float g[16];
        for (int l = 0; l < 16; l++)
            g[l] = dyb[l] / (float)hw;
        block_fill(hw, g, dx + (size_t)nb * hw * 16, acc);
    }
}

// y = x * s[n, c] over (n, C/16, hw, 16)
void fu_blk_scale_fwd(int n, int c, size_t hw, const float *x, const float *sc, float *y) {
#pragma omp parallel for
    for (int nb = 0; nb < n * (c / 16); nb++)
        block_scale(hw, x + (size_t)nb * hw * 16, sc + (size_t)(nb / (c / 16)) * c + (nb % (c / 16)) * 16,
                    y + (size_t)nb * hw * 16);
}

// dx (=|+=) dy * s;  ds[n, c] += sum over hw of dy * x
void fu_blk_scale_bwd(int n, int c, size_t hw, const float *x, const float *sc, const float *dy, float *dx, bool acc,
                      float *ds) {
#pragma omp parallel for
    for (int nb = 0; nb < n * (c / 16); nb++) {
        size_t at = (size_t)(nb / (c / 16)) * c + (nb % (c / 16)) * 16, off = (size_t)nb * hw * 16;
        double sum[16];
        block_scale_bwd(hw, x + off, sc + at, dy + off, dx + off, acc, sum);
        for (int l = 0; l < 16; l++)
            ds[at + l] += (float)sum[l];
    }
}

// y = [relu](a * s[n, c] + b) over (n, C/16, hw, 16); s NULL: y = [relu](a + b)
void fu_blk_add_fwd(int n, int c, size_t hw, const float *a, const float *sc, const float *b, bool relu, float *y) {
    static const float ones[16] = {1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1};
#pragma omp parallel for
    for (int nb = 0; nb < n * (c / 16); nb++) {
        size_t off = (size_t)nb * hw * 16;
        const float *s = sc ? sc + (size_t)(nb / (c / 16)) * c + (nb % (c / 16)) * 16 : ones;
        block_add(hw, a + off, s, b + off, relu, y + off);
    }
}

// ---- the flat loops ----

FU_CLONES static void relu_fwd_run(size_t n, const float *x, float *y) {
    for (size_t i = 0; i < n; i++)
        y[i] = x[i] > 0 ? x[i] : 0;
}

FU_CLONES static void relu_bwd_run(size_t n, const float *y, const float *dy, float *dx, bool acc) {
    for (size_t i = 0; i < n; i++)
        dx[i] = (acc ? dx[i] : 0) + (y[i] > 0 ? dy[i] : 0);
}

FU_CLONES static void add_run(size_t n, const float *dy, float *dx) {
    for (size_t i = 0; i < n; i++)
        dx[i] += dy[i];
}

// Element-wise loops in chunks of 64 Ki floats, one chunk per thread at a time.
#define DN_CHUNK ((size_t)1 << 16)

void fu_blk_relu_fwd(size_t n, const float *x, float *y) {
#pragma omp parallel for
    for (size_t i = 0; i < n; i += DN_CHUNK)
        relu_fwd_run(n - i < DN_CHUNK ? n - i : DN_CHUNK, x + i, y + i);
}

void fu_blk_relu_bwd(size_t n, const float *y, const float *dy, float *dx, bool acc) {
#pragma omp parallel for
    for (size_t i = 0; i < n; i += DN_CHUNK)
        relu_bwd_run(n - i < DN_CHUNK ? n - i : DN_CHUNK, y + i, dy + i, dx + i, acc);
}

// dx (=|+=) dy
void fu_blk_pass_grad(size_t n, const float *dy, float *dx, bool acc) {
    if (!acc) {
        memcpy(dx, dy, n * sizeof *dx);
        return;
    }
#pragma omp parallel for
    for (size_t i = 0; i < n; i += DN_CHUNK)
        add_run(n - i < DN_CHUNK ? n - i : DN_CHUNK, dy + i, dx + i);
}

// ---- layouts ----

// A stage's crossings: (n, C, H, W) NCHW <-> (n, C/16, H, W, 16) nChw16c,
// one (image, block) per iteration.
void fu_blk_from_nchw(int n, int c, size_t hw, const float *x, float *y) {
#pragma omp parallel for
    for (int nb = 0; nb < n * (c / 16); nb++) {
        const float *xb = x + (size_t)nb * 16 * hw; // 16 channels of one image, hw apart
        float *yb = y + (size_t)nb * hw * 16;
        for (size_t p = 0; p < hw; p++)
            for (int l = 0; l < 16; l++)
                yb[p * 16 + l] = xb[l * hw + p];
    }
}

void fu_blk_to_nchw(int n, int c, size_t hw, const float *x, float *y) {
#pragma omp parallel for
    for (int nb = 0; nb < n * (c / 16); nb++) {
        const float *xb = x + (size_t)nb * hw * 16;
        float *yb = y + (size_t)nb * 16 * hw;
        for (size_t p = 0; p < hw; p++)
            for (int l = 0; l < 16; l++)
                yb[l * hw + p] = xb[p * 16 + l];
    }
}

// ---- BatchNorm on given statistics: one (image, block) ----

// The kernels below copy their per-lane arrays into locals and test `relu`
// outside the loops: arrays that might alias the output, or a condition
// inside, keep GCC from vectorising them.

// sum[l] = sum over p of x[p, l], sq[l] likewise of x^2
FU_CLONES static void block_moments(size_t hw, const float *x, double sum[16], double sq[16]) {
    double a[16] = {0}, b[16] = {0};
    for (size_t p = 0; p < hw; p++)
        for (int l = 0; l < 16; l++) {
            double v = x[p * 16 + l];
            a[l] += v;
            b[l] += v * v;
        }
    memcpy(sum, a, sizeof a);
    memcpy(sq, b, sizeof b);
}

// y = [relu](x * g[l] + b[l])
FU_CLONES static void block_affine(size_t hw, const float *x, const float g[16], const float b[16], bool relu,
                                   float *y) {
    float gl[16], bl[16];
    memcpy(gl, g, sizeof gl);
    memcpy(bl, b, sizeof bl);
    if (relu)
        for (size_t p = 0; p < hw; p++)
            for (int l = 0; l < 16; l++) {
                float v = x[p * 16 + l] * gl[l] + bl[l];
                y[p * 16 + l] = v > 0 ? v : 0;
            }
    else
        for (size_t p = 0; p < hw; p++)
            for (int l = 0; l < 16; l++)
                y[p * 16 + l] = x[p * 16 + l] * gl[l] + bl[l];
}

// dy where a fused ReLU let it through (y > 0), else 0
static inline float relu_grad(bool relu, float y, float dy) { return relu && !(y > 0) ? 0 : dy; }

// With dy masked by relu_grad: sdy[l] = sum dy, sdyx[l] = sum dy * (x - mean[l])
// (float over runs of 16 pixels, then added in double: a float inner loop
// vectorises, one converting to double per element does not)
static inline __attribute__((always_inline)) void bn_sums_loop(size_t hw, const float *x, const float *y,
                                                               const float *dy, const float *ml, bool relu, double *a,
                                                               double *b) {
    for (size_t p0 = 0; p0 < hw; p0 += 16) {
        size_t p1 = hw - p0 < 16 ? hw : p0 + 16;
        float fa[16] = {0}, fb[16] = {0};
        for (size_t p = p0; p < p1; p++)
            for (int l = 0; l < 16; l++) {
                float g = relu_grad(relu, y[p * 16 + l], dy[p * 16 + l]);
                fa[l] += g;
                fb[l] += g * (x[p * 16 + l] - ml[l]);
            }
        for (int l = 0; l < 16; l++) {
            a[l] += fa[l];
            b[l] += fb[l];
        }
    }
}

FU_CLONES static void block_bn_sums(size_t hw, const float *x, const float *y, const float *dy, const float mean[16],
                                   bool relu, double sdy[16], double sdyx[16]) {
    double a[16] = {0}, b[16] = {0};
    float ml[16];
    memcpy(ml, mean, sizeof ml);
    if (relu)
        bn_sums_loop(hw, x, y, dy, ml, true, a, b);
    else
        bn_sums_loop(hw, x, y, dy, ml, false, a, b);
    memcpy(sdy, a, sizeof a);
    memcpy(sdyx, b, sizeof b);
}

// dx (=|+=) a[l] * dy - k1[l] - (x - mean[l]) * k2[l], dy masked by relu_grad;
// one loop per (relu, acc), each inlined with its constants
static inline __attribute__((always_inline)) void bn_dx_loop(size_t hw, const float *x, const float *y,
                                                             const float *dy, const float *ml, const float *al,
                                                             const float *k1l, const float *k2l, float *dx, bool relu,
                                                             bool acc) {
    for (size_t p = 0; p < hw; p++)
        for (int l = 0; l < 16; l++) {
            float g = relu_grad(relu, y[p * 16 + l], dy[p * 16 + l]);
            float v = al[l] * g - k1l[l] - (x[p * 16 + l] - ml[l]) * k2l[l];
            dx[p * 16 + l] = acc ? dx[p * 16 + l] + v : v;
        }
}

FU_CLONES static void block_bn_dx(size_t hw, const float *x, const float *y, const float *dy, bool relu,
                                 const float mean[16], const float a[16], const float k1[16], const float k2[16],
                                 float *dx, bool acc) {
    float ml[16], al[16], k1l[16], k2l[16];
    memcpy(ml, mean, sizeof ml);
    memcpy(al, a, sizeof al);
    memcpy(k1l, k1, sizeof k1l);
    memcpy(k2l, k2, sizeof k2l);
    if (relu && acc)
        bn_dx_loop(hw, x, y, dy, ml, al, k1l, k2l, dx, true, true);
    else if (relu)
        bn_dx_loop(hw, x, y, dy, ml, al, k1l, k2l, dx, true, false);
    else if (acc)
        bn_dx_loop(hw, x, y, dy, ml, al, k1l, k2l, dx, false, true);
    else
        bn_dx_loop(hw, x, y, dy, ml, al, k1l, k2l, dx, false, false);
}

// v[k] = sum over images of part[., k], v[C + k] likewise of the second
// half; part (n, C/16, 2, 16)
static void bn_reduce(int n, int c, const double *part, double *v) {
    int cb = c / 16;
    for (int k = 0; k < c; k++) {
        double a = 0, b = 0;
        for (int i = 0; i < n; i++) {
            const double *p = part + ((size_t)i * cb + k / 16) * 32 + k % 16;
            a += p[0];
            b += p[16];
        }
        v[k] = a;
        v[c + k] = b;
    }
}

// ---- BatchNorm on given statistics, whole tensors ----

void fu_blk_bn_moments(int n, int c, size_t hw, const float *x, double *part, double *v) {
#pragma omp parallel for
    for (int nb = 0; nb < n * (c / 16); nb++)
        block_moments(hw, x + (size_t)nb * hw * 16, part + (size_t)nb * 32, part + (size_t)nb * 32 + 16);
    bn_reduce(n, c, part, v);
}

void fu_blk_bn_affine(int n, int c, size_t hw, const float *x, const float *g, const float *b, bool relu, float *y) {
    int cb = c / 16;
#pragma omp parallel for
    for (int nb = 0; nb < n * cb; nb++) {
        size_t off = (size_t)nb * hw * 16, k0 = (size_t)(nb % cb) * 16;
        block_affine(hw, x + off, g + k0, b + k0, relu, y + off);
    }
}

void fu_blk_bn_grad_sums(int n, int c, size_t hw, const float *x, const float *y, const float *dy, const float *mean,
                         bool relu, double *part, double *v) {
    int cb = c / 16;
#pragma omp parallel for
    for (int nb = 0; nb < n * cb; nb++) {
        size_t off = (size_t)nb * hw * 16;
        block_bn_sums(hw, x + off, y + off, dy + off, mean + (nb % cb) * 16, relu, part + (size_t)nb * 32,
                      part + (size_t)nb * 32 + 16);
    }
    bn_reduce(n, c, part, v);
}

void fu_blk_bn_dx(int n, int c, size_t hw, const float *x, const float *y, const float *dy, bool relu,
                  const float *mean, const float *a, const float *k1, const float *k2, float *dx, bool acc) {
    int cb = c / 16;
#pragma omp parallel for
    for (int nb = 0; nb < n * cb; nb++) {
        size_t off = (size_t)nb * hw * 16, k0 = (size_t)(nb % cb) * 16;
        block_bn_dx(hw, x + off, y + off, dy + off, relu, mean + k0, a + k0, k1 + k0, k2 + k0, dx + off, acc);
    }
}
