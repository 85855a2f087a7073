// The cuda backend (lib/cuda) against the reference network in double, as
// tests/unit/test_dnnl.c does for the cpu backend: small hand-built nets that
// put every op through forward and backward with many convolution shapes
// (stride 1/2, dilation 1-4, 1x1, 7x7, odd sides), then MedicalCNN at 32x32
// and 64x64, batch 4. Compared per tensor by relative L2 error: logits, loss,
// eval logits, every parameter gradient, BN running statistics and
// num_batches_tracked; with --amp bf16 and fp16 too, at looser tolerances.
// Also: a rerun gives the same bytes; a batch of 3 on a backend planned for
// 4; 20 training steps (trainer.h) whose losses track the cpu backend's, in
// fp32, bf16 and fp16. Without a CUDA device: one "skip" line.
//   test_cuda           the checks
//   test_cuda --bench   "#" lines: seconds per training step of MedicalCNN
//                       224x224, batch 32, in each precision
// Run by `make test-gpu` (not by `make test`).
#include "../unit/check.h"
#include "../unit/mini_net.h"

#include "core/error.h"
#include "core/rng.h"
#include "cuda/cuda_backend.h"
#include "nn/model.h"
#include "nn/ref_net.h"
#include "nn/trainer.h"

#include <math.h>
#include <omp.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#define TOL 1e-3
// Mixed precision against the double oracle and the fp32 cpu trainer: first
// estimates from the half types' rounding (bf16 keeps 8 significant bits,
// fp16 11) over MedicalCNN's ~40 convolutions, to be confirmed on a GPU.
#define TOL_BF16 1e-1
#define TOL_FP16 3e-2

typedef struct {
    float *grads, *state, *logits, loss;
    int64_t *counts;
} result;

static void result_free(result *r) { free(r->grads), free(r->state), free(r->counts), free(r->logits); }

// One training step (BN on batch statistics, dropout masks from the pass,
// backward), then eval-mode logits (eval_logits may be NULL), on a backend.
static int run_backend(const char *name, fu_amp amp, const fu_model *m, int n, const float *params0,
                       const float *state0, const float *x, const int *labels, const float *cw, result *r,
                       float *eval_logits) {
    fu_backend *b;
    fu_backend_opts bo = {.batch = n, .threads = omp_get_max_threads(), .amp = amp};
    if (fu_backend_create(name, m, &bo, &b) < 0) return -1;
    size_t nl = (size_t)n * m->classes;
    r->grads = calloc(m->n_params, sizeof(float));
    r->state = malloc((m->n_state ? m->n_state : 1) * sizeof(float));
    r->counts = calloc(m->n_counts ? m->n_counts : 1, sizeof(int64_t));
    r->logits = malloc(nl * sizeof(float));
    memcpy(r->state, state0, m->n_state * sizeof(float));
    fu_pass train = {.train = true, .dropout = true, .seed = 7, .step = 3}, eval = {0};
    int rc = b->forward(b, n, params0, r->state, r->counts, x, labels, cw, &train, &r->loss);
    if (rc == 0) memcpy(r->logits, b->logits(b), nl * sizeof(float));
    if (rc == 0) rc = b->backward(b, params0, NULL, r->grads);
    if (rc == 0 && eval_logits) {
        float *st = malloc((m->n_state ? m->n_state : 1) * sizeof(float));
        memcpy(st, r->state, m->n_state * sizeof(float));
        rc = b->forward(b, n, params0, st, r->counts, x, NULL, NULL, &eval, NULL);
        if (rc == 0) memcpy(eval_logits, b->logits(b), nl * sizeof(float));
        free(st);
    }
    b->destroy(b);
    return rc;
}

typedef struct {
    double *grads, *state, *logits, *eval_logits, loss;
    int64_t *counts;
} oracle;

static int run_oracle(const fu_model *m, int n, const float *params, const float *state, const float *x,
                      const int *labels, const float *cw, oracle *o) {
    size_t np = m->n_params, ns = m->n_state, nx = (size_t)n * 3 * m->height * m->width, nl = (size_t)n * m->classes;
    double *pd = malloc(np * sizeof(double)), *xd = malloc(nx * sizeof(double)), cwd[2] = {cw[0], cw[1]};
    o->state = malloc((ns ? ns : 1) * sizeof(double));
    o->grads = malloc(np * sizeof(double));
    o->counts = calloc(m->n_counts ? m->n_counts : 1, sizeof(int64_t));
    o->logits = malloc(nl * sizeof(double));
    o->eval_logits = malloc(nl * sizeof(double));
    for (size_t i = 0; i < np; i++) pd[i] = params[i];
    for (size_t i = 0; i < ns; i++) o->state[i] = state[i];
    for (size_t i = 0; i < nx; i++) xd[i] = x[i];
    fu_ref_net_f64 net;
    fu_pass train = {.train = true, .dropout = true, .seed = 7, .step = 3}, eval = {0};
    int rc = fu_ref_net_init_f64(&net, m, n);
    if (rc == 0) rc = fu_ref_forward_f64(&net, n, pd, o->state, o->counts, xd, labels, cwd, &train, &o->loss);
    if (rc == 0) memcpy(o->logits, fu_ref_logits_f64(&net), nl * sizeof(double));
    if (rc == 0) rc = fu_ref_backward_f64(&net, pd, NULL, o->grads);
    double *st = malloc((ns ? ns : 1) * sizeof(double));
    memcpy(st, o->state, ns * sizeof(double));
    int64_t *cnt = calloc(m->n_counts ? m->n_counts : 1, sizeof(int64_t));
    if (rc == 0) rc = fu_ref_forward_f64(&net, n, pd, st, cnt, xd, NULL, NULL, &eval, NULL);
    if (rc == 0) memcpy(o->eval_logits, fu_ref_logits_f64(&net), nl * sizeof(double));
    fu_ref_net_free_f64(&net);
    free(pd), free(xd), free(st), free(cnt);
    return rc;
}

static void oracle_free(oracle *o) { free(o->grads), free(o->state), free(o->counts), free(o->logits), free(o->eval_logits); }

// The cuda backend against the double reference on one batch, within tol.
static void compare(const char *name, const fu_model *m, int n, uint64_t seed, bool medical, fu_amp amp,
                    double tol) {
    // the mini nets are well conditioned: tol strictly; MedicalCNN's float
    // gradients may also be as far from double as the float reference's
    double slack = medical && amp == FU_AMP_OFF ? 2 : 0;
    size_t np = m->n_params, ns = m->n_state, nx = (size_t)n * 3 * m->height * m->width, nl = (size_t)n * m->classes;
    float *params = malloc(np * sizeof(float)), *state = calloc(ns ? ns : 1, sizeof(float)),
          *x = malloc(nx * sizeof(float)), *el = malloc(nl * sizeof(float));
    int64_t *counts0 = calloc(m->n_counts ? m->n_counts : 1, sizeof(int64_t));
    if (medical) fu_model_init(m, seed, params, state, counts0);
    else mini_init(m, seed, params, state);
    fu_rng r = fu_rng_make(seed, 2, 0);
    for (size_t i = 0; i < nx; i++) x[i] = (float)fu_rng_normal(&r);
    int labels[64];
    for (int i = 0; i < n; i++) labels[i] = i % 2;
    float cw[2] = {0.6f, 0.4f};
    char what[256];
    oracle o = {0};
    result c = {0}, r32 = {0};
    if (!CHECK(run_oracle(m, n, params, state, x, labels, cw, &o) == 0, name, "reference: %s", fu_error())) return;
    snprintf(what, sizeof what, "%s: cuda backend runs", name);
    if (!CHECK(run_backend("cuda", amp, m, n, params, state, x, labels, cw, &c, el) == 0, what, "%s", fu_error()))
        return;
    double e_loss = fabs(c.loss - o.loss) / fabs(o.loss), e_logits = rel_err(nl, c.logits, o.logits),
           e_eval = rel_err(nl, el, o.eval_logits);
    char ref_where[80] = "", where[80] = "";
    double ref_worst = run_backend("ref", FU_AMP_OFF, m, n, params, state, x, labels, cw, &r32, NULL) == 0
                           ? worst_grad(m, r32.grads, o.grads, ref_where)
                           : INFINITY;
    double worst = worst_grad(m, c.grads, o.grads, where), e_state = 0;
    for (int i = 0; i < m->n_ops; i++) {
        const fu_op *op = &m->ops[i];
        if (op->kind != FU_OP_BN) continue;
        e_state = fmax(e_state, rel_err((size_t)op->c, c.state + op->mean, o.state + op->mean));
        e_state = fmax(e_state, rel_err((size_t)op->c, c.state + op->var, o.state + op->var));
    }
    bool counts_ok = true;
    for (size_t i = 0; i < m->n_counts; i++) counts_ok &= c.counts[i] == o.counts[i] && o.counts[i] == 1;
    CHECK(e_logits <= tol && e_loss <= tol && e_eval <= tol,
          (snprintf(what, sizeof what, "%s: logits, loss, eval logits (%.1e, %.1e, %.1e)", name, e_logits, e_loss,
                    e_eval),
           what),
          "relative errors %.2g, %.2g, %.2g", e_logits, e_loss, e_eval);
    snprintf(what, sizeof what, "%s: every parameter gradient (worst %.1e at %s; float reference %.1e)", name, worst,
             where, ref_worst);
    CHECK(worst <= tol || worst <= slack * ref_worst, what, "worst %.3g at %s; the float reference's %.3g at %s", worst,
          where, ref_worst, ref_where);
    CHECK(e_state <= tol && counts_ok,
          (snprintf(what, sizeof what, "%s: running stats (%.1e), num_batches_tracked", name, e_state), what),
          "running stats %.3g, counts %s", e_state, counts_ok ? "ok" : "wrong");
    result_free(&c), result_free(&r32), oracle_free(&o);
    free(params), free(state), free(x), free(el), free(counts0);
}

// ---- determinism, smaller batches, training, amp ------------------------------------

static float *random_batch(const fu_model *m, int n, uint64_t seed) {
    size_t nx = (size_t)n * 3 * m->height * m->width;
    float *x = malloc(nx * sizeof(float));
    fu_rng r = fu_rng_make(seed, 2, 0);
    for (size_t i = 0; i < nx; i++) x[i] = (float)fu_rng_normal(&r);
    return x;
}

static void check_determinism(const fu_model *m, int n) {
    float *params = malloc(m->n_params * sizeof(float)), *state = malloc(m->n_state * sizeof(float)),
          *x = random_batch(m, n, 3);
    int64_t *counts = calloc(m->n_counts, sizeof(int64_t));
    fu_model_init(m, 3, params, state, counts);
    int labels[8] = {0, 1, 1, 0, 1, 0, 0, 1};
    float cw[2] = {0.5f, 0.5f};
    result a = {0}, b = {0};
    if (CHECK(run_backend("cuda", FU_AMP_OFF, m, n, params, state, x, labels, cw, &a, NULL) == 0 &&
                  run_backend("cuda", FU_AMP_OFF, m, n, params, state, x, labels, cw, &b, NULL) == 0,
              "determinism runs", "%s", fu_error())) {
        size_t nl = (size_t)n * m->classes;
        CHECK(!memcmp(a.grads, b.grads, m->n_params * sizeof(float)) && !memcmp(a.logits, b.logits, nl * sizeof(float)) &&
                  !memcmp(a.state, b.state, m->n_state * sizeof(float)) && a.loss == b.loss,
              "rerun: same logits, loss, gradients and running stats, bit for bit", "they differ");
    }
    result_free(&a), result_free(&b);
    free(params), free(state), free(x), free(counts);
}

// A backend planned for 4 images runs 3 (the last batch of an epoch, new
// descriptors and algorithms): as a backend planned for 3.
static void check_smaller_batch(const fu_model *m) {
    float *params = malloc(m->n_params * sizeof(float)), *state = malloc(m->n_state * sizeof(float)),
          *x = random_batch(m, 4, 9);
    int64_t *counts = calloc(m->n_counts, sizeof(int64_t));
    fu_model_init(m, 9, params, state, counts);
    int labels[4] = {0, 1, 1, 0};
    float cw[2] = {0.5f, 0.5f}, loss4 = 0, loss3 = 0, e4[8], e3[6];
    float *g4 = calloc(m->n_params, sizeof(float)), *g3 = calloc(m->n_params, sizeof(float));
    float *s4 = malloc(m->n_state * sizeof(float)), *s3 = malloc(m->n_state * sizeof(float));
    int64_t *c4 = calloc(m->n_counts, sizeof(int64_t)), *c3 = calloc(m->n_counts, sizeof(int64_t));
    memcpy(s4, state, m->n_state * sizeof(float));
    memcpy(s3, state, m->n_state * sizeof(float));
    fu_backend *b4 = NULL, *b3 = NULL;
    fu_pass train = {.train = true}, eval = {0};
    bool ok = fu_backend_create("cuda", m, &(fu_backend_opts){.batch = 4}, &b4) == 0 &&
              fu_backend_create("cuda", m, &(fu_backend_opts){.batch = 3}, &b3) == 0;
    ok = ok && b4->forward(b4, 4, params, state, counts, x, NULL, NULL, &eval, NULL) == 0;
    if (ok) memcpy(e4, b4->logits(b4), sizeof e4);
    ok = ok && b4->forward(b4, 3, params, state, counts, x, NULL, NULL, &eval, NULL) == 0;
    if (ok) memcpy(e3, b4->logits(b4), sizeof e3);
    ok = ok && b4->forward(b4, 3, params, s4, c4, x, labels, cw, &train, &loss4) == 0 && b4->backward(b4, params, NULL, g4) == 0;
    ok = ok && b3->forward(b3, 3, params, s3, c3, x, labels, cw, &train, &loss3) == 0 && b3->backward(b3, params, NULL, g3) == 0;
    if (CHECK(ok, "batch of 3 on a backend planned for 4", "%s", fu_error())) {
        double de = 0;
        for (int i = 0; i < 6; i++) de = fmax(de, fabs(e3[i] - e4[i]) / (fabs(e4[i]) + 1e-6));
        CHECK(de <= 1e-5, "batch of 3 on a backend planned for 4: eval logits as in the batch of 4", "differ by %.3g",
              de);
        CHECK(loss3 == loss4 && !memcmp(g3, g4, m->n_params * sizeof(float)) &&
                  !memcmp(s3, s4, m->n_state * sizeof(float)),
              "batch of 3 on a backend planned for 4: training step as a backend planned for 3", "they differ");
    }
    fu_backend_destroy(b4), fu_backend_destroy(b3);
    free(params), free(state), free(x), free(counts), free(g4), free(g3), free(s4), free(s3), free(c4), free(c3);
}

enum { STEPS = 20 };

// STEPS optimizer steps (AdamW, clipping, dropout) from the same weights on
// the same batches; the losses go to loss[].
static int train_losses(const fu_model *m, const char *backend, fu_amp amp, float loss[STEPS]) {
    fu_train_opts o = fu_train_defaults();
    o.batch = 4, o.augment = false, o.seed = 5, o.amp = amp;
    fu_trainer t;
    if (fu_trainer_init(&t, m, &o, backend, omp_get_max_threads()) < 0) return -1;
    t.class_w[0] = 0.4f, t.class_w[1] = 0.6f;
    int rc = 0;
    for (int s = 0; s < STEPS && rc == 0; s++) {
        float *x = random_batch(m, 4, 100 + (uint64_t)s);
        int labels[4] = {s % 2, 1, 0, (s / 2) % 2}, correct, seen;
        rc = fu_train_step(&t, 4, x, labels, o.lr, &loss[s], &correct, &seen);
        free(x);
    }
    fu_trainer_free(&t);
    return rc;
}

// The cuda backend's losses, in each precision, against the cpu backend's (fp32).
static void check_training(const fu_model *m) {
    float ref[STEPS], got[STEPS];
    if (!CHECK(train_losses(m, "cpu", FU_AMP_OFF, ref) == 0, "training: cpu backend runs", "%s", fu_error())) return;
    static const struct {
        fu_amp amp;
        double tol;
    } runs[] = {{FU_AMP_OFF, 1e-2}, {FU_AMP_BF16, 5e-2}, {FU_AMP_FP16, 5e-2}};
    for (size_t r = 0; r < sizeof runs / sizeof *runs; r++) {
        char what[200];
        snprintf(what, sizeof what, "%d training steps, amp %s: cuda backend runs", STEPS, fu_amp_name(runs[r].amp));
        if (!CHECK(train_losses(m, "cuda", runs[r].amp, got) == 0, what, "%s", fu_error())) continue;
        double worst = 0;
        int at = 0;
        for (int s = 0; s < STEPS; s++) {
            double e = fabs((double)got[s] - ref[s]) / fmax(1, fabs(ref[s]));
            if (e > worst) worst = e, at = s + 1;
        }
        snprintf(what, sizeof what,
                 "%d training steps, amp %s: losses track the cpu backend's (worst %.1e at step %d; %.4f -> %.4f)",
                 STEPS, fu_amp_name(runs[r].amp), worst, at, got[0], got[STEPS - 1]);
        CHECK(worst <= runs[r].tol, what, "losses differ by %.3g at step %d (tolerance %.0e)", worst, at,
              runs[r].tol);
    }
}

static double now(void) {
    struct timespec t;
    clock_gettime(CLOCK_MONOTONIC, &t);
    return (double)t.tv_sec + 1e-9 * (double)t.tv_nsec;
}

// Forward + backward of the study's size through the host-pointer interface
// (parameter, state and gradient copies included): set-up, then 2 steps
// warm-up and 10 timed, per precision.
static int bench(void) {
    enum { N = 32, SIDE = 224, WARM = 2, TIMED = 10 };
    fu_model m;
    if (fu_medicalcnn(&m, SIDE, SIDE) < 0) return 1;
    float *params = malloc(m.n_params * sizeof(float)), *grads = malloc(m.n_params * sizeof(float)),
          *state = malloc(m.n_state * sizeof(float)), *x = random_batch(&m, N, 1), cw[2] = {0.5f, 0.5f}, loss;
    int64_t *counts = calloc(m.n_counts, sizeof(int64_t));
    int labels[N];
    for (int i = 0; i < N; i++) labels[i] = i % 2;
    fu_model_init(&m, 1, params, state, counts);
    static const fu_amp amps[] = {FU_AMP_OFF, FU_AMP_BF16, FU_AMP_FP16};
    int rc = 0;
    for (size_t a = 0; a < sizeof amps / sizeof *amps && rc == 0; a++) {
        fu_backend *b;
        double t0 = now();
        if (fu_backend_create("cuda", &m, &(fu_backend_opts){.batch = N, .amp = amps[a]}, &b) < 0) {
            printf("# bench: amp %s: %s\n", fu_amp_name(amps[a]), fu_error());
            rc = 1;
            break;
        }
        double setup = now() - t0, fwd = 0, bwd = 0;
        for (int s = 0; s < WARM + TIMED && rc == 0; s++) {
            fu_pass pass = {.train = true, .dropout = true, .seed = 1, .step = (uint64_t)s};
            double t1 = now();
            rc = b->forward(b, N, params, state, counts, x, labels, cw, &pass, &loss);
            double t2 = now();
            if (rc == 0) rc = b->backward(b, params, NULL, grads);
            if (s >= WARM) fwd += t2 - t1, bwd += now() - t2;
        }
        if (rc == 0)
            printf("# bench: MedicalCNN %dx%d, batch %d, amp %s: %.1f ms per training step (forward %.1f, "
                   "backward %.1f; mean of %d), set-up %.2f s, %.0f MiB of device buffers\n",
                   SIDE, SIDE, N, fu_amp_name(amps[a]), 1e3 * (fwd + bwd) / TIMED, 1e3 * fwd / TIMED,
                   1e3 * bwd / TIMED, TIMED, setup, b->act_bytes / 1048576.0);
        else
            printf("# bench: amp %s: %s\n", fu_amp_name(amps[a]), fu_error());
        fu_backend_destroy(b);
    }
    free(params), free(grads), free(state), free(x), free(counts);
    fu_model_free(&m);
    return rc;
}

int main(int argc, char **argv) {
    char why[160], device[256];
    if (!fu_cuda_device_count(why, sizeof why)) {
        printf("skip - cuda backend: no CUDA device (%s)\n", why);
        return 0;
    }
    if (fu_cuda_device_name(device, sizeof device) == 0) printf("# device: %s\n", device);
    if (argc > 1 && strcmp(argv[1], "--bench") == 0) return bench();
    // (h, w, k, stride, pad, dil): 1x1, 3x3 stride 1/2, dilation 1-4, 7x7/2, odd sides
    static const int cfg[][6] = {{13, 11, 1, 1, 0, 1}, {13, 11, 3, 1, 1, 1}, {17, 15, 3, 2, 1, 1},
                                 {15, 13, 3, 1, 2, 2}, {19, 17, 3, 2, 3, 3}, {21, 19, 3, 1, 4, 4},
                                 {23, 21, 7, 2, 3, 1}, {12, 16, 1, 2, 0, 1}};
    for (size_t i = 0; i < sizeof cfg / sizeof *cfg; i++) {
        fu_model m;
        mini_net(&m, cfg[i][0], cfg[i][1], cfg[i][2], cfg[i][3], cfg[i][4], cfg[i][5], true);
        char name[96];
        snprintf(name, sizeof name, "mini net 3x3x%dx%d, conv %dx%d stride %d pad %d dilation %d", cfg[i][0],
                 cfg[i][1], cfg[i][2], cfg[i][2], cfg[i][3], cfg[i][4], cfg[i][5]);
        compare(name, &m, 3, 11 + i, false, FU_AMP_OFF, TOL);
        free(m.ops);
    }
    static const int sizes[] = {32, 64};
    for (size_t i = 0; i < sizeof sizes / sizeof *sizes; i++) {
        fu_model m;
        char name[64];
        snprintf(name, sizeof name, "MedicalCNN 4x3x%dx%d", sizes[i], sizes[i]);
        if (!CHECK(fu_medicalcnn(&m, sizes[i], sizes[i]) == 0, name, "%s", fu_error())) continue;
        compare(name, &m, 4, 42, true, FU_AMP_OFF, TOL);
        if (sizes[i] == 64) {
            snprintf(name, sizeof name, "MedicalCNN 4x3x64x64, amp bf16");
            compare(name, &m, 4, 42, true, FU_AMP_BF16, TOL_BF16);
            snprintf(name, sizeof name, "MedicalCNN 4x3x64x64, amp fp16");
            compare(name, &m, 4, 42, true, FU_AMP_FP16, TOL_FP16);
            check_determinism(&m, 4);
            check_smaller_batch(&m);
            check_training(&m);
        }
        fu_model_free(&m);
    }
    return check_done();
}
