// The oneDNN backend ("cpu", lib/nn/dnnl_net.c) against the reference
// network in double (the oracle: free of the ReLU-kink flips that make two
// float implementations differ legitimately): small hand-built nets that put
// every op through forward and backward with many convolution shapes
// (stride 1/2, dilation 1-4, 1x1, 7x7, odd sides), then the whole MedicalCNN.
// Compared per tensor by relative L2 error: logits, loss, every parameter
// gradient, BN running statistics and num_batches_tracked. Also: reruns give
// the same bytes; 1 and 2 threads agree (see check_determinism); with --amp
// bf16 the mini nets track fp32 (check_bf16; MedicalCNN: test_bf16.c).
#include "check.h"
#include "mini_net.h"

#include "core/error.h"
#include "core/rng.h"
#include "nn/dnnl_net.h"
#include "nn/model.h"
#include "nn/ref_net.h"

#include <math.h>
#include <omp.h>
#include <stdlib.h>
#include <string.h>

#define TOL 1e-3

static double rel_err32(size_t n, const float *a, const float *ref) {
    double num = 0, den = 0;
    for (size_t i = 0; i < n; i++)
        num += ((double)a[i] - ref[i]) * ((double)a[i] - ref[i]), den += (double)ref[i] * ref[i];
    return den > 0 ? sqrt(num / den) : sqrt(num);
}

typedef struct {
    float *params, *grads, *state, *logits, loss;
    int64_t *counts;
} result;

// r's buffers for a step on n images, its BN state starting as state0.
static void result_alloc(const fu_model *m, int n, const float *state0, result *r) {
    r->grads = calloc(m->n_params, sizeof(float));
    r->state = malloc(m->n_state * sizeof(float));
    r->counts = calloc(m->n_counts, sizeof(int64_t));
    r->logits = malloc((size_t)n * m->classes * sizeof(float));
    memcpy(r->state, state0, m->n_state * sizeof(float));
}

// One training step (forward with BN on batch statistics, dropout masks from
// the pass, backward), then eval-mode logits, on the cpu backend.
static int run_cpu(const fu_model *m, int n, int threads, fu_amp amp, const float *params0, const float *state0,
                   const float *x, const int *labels, const float *cw, result *r, float *eval_logits) {
    fu_backend *b;
    if (fu_dnnl_backend_create(m, &(fu_backend_opts){.batch = n, .threads = threads, .amp = amp}, &b) < 0)
        return -1;
    result_alloc(m, n, state0, r);
    fu_pass train = {.train = true, .dropout = true, .seed = 7, .step = 3}, eval = {0};
    int rc = b->forward(b, n, params0, r->state, r->counts, x, labels, cw, &train, &r->loss);
    if (rc == 0)
        memcpy(r->logits, b->logits(b), (size_t)n * m->classes * sizeof(float));
    if (rc == 0)
        rc = b->backward(b, params0, NULL, r->grads);
    if (rc == 0 && eval_logits) {
        float *st = malloc(m->n_state * sizeof(float));
        memcpy(st, r->state, m->n_state * sizeof(float));
        rc = b->forward(b, n, params0, st, r->counts, x, NULL, NULL, &eval, NULL);
        if (rc == 0)
            memcpy(eval_logits, b->logits(b), (size_t)n * m->classes * sizeof(float));
        free(st);
    }
    b->destroy(b);
    return rc;
}

// The same step on the float reference: what float rounding alone does.
static int run_ref32(const fu_model *m, int n, const float *params0, const float *state0, const float *x,
                     const int *labels, const float *cw, result *r) {
    fu_ref_net_f32 net;
    if (fu_ref_net_init_f32(&net, m, n) < 0)
        return -1;
    result_alloc(m, n, state0, r);
    fu_pass train = {.train = true, .dropout = true, .seed = 7, .step = 3};
    int rc = fu_ref_forward_f32(&net, n, params0, r->state, r->counts, x, labels, cw, &train, &r->loss);
    if (rc == 0)
        memcpy(r->logits, fu_ref_logits_f32(&net), (size_t)n * m->classes * sizeof(float));
    if (rc == 0)
        rc = fu_ref_backward_f32(&net, params0, NULL, r->grads);
    fu_ref_net_free_f32(&net);
    return rc;
}

static void result_free(result *r) {
    free(r->grads);
    free(r->state);
    free(r->counts);
    free(r->logits);
}

// x (nx) N(0, 1) pixels drawn from seed.
static void random_pixels(uint64_t seed, size_t nx, float *x) {
    fu_rng r = fu_rng_make(seed, 2, 0);
    for (size_t i = 0; i < nx; i++)
        x[i] = (float)fu_rng_normal(&r);
}

// Pixels from seed, labels alternating.
static void random_batch(uint64_t seed, int n, size_t nx, float *x, int *labels) {
    random_pixels(seed, nx, x);
    for (int i = 0; i < n; i++)
        labels[i] = i % 2;
}

// Compares the cpu backend with the double reference on one batch; prints
// the worst tensor.
static void compare(const char *name, const fu_model *m, int n, uint64_t seed, bool medical) {
    // the mini nets are well conditioned: TOL strictly; MedicalCNN's float
    // gradients may also be as far from double as the float reference's
    double slack = medical ? 2 : 0;
    size_t np = m->n_params, ns = m->n_state, nc = m->n_counts;
    size_t nx = (size_t)n * 3 * m->height * m->width;
    float *params = malloc(np * sizeof(float)), *state = calloc(ns ? ns : 1, sizeof(float)),
          *x = malloc(nx * sizeof(float));
    int64_t *counts0 = calloc(nc ? nc : 1, sizeof(int64_t));
    if (medical)
        fu_model_init(m, seed, params, state, counts0);
    else
        mini_init(m, seed, params, state);
    int labels[64];
    random_batch(seed, n, nx, x, labels);
    float cw[2] = {0.6f, 0.4f};
    double cwd[2] = {0.6, 0.4};

    // the oracle, in double
    double *pd = malloc(np * sizeof(double)), *sd = malloc((ns ? ns : 1) * sizeof(double)),
           *xd = malloc(nx * sizeof(double));
    double *gd = malloc(np * sizeof(double)), lossd = 0;
    int64_t *cd = calloc(nc ? nc : 1, sizeof(int64_t));
    for (size_t i = 0; i < np; i++)
        pd[i] = params[i];
    for (size_t i = 0; i < ns; i++)
        sd[i] = state[i];
    for (size_t i = 0; i < nx; i++)
        xd[i] = x[i];
    fu_ref_net_f64 net;
    fu_pass train = {.train = true, .dropout = true, .seed = 7, .step = 3}, eval = {0};
    double *ld = malloc((size_t)n * m->classes * sizeof(double)),
           *eld = malloc((size_t)n * m->classes * sizeof(double));
    if (!CHECK(fu_ref_net_init_f64(&net, m, n) == 0 &&
                   fu_ref_forward_f64(&net, n, pd, sd, cd, xd, labels, cwd, &train, &lossd) == 0,
               name, "reference: %s", fu_error()))
        return;
    memcpy(ld, fu_ref_logits_f64(&net), (size_t)n * m->classes * sizeof(double));
    fu_ref_backward_f64(&net, pd, NULL, gd);
    double *sd2 = malloc((ns ? ns : 1) * sizeof(double));
    memcpy(sd2, sd, ns * sizeof(double));
    fu_ref_forward_f64(&net, n, pd, sd2, cd, xd, NULL, NULL, &eval, NULL);
    memcpy(eld, fu_ref_logits_f64(&net), (size_t)n * m->classes * sizeof(double));
    fu_ref_net_free_f64(&net);

    result c = {0};
    float *el = malloc((size_t)n * m->classes * sizeof(float));
    char what[256];
    snprintf(what, sizeof what, "%s: cpu backend runs", name);
    if (!CHECK(run_cpu(m, n, omp_get_max_threads(), FU_AMP_OFF, params, state, x, labels, cw, &c, el) == 0, what,
               "%s", fu_error()))
        return;
    double loss_ref = lossd, e_loss = fabs(c.loss - loss_ref) / fabs(loss_ref);
    size_t nl = (size_t)n * m->classes;
    double e_logits = rel_err(nl, c.logits, ld), e_eval = rel_err(nl, el, eld);
    // per parameter tensor: conv/linear weight, bias, BN gamma/beta (by op).
    // A linear bias feeding a BatchNorm on batch statistics has an exactly
    // zero gradient: as tests/ref/model_parity.py, errors are measured against
    // at least 1e-4 of the largest gradient norm rather than against noise.
    result r32 = {0};
    char ref_where[80], where[80];
    double ref_worst =
        run_ref32(m, n, params, state, x, labels, cw, &r32) == 0 ? worst_grad(m, r32.grads, gd, ref_where) : INFINITY;
    double worst = worst_grad(m, c.grads, gd, where);
    double e_state = 0;
    for (int i = 0; i < m->n_ops; i++) {
        const fu_op *op = &m->ops[i];
        if (op->kind != FU_OP_BN)
            continue;
        double e1 = rel_err((size_t)op->c, c.state + op->mean, sd + op->mean);
        double e2 = rel_err((size_t)op->c, c.state + op->var, sd + op->var);
        if (e1 > e_state)
            e_state = e1;
        if (e2 > e_state)
            e_state = e2;
    }
    bool counts_ok = true;
    for (size_t i = 0; i < nc; i++)
        counts_ok &= c.counts[i] == cd[i] && cd[i] == 1;
    CHECK(e_logits <= TOL && e_loss <= TOL && e_eval <= TOL,
          (snprintf(what, sizeof what, "%s: logits, loss, eval logits", name), what),
          "relative errors %.2g, %.2g, %.2g", e_logits, e_loss, e_eval);
    // Within TOL, or (MedicalCNN: float rounding amplified by training-mode
    // BatchNorms over few values, and ReLU-kink flips) no further from the
    // double oracle than twice what the float reference itself is.
    snprintf(what, sizeof what, "%s: every parameter gradient (worst %.1e at %s; float reference %.1e)", name, worst,
             where, ref_worst);
    CHECK(worst <= TOL || worst <= slack * ref_worst, what, "worst %.3g at %s; the float reference's %.3g at %s", worst,
          where, ref_worst, ref_where);
    CHECK(e_state <= TOL && counts_ok,
          (snprintf(what, sizeof what, "%s: running stats, num_batches_tracked", name), what),
          "running stats %.3g, counts %s", e_state, counts_ok ? "ok" : "wrong");
    result_free(&c);
    result_free(&r32);
    free(el), free(params), free(state), free(x), free(counts0), free(pd), free(sd), free(sd2), free(xd), free(gd),
        free(cd), free(ld), free(eld);
}

// The lowest cosine similarity between the gradients g and ref of one
// parameter tensor (conv, linear weight or bias, BN gamma or beta); its op
// goes to where. Tensors with a negligible fp32 gradient are left out (a
// linear bias before a training-mode BN: exactly zero).
static double worst_cosine(const fu_model *m, const float *g, const float *ref, char where[80]) {
    double worst = 1;
    for (int i = 0; i < m->n_ops; i++) {
        const fu_op *op = &m->ops[i];
        size_t wn = op->kind == FU_OP_CONV     ? (size_t)op->c * m->ops[op->in[0]].c * op->k * op->k
                    : op->kind == FU_OP_LINEAR ? (size_t)op->c * m->ops[op->in[0]].c
                    : op->kind == FU_OP_BN     ? (size_t)op->c
                                               : 0;
        for (int t = 0; wn && t < 2; t++) {
            int64_t off = t ? op->bias_off : op->weight;
            size_t len = t ? (size_t)op->c : wn;
            double dot = 0, na = 0, nr = 0;
            for (size_t j = 0; off >= 0 && j < len; j++)
                dot += (double)g[off + j] * ref[off + j], na += (double)g[off + j] * g[off + j],
                    nr += (double)ref[off + j] * ref[off + j];
            if (nr <= 1e-20)
                continue;
            double cos = dot / sqrt(na * nr + 1e-300);
            if (cos < worst) {
                worst = cos;
                snprintf(where, 80, "op %d %s", i, t ? "bias" : "weight");
            }
        }
    }
    return worst;
}

// --amp bf16 against fp32 on a mini net: the convolutions read bf16 inputs,
// weights and output gradients (2^-9 relative rounding) and accumulate in
// fp32. Logits and eval logits stay within 3e-2 (measured <= 2.2e-2), the
// loss within 2e-2 (measured <= 1.7e-2); gradients less so,
// as training-mode BN over 3 small images amplifies rounding: rounding only
// the conv weights and the image to bf16, in fp32, already moves a tensor's
// gradient to cosine similarity 0.93-0.997 here. Checked: every tensor >=
// 0.97 (measured >= 0.986), all gradients together >= 0.99. false: this CPU
// has no AVX512-BF16 (skipped).
static bool check_bf16(const char *name, const fu_model *m, int n, uint64_t seed) {
    size_t nx = (size_t)n * 3 * m->height * m->width;
    float *params = malloc(m->n_params * sizeof(float)), *state = calloc(m->n_state, sizeof(float)),
          *x = malloc(nx * sizeof(float));
    mini_init(m, seed, params, state);
    int labels[64];
    random_batch(seed, n, nx, x, labels);
    float cw[2] = {0.6f, 0.4f};
    size_t nl = (size_t)n * m->classes;
    float *el = malloc(nl * sizeof(float)), *elh = malloc(nl * sizeof(float));
    result f = {0}, h = {0};
    char what[256], where[80] = "";
    bool ran = run_cpu(m, n, 2, FU_AMP_OFF, params, state, x, labels, cw, &f, el) == 0;
    bool supported = true;
    if (ran && run_cpu(m, n, 2, FU_AMP_BF16, params, state, x, labels, cw, &h, elh) < 0) {
        supported = ran = !strstr(fu_error(), "AVX512-BF16");
        if (!supported)
            printf("skip - %s: --amp bf16: %s\n", name, fu_error());
    }
    snprintf(what, sizeof what, "%s: --amp bf16 runs", name);
    if (supported && CHECK(ran, what, "%s", fu_error())) {
        double e_logits = rel_err32(nl, h.logits, f.logits), e_eval = rel_err32(nl, elh, el),
               e_loss = fabs(h.loss - f.loss) / fabs(f.loss), cos = worst_cosine(m, h.grads, f.grads, where);
        double dot = 0, na = 0, nr = 0;
        for (size_t i = 0; i < m->n_params; i++)
            dot += (double)h.grads[i] * f.grads[i], na += (double)h.grads[i] * h.grads[i],
                nr += (double)f.grads[i] * f.grads[i];
        double all = dot / sqrt(na * nr);
        snprintf(what, sizeof what,
                 "%s: --amp bf16 tracks fp32 (logits %.1e, eval %.1e, loss %.1e; gradient cosine %.4f, per tensor "
                 ">= %.4f)",
                 name, e_logits, e_eval, e_loss, all, cos);
        CHECK(e_logits <= 3e-2 && e_eval <= 3e-2 && e_loss <= 2e-2 && cos >= 0.97 && all >= 0.99, what,
              "logits %.3g, eval logits %.3g, loss %.3g, gradient cosine %.5f, per tensor %.5f at %s", e_logits,
              e_eval, e_loss, all, cos, where);
    }
    result_free(&f), result_free(&h);
    free(params), free(state), free(x), free(el), free(elh);
    return supported;
}

// Two runs of the same step give the same bytes; 1 and 2 threads compared.
static void check_determinism(const fu_model *m, int n) {
    size_t nx = (size_t)n * 3 * m->height * m->width;
    float *params = malloc(m->n_params * sizeof(float)), *state = malloc(m->n_state * sizeof(float)),
          *x = malloc(nx * sizeof(float));
    int64_t *counts = calloc(m->n_counts, sizeof(int64_t));
    fu_model_init(m, 3, params, state, counts);
    random_pixels(3, nx, x);
    int labels[8] = {0, 1, 1, 0, 1, 0, 0, 1};
    float cw[2] = {0.5f, 0.5f};
    result a = {0}, b = {0}, c = {0};
    if (run_cpu(m, n, 2, FU_AMP_OFF, params, state, x, labels, cw, &a, NULL) < 0 ||
        run_cpu(m, n, 2, FU_AMP_OFF, params, state, x, labels, cw, &b, NULL) < 0 ||
        run_cpu(m, n, 1, FU_AMP_OFF, params, state, x, labels, cw, &c, NULL) < 0) {
        CHECK(0, "determinism runs", "%s", fu_error());
        return;
    }
    size_t nl = (size_t)n * m->classes;
    bool same = !memcmp(a.grads, b.grads, m->n_params * sizeof(float)) &&
                !memcmp(a.logits, b.logits, nl * sizeof(float)) &&
                !memcmp(a.state, b.state, m->n_state * sizeof(float)) && a.loss == b.loss;
    CHECK(same, "rerun: same logits, loss, gradients and running stats, bit for bit", "they differ");
    bool threads = !memcmp(a.grads, c.grads, m->n_params * sizeof(float)) &&
                   !memcmp(a.logits, c.logits, nl * sizeof(float)) &&
                   !memcmp(a.state, c.state, m->n_state * sizeof(float));
    double worst = 0;
    for (size_t i = 0; i < m->n_params; i++) {
        double d = fabs((double)a.grads[i] - c.grads[i]) / (fabs(a.grads[i]) + 1e-12);
        if (d > worst)
            worst = d;
    }
    // oneDNN splits some sums by thread count (backward weights, BatchNorm
    // statistics with fewer channel blocks than threads, Winograd at small
    // maps: docs/model.md), so another thread count may give other bytes
    // (at 32x3x224x224, 1 and 2 threads differ in weight gradients only, by
    // up to 1e-5 relative); same count, same bytes.
    double num = 0, den = 0;
    for (size_t i = 0; i < m->n_params; i++) {
        num += ((double)a.grads[i] - c.grads[i]) * ((double)a.grads[i] - c.grads[i]);
        den += (double)c.grads[i] * c.grads[i];
    }
    CHECK(sqrt(num / den) <= 1e-5 && !memcmp(a.logits, c.logits, nl * sizeof(float)) && a.loss == c.loss,
          threads ? "1 and 2 threads: same logits and loss; gradients bit-identical"
                  : "1 and 2 threads: same logits and loss; gradients within 1e-5",
          "gradients differ by %.3g (relative L2), largest element difference %.3g", sqrt(num / den), worst);
    result_free(&a), result_free(&b), result_free(&c);
    free(params), free(state), free(x), free(counts);
}

// A backend planned for 4 images runs 3 (the last batch of an epoch): the
// same as a backend planned for 3, and eval logits per image as with 4.
static void check_smaller_batch(const fu_model *m) {
    size_t nx = (size_t)4 * 3 * m->height * m->width;
    float *params = malloc(m->n_params * sizeof(float)), *state = malloc(m->n_state * sizeof(float)),
          *x = malloc(nx * sizeof(float));
    int64_t *counts = calloc(m->n_counts, sizeof(int64_t));
    fu_model_init(m, 9, params, state, counts);
    random_pixels(9, nx, x);
    int labels[4] = {0, 1, 1, 0};
    float cw[2] = {0.5f, 0.5f}, loss4, loss3;
    float *g4 = malloc(m->n_params * sizeof(float)), *g3 = malloc(m->n_params * sizeof(float));
    float *s4 = malloc(m->n_state * sizeof(float)), *s3 = malloc(m->n_state * sizeof(float)), e4[8], e3[6];
    int64_t *c4 = calloc(m->n_counts, sizeof(int64_t)), *c3 = calloc(m->n_counts, sizeof(int64_t));
    memcpy(s4, state, m->n_state * sizeof(float));
    memcpy(s3, state, m->n_state * sizeof(float));
    fu_backend *b4, *b3;
    fu_pass train = {.train = true}, eval = {0};
    bool ok = fu_dnnl_backend_create(m, &(fu_backend_opts){.batch = 4, .threads = 2}, &b4) == 0 &&
              fu_dnnl_backend_create(m, &(fu_backend_opts){.batch = 3, .threads = 2}, &b3) == 0;
    ok = ok && b4->forward(b4, 4, params, state, counts, x, NULL, NULL, &eval, NULL) == 0;
    if (ok)
        memcpy(e4, b4->logits(b4), sizeof e4);
    ok = ok && b4->forward(b4, 3, params, state, counts, x, NULL, NULL, &eval, NULL) == 0;
    if (ok)
        memcpy(e3, b4->logits(b4), sizeof e3);
    ok = ok && b4->forward(b4, 3, params, s4, c4, x, labels, cw, &train, &loss4) == 0 &&
         b4->backward(b4, params, NULL, g4) == 0;
    ok = ok && b3->forward(b3, 3, params, s3, c3, x, labels, cw, &train, &loss3) == 0 &&
         b3->backward(b3, params, NULL, g3) == 0;
    if (!CHECK(ok, "batch of 3 on a backend planned for 4", "%s", fu_error()))
        return;
    double de = 0;
    for (int i = 0; i < 6; i++)
        de = fmax(de, fabs(e3[i] - e4[i]) / (fabs(e4[i]) + 1e-6));
    CHECK(de <= 1e-5, "batch of 3 on a backend planned for 4: eval logits as in the batch of 4", "differ by %.3g", de);
    CHECK(loss3 == loss4 && !memcmp(g3, g4, m->n_params * sizeof(float)) && !memcmp(s3, s4, m->n_state * sizeof(float)),
          "batch of 3 on a backend planned for 4: training step as a backend planned for 3", "they differ");
    b4->destroy(b4);
    b3->destroy(b3);
    free(params), free(state), free(x), free(counts), free(g4), free(g3), free(s4), free(s3), free(c4), free(c3);
}

int main(void) {
    // (h, w, k, stride, pad, dil): 1x1, 3x3 stride 1/2, dilation 1-4, 7x7/2, odd sides; the last pads
    // by about half the side (the padded-copy path for backward weights, as MedicalCNN at 64x64)
    static const int cfg[][6] = {{13, 11, 1, 1, 0, 1}, {13, 11, 3, 1, 1, 1}, {17, 15, 3, 2, 1, 1},
                                 {15, 13, 3, 1, 2, 2}, {19, 17, 3, 2, 3, 3}, {21, 19, 3, 1, 4, 4},
                                 {23, 21, 7, 2, 3, 1}, {12, 16, 1, 2, 0, 1}, {9, 7, 3, 1, 4, 4}};
    bool bf16 = true;
    for (size_t i = 0; i < sizeof cfg / sizeof *cfg; i++) {
        fu_model m;
        // No dropout over a feature map: the cpu backend refuses it (dropout runs
        // on the head's vectors only; MedicalCNN has no other).
        mini_net(&m, cfg[i][0], cfg[i][1], cfg[i][2], cfg[i][3], cfg[i][4], cfg[i][5], false);
        char name[96];
        snprintf(name, sizeof name, "mini net 3x3x%dx%d, conv %dx%d stride %d pad %d dilation %d", cfg[i][0], cfg[i][1],
                 cfg[i][2], cfg[i][2], cfg[i][3], cfg[i][4], cfg[i][5]);
        compare(name, &m, 3, 11 + i, false);
        bf16 = bf16 && check_bf16(name, &m, 3, 11 + i);
        free(m.ops);
    }
    fu_model m;
    mini_net(&m, 13, 11, 3, 1, 1, 1, true);
    fu_backend *refused = NULL;
    int rc = fu_dnnl_backend_create(&m, &(fu_backend_opts){.batch = 3, .threads = 1}, &refused);
    CHECK(rc < 0 && strstr(fu_error(), "dropout over a feature map"), "dropout over a feature map is refused, not wrong",
          "rc %d: %s", rc, fu_error());
    fu_backend_destroy(refused);
    free(m.ops);
    if (CHECK(fu_medicalcnn(&m, 64, 64) == 0, "MedicalCNN 64x64", "%s", fu_error())) {
        compare("MedicalCNN 4x3x64x64", &m, 4, 42, true);
        check_determinism(&m, 4);
        check_smaller_batch(&m);
        fu_model_free(&m);
    }
    if (CHECK(fu_medicalcnn(&m, 45, 37) == 0, "MedicalCNN 45x37", "%s", fu_error())) {
        compare("MedicalCNN 2x3x45x37", &m, 2, 5, true);
        fu_model_free(&m);
    }
    return check_done();
}
