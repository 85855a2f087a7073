// Gradient checks of every reference op: the double instantiation (_f64, the
// same source as the float ops the network runs) against central finite
// differences of L = sum(r * op(inputs)) for a random r, on small odd shapes.
// Backward must also ACCUMULATE: input gradients start from random values
// that are subtracted afterwards.
#include "check.h"

#include "core/rng.h"
#include "nn/model.h"
#include "nn/ref_ops.h"

#include <math.h>
#include <stdbool.h>
#include <stdlib.h>
#include <string.h>

#define TOL 1e-6      // relative L2 error, analytic vs finite differences
#define STEP 1e-5     // central difference step
#define MAX_PROBES 400 // elements probed per input (all of them when fewer)

enum { MAX_IN = 4 };

typedef struct op_case op_case;
struct op_case {
    char name[96];
    int n_in;
    size_t in_size[MAX_IN], out_size;
    bool needs_grad[MAX_IN]; // false for inputs without a gradient (none so far)
    void (*fwd)(const op_case *c, double *const *in, double *out);
    void (*bwd)(const op_case *c, double *const *in, const double *out, const double *dy, double **din);
    // Shape parameters used by the wrappers.
    fu_window win;
    fu_bn_shape bn;
    int n, a, b, parts, part_c[MAX_IN];
    size_t hw;
    bool bias;
    int labels[16];
    double class_w[8];
    double mask[4096];
};

static fu_rng rng;

static double normal(void) { return fu_rng_normal(&rng); }

static double *alloc(size_t n) { return calloc(n ? n : 1, sizeof(double)); }

static double objective(const op_case *c, double *const *in, const double *r, double *out) {
    c->fwd(c, in, out);
    double l = 0;
    for (size_t i = 0; i < c->out_size; i++) l += r[i] * out[i];
    return l;
}

// Fills inputs: normal values, kept away from ReLU's kink and made distinct
// for max pooling by the caller's `fill`.
static void gradcheck(op_case *c, void (*fill)(op_case *c, int k, double *v)) {
    double *in[MAX_IN], *din[MAX_IN], *prior[MAX_IN];
    double *out = alloc(c->out_size), *r = alloc(c->out_size);
    for (size_t i = 0; i < c->out_size; i++) r[i] = normal();
    for (int k = 0; k < c->n_in; k++) {
        in[k] = alloc(c->in_size[k]);
        din[k] = alloc(c->in_size[k]);
        prior[k] = alloc(c->in_size[k]);
        for (size_t i = 0; i < c->in_size[k]; i++) in[k][i] = normal();
        if (fill) fill(c, k, in[k]);
        for (size_t i = 0; i < c->in_size[k]; i++) din[k][i] = prior[k][i] = normal();
    }
    c->fwd(c, in, out);
    c->bwd(c, in, out, r, din);
    double worst = 0;
    size_t probes = 0;
    for (int k = 0; k < c->n_in; k++) {
        double num = 0, den = 0;
        size_t n = c->in_size[k], count = n < MAX_PROBES ? n : MAX_PROBES;
        for (size_t p = 0; p < count; p++) {
            size_t i = n <= MAX_PROBES ? p : fu_rng_below(&rng, (uint32_t)n);
            double keep = in[k][i];
            in[k][i] = keep + STEP;
            double lp = objective(c, in, r, out);
            in[k][i] = keep - STEP;
            double lm = objective(c, in, r, out);
            in[k][i] = keep;
            double fd = (lp - lm) / (2 * STEP), an = din[k][i] - prior[k][i];
            num += (an - fd) * (an - fd);
            den += fd * fd;
            probes++;
        }
        double rel = sqrt(num) / (sqrt(den) > 1e-12 ? sqrt(den) : 1e-12);
        if (rel > worst) worst = rel;
    }
    char line[160];
    snprintf(line, sizeof line, "gradient %s: relative error %.2g over %zu probes", c->name, worst, probes);
    CHECK(worst <= TOL, line, "above %.1g", TOL);
    for (int k = 0; k < c->n_in; k++) {
        free(in[k]);
        free(din[k]);
        free(prior[k]);
    }
    free(out);
    free(r);
}

// ---- op wrappers ----------------------------------------------------------------

static void conv_fwd(const op_case *c, double *const *in, double *out) { fu_ref_conv_fwd_f64(&c->win, in[0], in[1], out); }
static void conv_bwd(const op_case *c, double *const *in, const double *out, const double *dy, double **din) {
    fu_ref_conv_bwd_f64(&c->win, in[0], in[1], dy, din[0], din[1]);
}

// The definition, one output at a time with a bounds test per tap: what the
// reference's hoisted loop bounds must reproduce (the finite differences only
// show that backward matches forward, not that forward is a convolution).
static double naive_conv_error(const fu_window *s) {
    size_t nx = (size_t)s->n * s->c * s->h * s->w, nw = (size_t)s->k * s->c * s->r * s->r;
    size_t ny = (size_t)s->n * s->k * s->p * s->q;
    double *x = alloc(nx), *w = alloc(nw), *y = alloc(ny), worst = 0;
    for (size_t i = 0; i < nx; i++) x[i] = normal();
    for (size_t i = 0; i < nw; i++) w[i] = normal();
    fu_ref_conv_fwd_f64(s, x, w, y);
    for (int n = 0; n < s->n; n++)
        for (int k = 0; k < s->k; k++)
            for (int oh = 0; oh < s->p; oh++)
                for (int ow = 0; ow < s->q; ow++) {
                    double acc = 0;
                    for (int c = 0; c < s->c; c++)
                        for (int i = 0; i < s->r; i++)
                            for (int j = 0; j < s->r; j++) {
                                int ih = oh * s->stride - s->pad + i * s->dil, iw = ow * s->stride - s->pad + j * s->dil;
                                if (ih < 0 || ih >= s->h || iw < 0 || iw >= s->w) continue;
                                acc += x[(((size_t)n * s->c + c) * s->h + ih) * s->w + iw] *
                                       w[(((size_t)k * s->c + c) * s->r + i) * s->r + j];
                            }
                    worst = fmax(worst, fabs(acc - y[(((size_t)n * s->k + k) * s->p + oh) * s->q + ow]));
                }
    free(x);
    free(w);
    free(y);
    return worst;
}

static void conv_case(int n, int ch, int h, int w, int k, int r, int stride, int pad, int dil) {
    op_case c = {.n_in = 2};
    c.win = (fu_window){.n = n, .c = ch, .h = h, .w = w, .k = k, .r = r, .stride = stride, .pad = pad, .dil = dil};
    fu_window_out(&c.win);
    snprintf(c.name, sizeof c.name, "conv n%d c%d %dx%d -> k%d r%d stride %d pad %d dil %d (out %dx%d)", n, ch, h,
             w, k, r, stride, pad, dil, c.win.p, c.win.q);
    c.in_size[0] = (size_t)n * ch * h * w;
    c.in_size[1] = (size_t)k * ch * r * r;
    c.out_size = (size_t)n * k * c.win.p * c.win.q;
    c.fwd = conv_fwd, c.bwd = conv_bwd;
    gradcheck(&c, NULL);
    double err = naive_conv_error(&c.win);
    char line[160];
    snprintf(line, sizeof line, "forward %s equals the definition", c.name);
    CHECK(err < 1e-12, line, "error %.3g", err);
}

static void bn_fwd(const op_case *c, double *const *in, double *out) {
    double mean[64], invstd[64];
    fu_ref_bn_train_fwd_f64(&c->bn, in[0], in[1], in[2], out, mean, invstd, NULL, NULL);
}
static void bn_bwd(const op_case *c, double *const *in, const double *out, const double *dy, double **din) {
    double mean[64], invstd[64], *y = alloc(c->out_size);
    fu_ref_bn_train_fwd_f64(&c->bn, in[0], in[1], in[2], y, mean, invstd, NULL, NULL);
    fu_ref_bn_bwd_f64(&c->bn, in[0], in[1], mean, invstd, dy, din[0], din[1], din[2]);
    free(y);
}

static void bn_case(int n, int ch, int hw) {
    op_case c = {.n_in = 3};
    c.bn = (fu_bn_shape){.n = n, .c = ch, .hw = hw, .eps = FU_BN_EPS, .momentum = FU_BN_MOMENTUM};
    snprintf(c.name, sizeof c.name, "batchnorm train n%d c%d hw%d%s", n, ch, hw, hw == 1 ? " (1d)" : "");
    c.in_size[0] = c.out_size = (size_t)n * ch * hw;
    c.in_size[1] = c.in_size[2] = (size_t)ch;
    c.fwd = bn_fwd, c.bwd = bn_bwd;
    gradcheck(&c, NULL);
}

static void relu_fwd(const op_case *c, double *const *in, double *out) { fu_ref_relu_fwd_f64(c->out_size, in[0], out); }
static void relu_bwd(const op_case *c, double *const *in, const double *out, const double *dy, double **din) {
    fu_ref_relu_bwd_f64(c->out_size, out, dy, din[0]);
}
static void away_from_zero(op_case *c, int k, double *v) {
    for (size_t i = 0; i < c->in_size[k]; i++) v[i] += v[i] < 0 ? -0.01 : 0.01;
}

// Distinct values at least 0.01 apart, shuffled: no ties for the finite differences to straddle.
static void distinct(op_case *c, int k, double *v) {
    size_t n = c->in_size[k];
    for (size_t i = 0; i < n; i++) v[i] = -1 + 0.01 * (double)i;
    for (size_t i = n - 1; i > 0; i--) {
        size_t j = fu_rng_below(&rng, (uint32_t)(i + 1));
        double t = v[i];
        v[i] = v[j], v[j] = t;
    }
}

static void pool_fwd(const op_case *c, double *const *in, double *out) { fu_ref_maxpool_fwd_f64(&c->win, in[0], out); }
static void pool_bwd(const op_case *c, double *const *in, const double *out, const double *dy, double **din) {
    fu_ref_maxpool_bwd_f64(&c->win, in[0], out, dy, din[0]);
}

static void pool_case(int n, int ch, int h, int w, int r, int stride, int pad) {
    op_case c = {.n_in = 1};
    c.win = (fu_window){.n = n, .c = ch, .h = h, .w = w, .k = ch, .r = r, .stride = stride, .pad = pad, .dil = 1};
    fu_window_out(&c.win);
    snprintf(c.name, sizeof c.name, "maxpool n%d c%d %dx%d r%d stride %d pad %d (out %dx%d)", n, ch, h, w, r, stride,
             pad, c.win.p, c.win.q);
    c.in_size[0] = (size_t)n * ch * h * w;
    c.out_size = (size_t)n * ch * c.win.p * c.win.q;
    c.fwd = pool_fwd, c.bwd = pool_bwd;
    gradcheck(&c, distinct);
}

static void gap_fwd(const op_case *c, double *const *in, double *out) { fu_ref_gap_fwd_f64(c->out_size, c->hw, in[0], out); }
static void gap_bwd(const op_case *c, double *const *in, const double *out, const double *dy, double **din) {
    fu_ref_gap_bwd_f64(c->out_size, c->hw, dy, din[0]);
}

static void lin_fwd(const op_case *c, double *const *in, double *out) {
    fu_ref_linear_fwd_f64(c->n, c->a, c->b, in[0], in[1], c->bias ? in[2] : NULL, out);
}
static void lin_bwd(const op_case *c, double *const *in, const double *out, const double *dy, double **din) {
    fu_ref_linear_bwd_f64(c->n, c->a, c->b, in[0], in[1], dy, din[0], din[1], c->bias ? din[2] : NULL);
}

static void sig_fwd(const op_case *c, double *const *in, double *out) { fu_ref_sigmoid_fwd_f64(c->out_size, in[0], out); }
static void sig_bwd(const op_case *c, double *const *in, const double *out, const double *dy, double **din) {
    fu_ref_sigmoid_bwd_f64(c->out_size, out, dy, din[0]);
}

static void scale_fwd(const op_case *c, double *const *in, double *out) {
    fu_ref_scale_fwd_f64(c->in_size[1], c->hw, in[0], in[1], out);
}
static void scale_bwd(const op_case *c, double *const *in, const double *out, const double *dy, double **din) {
    fu_ref_scale_bwd_f64(c->in_size[1], c->hw, in[0], in[1], dy, din[0], din[1]);
}

static void add_fwd(const op_case *c, double *const *in, double *out) { fu_ref_add_fwd_f64(c->out_size, in[0], in[1], out); }
static void add_bwd(const op_case *c, double *const *in, const double *out, const double *dy, double **din) {
    fu_ref_add_bwd_f64(c->out_size, dy, din[0], din[1]);
}

static void cat_fwd(const op_case *c, double *const *in, double *out) {
    fu_ref_concat_fwd_f64(c->n, c->hw, c->parts, c->part_c, (const double *const *)in, out);
}
static void cat_bwd(const op_case *c, double *const *in, const double *out, const double *dy, double **din) {
    fu_ref_concat_bwd_f64(c->n, c->hw, c->parts, c->part_c, dy, din);
}

static void drop_fwd(const op_case *c, double *const *in, double *out) { fu_ref_dropout_fwd_f64(c->out_size, in[0], c->mask, out); }
static void drop_bwd(const op_case *c, double *const *in, const double *out, const double *dy, double **din) {
    fu_ref_dropout_bwd_f64(c->out_size, c->mask, dy, din[0]);
}

static void xent_fwd(const op_case *c, double *const *in, double *out) {
    double prob[64];
    out[0] = fu_ref_xent_fwd_f64(c->n, c->a, in[0], c->labels, c->class_w, prob);
}
static void xent_bwd(const op_case *c, double *const *in, const double *out, const double *dy, double **din) {
    double prob[64];
    fu_ref_xent_fwd_f64(c->n, c->a, in[0], c->labels, c->class_w, prob);
    fu_ref_xent_bwd_f64(c->n, c->a, prob, c->labels, c->class_w, dy[0], din[0]);
}

static op_case simple(const char *name, size_t n, void (*fwd)(const op_case *, double *const *, double *),
                      void (*bwd)(const op_case *, double *const *, const double *, const double *, double **)) {
    op_case c = {.n_in = 1, .out_size = n, .in_size = {n}, .fwd = fwd, .bwd = bwd};
    snprintf(c.name, sizeof c.name, "%s", name);
    return c;
}

// ---- forward-only facts the finite differences cannot see ------------------------

// Running statistics: momentum 0.1, unbiased variance (PyTorch).
static void check_running_stats(void) {
    fu_bn_shape s = {.n = 3, .c = 2, .hw = 5, .eps = FU_BN_EPS, .momentum = FU_BN_MOMENTUM};
    double x[30], y[30], gamma[2] = {1, 1}, beta[2] = {0, 0}, mean[2], invstd[2], rm[2] = {0.5, -1}, rv[2] = {2, 3};
    for (int i = 0; i < 30; i++) x[i] = normal() * 3 + 1;
    fu_ref_bn_train_fwd_f64(&s, x, gamma, beta, y, mean, invstd, rm, rv);
    double worst = 0, rm0[2] = {0.5, -1}, rv0[2] = {2, 3};
    for (int c = 0; c < 2; c++) {
        double sum = 0, sq = 0;
        for (int n = 0; n < 3; n++)
            for (int i = 0; i < 5; i++) sum += x[(n * 2 + c) * 5 + i];
        double mu = sum / 15;
        for (int n = 0; n < 3; n++)
            for (int i = 0; i < 5; i++) sq += pow(x[(n * 2 + c) * 5 + i] - mu, 2);
        worst = fmax(worst, fabs(rm[c] - (0.9 * rm0[c] + 0.1 * mu)));
        worst = fmax(worst, fabs(rv[c] - (0.9 * rv0[c] + 0.1 * sq / 14)));
        worst = fmax(worst, fabs(invstd[c] - 1 / sqrt(sq / 15 + FU_BN_EPS)));
    }
    CHECK(worst < 1e-12, "batchnorm running stats: momentum 0.1, unbiased variance", "error %.3g", worst);
    // Eval mode normalises with the running statistics.
    double ye[30];
    fu_ref_bn_eval_fwd_f64(&s, x, gamma, beta, rm, rv, ye);
    worst = 0;
    for (int i = 0; i < 30; i++) {
        int c = (i / 5) % 2;
        worst = fmax(worst, fabs(ye[i] - (x[i] - rm[c]) / sqrt(rv[c] + FU_BN_EPS)));
    }
    CHECK(worst < 1e-12, "batchnorm eval mode uses the running statistics", "error %.3g", worst);
}

// Max pooling pads with -inf (a window of negatives ignores the padding), and
// ties send the gradient to the first maximum only.
static void check_pool_facts(void) {
    fu_window s = {.n = 1, .c = 1, .h = 2, .w = 2, .k = 1, .r = 3, .stride = 2, .pad = 1, .dil = 1};
    fu_window_out(&s);
    double x[4] = {-3, -2, -5, -4}, y[1], dy[1] = {1}, dx[4] = {0};
    fu_ref_maxpool_fwd_f64(&s, x, y);
    CHECK(s.p == 1 && s.q == 1 && y[0] == -2, "maxpool padding never wins", "got %g", y[0]);
    double t[4] = {1, 7, 7, 7};
    fu_ref_maxpool_fwd_f64(&s, t, y);
    fu_ref_maxpool_bwd_f64(&s, t, y, dy, dx);
    CHECK(dx[1] == 1 && dx[2] == 0 && dx[3] == 0, "maxpool ties: gradient to the first maximum", "dx %g %g %g",
          dx[1], dx[2], dx[3]);
}

// The float instantiation computes what the double one does (same source).
static void check_float_matches_double(void) {
    fu_window s = {.n = 2, .c = 3, .h = 9, .w = 7, .k = 4, .r = 3, .stride = 2, .pad = 2, .dil = 2};
    fu_window_out(&s);
    size_t nx = 2 * 3 * 9 * 7, nw = 4 * 3 * 9, ny = (size_t)2 * 4 * s.p * s.q;
    double xd[378], wd[108], yd[256];
    float xf[378], wf[108], yf[256];
    for (size_t i = 0; i < nx; i++) xf[i] = (float)(xd[i] = (float)normal());
    for (size_t i = 0; i < nw; i++) wf[i] = (float)(wd[i] = (float)normal());
    fu_ref_conv_fwd_f64(&s, xd, wd, yd);
    fu_ref_conv_fwd_f32(&s, xf, wf, yf);
    double worst = 0;
    for (size_t i = 0; i < ny; i++) worst = fmax(worst, fabs(yd[i] - yf[i]) / (1 + fabs(yd[i])));
    CHECK(worst < 1e-5, "conv float matches double", "error %.3g", worst);
}

int main(void) {
    setvbuf(stdout, NULL, _IOLBF, 0); // keep every line when something crashes
    rng = fu_rng_make(42, 0, 0);

    conv_case(2, 3, 7, 9, 4, 3, 1, 1, 1);  // 3x3 same
    conv_case(2, 3, 9, 8, 5, 3, 2, 1, 1);  // 3x3 stride 2, odd/even sides
    conv_case(1, 4, 11, 10, 3, 3, 1, 2, 2); // dilation 2
    conv_case(1, 2, 13, 12, 2, 3, 1, 3, 3); // dilation 3
    conv_case(2, 2, 12, 11, 3, 3, 1, 4, 4); // dilation 4
    conv_case(2, 5, 6, 7, 4, 1, 1, 0, 1);  // 1x1
    conv_case(2, 3, 7, 7, 4, 1, 2, 0, 1);  // 1x1 stride 2 (downsample)
    conv_case(1, 3, 15, 13, 4, 7, 2, 3, 1); // 7x7 stride 2 pad 3 (stem)
    conv_case(1, 2, 5, 5, 2, 3, 2, 0, 2);  // no padding, stride 2, dilation 2
    conv_case(1, 2, 4, 5, 3, 3, 1, 3, 2);  // padding wider than the image reaches

    bn_case(3, 4, 5);  // BatchNorm2d
    bn_case(2, 3, 9);
    bn_case(4, 6, 1);  // BatchNorm1d

    op_case c = simple("relu", 2 * 3 * 5, relu_fwd, relu_bwd);
    gradcheck(&c, away_from_zero);

    pool_case(2, 2, 9, 8, 3, 2, 1); // the stem's 3x3 stride 2 pad 1
    pool_case(1, 3, 7, 7, 3, 2, 1);
    pool_case(1, 2, 6, 5, 2, 2, 0);

    c = simple("global average pool nc 6 hw 15", 6, gap_fwd, gap_bwd);
    c.in_size[0] = 6 * 15, c.hw = 15;
    gradcheck(&c, NULL);

    for (int bias = 0; bias <= 1; bias++) {
        c = (op_case){.n_in = 2 + bias, .n = 3, .a = 7, .b = 5, .bias = bias, .fwd = lin_fwd, .bwd = lin_bwd};
        snprintf(c.name, sizeof c.name, "linear n3 7 -> 5 %s bias", bias ? "with" : "without");
        c.in_size[0] = 3 * 7, c.in_size[1] = 5 * 7, c.in_size[2] = 5, c.out_size = 3 * 5;
        gradcheck(&c, NULL);
    }

    c = simple("sigmoid", 17, sig_fwd, sig_bwd);
    gradcheck(&c, NULL);

    c = (op_case){.n_in = 2, .hw = 10, .fwd = scale_fwd, .bwd = scale_bwd, .out_size = 6 * 10};
    snprintf(c.name, sizeof c.name, "channel scale nc 6 hw 10");
    c.in_size[0] = 6 * 10, c.in_size[1] = 6;
    gradcheck(&c, NULL);

    c = (op_case){.n_in = 2, .fwd = add_fwd, .bwd = add_bwd, .out_size = 23, .in_size = {23, 23}};
    snprintf(c.name, sizeof c.name, "add");
    gradcheck(&c, NULL);

    c = (op_case){.n_in = 3, .n = 2, .hw = 6, .parts = 3, .part_c = {2, 1, 3}, .fwd = cat_fwd, .bwd = cat_bwd};
    snprintf(c.name, sizeof c.name, "concat channels 2+1+3 n2 hw6");
    for (int p = 0; p < 3; p++) c.in_size[p] = (size_t)2 * c.part_c[p] * 6;
    c.out_size = 2 * 6 * 6;
    gradcheck(&c, NULL);

    c = simple("dropout p=0.3 with a given mask", 40, drop_fwd, drop_bwd);
    for (int i = 0; i < 40; i++) c.mask[i] = fu_rng_uniform(&rng) < 0.3 ? 0 : 1 / 0.7;
    gradcheck(&c, NULL);

    c = (op_case){.n_in = 1, .n = 5, .a = 3, .fwd = xent_fwd, .bwd = xent_bwd, .out_size = 1, .in_size = {15},
                  .labels = {0, 2, 1, 2, 2}, .class_w = {0.2, 0.5, 0.3}};
    snprintf(c.name, sizeof c.name, "softmax cross-entropy with class weights n5 k3");
    gradcheck(&c, NULL);

    check_running_stats();
    check_pool_facts();
    check_float_matches_double();
    return check_done();
}
