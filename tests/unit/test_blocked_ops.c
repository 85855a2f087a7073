// The cpu backend's own loops (nn/blocked_ops.h) against the double
// reference ops (nn/ref_ops.h) on the same values in NCHW, on an odd map
// (5 x 7) and two channel blocks; each also run on 1 and 3 threads, which
// must give the same bytes (the header's promise), and the gradients both
// written and accumulated.
#include "check.h"

#include "core/rng.h"
#include "nn/blocked_ops.h"
#include "nn/ref_ops.h"

#include <math.h>
#include <omp.h>
#include <stdlib.h>
#include <string.h>

enum { N = 3, C = 32, H = 5, W = 7, HW = H * W, SIZE = N * C * HW, FLAT = 200003 }; // FLAT: 4 chunks of 64 Ki

static fu_rng rng;

static float *normals(size_t n) {
    float *v = malloc(n * sizeof *v);
    for (size_t i = 0; i < n; i++) v[i] = (float)fu_rng_normal(&rng);
    return v;
}

static double *widen(const float *x, size_t n) {
    double *v = malloc(n * sizeof *v);
    for (size_t i = 0; i < n; i++) v[i] = x[i];
    return v;
}

// x (N, C, HW) NCHW -> a new (N, C/16, HW, 16)
static float *blocked(const float *x) {
    float *y = malloc(SIZE * sizeof *y);
    fu_blk_from_nchw(N, C, HW, x, y);
    return y;
}

// A blocked (N, C/16, HW, 16) -> a new NCHW copy in double
static double *plain(const float *xb) {
    float *x = malloc(SIZE * sizeof *x);
    fu_blk_to_nchw(N, C, HW, xb, x);
    double *v = widen(x, SIZE);
    free(x);
    return v;
}

// Largest |got - want| over n, relative to the largest |want| (1 at least)
static double rel_err(const double *got, const double *want, size_t n) {
    double e = 0, top = 1;
    for (size_t i = 0; i < n; i++) {
        e = fmax(e, fabs(got[i] - want[i]));
        top = fmax(top, fabs(want[i]));
    }
    return e / top;
}

static double rel_err_f(const float *got, const double *want, size_t n) {
    double *g = widen(got, n);
    double e = rel_err(g, want, n);
    free(g);
    return e;
}

// Runs fn on 1 and then 3 threads into out1 and out3 (bytes of each), and
// says whether they agree.
static bool same_on_1_and_3(void (*fn)(void *ctx, void *out), void *ctx, void *out1, void *out3, size_t bytes) {
    int was = omp_get_max_threads();
    omp_set_num_threads(1);
    fn(ctx, out1);
    omp_set_num_threads(3);
    fn(ctx, out3);
    omp_set_num_threads(was);
    return memcmp(out1, out3, bytes) == 0;
}

static void test_layouts(void) {
    float *x = normals(SIZE), *xb = blocked(x), *back = malloc(SIZE * sizeof *back);
    bool mapped = true;
    for (int i = 0; i < N; i++)
        for (int k = 0; k < C; k++)
            for (int p = 0; p < HW; p++) {
                size_t at = (((size_t)i * (C / 16) + k / 16) * HW + p) * 16 + k % 16;
                mapped &= xb[at] == x[((size_t)i * C + k) * HW + p];
            }
    CHECK(mapped, "from_nchw: channel k of pixel p goes to block k/16, lane k%16", "a value out of place");
    fu_blk_to_nchw(N, C, HW, xb, back);
    CHECK(!memcmp(back, x, SIZE * sizeof *x), "to_nchw undoes from_nchw, bit for bit", "differs");
    free(x), free(xb), free(back);
}

// ---- global pooling, SE scale, add ----

typedef struct {
    const float *xb, *s, *yb, *dyb, *dy_nc;
    bool acc;
} pool_ctx;

static void run_gap_fwd(void *c, void *out) { fu_blk_gap_fwd(N, C, HW, ((pool_ctx *)c)->xb, out); }

static void run_scale_bwd(void *c, void *out) { // out: dx (SIZE) then ds (N * C)
    pool_ctx *p = c;
    float *dx = out, *ds = dx + SIZE;
    for (size_t i = 0; i < SIZE; i++) dx[i] = p->acc ? 0.5f : NAN;
    for (size_t i = 0; i < (size_t)N * C; i++) ds[i] = 0.25f;
    fu_blk_scale_bwd(N, C, HW, p->xb, p->s, p->dyb, dx, p->acc, ds);
}

static void test_pooling_and_scale(void) {
    float *x = normals(SIZE), *dy = normals(SIZE), *s = normals(N * C), *b = normals(SIZE);
    float *xb = blocked(x), *dyb = blocked(dy), *bb = blocked(b);
    double *xd = widen(x, SIZE), *dyd = widen(dy, SIZE), *sd = widen(s, N * C), *bd = widen(b, SIZE);
    pool_ctx ctx = {.xb = xb, .s = s, .dyb = dyb};

    float g1[N * C], g3[N * C];
    double want[N * C];
    fu_ref_gap_fwd_f64(N * C, HW, xd, want);
    bool same = same_on_1_and_3(run_gap_fwd, &ctx, g1, g3, sizeof g1);
    double e = rel_err_f(g1, want, N * C);
    CHECK(e < 1e-6 && same, "gap_fwd = the reference's mean over h, w; 1 and 3 threads alike", "%.2g, %d", e, same);

    float *dxb = malloc(SIZE * sizeof *dxb);
    double *dx_want = calloc(SIZE, sizeof *dx_want);
    for (int acc = 0; acc < 2; acc++) {
        for (size_t i = 0; i < SIZE; i++) dxb[i] = acc ? 0.5f : NAN, dx_want[i] = acc ? 0.5 : 0;
        fu_blk_gap_bwd(N, C, HW, g1, dxb, acc);
        double *gd = widen(g1, N * C);
        fu_ref_gap_bwd_f64(N * C, HW, gd, dx_want);
        double *got = plain(dxb);
        e = rel_err(got, dx_want, SIZE);
        CHECK(e < 1e-6, acc ? "gap_bwd adds dy / hw to dx" : "gap_bwd writes dy / hw over dx", "%.2g", e);
        free(gd), free(got);
    }

    float *y = malloc(SIZE * sizeof *y);
    double *y_want = malloc(SIZE * sizeof *y_want);
    fu_blk_scale_fwd(N, C, HW, xb, s, y);
    fu_ref_scale_fwd_f64(N * C, HW, xd, sd, y_want);
    double *got = plain(y);
    e = rel_err(got, y_want, SIZE);
    CHECK(e < 1e-6, "scale_fwd = the reference's x * s[n, c]", "%.2g", e);
    free(got);

    float *out1 = malloc((SIZE + N * C) * sizeof *out1), *out3 = malloc((SIZE + N * C) * sizeof *out3);
    double *ds_want = malloc(N * C * sizeof *ds_want);
    for (int acc = 0; acc < 2; acc++) {
        ctx.acc = acc;
        same = same_on_1_and_3(run_scale_bwd, &ctx, out1, out3, (SIZE + N * C) * sizeof *out1);
        for (size_t i = 0; i < SIZE; i++) dx_want[i] = acc ? 0.5 : 0;
        for (size_t i = 0; i < (size_t)N * C; i++) ds_want[i] = 0.25;
        fu_ref_scale_bwd_f64(N * C, HW, xd, sd, dyd, dx_want, ds_want);
        got = plain(out1);
        e = fmax(rel_err(got, dx_want, SIZE), rel_err_f(out1 + SIZE, ds_want, N * C));
        CHECK(e < 1e-6 && same,
              acc ? "scale_bwd adds dy * s to dx and sum dy * x to ds; 1 and 3 threads alike"
                  : "scale_bwd writes dy * s over dx, adds sum dy * x to ds; 1 and 3 threads alike",
              "%.2g, %d", e, same);
        free(got);
    }

    for (int relu = 0; relu < 2; relu++)
        for (int scaled = 0; scaled < 2; scaled++) {
            fu_blk_add_fwd(N, C, HW, xb, scaled ? s : NULL, bb, relu, y);
            for (size_t i = 0; i < SIZE; i++) {
                double v = xd[i] * (scaled ? sd[i / HW] : 1) + bd[i];
                y_want[i] = relu && v < 0 ? 0 : v;
            }
            got = plain(y);
            e = rel_err(got, y_want, SIZE);
            char name[96];
            snprintf(name, sizeof name, "add_fwd: y = %s(a%s + b)", relu ? "relu" : "", scaled ? " * s[n, c]" : "");
            CHECK(e < 1e-6, name, "%.2g", e);
            free(got);
        }
    free(x), free(dy), free(s), free(b), free(xb), free(dyb), free(bb), free(xd), free(dyd), free(sd), free(bd);
    free(dxb), free(dx_want), free(y), free(y_want), free(out1), free(out3), free(ds_want);
}

// ---- the flat loops, over several chunks ----

static void test_flat(void) {
    float *x = normals(FLAT), *dy = normals(FLAT), *y = malloc(FLAT * sizeof *y), *dx = malloc(FLAT * sizeof *dx);
    double *xd = widen(x, FLAT), *dyd = widen(dy, FLAT), *want = malloc(FLAT * sizeof *want);
    double *yd = malloc(FLAT * sizeof *yd);
    fu_blk_relu_fwd(FLAT, x, y);
    fu_ref_relu_fwd_f64(FLAT, xd, yd);
    CHECK(rel_err_f(y, yd, FLAT) == 0, "relu_fwd = the reference's, every chunk", "differs");
    for (int acc = 0; acc < 2; acc++) {
        for (size_t i = 0; i < FLAT; i++) dx[i] = acc ? 0.5f : NAN, want[i] = acc ? 0.5 : 0;
        fu_blk_relu_bwd(FLAT, y, dy, dx, acc);
        fu_ref_relu_bwd_f64(FLAT, yd, dyd, want);
        double e = rel_err_f(dx, want, FLAT);
        CHECK(e < 1e-6, acc ? "relu_bwd adds dy where y > 0" : "relu_bwd writes dy where y > 0, else 0", "%.2g", e);
        for (size_t i = 0; i < FLAT; i++) dx[i] = acc ? 0.5f : NAN, want[i] = (acc ? 0.5 : 0) + dyd[i];
        fu_blk_pass_grad(FLAT, dy, dx, acc);
        e = rel_err_f(dx, want, FLAT);
        CHECK(e < 1e-6, acc ? "pass_grad adds dy" : "pass_grad copies dy", "%.2g", e);
    }
    free(x), free(dy), free(y), free(dx), free(xd), free(dyd), free(want), free(yd);
}

// ---- BatchNorm on given statistics ----

typedef struct {
    const float *xb, *yb, *dyb, *mean;
    double *part;
    bool relu;
} bn_ctx;

static void run_moments(void *c, void *out) {
    bn_ctx *b = c;
    fu_blk_bn_moments(N, C, HW, b->xb, b->part, out);
}

static void run_grad_sums(void *c, void *out) {
    bn_ctx *b = c;
    fu_blk_bn_grad_sums(N, C, HW, b->xb, b->yb, b->dyb, b->mean, b->relu, b->part, out);
}

static void test_batchnorm(void) {
    float *x = normals(SIZE), *dy = normals(SIZE), *xb = blocked(x), *dyb = blocked(dy);
    double *xd = widen(x, SIZE), part[N * 2 * C], v1[2 * C], v3[2 * C], want[2 * C];
    fu_bn_shape s = {.n = N, .c = C, .hw = HW, .eps = 1e-5, .momentum = 0.1};
    bn_ctx ctx = {.xb = xb, .dyb = dyb, .part = part};
    bool same = same_on_1_and_3(run_moments, &ctx, v1, v3, sizeof v1);
    fu_ref_bn_sums_f64(&s, xd, want);
    double e = rel_err(v1, want, 2 * C);
    CHECK(e < 1e-12 && same, "bn_moments = the reference's sums of x and x^2; 1 and 3 threads alike", "%.2g, %d", e,
          same);

    // Per channel: y = relu?(x * g + b), and its mean-centred gradient sums.
    float g[C], b[C], mean[C], invstd[C], gamma[C], a[C], k1[C], k2[C];
    for (int k = 0; k < C; k++) {
        mean[k] = (float)(v1[k] / (N * HW));
        invstd[k] = 1.5f + 0.03125f * k, gamma[k] = 0.75f - 0.0625f * k;
        g[k] = gamma[k] * invstd[k], b[k] = 0.5f - mean[k] * g[k];
    }
    float *yb = malloc(SIZE * sizeof *yb), *dxb = malloc(SIZE * sizeof *dxb);
    double *y_want = malloc(SIZE * sizeof *y_want), *dy_seen = malloc(SIZE * sizeof *dy_seen);
    double *dx_want = malloc(SIZE * sizeof *dx_want), md[C], isd[C], gd[C];
    for (int k = 0; k < C; k++) md[k] = mean[k], isd[k] = invstd[k], gd[k] = gamma[k];
    for (int relu = 0; relu < 2; relu++) {
        fu_blk_bn_affine(N, C, HW, xb, g, b, relu, yb);
        double *got = plain(yb);
        for (size_t i = 0; i < SIZE; i++) {
            int k = (int)(i / HW % C);
            double v = xd[i] * g[k] + b[k];
            y_want[i] = relu && v < 0 ? 0 : v;
            dy_seen[i] = relu && !(got[i] > 0) ? 0 : dy[i]; // what backward lets through the ReLU
        }
        e = rel_err(got, y_want, SIZE);
        CHECK(e < 1e-6, relu ? "bn_affine with ReLU: y = relu(x * g + b)" : "bn_affine: y = x * g + b", "%.2g", e);
        free(got);

        // sum dy * (x - mean) is the reference's sum dy * xhat at 1/std = 1
        ctx.yb = yb, ctx.mean = mean, ctx.relu = relu;
        same = same_on_1_and_3(run_grad_sums, &ctx, v1, v3, sizeof v1);
        double ones[C], dgamma[C] = {0}, dbeta[C] = {0};
        for (int k = 0; k < C; k++) ones[k] = 1;
        fu_ref_bn_bwd_sums_f64(&s, xd, md, ones, dy_seen, want, dgamma, dbeta);
        e = rel_err(v1, want, 2 * C);
        CHECK(e < 1e-5 && same,
              relu ? "bn_grad_sums with ReLU: sums of the dy it let through; 1 and 3 threads alike"
                   : "bn_grad_sums: sums of dy and dy * (x - mean); 1 and 3 threads alike",
              "%.2g, %d", e, same);

        // The reference's global backward with sums v over m values, as sync-BN forms it.
        double m = N * HW;
        for (int k = 0; k < C; k++) {
            double is = isd[k], gk = gamma[k] * is, vx = v1[C + k] * is; // sum dy * xhat
            a[k] = (float)gk, k1[k] = (float)(gk * v1[k] / m), k2[k] = (float)(gk * is * vx / m);
        }
        double vg[2 * C];
        for (int k = 0; k < C; k++) vg[k] = v1[k], vg[C + k] = v1[C + k] * isd[k];
        for (int acc = 0; acc < 2; acc++) {
            for (size_t i = 0; i < SIZE; i++) dx_want[i] = acc ? 0.5 : 0;
            float *init = malloc(SIZE * sizeof *init);
            for (size_t i = 0; i < SIZE; i++) init[i] = acc ? 0.5f : NAN;
            fu_blk_from_nchw(N, C, HW, init, dxb);
            free(init);
            fu_blk_bn_dx(N, C, HW, xb, yb, dyb, relu, mean, a, k1, k2, dxb, acc);
            fu_ref_bn_global_bwd_f64(&s, vg, m, xd, gd, md, isd, dy_seen, dx_want);
            got = plain(dxb);
            e = rel_err(got, dx_want, SIZE);
            char name[96];
            snprintf(name, sizeof name, "bn_dx%s %s the reference's global BN input gradient",
                     relu ? " with ReLU" : "", acc ? "adds" : "writes");
            CHECK(e < 1e-5, name, "%.2g", e);
            free(got);
        }
    }
    free(x), free(dy), free(xb), free(dyb), free(xd), free(yb), free(dxb), free(y_want), free(dy_seen), free(dx_want);
}

int main(void) {
    rng = fu_rng_make(7, 0, 0);
    test_layouts();
    test_pooling_and_scale();
    test_flat();
    test_batchnorm();
    return check_done();
}
