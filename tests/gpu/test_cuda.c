// The cuda backend (lib/cuda) against the reference network in double, as
// tests/unit/test_dnnl.c does for the cpu backend: small hand-built nets that
// put every op through forward and backward with many convolution shapes
// (stride 1/2, dilation 1-4, 1x1, 7x7, odd sides), then MedicalCNN at 32x32
// and 64x64, batch 4. Compared per tensor by relative L2 error: logits, loss,
// eval logits, every parameter gradient, BN running statistics and
// num_batches_tracked; with --amp bf16 and fp16 too, at looser tolerances.
// Also: a rerun gives the same bytes; a batch of 3 on a backend planned for
// 4; 20 training steps (trainer.h) whose losses track the cpu backend's, in
// fp32, bf16 and fp16. Model parallelism: MedicalCNN 64x64 cut into stages
// (balanced 2 and 3, and by hand at the global pool and inside the fc head)
// run as a chain against the whole model, in each precision. Data
// parallelism: sync-BN with two ranks (threads of this process, each with
// its own backend, their sum hook meeting at a barrier) against the whole
// batch on one; grads_ready announcing every parameter once, values final.
// The resident interface (backend.h's fu_resident_api): forward and backward
// on the held buffers as on host ones, the device's clipping + AdamW against
// the host's (bit for bit without clipping), a non-finite gradient refused,
// and the trainer resident against host_step. Prefetched input batches (one
// copied from a thread while a forward runs) against plain uploads, and two
// stages handing the cut tensor over in GPU memory against through the host.
// Without a CUDA device: one "skip" line.
//   test_cuda           the checks
//   test_cuda --sanitize  a short run for compute-sanitizer (run-bundle.sh)
//   test_cuda --bench   "#" lines: seconds per training step of MedicalCNN
//                       224x224, batch 32, in each precision; the trainer's
//                       step resident and with host_step; the trainer's
//                       resident step at FU_BENCH_BATCHES (default 256),
//                       also with fusion off (FU_BENCH_UNFUSED=0: not),
//                       with the next batch prefetched during each step
//                       (FU_BENCH_PREFETCH=0: not); 2
//                       stages sharing the GPU through the trainer; NCCL;
//                       "# profile" lines: where the GPU time went
//                       (FU_BENCH_PROFILE=0: not); FU_BENCH_TRAINER_ONLY=1:
//                       the trainer's steps alone (unsplit resident, stages)
// Run by `make test-gpu` (not by `make test`).
#include "../unit/check.h"
#include "../unit/mini_net.h"
#include "../unit/sim_ranks.h"

#include "core/error.h"
#include "core/rng.h"
#include "cuda/cuda_backend.h"
#include "cuda/nccl_sync.h"
#include "dist/comm.h"
#include "nn/adamw.h"
#include "nn/model.h"
#include "nn/pipe.h"
#include "nn/ref_net.h"
#include "nn/stages.h"
#include "nn/trainer.h"
#include "shard/shard.h"

#include <errno.h>
#include <math.h>
#include <omp.h>
#include <pthread.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#define TOL 1e-3
// A chain of stages against the whole model on the same backend: the same
// kernels on the same shapes, so fp32 and bf16 should agree to the bit (the
// tolerance allows for a library picking another kernel for differently
// aligned buffers); fp16 too unless a stage's own loss scale meets an
// overflow the whole model's does not (or the other way round).
#define TOL_STAGES 1e-4
#define TOL_STAGES_AMP 1e-2

typedef struct {
    float *grads, *state, *logits, loss;
    int64_t *counts;
} result;

// Buffers for a training step of n images, the BN state starting at state0.
static void result_alloc(result *r, const fu_model *m, int n, const float *state0) {
    r->grads = calloc(m->n_params, sizeof(float));
    r->state = malloc((m->n_state ? m->n_state : 1) * sizeof(float));
    r->counts = calloc(m->n_counts ? m->n_counts : 1, sizeof(int64_t));
    r->logits = malloc((size_t)n * m->classes * sizeof(float));
    memcpy(r->state, state0, m->n_state * sizeof(float));
}

static void result_free(result *r) { free(r->grads), free(r->state), free(r->counts), free(r->logits); }

static bool all_finite(size_t n, const float *a) {
    for (size_t i = 0; i < n; i++)
        if (!isfinite(a[i])) return false;
    return true;
}

// The fp16 loss scale the tests' steps start at: under the 2^16 a run starts
// at, which these nets' gradients overflow at these sizes (twice, emulated),
// and a step that overflows is skipped, as GradScaler skips it: the tests
// want steps that are taken (fu_backend_start_loss_scale).
#define FP16_START 0x1p12f

// One training step (BN on batch statistics, dropout masks from the pass,
// backward), then eval-mode logits (eval_logits may be NULL), on a backend.
// (run_backend_with: with these backend options, their batch n.) With fp16
// the step that counts is the first whose gradients do not overflow (one
// that does is skipped, and a trainer's next step runs at half the scale):
// from FP16_START, halving the scale until they are finite.
static int run_backend_once(const char *name, const fu_backend_opts *bo, const fu_model *m, int n, float scale,
                            const float *params0, const float *state0, const float *x, const int *labels,
                            const float *cw, result *r, float *eval_logits) {
    fu_backend *b;
    if (fu_backend_create(name, m, bo, &b) < 0) return -1;
    size_t nl = (size_t)n * m->classes;
    result_alloc(r, m, n, state0);
    fu_pass train = {.train = true, .dropout = true, .seed = 7, .step = 3}, eval = {0};
    int rc = fu_backend_start_loss_scale(b, scale);
    if (rc == 0) rc = b->forward(b, n, params0, r->state, r->counts, x, labels, cw, &train, &r->loss);
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

static int run_backend_with(const char *name, const fu_backend_opts *bo, const fu_model *m, int n,
                            const float *params0, const float *state0, const float *x, const int *labels,
                            const float *cw, result *r, float *eval_logits) {
    for (float scale = FP16_START;; scale /= 2) {
        int rc = run_backend_once(name, bo, m, n, scale, params0, state0, x, labels, cw, r, eval_logits);
        if (rc < 0 || bo->amp != FU_AMP_FP16 || all_finite(m->n_params, r->grads) || scale <= FU_LEAST_LOSS_SCALE)
            return rc;
        result_free(r);
    }
}

static int run_backend(const char *name, fu_amp amp, const fu_model *m, int n, const float *params0,
                       const float *state0, const float *x, const int *labels, const float *cw, result *r,
                       float *eval_logits) {
    fu_backend_opts bo = {.batch = n, .threads = omp_get_max_threads(), .amp = amp};
    return run_backend_with(name, &bo, m, n, params0, state0, x, labels, cw, r, eval_logits);
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

// v rounded to the nearest bfloat16 or float16 (ties to even), as the
// backend's conversions round.
static float round_half(bool bf16, float v) {
    if (!bf16) return (float)(_Float16)v;
    uint32_t u;
    memcpy(&u, &v, sizeof u);
    u = (u + 0x7fff + ((u >> 16) & 1)) & 0xffff0000u;
    memcpy(&v, &u, sizeof v);
    return v;
}

static double rel_dd(size_t n, const double *a, const double *ref) {
    double num = 0, den = 0;
    for (size_t i = 0; i < n; i++) num += (a[i] - ref[i]) * (a[i] - ref[i]), den += ref[i] * ref[i];
    return den > 0 ? sqrt(num / den) : sqrt(num);
}

// Mixed precision on MedicalCNN against the double reference. A freshly
// initialised MedicalCNN is ill-conditioned (training-mode BN over small
// maps, SE gates, ReLU kinks; tests/unit/test_bf16.c), so fixed tolerances
// say little: the yardstick is rounding's own effect, the double reference
// run on conv weights and image rounded to the half type, against the
// unrounded one. The backend, which also rounds every conv's input, must stay
// within 3x that (relative L2 over all logits, over all gradients), as the
// cpu backend's bf16 test does, and its loss and running statistics close.
// In fp16, whose rounding alone moves the logits by ~6e-3, a floor: the
// backend rounds far more than weights and image (every conv's input, and
// as autocast the residual path: BatchNorm outputs, block ends), which on
// this net's near-cancelling logits (fc weights N(0, 0.01)) measured up to
// 2.1e-2 (emulated, 2026-12-06; up to 2.0e-2 with FU_CUDA_HALF_ACT=0).
#define AMP_FLOOR 3e-2
static void compare_amp(const char *name, const fu_model *m, int n, uint64_t seed, fu_amp amp) {
    bool bf16 = amp == FU_AMP_BF16;
    size_t np = m->n_params, ns = m->n_state, nx = (size_t)n * 3 * m->height * m->width, nl = (size_t)n * m->classes;
    float *params = malloc(np * sizeof(float)), *state = malloc(ns * sizeof(float)), *x = malloc(nx * sizeof(float)),
          *el = malloc(nl * sizeof(float)), *pr = malloc(np * sizeof(float)), *xr = malloc(nx * sizeof(float));
    int64_t *counts0 = calloc(m->n_counts, sizeof(int64_t));
    fu_model_init(m, seed, params, state, counts0);
    fu_rng r = fu_rng_make(seed, 2, 0);
    for (size_t i = 0; i < nx; i++) x[i] = (float)fu_rng_normal(&r), xr[i] = round_half(bf16, x[i]);
    memcpy(pr, params, np * sizeof(float));
    for (int i = 0; i < m->n_ops; i++) {
        const fu_op *op = &m->ops[i];
        size_t wn = op->kind == FU_OP_CONV ? (size_t)op->c * m->ops[op->in[0]].c * op->k * op->k : 0;
        for (size_t j = 0; j < wn; j++) pr[op->weight + j] = round_half(bf16, params[op->weight + j]);
    }
    int labels[64];
    for (int i = 0; i < n; i++) labels[i] = i % 2;
    float cw[2] = {0.6f, 0.4f};
    char what[300];
    oracle o = {0}, rounded = {0};
    result c = {0};
    if (!CHECK(run_oracle(m, n, params, state, x, labels, cw, &o) == 0 &&
                   run_oracle(m, n, pr, state, xr, labels, cw, &rounded) == 0,
               name, "reference: %s", fu_error()))
        return;
    snprintf(what, sizeof what, "%s: cuda backend runs", name);
    if (!CHECK(run_backend("cuda", amp, m, n, params, state, x, labels, cw, &c, el) == 0, what, "%s", fu_error()))
        return;
    double r_logits = rel_dd(nl, rounded.logits, o.logits), r_eval = rel_dd(nl, rounded.eval_logits, o.eval_logits),
           r_grads = rel_dd(np, rounded.grads, o.grads), r_loss = fabs(rounded.loss - o.loss) / fabs(o.loss);
    double e_logits = rel_err(nl, c.logits, o.logits), e_eval = rel_err(nl, el, o.eval_logits),
           e_grads = rel_err(np, c.grads, o.grads), e_loss = fabs(c.loss - o.loss) / fabs(o.loss),
           e_state = rel_err(ns, c.state, o.state);
    printf("# %s: logits %.2e, eval logits %.2e, loss %.2e, gradients %.2e (rel L2); rounding weights and image "
           "alone: %.2e, %.2e, %.2e, %.2e\n",
           name, e_logits, e_eval, e_loss, e_grads, r_logits, r_eval, r_loss, r_grads);
    snprintf(what, sizeof what, "%s: gradients, running stats, logits and loss finite", name);
    CHECK(all_finite(np, c.grads) && all_finite(ns, c.state) && all_finite(nl, c.logits) && all_finite(nl, el) &&
              isfinite(c.loss),
          what, "some are inf or NaN");
    snprintf(what, sizeof what, "%s: logits, eval logits, loss within 3x rounding's own effect (or %g)", name,
             AMP_FLOOR);
    CHECK(e_logits <= fmax(AMP_FLOOR, 3 * r_logits) && e_eval <= fmax(AMP_FLOOR, 3 * r_eval) &&
              e_loss <= fmax(AMP_FLOOR, 3 * r_loss),
          what, "logits %.3g (rounding alone %.3g), eval %.3g (%.3g), loss %.3g (%.3g)", e_logits, r_logits, e_eval,
          r_eval, e_loss, r_loss);
    snprintf(what, sizeof what, "%s: all gradients within 3x rounding's own effect (rel L2 %.1e vs %.1e)", name,
             e_grads, r_grads);
    CHECK(e_grads <= 3 * r_grads, what, "%.3g (rounding alone %.3g)", e_grads, r_grads);
    snprintf(what, sizeof what, "%s: running statistics within 1e-2 (rel L2 %.1e)", name, e_state);
    CHECK(e_state <= 1e-2, what, "%.3g", e_state);
    result_free(&c), oracle_free(&o), oracle_free(&rounded);
    free(params), free(state), free(x), free(el), free(pr), free(xr), free(counts0);
}

// The cuda backend in fp32 against the double reference on one batch,
// within tol (mixed precision: compare_amp).
static void compare(const char *name, const fu_model *m, int n, uint64_t seed, bool medical, double tol) {
    // the mini nets are well conditioned: tol strictly; MedicalCNN's float
    // gradients may also be as far from double as the float reference's
    double slack = medical ? 2 : 0;
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
    if (!CHECK(run_backend("cuda", FU_AMP_OFF, m, n, params, state, x, labels, cw, &c, el) == 0, what, "%s",
               fu_error()))
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
    // worst_grad and fmax skip NaN (NaN > worst is false, fmax drops it): a
    // backend whose gradients or running stats are NaN would pass below.
    snprintf(what, sizeof what, "%s: gradients, running stats, logits and loss finite", name);
    CHECK(all_finite(np, c.grads) && all_finite(ns, c.state) && all_finite(nl, c.logits) && all_finite(nl, el) &&
              isfinite(c.loss),
          what, "some are inf or NaN");
    CHECK(e_logits <= tol && e_loss <= tol && e_eval <= tol,
          (snprintf(what, sizeof what, "%s: logits, loss, eval logits (%.1e, %.1e, %.1e)", name, e_logits, e_loss,
                    e_eval),
           what),
          "relative errors %.2g, %.2g, %.2g", e_logits, e_loss, e_eval);
    snprintf(what, sizeof what, "%s: every parameter gradient (worst %.1e at %s; float reference %.1e)", name, worst,
             where, ref_worst);
    // ref_worst is INFINITY where the float reference did not run: no slack then.
    CHECK(worst <= tol || (isfinite(ref_worst) && worst <= slack * ref_worst), what,
          "worst %.3g at %s; the float reference's %.3g at %s", worst, where, ref_worst, ref_where);
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

static bool same_floats(size_t n, const float *a, const float *b) { return !memcmp(a, b, n * sizeof(float)); }

static bool same_values(size_t n, const float *a, const float *b) {
    for (size_t i = 0; i < n; i++)
        if (!(a[i] == b[i])) return false;
    return true;
}

// Fusion (the default: BatchNorm + ReLU, SE scale + add + ReLU, and under
// amp conv outputs kept in half for the BatchNorm that reads them) against
// FU_CUDA_FUSE=0, one kernel per op: a training step (dropout on) and eval
// logits give the same values (the fused kernels compute each value as the
// separate ops do), in fp32, fp16 and bf16, in less memory (the outputs no
// op reads once fused are not allocated; half outputs take half). Under amp
// with FU_CUDA_HALF_ACT=0: the default's BatchNorm outputs and block ends in
// half round values (compare_amp's business); its plan here is smaller.
// Quick mode, FU_TEST_CUDA_QUICK=1: set by tests/cuda-emu/backend.sh, which
// runs this test on the CPU (fake CUDA, cuDNN, cuBLAS) in make test: 5
// training steps instead of STEPS, 2 pipe steps instead of 5, 3 resident
// trainer steps instead of 5, 2 NCCL steps instead of 3, of the two half
// types fp16 alone where a check runs both, and the pipe's NCCL sums in
// fp16 alone (its scaled sums; fp32 in make test-gpu).
static bool quick(void) {
    const char *q = getenv("FU_TEST_CUDA_QUICK");
    return q && *q && strcmp(q, "0") != 0;
}

#define HALF_OUTPUTS ", conv outputs for BN and BN + ReLU outputs for a conv in half"
static void check_fusion(const fu_model *m, int n) {
    float *params = malloc(m->n_params * sizeof(float)), *state = malloc(m->n_state * sizeof(float)),
          *x = random_batch(m, n, 9), cw[2] = {0.4f, 0.6f};
    int64_t *counts = calloc(m->n_counts, sizeof(int64_t));
    int labels[8] = {0, 1, 1, 0, 1, 0, 0, 1};
    fu_model_init(m, 9, params, state, counts);
    static const fu_amp amps[] = {FU_AMP_OFF, FU_AMP_FP16, FU_AMP_BF16};
    size_t nl = (size_t)n * m->classes, n_amps = quick() ? 2 : 3;
    for (size_t a = 0; a < n_amps; a++) {
        // activation memory planned: fused with FU_CUDA_HALF_ACT=0, FU_CUDA_FUSE=0, the default
        double mib[3] = {0, 0, 0};
        for (int k = 0; k < 3; k++) {
            fu_backend *b;
            if (k == 0) setenv("FU_CUDA_HALF_ACT", "0", 1);
            if (k == 1) setenv("FU_CUDA_FUSE", "0", 1);
            if (fu_backend_create("cuda", m, &(fu_backend_opts){.batch = n, .amp = amps[a]}, &b) == 0) {
                mib[k] = b->act_bytes / 1048576.0;
                fu_backend_destroy(b);
            }
            unsetenv("FU_CUDA_FUSE"), unsetenv("FU_CUDA_HALF_ACT");
        }
        result fused = {0}, plain = {0};
        float *ef = malloc(nl * sizeof(float)), *ep = malloc(nl * sizeof(float));
        setenv("FU_CUDA_HALF_ACT", "0", 1);
        int rc = run_backend("cuda", amps[a], m, n, params, state, x, labels, cw, &fused, ef);
        unsetenv("FU_CUDA_HALF_ACT");
        setenv("FU_CUDA_FUSE", "0", 1);
        if (rc == 0) rc = run_backend("cuda", amps[a], m, n, params, state, x, labels, cw, &plain, ep);
        unsetenv("FU_CUDA_FUSE");
        char name[400];
        snprintf(name, sizeof name, "fused (BN + ReLU, SE scale + add + ReLU%s; fused outputs unallocated: %.0f "
                 "MiB) = FU_CUDA_FUSE=0 (%.0f MiB), amp %s: loss, logits, gradients, running stats, eval logits, "
                 "value for value", amps[a] != FU_AMP_OFF ? HALF_OUTPUTS : "", mib[0], mib[1], fu_amp_name(amps[a]));
        CHECK(rc == 0 && mib[0] > 0 && mib[0] < mib[1] && fused.loss == plain.loss &&
                  same_values(nl, fused.logits, plain.logits) &&
                  same_values(m->n_params, fused.grads, plain.grads) &&
                  same_values(m->n_state, fused.state, plain.state) && same_values(nl, ef, ep),
              name, "rc %d (%s): they differ", rc, rc < 0 ? fu_error() : "");
        // The default rounds those outputs (compare_amp measures it); here, that it engages.
        snprintf(name, sizeof name, "amp %s: BatchNorm outputs, block ends, the stem's pooling %s (%.0f MiB of "
                 "activations against %.0f with FU_CUDA_HALF_ACT=0)", fu_amp_name(amps[a]),
                 amps[a] == FU_AMP_OFF ? "stay fp32 without amp" : "in half by default", mib[2], mib[0]);
        CHECK(mib[2] > 0 && (amps[a] == FU_AMP_OFF ? mib[2] == mib[0] : mib[2] < mib[0]), name,
              "%.1f MiB against %.1f", mib[2], mib[0]);
        result_free(&fused), result_free(&plain), free(ef), free(ep);
    }
    free(params), free(state), free(x), free(counts);
}

// Gradient buffers alive at different times share memory (plan_gradients):
// the same values as with one buffer each (FU_CUDA_REUSE=0), in less memory.
static void check_reuse(const fu_model *m, int n) {
    float *params = malloc(m->n_params * sizeof(float)), *state = malloc(m->n_state * sizeof(float)),
          *x = random_batch(m, n, 11), cw[2] = {0.3f, 0.7f};
    int64_t *counts = calloc(m->n_counts, sizeof(int64_t));
    int labels[8] = {1, 0, 1, 0, 0, 1, 1, 0};
    fu_model_init(m, 11, params, state, counts);
    static const fu_amp amps[] = {FU_AMP_OFF, FU_AMP_FP16};
    size_t nl = (size_t)n * m->classes;
    for (size_t a = 0; a < sizeof amps / sizeof *amps; a++) {
        double mib[2] = {0, 0}, grad_mib[2] = {0, 0}; // planned, and for gradients: reuse, FU_CUDA_REUSE=0
        result r[2] = {{0}, {0}};
        float *eval[2] = {malloc(nl * sizeof(float)), malloc(nl * sizeof(float))};
        int rc = 0;
        for (int off = 0; off < 2 && rc == 0; off++) {
            fu_backend *b;
            if (off) setenv("FU_CUDA_REUSE", "0", 1);
            if (fu_backend_create("cuda", m, &(fu_backend_opts){.batch = n, .amp = amps[a]}, &b) == 0) {
                mib[off] = b->act_bytes / 1048576.0;
                grad_mib[off] = b->grad_bytes / 1048576.0;
                fu_backend_destroy(b);
            }
            rc = run_backend("cuda", amps[a], m, n, params, state, x, labels, cw, &r[off], eval[off]);
            unsetenv("FU_CUDA_REUSE");
        }
        char name[300];
        snprintf(name, sizeof name, "gradient buffers sharing memory (%.1f MiB of gradients, %.0f MiB planned in all) = "
                 "one each (FU_CUDA_REUSE=0: %.1f, %.0f MiB), amp %s: loss, logits, gradients, running stats, eval logits, "
                 "value for value", grad_mib[0], mib[0], grad_mib[1], mib[1], fu_amp_name(amps[a]));
        CHECK(rc == 0 && grad_mib[0] > 0 && grad_mib[0] < grad_mib[1] / 2 && mib[1] - mib[0] == grad_mib[1] - grad_mib[0] &&
                  r[0].loss == r[1].loss &&
                  same_values(nl, r[0].logits, r[1].logits) && same_values(m->n_params, r[0].grads, r[1].grads) &&
                  same_values(m->n_state, r[0].state, r[1].state) && same_values(nl, eval[0], eval[1]),
              name, "rc %d (%s): they differ", rc, rc < 0 ? fu_error() : "");
        result_free(&r[0]), result_free(&r[1]), free(eval[0]), free(eval[1]);
    }
    free(params), free(state), free(x), free(counts);
}

// A whole small file as a string (NULL: unreadable).
static char *read_text(const char *path) {
    FILE *f = fopen(path, "r");
    char *text = f ? calloc(1, 1 << 16) : NULL;
    if (text && fread(text, 1, (1 << 16) - 1, f) == 0 && ferror(f)) free(text), text = NULL;
    if (f) fclose(f);
    return text;
}

// Records in a conv algorithms file: its lines that are not comments.
static int records_in(const char *text) {
    int n = 0;
    for (const char *l = text; l && *l;) {
        n += *l != '#' && *l != '\n';
        const char *end = strchr(l, '\n');
        l = end ? end + 1 : NULL;
    }
    return n;
}

// --conv-algos FILE (fu_backend_opts.conv_algos): the first backend measures
// each convolution (the graph API's engines timed, or the legacy API's
// cudnnFind) and records its choices; a second with the file takes them
// from there, leaves the file as it was and computes the same bytes, as
// measuring afresh need not (under emulation the fake cuDNN ranks two
// deterministic engines, and two algorithms, one way for one handle and the
// other way for the next, and they sum in different orders). Measured or
// the heuristics', the step agrees within fp32 rounding. A malformed file
// is refused, naming its line; a record that cuDNN's lists contradict (on
// the graph API: another engine in the recorded place), naming the file.
static void check_conv_algos(const fu_model *m, int n) {
    char dir[] = "/tmp/fu-conv-algos-XXXXXX", path[64];
    if (!CHECK(mkdtemp(dir), "--conv-algos: a temporary folder", "%s", strerror(errno))) return;
    snprintf(path, sizeof path, "%s/algos.txt", dir);
    float *params = malloc(m->n_params * sizeof(float)), *state = malloc(m->n_state * sizeof(float)),
          *x = random_batch(m, n, 5), cw[2] = {0.5f, 0.5f};
    int64_t *counts = calloc(m->n_counts, sizeof(int64_t));
    int labels[8] = {1, 0, 0, 1, 1, 0, 1, 0};
    fu_model_init(m, 5, params, state, counts);
    fu_backend_opts bo = {.batch = n, .threads = omp_get_max_threads(), .conv_algos = path};
    result first = {0}, again = {0}, heuristic = {0};
    char *text[2] = {NULL, NULL};
    int rc = run_backend_with("cuda", &bo, m, n, params, state, x, labels, cw, &first, NULL);
    if (rc == 0) text[0] = read_text(path);
    if (rc == 0) rc = run_backend_with("cuda", &bo, m, n, params, state, x, labels, cw, &again, NULL);
    if (rc == 0) text[1] = read_text(path);
    bo.conv_algos = NULL;
    if (rc == 0) rc = run_backend_with("cuda", &bo, m, n, params, state, x, labels, cw, &heuristic, NULL);
    size_t nl = (size_t)n * m->classes;
    int records = records_in(text[0]);
    char name[200];
    snprintf(name, sizeof name, "--conv-algos: %d convolution shapes measured and recorded; a second backend takes "
             "them from the file (unchanged) and computes the same bytes", records);
    CHECK(rc == 0 && records > 0 && text[1] && !strcmp(text[0], text[1]) && first.loss == again.loss &&
              same_floats(nl, first.logits, again.logits) && same_floats(m->n_params, first.grads, again.grads) &&
              same_floats(m->n_state, first.state, again.state),
          name, "rc %d (%s): %s", rc, rc < 0 ? fu_error() : "",
          !text[1] || strcmp(text[0], text[1]) ? "the file changed" : "the results differ");
    double dg = rc == 0 ? rel_ff(m->n_params, first.grads, heuristic.grads) : INFINITY,
           dl = rc == 0 ? rel_ff(nl, first.logits, heuristic.logits) : INFINITY;
    CHECK(dg <= 1e-4 && dl <= 1e-5, "--conv-algos: the measured algorithms' step agrees with the heuristics'",
          "gradients %.3g, logits %.3g", dg, dl);
    FILE *f = fopen(path, "w");
    if (f) fputs("# a hand-edited record\nkey 1 2 3\n", f), fclose(f);
    fu_backend *b = NULL;
    bo.conv_algos = path;
    rc = fu_backend_create("cuda", m, &bo, &b);
    CHECK(rc < 0 && strstr(fu_error(), path) && strstr(fu_error(), ":2: expected a key and six numbers"),
          "--conv-algos: a malformed file refused, naming its line", "rc %d: %s", rc, fu_error());
    fu_backend_destroy(b);
    // Each record's forward engine (its second number) changed to one no list holds.
    f = fopen(path, "w");
    char key[300];
    int v[6], at = 0;
    for (const char *l = text[0]; f && l; l = strchr(l, '\n'), l = l ? l + 1 : NULL)
        if (*l != '#' && sscanf(l, "%299s %d %d %d %d %d %d", key, &v[0], &v[1], &v[2], &v[3], &v[4], &v[5]) == 7)
            fprintf(f, "%s %d %d %d %d %d %d\n", key, v[0], v[1] + 1000, v[2], v[3], v[4], v[5]), at++;
    if (f) fclose(f);
    b = NULL;
    rc = at ? fu_backend_create("cuda", m, &bo, &b) : 0;
    bool graph = getenv("FU_CUDNN_API") && !strcmp(getenv("FU_CUDNN_API"), "graph");
    CHECK(!graph || (rc < 0 && strstr(fu_error(), "another engine in its place") && strstr(fu_error_hint(), path)),
          "--conv-algos: a graph API record that cuDNN's list contradicts is refused, naming the file",
          "%d records edited, rc %d: %s", at, rc, rc < 0 ? fu_error() : "");
    fu_backend_destroy(b);
    unlink(path), rmdir(dir);
    free(text[0]), free(text[1]);
    result_free(&first), result_free(&again), result_free(&heuristic);
    free(params), free(state), free(x), free(counts);
}

// A batch whose tensors outgrow the kernels' 32-bit indexing (MedicalCNN
// 224x224: the stem's output is 802816 values an image) is refused at
// create, before any allocation, naming the op.
static void check_too_large(void) {
    fu_model m;
    fu_backend *b = NULL;
    int rc = fu_medicalcnn(&m, 224, 224);
    if (rc == 0) rc = fu_backend_create("cuda", &m, &(fu_backend_opts){.batch = 6000}, &b);
    CHECK(rc < 0 && strstr(fu_error(), "the kernels index at most") && strstr(fu_error(), "'stem.0'"),
          "a batch of 6000 at 224x224 (4.8e9 values in one tensor) refused: the kernels' 32-bit indexing",
          "rc %d: %s", rc, fu_error());
    fu_backend_destroy(b);
    fu_model_free(&m);
}

// Out of GPU memory: creating a backend for a batch that does not fit fails,
// saying what it needs (and how much of it the weights), and its hint names
// the largest batch that fits beside the workspace cap: that batch plans.
// Under emulation only, where FAKE_CUDA_FREE_MIB sets what cudaMemGetInfo
// says is free (a real GPU ignores it, and the batch of 64 plans: skipped).
static void check_out_of_memory(const fu_model *m) {
    const char *name = "out of GPU memory: the needs and the weights said, the hint's batch plans";
    enum { BIG = 256 }; // images: past the 512 MiB workspace cap's worth at 64x64
    fu_backend *b = NULL;
    setenv("FAKE_CUDA_FREE_MIB", "1", 1);
    if (fu_backend_create("cuda", m, &(fu_backend_opts){.batch = BIG}, &b) == 0) {
        fu_backend_destroy(b);
        unsetenv("FAKE_CUDA_FREE_MIB");
        printf("skip - %s: not an emulated GPU\n", name);
        return;
    }
    double need = 0, weights = 0;
    const char *at = strstr(fu_error(), "needs ");
    bool ok = at && sscanf(at, "needs %lf MiB (%lf MiB of it the weights)", &need, &weights) == 2 && need > weights;
    // Room for the weights, the workspace cap and 20.5 images: 20 fit.
    double per_image = (need - weights) / BIG;
    int fits = 0, cap = 0;
    char free_mib[32];
    snprintf(free_mib, sizeof free_mib, "%.0f", weights + 512 + 20.5 * per_image);
    setenv("FAKE_CUDA_FREE_MIB", free_mib, 1);
    int rc = ok ? fu_backend_create("cuda", m, &(fu_backend_opts){.batch = BIG}, &b) : -1;
    if (rc == 0) fu_backend_destroy(b), ok = false;
    ok = ok && sscanf(fu_error_hint(), "--batch %d or less fits (with up to %d MiB", &fits, &cap) == 2 &&
         cap == 512 && fits >= 19 && fits <= 21;
    char why[512];
    snprintf(why, sizeof why, "%s (hint: %s; %s MiB free)", fu_error(), fu_error_hint(), free_mib);
    ok = ok && fu_backend_create("cuda", m, &(fu_backend_opts){.batch = fits}, &b) == 0;
    if (ok) fu_backend_destroy(b);
    unsetenv("FAKE_CUDA_FREE_MIB");
    CHECK(ok, name, "%s; then batch %d: %s", why, fits, fu_error());
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
        // Relative L2 over the 6 logits, as elsewhere: per element, a logit near 0
        // fails on rounding alone (cuDNN may pick other algorithms for 3 and 4 images).
        double de = rel_ff(6, e3, e4);
        CHECK(de <= 1e-5, "batch of 3 on a backend planned for 4: eval logits as in the batch of 4", "differ by %.3g",
              de);
        CHECK(loss3 == loss4 && !memcmp(g3, g4, m->n_params * sizeof(float)) &&
                  !memcmp(s3, s4, m->n_state * sizeof(float)),
              "batch of 3 on a backend planned for 4: training step as a backend planned for 3", "they differ");
        // Back to 4 images: the convolutions' plans for 4 (the graph API's, kept per batch size) again.
        float again[8];
        ok = b4->forward(b4, 4, params, state, counts, x, NULL, NULL, &eval, NULL) == 0;
        if (ok) memcpy(again, b4->logits(b4), sizeof again);
        if (CHECK(ok, "a batch of 4 again after 3", "%s", fu_error()))
            CHECK(!memcmp(again, e4, sizeof e4), "a batch of 4 again after 3: the first eval logits, bit for bit",
                  "they differ");
        printf("# MedicalCNN, batch 4: convolutions: %s\n", b4->conv_note ? b4->conv_note : "(no note)");
    }
    fu_backend_destroy(b4), fu_backend_destroy(b3);
    free(params), free(state), free(x), free(counts), free(g4), free(g3), free(s4), free(s3), free(c4), free(c3);
}

enum { STEPS = 20 };

// `steps` optimizer steps (AdamW, clipping, dropout) of batches of n from
// the same weights on the same batches, with the trainer options o (batch,
// amp, model parallelism); the losses go to loss[].
static int train_losses_with(const fu_model *m, const char *backend, fu_train_opts o, int steps, float *loss) {
    o.augment = false, o.seed = 5, o.loss_scale = FP16_START;
    int n = o.batch;
    fu_trainer t;
    if (fu_trainer_init(&t, m, &o, backend, omp_get_max_threads()) < 0) return -1;
    t.class_w[0] = 0.4f, t.class_w[1] = 0.6f;
    int rc = 0;
    for (int s = 0; s < steps && rc == 0; s++) {
        float *x = random_batch(m, n, 100 + (uint64_t)s);
        int labels[64], correct, seen;
        for (int i = 0; i < n; i++) labels[i] = i == 0 ? s % 2 : i == 3 ? (s / 2) % 2 : (i + 1) % 2;
        rc = fu_train_step(&t, n, x, labels, o.lr, &loss[s], &correct, &seen);
        free(x);
    }
    fu_trainer_free(&t);
    return rc;
}

// FU_CUDA_PROFILE (cuda_profile.h): two resident fp16 steps profiled train
// what they train unprofiled, bit for bit, and the report names the
// sections a step has (the forward's convolutions, the backward's filter
// gradients, the half conversions, the optimizer) per step; unprofiled, the
// report is empty.
static void check_profile(const fu_model *m) {
    fu_train_opts o = fu_train_defaults();
    o.batch = 4, o.amp = FU_AMP_FP16, o.augment = false;
    float loss[2][2];
    char report[4096] = "", plain[16] = "x";
    int rc = 0;
    for (int profiled = 0; profiled < 2 && rc == 0; profiled++) {
        fu_trainer t;
        if (profiled) setenv("FU_CUDA_PROFILE", "1", 1);
        rc = fu_trainer_init(&t, m, &o, "cuda", omp_get_max_threads());
        unsetenv("FU_CUDA_PROFILE");
        if (rc < 0) break;
        t.class_w[0] = t.class_w[1] = 0.5f;
        float *x = random_batch(m, 4, 21);
        int labels[4] = {0, 1, 1, 0}, correct, seen;
        for (int s = 0; s < 2 && rc == 0; s++) rc = fu_train_step(&t, 4, x, labels, 1e-3, &loss[profiled][s], &correct, &seen);
        fu_cuda_profile_report(t.be, profiled ? report : plain, profiled ? sizeof report : sizeof plain, false);
        free(x);
        fu_trainer_free(&t);
    }
    CHECK(rc == 0 && memcmp(loss[0], loss[1], sizeof loss[0]) == 0 && plain[0] == 0 &&
              strstr(report, "forward conv (cuDNN)") && strstr(report, "backward conv filter (cuDNN)") &&
              strstr(report, "half conversions") && strstr(report, "optimizer: norm, clipping, AdamW") &&
              strstr(report, "(of 2 steps)"),
          "FU_CUDA_PROFILE: the same training, a report of the step's sections", "rc %d (%s), report:\n%s", rc,
          rc < 0 ? fu_error() : "", report);
}

// At lr 1e-5: AdamW's first steps move every weight by about lr whatever the
// size of its gradient, so at the recipe's 1e-3 two correct fp32 backends'
// last-bit differences part their trajectories by the second step (the ref
// and cpu backends differ by 1.6e-2 at step 5, measured under the host
// emulation); at 1e-5 they stay within ~2e-3 for 20 steps, which still
// checks the loop's wiring (dropout masks per step, BN state, the step).
static int train_losses(const fu_model *m, const char *backend, fu_amp amp, float loss[STEPS]) {
    fu_train_opts o = fu_train_defaults();
    o.batch = 4, o.amp = amp, o.lr = 1e-5;
    return train_losses_with(m, backend, o, quick() ? 5 : STEPS, loss); // quick mode: fills loss[0..4]
}

// Model parallelism on the GPU (nn/pipe.h): stages sharing this GPU, each
// driven by its own thread, through the trainer. 2 stages x 1 micro-batch
// train what the unsplit model does; 2 stages x 4 what 1 stage x 4 does.
static void check_pipe(const fu_model *m) {
    enum { PIPE_STEPS = 5 };
    static const struct {
        int k, micro;
        int ref_k, ref_micro;
    } runs[] = {{2, 1, 1, 1}, {3, 1, 1, 1}, {2, 4, 1, 4}};
    for (size_t r = 0; r < sizeof runs / sizeof *runs; r++) {
        fu_train_opts o = fu_train_defaults(), ref = o;
        o.batch = ref.batch = 8;
        o.stages = runs[r].k, o.micro_batches = runs[r].micro, o.shared_gpu = true;
        ref.stages = runs[r].ref_k, ref.micro_batches = runs[r].ref_micro;
        float got[PIPE_STEPS], want[PIPE_STEPS];
        int steps = quick() ? 2 : PIPE_STEPS;
        char name[160];
        snprintf(name, sizeof name, "%d stages x %d micro-batches on one GPU train as %d x %d (%d steps)",
                 runs[r].k, runs[r].micro, runs[r].ref_k, runs[r].ref_micro, steps);
        int rc = train_losses_with(m, "cuda", ref, steps, want);
        if (rc == 0) rc = train_losses_with(m, "cuda", o, steps, got);
        double worst = 0;
        for (int s = 0; rc == 0 && s < steps; s++)
            worst = fmax(worst, fabs((double)got[s] - want[s]) / fmax(1, fabs(want[s])));
        CHECK(rc == 0 && worst <= TOL_STAGES, name, "rc %d (%s), losses differ by %.3g", rc, fu_error(), worst);
    }
    char why[160];
    if (fu_cuda_device_count(why, sizeof why) < 2) {
        fu_train_opts o = fu_train_defaults();
        o.batch = 8, o.stages = 2;
        fu_trainer t;
        CHECK(fu_trainer_init(&t, m, &o, "cuda", 1) < 0 && strstr(fu_error(), "need 2 GPUs"),
              "2 stages on a 1-GPU machine without --allow-shared-gpu refused", "%s", fu_error());
    }
}

// The cuda backend's losses, in each precision, against the cpu backend's (fp32).
static void check_training(const fu_model *m) {
    float ref[STEPS], got[STEPS];
    int steps = quick() ? 5 : STEPS;
    if (!CHECK(train_losses(m, "cpu", FU_AMP_OFF, ref) == 0, "training: cpu backend runs", "%s", fu_error())) return;
    static const struct {
        fu_amp amp;
        double tol;
    } runs[] = {{FU_AMP_OFF, 1e-2}, {FU_AMP_BF16, 5e-2}, {FU_AMP_FP16, 5e-2}};
    for (size_t r = 0; r < sizeof runs / sizeof *runs; r++) {
        char what[200];
        snprintf(what, sizeof what, "%d training steps, amp %s: cuda backend runs", steps, fu_amp_name(runs[r].amp));
        if (!CHECK(train_losses(m, "cuda", runs[r].amp, got) == 0, what, "%s", fu_error())) continue;
        double worst = 0;
        int at = 0;
        for (int s = 0; s < steps; s++) {
            double e = fabs((double)got[s] - ref[s]) / fmax(1, fabs(ref[s]));
            if (e > worst) worst = e, at = s + 1;
        }
        snprintf(what, sizeof what,
                 "%d training steps, amp %s: losses track the cpu backend's (worst %.1e at step %d; %.4f -> %.4f)",
                 steps, fu_amp_name(runs[r].amp), worst, at, got[0], got[steps - 1]);
        CHECK(worst <= runs[r].tol, what, "losses differ by %.3g at step %d (tolerance %.0e)", worst, at,
              runs[r].tol);
    }
}

// ---- comparisons ------------------------------------------------------------------------

static double *to_double(size_t n, const float *a) {
    double *d = malloc((n ? n : 1) * sizeof(double));
    for (size_t i = 0; i < n; i++) d[i] = a[i];
    return d;
}

// ---- resident training state (backend.h's fu_resident_api) ------------------------------

static float *copy_of(size_t n, const float *a) {
    float *c = malloc((n ? n : 1) * sizeof(float));
    memcpy(c, a, n * sizeof(float));
    return c;
}


// The resident interface on MedicalCNN's batch of 4 (check_resident): a
// cuda backend, weights, BN state, moments as after some steps, and the
// gradients G of a host-pointer training step.
enum { RES_N = 4 };

typedef struct {
    const fu_model *m;
    fu_backend *b;
    float *params, *state0, *state, *x, *m1, *m2, *g, loss;
    int64_t *counts;
    int labels[RES_N];
    float cw[2];
    fu_param_group *groups; // with and without weight decay
    int n_groups;
    fu_adamw_opts o;
    fu_pass train;
} res_case;

static int res_make(res_case *c, const fu_model *m) {
    size_t np = m->n_params, ns = m->n_state;
    *c = (res_case){.m = m, .labels = {0, 1, 1, 0}, .cw = {0.6f, 0.4f}, .o = fu_adamw_defaults(),
                    .train = {.train = true, .dropout = true, .seed = 7, .step = 3}};
    c->params = malloc(np * sizeof(float)), c->state0 = malloc(ns * sizeof(float));
    c->m1 = malloc(np * sizeof(float)), c->m2 = malloc(np * sizeof(float)), c->g = malloc(np * sizeof(float));
    c->x = random_batch(m, RES_N, 31);
    c->counts = calloc(m->n_counts, sizeof(int64_t));
    fu_model_init(m, 31, c->params, c->state0, c->counts);
    c->state = copy_of(ns, c->state0);
    fu_rng r = fu_rng_make(31, 4, 0);
    for (size_t i = 0; i < np; i++)
        c->m1[i] = (float)(1e-3 * fu_rng_normal(&r)), c->m2[i] = (float)(1e-6 * fabs(fu_rng_normal(&r)));
    c->n_groups = fu_param_groups(m, true, &c->groups);
    if (c->n_groups <= 0 || fu_backend_create("cuda", m, &(fu_backend_opts){.batch = RES_N}, &c->b) < 0) return -1;
    if (c->b->forward(c->b, RES_N, c->params, c->state, c->counts, c->x, c->labels, c->cw, &c->train, &c->loss) < 0)
        return -1;
    return c->b->backward(c->b, c->params, NULL, c->g);
}

static void res_free(res_case *c) {
    fu_backend_destroy(c->b);
    free(c->params), free(c->state0), free(c->state), free(c->x), free(c->m1), free(c->m2), free(c->g);
    free(c->counts), free(c->groups);
}

// Forward and backward on the held weights and state (NULL) as on host ones;
// host_alloc and device_bytes.
static void check_resident_held(res_case *c) {
    const fu_model *m = c->m;
    fu_backend *b = c->b;
    size_t np = m->n_params, ns = m->n_state;
    char name[240];
    void *pinned = b->host_alloc((size_t)1 << 20);
    snprintf(name, sizeof name, "resident: host_alloc gives 1 MiB; device_bytes %.0f MiB > act_bytes %.0f MiB",
             b->device_bytes / 1048576.0, b->act_bytes / 1048576.0);
    CHECK(pinned && b->device_bytes > b->act_bytes, name, "host_alloc %s; device_bytes %zu, act_bytes %zu",
          pinned ? "ok" : "NULL", b->device_bytes, b->act_bytes);
    b->host_free(pinned);
    float *state = malloc(ns * sizeof(float)), *g = malloc(np * sizeof(float)), loss = NAN;
    int rc = b->resident->load(b, c->params, c->state0, NULL, NULL);
    if (rc == 0) rc = b->forward(b, RES_N, NULL, NULL, c->counts, c->x, c->labels, c->cw, &c->train, &loss);
    if (rc == 0) rc = b->backward(b, NULL, NULL, g);
    if (rc == 0) rc = b->resident->store(b, NULL, state, NULL, NULL);
    bool same_g = rc == 0 && same_floats(np, g, c->g), same_s = rc == 0 && same_floats(ns, state, c->state);
    CHECK(rc == 0 && loss == c->loss && same_g && same_s,
          "resident: forward and backward on the held weights and state (NULL) = on host ones: loss, gradients, "
          "running stats bit for bit", "rc %d (%s); loss %.9g vs %.9g; gradients %s; running stats %s", rc,
          rc < 0 ? fu_error() : "", loss, c->loss, same_g ? "same" : "differ", same_s ? "same" : "differ");
    free(state), free(g);
}

// The step on G (still in the backend: a host-pointer backward keeps it) from
// the case's weights and moments, against the host's on the same G: without
// clipping the same bytes (shared adamw_math.h), clipping at 1e-3 within 1e-6
// (the norms are summed in different orders); the norm within 1e-9.
static void check_resident_step(res_case *c) {
    const fu_model *m = c->m;
    fu_backend *b = c->b;
    size_t np = m->n_params;
    float *dp = malloc(np * sizeof(float)), *dm1 = malloc(np * sizeof(float)), *dm2 = malloc(np * sizeof(float));
    static const double max_norms[] = {1e30, 1e-3};
    char name[300];
    for (int k = 0; k < 2; k++) {
        double norm = NAN, lr = 1e-3;
        int64_t t = 3;
        int rc = b->resident->load(b, c->params, NULL, c->m1, c->m2);
        if (rc == 0) rc = b->resident->step(b, &c->o, c->groups, c->n_groups, lr, t, max_norms[k], &norm);
        if (rc == 0) rc = b->resident->store(b, dp, NULL, dm1, dm2);
        float *hp = copy_of(np, c->params), *hm1 = copy_of(np, c->m1), *hm2 = copy_of(np, c->m2),
              *hg = copy_of(np, c->g);
        double host_norm = fu_clip_grad_norm(hg, np, max_norms[k]);
        fu_adamw_step(&c->o, lr, t, c->groups, c->n_groups, hp, hg, hm1, hm2);
        double e_norm = fabs(norm - host_norm) / host_norm, ep = rel_ff(np, dp, hp), e1 = rel_ff(np, dm1, hm1),
               e2 = rel_ff(np, dm2, hm2);
        bool moved = !same_floats(np, dp, c->params);
        snprintf(name, sizeof name, "resident step, max_norm %g: runs", max_norms[k]);
        if (CHECK(rc == 0, name, "%s", fu_error()) && k == 0) {
            snprintf(name, sizeof name, "resident step without clipping = host clipping + AdamW: weights, m1, m2 "
                     "BIT-IDENTICAL (shared adamw_math.h arithmetic); norm %.6g within 1e-9 (%.1e)", norm, e_norm);
            CHECK(same_floats(np, dp, hp) && same_floats(np, dm1, hm1) && same_floats(np, dm2, hm2) && moved &&
                      e_norm <= 1e-9,
                  name, "weights %.3g, m1 %.3g, m2 %.3g relative; weights %s; norm %.17g vs %.17g", ep, e1, e2,
                  moved ? "moved" : "UNCHANGED", norm, host_norm);
        } else if (rc == 0) {
            snprintf(name, sizeof name, "resident step clipping at %g (norm %.4g) = host clipping + AdamW within "
                     "1e-6: weights %.1e, m1 %.1e, m2 %.1e; norm within 1e-9 (%.1e)", max_norms[k], norm, ep, e1,
                     e2, e_norm);
            CHECK(host_norm > max_norms[k] && moved && ep <= 1e-6 && e1 <= 1e-6 && e2 <= 1e-6 && e_norm <= 1e-9,
                  name, "host norm %.17g, device %.17g; weights %s", host_norm, norm, moved ? "moved" : "UNCHANGED");
        }
        free(hp), free(hm1), free(hm2), free(hg);
    }
    free(dp), free(dm1), free(dm2);
}

// A NaN pixel gives NaN gradients: the step returns a non-finite norm and
// leaves the weights and moments as they were (also exercising backward
// with grads NULL: they stay on the device).
static void check_resident_nonfinite(res_case *c) {
    const fu_model *m = c->m;
    fu_backend *b = c->b;
    size_t np = m->n_params;
    float *bad = copy_of((size_t)RES_N * 3 * m->height * m->width, c->x), loss = 0;
    float *dp = malloc(np * sizeof(float)), *dm1 = malloc(np * sizeof(float)), *dm2 = malloc(np * sizeof(float));
    bad[0] = NAN;
    double norm = 0;
    int rc = b->resident->load(b, c->params, c->state0, c->m1, c->m2);
    if (rc == 0) rc = b->forward(b, RES_N, NULL, NULL, c->counts, bad, c->labels, c->cw, &c->train, &loss);
    if (rc == 0) rc = b->backward(b, NULL, NULL, NULL);
    if (rc == 0) rc = b->resident->step(b, &c->o, c->groups, c->n_groups, 1e-3, 1, 1.0, &norm);
    if (rc == 0) rc = b->resident->store(b, dp, NULL, dm1, dm2);
    bool sp = rc == 0 && same_floats(np, dp, c->params), s1 = rc == 0 && same_floats(np, dm1, c->m1),
         s2 = rc == 0 && same_floats(np, dm2, c->m2);
    CHECK(rc == 0 && !isfinite(norm) && sp && s1 && s2,
          "resident step on non-finite gradients (a NaN pixel): a non-finite norm, weights and moments unchanged "
          "bit for bit", "rc %d (%s), norm %g; weights %s, m1 %s, m2 %s", rc, rc < 0 ? fu_error() : "", norm,
          sp ? "same" : "CHANGED", s1 ? "same" : "CHANGED", s2 ? "same" : "CHANGED");
    free(bad), free(dp), free(dm1), free(dm2);
}

// fu_backend_opts.weights_of: a backend borrowing c->b's weights and BN
// state computes what c->b does with them (loss, gradients, the running
// stats it updates are c->b's), holds less device memory, and has no
// moments; a lender of another model is refused.
static void check_borrowed(res_case *c) {
    const fu_model *m = c->m;
    size_t np = m->n_params, ns = m->n_state;
    fu_backend *b = NULL, *bad = NULL;
    float *g = malloc(np * sizeof(float)), *state = malloc(ns * sizeof(float)), loss = NAN;
    int rc = fu_backend_create("cuda", m, &(fu_backend_opts){.batch = RES_N, .weights_of = c->b}, &b);
    if (rc == 0) rc = c->b->resident->load(c->b, c->params, c->state0, NULL, NULL);
    if (rc == 0) rc = b->forward(b, RES_N, NULL, NULL, c->counts, c->x, c->labels, c->cw, &c->train, &loss);
    if (rc == 0) rc = b->backward(b, NULL, NULL, g);
    if (rc == 0) rc = c->b->resident->store(c->b, NULL, state, NULL, NULL);
    bool same_g = rc == 0 && same_floats(np, g, c->g), same_s = rc == 0 && same_floats(ns, state, c->state);
    bool smaller = b && b->device_bytes + 3 * np * sizeof(float) <= c->b->device_bytes;
    char name[300];
    snprintf(name, sizeof name, "weights_of: a borrower computes the lender's loss, gradients and running stats "
             "bit for bit, in %.0f MiB of device memory (the lender %.0f MiB)", b ? b->device_bytes / 1048576.0 : 0,
             c->b->device_bytes / 1048576.0);
    CHECK(rc == 0 && loss == c->loss && same_g && same_s && smaller, name,
          "rc %d (%s); loss %.9g vs %.9g; gradients %s; running stats %s; memory %s", rc, rc < 0 ? fu_error() : "",
          loss, c->loss, same_g ? "same" : "differ", same_s ? "same" : "differ", smaller ? "less" : "NOT less");
    if (b) {
        rc = b->resident->load(b, NULL, NULL, c->m1, c->m2);
        CHECK(rc < 0 && strstr(fu_error(), "borrows another's weights"),
              "weights_of: the borrower has no moments to load", "rc %d: %s", rc, fu_error());
    }
    fu_model other;
    mini_net(&other, 13, 11, 3, 1, 1, 1, true);
    rc = fu_backend_create("cuda", &other, &(fu_backend_opts){.batch = RES_N, .weights_of = c->b}, &bad);
    CHECK(rc < 0 && strstr(fu_error(), "weights_of: not a cuda backend holding the weights of the same model"),
          "weights_of: another model's backend refused as the lender", "rc %d: %s", rc, fu_error());
    fu_backend_destroy(bad), fu_backend_destroy(b);
    free(other.ops), free(g), free(state);
}

static void check_resident(const fu_model *m) {
    res_case c;
    int rc = res_make(&c, m);
    if (CHECK(rc == 0 && c.b->resident && c.b->host_alloc && c.b->host_free,
              "resident: the cuda backend has the resident API and pinned host memory; a host-pointer step runs",
              "%s", rc < 0 ? fu_error() : "a table is missing")) {
        check_resident_step(&c); // first: on the gradients res_make left
        check_resident_held(&c);
        check_resident_nonfinite(&c);
        check_borrowed(&c);
    }
    res_free(&c);
}

// `steps` trainer steps (batch 4, dropout, clipping at o.max_grad_norm) on
// batches copied into the trainer's own (pinned) input buffer; the losses
// into loss[], then the weights, BN state and moments (pulled) into out[4]
// (n_params, n_state, n_params, n_params), *resident whether it ran so.
static int train_pulled(const fu_model *m, fu_train_opts o, int steps, float *loss, float *out[4], bool *resident) {
    o.batch = 4, o.augment = false, o.seed = 5;
    int n = o.batch;
    fu_trainer t;
    if (fu_trainer_init(&t, m, &o, "cuda", omp_get_max_threads()) < 0) return -1;
    *resident = t.resident;
    t.class_w[0] = 0.4f, t.class_w[1] = 0.6f;
    int rc = 0;
    for (int s = 0; s < steps && rc == 0; s++) {
        float *x = random_batch(m, n, 200 + (uint64_t)s);
        memcpy(t.x[0], x, (size_t)n * 3 * m->height * m->width * sizeof(float));
        int labels[4] = {s % 2, 1, 0, (s / 2) % 2}, correct, seen;
        rc = fu_train_step(&t, n, t.x[0], labels, o.lr, &loss[s], &correct, &seen);
        free(x);
    }
    if (rc == 0) rc = fu_trainer_pull(&t);
    if (rc == 0) {
        memcpy(out[0], t.params, m->n_params * sizeof(float));
        memcpy(out[1], t.state, m->n_state * sizeof(float));
        memcpy(out[2], t.m1, m->n_params * sizeof(float));
        memcpy(out[3], t.m2, m->n_params * sizeof(float));
    }
    fu_trainer_free(&t);
    return rc;
}

// The trainer resident (the default on the cuda backend) against host_step
// (clipping and AdamW on the host), 5 steps on the same batches, without
// clipping and clipping at 1e-2; and so the model-parallel pipe (2 stages x
// 2 micro-batches sharing the GPU, also with deferred BN), resident too:
// each stage's weights and moments on the device, clipped with the whole
// model's norm, the micro-batches' gradients summed there. Expected the
// same bytes both ways: the forward and backward are the same, the step's
// arithmetic is shared, the pipe sums micro-batches in the host's order,
// and the clipping factor is a float rounded from the norm, so the two
// norms' different summation orders (last bits of a double) change it only
// when they straddle a rounding boundary (about 1e-7 a step). Checked
// within 1e-6 relative (L2 per buffer), the ok line saying whether identical.
static void check_resident_trainer(const fu_model *m) {
    enum { STEPS_R = 5 };
    int steps = quick() ? 3 : STEPS_R;
    static const struct {
        double max_norm;
        int stages, micro;
        bool deferred_bn;
    } runs[] = {{1e30, 1, 1, false}, {1e-2, 1, 1, false}, {1e-2, 2, 2, false}, {1e-2, 2, 2, true}};
    size_t sizes[4] = {m->n_params, m->n_state, m->n_params, m->n_params};
    static const char *what[4] = {"weights", "BN state", "m1", "m2"};
    for (size_t k = 0; k < sizeof runs / sizeof *runs; k++) {
        float *res[4], *host[4], loss_res[STEPS_R], loss_host[STEPS_R];
        for (int j = 0; j < 4; j++)
            res[j] = malloc(sizes[j] * sizeof(float)), host[j] = malloc(sizes[j] * sizeof(float));
        fu_train_opts o = fu_train_defaults();
        o.max_grad_norm = runs[k].max_norm;
        o.stages = runs[k].stages, o.micro_batches = runs[k].micro, o.shared_gpu = true;
        o.deferred_bn = runs[k].deferred_bn;
        char how[160];
        if (o.stages > 1)
            snprintf(how, sizeof how, "%d stages x %d micro-batches%s, max_grad_norm %g", o.stages,
                     o.micro_batches, o.deferred_bn ? ", deferred BN" : "", o.max_grad_norm);
        else
            snprintf(how, sizeof how, "max_grad_norm %g", o.max_grad_norm);
        bool res_on = false, host_on = true;
        int rc = train_pulled(m, o, steps, loss_res, res, &res_on);
        o.host_step = true;
        if (rc == 0) rc = train_pulled(m, o, steps, loss_host, host, &host_on);
        char name[300];
        snprintf(name, sizeof name, "trainer, %s: %d steps resident and with host_step run; t.resident true, then "
                 "false", how, steps);
        if (CHECK(rc == 0 && res_on && !host_on, name, "rc %d (%s); resident %d, %d", rc, rc < 0 ? fu_error() : "",
                  res_on, host_on)) {
            double worst = rel_ff(steps, loss_res, loss_host);
            bool same = !memcmp(loss_res, loss_host, steps * sizeof *loss_res);
            const char *at = "losses";
            for (int j = 0; j < 4; j++) {
                double e = rel_ff(sizes[j], res[j], host[j]);
                if (e > worst) worst = e, at = what[j];
                same &= same_floats(sizes[j], res[j], host[j]);
            }
            snprintf(name, sizeof name, "trainer, %s: resident = host_step after %d steps within 1e-6 (losses, "
                     "weights, BN state, m1, m2; worst %.1e, %s)", how, steps, worst,
                     same ? "bit-identical" : "NOT bit-identical");
            CHECK(worst <= 1e-6, name, "%s differ by %.3g", at, worst);
        }
        for (int j = 0; j < 4; j++) free(res[j]), free(host[j]);
    }
}

// `steps` fp16 training steps of the resident cuda backend b on one batch,
// its weights from params, the first at loss scale `from`: kept (the
// figures of all read after the last, into f) or each read back (norm
// given); t as the trainer gives it, the steps before refused unknown to it
// (kept) or counted (read back). The weights after, into out.
static int fp16_steps(fu_backend *b, int steps, bool kept, float from, const float *params, const float *state,
                      const float *x, const int *labels, const float *cw, fu_step_figures *f, float *out) {
    enum { N = 4 };
    const fu_model *m = b->m;
    fu_param_group *groups = NULL;
    int n_groups = fu_param_groups(m, false, &groups), got = 0;
    fu_adamw_opts ao = fu_adamw_defaults();
    int64_t *counts = calloc(m->n_counts, sizeof(int64_t)), skipped = 0;
    fu_loss_scale s = {from, 0};
    fu_pass train = {.train = true, .dropout = true, .seed = 7, .step = 3};
    int rc = n_groups > 0 && counts ? b->set_loss_scaling(b, &s) : -1;
    if (rc == 0) rc = b->resident->load(b, params, state, NULL, NULL);
    for (int k = 0; k < steps && rc == 0; k++) {
        double norm;
        rc = b->forward(b, N, NULL, NULL, counts, x, labels, cw, &train, kept ? NULL : &f[k].loss);
        if (rc == 0) rc = b->backward(b, NULL, NULL, NULL);
        if (rc == 0) rc = b->resident->step(b, &ao, groups, n_groups, 1e-3, k + 1 - skipped, 1.0, kept ? NULL : &norm);
        if (rc == 0 && !kept) {
            f[k].norm = norm, skipped += !isfinite(norm);
            rc = b->loss_scaling(b, &s);
            f[k].loss_scale = s.scale;
        }
    }
    if (rc == 0 && kept) rc = b->resident->figures(b, f, &got);
    if (rc == 0 && kept && got != steps) rc = fu_fail("test", "the figures of %d steps, not %d", got, steps);
    if (rc == 0) rc = b->resident->store(b, out, NULL, NULL, NULL);
    free(groups), free(counts);
    return rc;
}

// fp16's dynamic loss scaling (fu_backend.loss_scaling), as GradScaler: a
// step whose gradients overflow at the scale is skipped, and the scale
// halved. This batch overflows at 2^16, the default start, and 2^15
// (emulated). 4 steps kept on the GPU (nothing read until the last, the
// skipped ones unknown to the host): the first ones refused (weights
// unchanged, norm inf), each halving the scale the figures carry, and the
// weights after the 4 = those of the steps that were taken, run from the
// scale reached with AdamW's step counting 1, 2 (each read back): bit for
// bit, which needs the kernel to have taken step 1's scalars though given
// t = 3. A state that is not one is refused. Only fp16 has loss scaling.
static void check_loss_scaling(const fu_model *m) {
    enum { N = 4, KEPT = 4 };
    size_t np = m->n_params;
    float *params = malloc(np * sizeof(float)), *state = malloc(m->n_state * sizeof(float)),
          *x = random_batch(m, N, 5), cw[2] = {0.5f, 0.5f};
    float *after[2] = {malloc(np * sizeof(float)), malloc(np * sizeof(float))};
    int64_t *counts = calloc(m->n_counts, sizeof(int64_t));
    fu_model_init(m, 5, params, state, counts);
    int labels[N] = {0, 1, 1, 0}, skipped = 0;
    fu_step_figures f[2][FU_FIGURE_SLOTS] = {{{0}}};
    fu_backend *b[2] = {NULL, NULL};
    fu_backend_opts bo = {.batch = N, .threads = omp_get_max_threads(), .amp = FU_AMP_FP16};
    int rc = fu_backend_create("cuda", m, &bo, &b[0]) == 0 && fu_backend_create("cuda", m, &bo, &b[1]) == 0 ? 0 : -1;
    if (rc == 0) rc = fp16_steps(b[0], KEPT, true, 0x1p16f, params, state, x, labels, cw, f[0], after[0]);
    while (rc == 0 && skipped < KEPT && !isfinite(f[0][skipped].norm)) skipped++;
    char name[200];
    snprintf(name, sizeof name, "fp16 loss scaling: %d steps kept from 2^16, %d skipped, the scale then %g", KEPT,
             skipped, rc == 0 ? (double)f[0][KEPT - 1].loss_scale : 0.0);
    if (CHECK(rc == 0, name, "%s", fu_error()) && (skipped == 0 || skipped == KEPT)) {
        printf("skip - fp16 loss scaling: this batch's gradients overflow at no scale from 2^16 or at all 4 on this "
               "device (%d skipped)\n", skipped);
    } else if (rc == 0) {
        bool halved = true;
        for (int k = 0; k < KEPT; k++)
            halved = halved && f[0][k].loss_scale == ldexpf(0x1p16f, -(k < skipped ? k + 1 : skipped));
        CHECK(halved && all_finite(np, after[0]), "fp16 loss scaling: each skipped step halved the scale",
              "scales %g %g %g %g", f[0][0].loss_scale, f[0][1].loss_scale, f[0][2].loss_scale, f[0][3].loss_scale);
        float scale = ldexpf(0x1p16f, -skipped);
        rc = fp16_steps(b[1], KEPT - skipped, false, scale, params, state, x, labels, cw, f[1], after[1]);
        bool moved = rc == 0 && !same_floats(np, after[1], params);
        CHECK(rc == 0 && moved && same_floats(np, after[0], after[1]) &&
                  f[0][KEPT - 1].norm == f[1][KEPT - skipped - 1].norm,
              "fp16 loss scaling: the skipped steps left no trace: the weights of the steps taken from the scale "
              "reached, AdamW counting from 1, bit for bit",
              "%s; moved %d; norms %.9g, %.9g", rc ? fu_error() : "", moved, f[0][KEPT - 1].norm,
              f[1][KEPT - skipped - 1].norm);
        // A backend whose caller updates the scale (a pipe's stage): the
        // same first step overflows, and the scale stays.
        fu_backend *mine = NULL;
        bo.loss_scale_by_caller = true;
        rc = fu_backend_create("cuda", m, &bo, &mine);
        if (rc == 0) rc = fp16_steps(mine, 2, false, 0x1p16f, params, state, x, labels, cw, f[1], after[1]);
        CHECK(rc == 0 && !isfinite(f[1][0].norm) && f[1][0].loss_scale == 0x1p16f && f[1][1].loss_scale == 0x1p16f,
              "fp16, loss_scale_by_caller: an overflowing backward leaves the scale to the caller",
              "%s; norm %g, scales %g %g", rc ? fu_error() : "", f[1][0].norm, f[1][0].loss_scale,
              f[1][1].loss_scale);
        fu_backend_destroy(mine);
    }
    fu_backend_destroy(b[0]), fu_backend_destroy(b[1]);
    free(after[0]), free(after[1]);
    fu_backend *one;
    bo = (fu_backend_opts){.batch = N, .threads = 1, .amp = FU_AMP_FP16};
    if (CHECK(fu_backend_create("cuda", m, &bo, &one) == 0, "fp16: a backend", "%s", fu_error())) {
        fu_loss_scale bad[] = {{0, 0}, {NAN, 0}, {INFINITY, 0}, {0x1p-25f, 0}, {1, 2000}, {1, -1}}, back = {0},
                      some = {0x1p-3f, 1999};
        bool refused = true;
        for (size_t i = 0; i < sizeof bad / sizeof *bad; i++) refused = refused && one->set_loss_scaling(one, bad + i) < 0;
        CHECK(refused, "fp16: set_loss_scaling refuses a scale of 0, NaN, infinity or under 2^-24, 2000 clean "
              "passes, a negative count", "one was taken");
        bool kept = one->set_loss_scaling(one, &some) == 0 && one->loss_scaling(one, &back) == 0 &&
                    back.scale == some.scale && back.clean == some.clean;
        CHECK(kept, "fp16: the loss scaling state set is the one read back", "%g %d", back.scale, back.clean);
        one->destroy(one);
    }
    for (int a = 0; a < 2; a++) {
        fu_backend *plain;
        bo = (fu_backend_opts){.batch = N, .threads = 1, .amp = a ? FU_AMP_BF16 : FU_AMP_OFF};
        if (CHECK(fu_backend_create("cuda", m, &bo, &plain) == 0, a ? "bf16: a backend" : "fp32: a backend", "%s",
                  fu_error())) {
            CHECK(!plain->loss_scaling, a ? "bf16: no loss scaling" : "fp32: no loss scaling", "loss_scaling set");
            plain->destroy(plain);
        }
    }
    free(params), free(state), free(x), free(counts);
}

// `images` records of random pixels at the model's size, labels alternating.
static int write_images(const fu_model *m, const char *path, int images) {
    FILE *f = fopen(path, "wb");
    if (!f) return fu_fail(path, "%s", strerror(errno));
    fu_shard_writer w;
    fu_shard_writer_init(&w, f, path);
    size_t bytes = (size_t)3 * m->height * m->width;
    uint8_t *px = malloc(bytes);
    fu_rng r = fu_rng_make(77, 3, 0);
    for (int i = 0; px && i < images; i++) {
        char id[16];
        snprintf(id, sizeof id, "img%d", i);
        for (size_t k = 0; k < bytes; k++) px[k] = (uint8_t)(fu_rng_uniform(&r) * 256);
        fu_record rec = {.kind = FU_KIND_PIXELS, .label = i % 2, .height = m->height, .width = m->width,
                         .channels = 3, .id = id, .id_len = (uint32_t)strlen(id), .payload = px, .payload_len = bytes};
        fu_shard_write(&w, &rec);
    }
    int rc = px ? fu_shard_finish(&w) : -1;
    free(px);
    return fclose(f) == 0 ? rc : -1;
}

// Epochs of resident steps keep their loss, hits and norm on the GPU
// (fu_resident_api.figures; fu_train_epoch reads them every FU_FIGURE_SLOTS
// steps and at the end): two epochs of 3 batches against host_step (whose
// every step comes back), the same figures and bytes within 1e-6 as
// check_resident_trainer finds them; under the fake runtime, the second
// epoch drains the GPU once (cudaMemcpy or a device synchronisation: the
// figures' read), where host_step drains every step. Then the backend
// directly: FU_FIGURE_SLOTS kept steps, a forward more refused until the
// figures are read, which gives that many, finite. (On MedicalCNN at 32x32:
// what is checked does not depend on the size, and larger steps are slow
// emulated.)
long fake_cuda_drains(void) __attribute__((weak)); // tests/cuda-emu/fake_cudart.cpp's
static void kept_figures_on(const fu_model *m) {
    char dir[] = "/tmp/fu-test-cuda-XXXXXX", path[64];
    if (!CHECK(mkdtemp(dir), "kept figures: a temporary folder", "%s", strerror(errno))) return;
    snprintf(path, sizeof path, "%s/train.shard", dir);
    fu_dataset data;
    if (!CHECK(write_images(m, path, 12) == 0 && fu_dataset_open(&data, path, 2) == 0, "kept figures: a dataset",
               "%s", fu_error()))
        return;
    long (*drains)(void) = fake_cuda_drains; // NULL on a real runtime
    fu_epoch_stats st[2];
    float *live[2] = {NULL, NULL};
    long drained[2] = {-1, -1};
    bool kept_on[2] = {false, false};
    int rc = 0;
    for (int k = 0; k < 2 && rc == 0; k++) { // 0: resident, keeping figures; 1: host_step
        fu_train_opts o = fu_train_defaults();
        o.batch = 4, o.seed = 9, o.host_step = k == 1, o.augment = false;
        fu_trainer t;
        if ((rc = fu_trainer_init(&t, m, &o, "cuda", omp_get_max_threads())) < 0) break;
        t.class_w[0] = 0.4f, t.class_w[1] = 0.6f;
        kept_on[k] = t.resident && t.be->resident->figures;
        for (int e = 0; e < 2 && rc == 0; e++) {
            st[k] = (fu_epoch_stats){.epoch = e};
            long before = drains ? drains() : 0;
            rc = fu_train_epoch(&t, &data, 1e-3, -1, &st[k], NULL, NULL) < 0 ? -1 : 0;
            if (drains) drained[k] = drains() - before;
        }
        if (rc == 0) rc = fu_trainer_pull(&t);
        if (rc == 0 && (live[k] = malloc(m->n_params * sizeof(float))))
            memcpy(live[k], t.params, m->n_params * sizeof(float));
        fu_trainer_free(&t);
    }
    if (CHECK(rc == 0 && live[0] && live[1] && kept_on[0] && !kept_on[1],
              "kept figures: 2 epochs resident (keeping figures) and with host_step", "%s", rc < 0 ? fu_error() : "")) {
        double e = rel_ff(m->n_params, live[0], live[1]), el = fabs(st[0].loss_sum - st[1].loss_sum) / st[1].loss_sum;
        char name[200];
        snprintf(name, sizeof name, "kept figures: loss sum (%.1e), hits, images and weights (%.1e) as host_step's "
                 "within 1e-6", el, e);
        CHECK(e <= 1e-6 && el <= 1e-6 && st[0].correct == st[1].correct && st[0].seen == st[1].seen && st[0].seen == 12,
              name, "hits %lld, %lld; images %lld, %lld", (long long)st[0].correct, (long long)st[1].correct,
              (long long)st[0].seen, (long long)st[1].seen);
        if (drains)
            CHECK(drained[0] == 1 && drained[1] >= 3, "kept figures: an epoch of 3 steps drains the GPU once (the "
                  "figures' read); host_step's every step", "%ld and %ld drains", drained[0], drained[1]);
        else
            printf("skip - kept figures: drains are counted under the fake CUDA runtime only\n");
    }
    free(live[0]), free(live[1]);
    fu_dataset_close(&data);
    unlink(path), rmdir(dir);

    // The backend directly: FU_FIGURE_SLOTS steps, then one forward too many.
    enum { N = 4 };
    fu_backend *b = NULL;
    float *params = malloc(m->n_params * sizeof(float)), *state = malloc(m->n_state * sizeof(float));
    int64_t counts[64] = {0};
    float *x = random_batch(m, N, 31);
    int labels[N] = {0, 1, 1, 0}, steps = -1;
    float cw[2] = {0.5f, 0.5f};
    fu_pass train = {.train = true, .dropout = true, .seed = 3};
    fu_param_group all = {.offset = 0, .count = m->n_params, .decay = true};
    fu_adamw_opts ao = fu_adamw_defaults();
    fu_step_figures figs[FU_FIGURE_SLOTS];
    char refusal[256] = "";
    rc = m->n_counts <= 64 && params && state ? 0 : -1;
    if (rc == 0) fu_model_init(m, 3, params, state, counts), rc = fu_backend_create("cuda", m, &(fu_backend_opts){.batch = N}, &b);
    if (rc == 0) rc = b->resident->load(b, params, state, NULL, NULL);
    for (int s = 0; s < FU_FIGURE_SLOTS && rc == 0; s++) {
        train.step = (uint64_t)s;
        rc = b->forward(b, N, NULL, NULL, counts, x, labels, cw, &train, NULL);
        if (rc == 0) rc = b->backward(b, NULL, NULL, NULL);
        if (rc == 0) rc = b->resident->step(b, &ao, &all, 1, 1e-3, s + 1, 1.0, NULL);
    }
    if (rc == 0 && b->forward(b, N, NULL, NULL, counts, x, labels, cw, &train, NULL) < 0)
        snprintf(refusal, sizeof refusal, "%s", fu_error());
    if (rc == 0) rc = b->resident->figures(b, figs, &steps);
    bool finite = steps == FU_FIGURE_SLOTS;
    for (int s = 0; finite && s < steps; s++)
        finite = isfinite(figs[s].loss) && isfinite(figs[s].norm) && figs[s].hits >= 0 && figs[s].hits <= N;
    CHECK(rc == 0 && strstr(refusal, "waiting to be read") && finite,
          "kept figures: FU_FIGURE_SLOTS kept steps, one more forward refused, then read back finite",
          "%s; refusal '%s'; %d steps", rc < 0 ? fu_error() : "", refusal, steps);
    fu_backend_destroy(b);
    free(params), free(state), free(x);
}

static void check_kept_figures(void) {
    fu_model m;
    if (!CHECK(fu_medicalcnn(&m, 32, 32) == 0, "kept figures: MedicalCNN 32x32", "%s", fu_error())) return;
    kept_figures_on(&m);
    fu_model_free(&m);
}

// ---- prefetched inputs, and stages handing over on the GPU ------------------------------

typedef struct {
    fu_backend *b;
    const float *x;
    int n, rc;
} prefetch_job;

static void *run_prefetch(void *arg) {
    prefetch_job *j = arg;
    j->rc = j->b->prefetch(j->b, j->x, j->n);
    return NULL;
}

// backend.h's prefetch: batches copied on the copy stream from another
// thread, one of them while a forward runs, give what plain uploads give.
static void check_prefetch(const fu_model *m) {
    enum { N = 4 };
    fu_backend *b = NULL;
    size_t np = m->n_params, ns = m->n_state, len = fu_op_numel(m, 0, N);
    float *params = malloc(np * sizeof(float)), *state0 = malloc(ns * sizeof(float)), *state = NULL;
    int64_t *counts = calloc(m->n_counts, sizeof(int64_t));
    fu_model_init(m, 17, params, state0, counts);
    int labels[N] = {1, 0, 0, 1}, rc = fu_backend_create("cuda", m, &(fu_backend_opts){.batch = N}, &b);
    float cw[2] = {0.5f, 0.5f}, loss[2][2] = {{0}}, *src[2] = {random_batch(m, N, 61), random_batch(m, N, 62)};
    float *pinned[2] = {rc == 0 ? b->host_alloc(len * sizeof(float)) : NULL, rc == 0 ? b->host_alloc(len * sizeof(float)) : NULL};
    fu_pass train = {.train = true, .dropout = true, .seed = 3, .step = 1};
    if (rc == 0 && (!pinned[0] || !pinned[1] || !b->prefetch)) rc = fu_fail("test", "no pinned memory or no prefetch");
    // Plain: each batch uploaded by its forward.
    for (int k = 0; k < 2 && rc == 0; k++) {
        memcpy(pinned[k], src[k], len * sizeof(float));
        state = copy_of(ns, state0);
        rc = b->forward(b, N, params, state, counts, pinned[k], labels, cw, &train, &loss[0][k]);
        free(state);
    }
    // Prefetched: batch 0 before its forward, batch 1 from a thread while it runs.
    prefetch_job job = {b, rc == 0 ? pinned[1] : NULL, N, 0};
    pthread_t thread;
    if (rc == 0) rc = b->prefetch(b, pinned[0], N);
    bool started = rc == 0 && pthread_create(&thread, NULL, run_prefetch, &job) == 0;
    state = copy_of(ns, state0);
    if (rc == 0) rc = b->forward(b, N, params, state, counts, pinned[0], labels, cw, &train, &loss[1][0]);
    if (started) pthread_join(thread, NULL);
    if (rc == 0 && job.rc < 0) rc = -1;
    memcpy(state, state0, ns * sizeof(float));
    if (rc == 0) rc = b->forward(b, N, params, state, counts, pinned[1], labels, cw, &train, &loss[1][1]);
    free(state);
    CHECK(rc == 0 && loss[0][0] == loss[1][0] && loss[0][1] == loss[1][1] && loss[0][0] != loss[0][1],
          "prefetch: batches copied on the copy stream (one from a thread during a forward) = plain uploads, bit for bit",
          "rc %d (%s); losses %.9g %.9g vs %.9g %.9g", rc, rc < 0 ? fu_error() : "", loss[0][0], loss[0][1],
          loss[1][0], loss[1][1]);
    if (b) b->host_free(pinned[0]), b->host_free(pinned[1]);
    fu_backend_destroy(b);
    free(params), free(state0), free(counts), free(src[0]), free(src[1]);
}

// Two stages on this GPU, as a pipe runs them, handing the cut tensor over
// in GPU memory (device_output, device_input_grad: what the pipe uses) or
// through the host (logits(), input_grad()): the same loss, gradients and
// state, bit for bit.
static int handoff_run(const fu_model *m, const fu_stage *st, bool on_device, const float *params, const float *x,
                       float *loss, float *grads, float *state, int64_t *counts) {
    enum { N = 4 };
    fu_model sm[2];
    fu_backend *b[2] = {0};
    int made = 0, rc = 0, labels[N] = {0, 1, 1, 0};
    float cw[2] = {0.3f, 0.7f};
    fu_pass train = {.train = true, .dropout = true, .seed = 5, .step = 2};
    for (int s = 0; s < 2 && rc == 0; s++) {
        rc = fu_model_stage(m, &st[s], &sm[s]);
        if (rc == 0) made++, rc = fu_backend_create("cuda", &sm[s], &(fu_backend_opts){.batch = N}, &b[s]);
    }
    const float *cut = NULL, *dy = NULL;
    if (rc == 0) rc = b[0]->forward(b[0], N, params, state, counts, x, labels, cw, &train, NULL);
    if (rc == 0) cut = on_device ? b[0]->device_output(b[0]) : b[0]->logits(b[0]);
    if (rc == 0 && !cut) rc = fu_fail("test", "no output to hand over");
    if (rc == 0)
        rc = b[1]->forward(b[1], N, params + st[1].param0, state + st[1].state0, counts + st[1].count0, cut, labels,
                           cw, &train, loss);
    if (rc == 0) rc = b[1]->backward(b[1], params + st[1].param0, NULL, grads + st[1].param0);
    if (rc == 0) dy = on_device ? b[1]->device_input_grad(b[1]) : b[1]->input_grad(b[1]);
    if (rc == 0 && !dy) rc = fu_fail("test", "no input gradient to hand over");
    if (rc == 0) rc = b[0]->backward(b[0], params, dy, grads);
    for (int s = 0; s < 2; s++) fu_backend_destroy(b[s]);
    for (int s = 0; s < made; s++) fu_model_free(&sm[s]);
    return rc;
}

static void check_handoff(const fu_model *m) {
    fu_stage st[2];
    size_t np = m->n_params, ns = m->n_state;
    float *params = malloc(np * sizeof(float)), *state0 = malloc(ns * sizeof(float)), *x = random_batch(m, 4, 71);
    float *grads[2] = {calloc(np, sizeof(float)), calloc(np, sizeof(float))}, loss[2] = {NAN, NAN}, *state[2];
    int64_t *counts = calloc(m->n_counts, sizeof(int64_t)), *cnt[2];
    fu_model_init(m, 19, params, state0, counts);
    int rc = fu_stages_balanced(m, 2, st);
    for (int k = 0; k < 2; k++) {
        state[k] = copy_of(ns, state0);
        cnt[k] = calloc(m->n_counts, sizeof(int64_t));
        if (rc == 0) rc = handoff_run(m, st, k == 1, params, x, &loss[k], grads[k], state[k], cnt[k]);
    }
    CHECK(rc == 0 && loss[0] == loss[1] && same_floats(np, grads[0], grads[1]) && same_floats(ns, state[0], state[1]),
          "2 stages hand the cut tensor over in GPU memory (as the pipe does) = through the host, bit for bit",
          "rc %d (%s); loss %.9g vs %.9g", rc, rc < 0 ? fu_error() : "", loss[0], loss[1]);
    for (int k = 0; k < 2; k++) free(grads[k]), free(state[k]), free(cnt[k]);
    free(params), free(state0), free(x), free(counts);
}

// ---- model-parallel stages -------------------------------------------------------------

// The stages st[0..k) of m as a chain of backends, as a pipeline runs one
// micro-batch: forward stage by stage on each one's ranges of the flat
// buffers (a stage's logits() is the next one's input), backward from the
// last (dy NULL), each stage's input_grad() the previous one's dy. Into r as
// run_backend: the training step's loss, logits, gradients, state, counts;
// then eval logits into eval_logits. Each stage's grads_ready into logs[s].
// fp16 stages start at loss scale `scale`.
static int run_chain(const char *backend, fu_amp amp, const fu_model *m, const fu_stage *st, int k, int n,
                     float scale, const float *params, const float *state0, const float *x, const int *labels,
                     const float *cw, result *r, float *eval_logits, ready_log *logs) {
    fu_model sm[FU_MAX_STAGES];
    fu_backend *b[FU_MAX_STAGES] = {0};
    rank_ctx ctx[FU_MAX_STAGES];
    fu_dist_hooks hooks[FU_MAX_STAGES];
    fu_backend_opts bo = {.batch = n, .threads = omp_get_max_threads(), .amp = amp};
    size_t nl = (size_t)n * m->classes;
    result_alloc(r, m, n, state0);
    memset(logs, 0, (size_t)k * sizeof *logs); // the caller frees all k
    int rc = 0, made = 0;
    for (int s = 0; s < k && rc == 0; s++) {
        rc = fu_model_stage(m, &st[s], &sm[s]);
        if (rc == 0) made++;
        if (rc == 0) rc = fu_backend_create(backend, &sm[s], &bo, &b[s]);
        if (rc == 0) rc = fu_backend_start_loss_scale(b[s], scale);
        if (rc < 0) break;
        log_init(&logs[s], sm[s].n_params, r->grads + st[s].param0);
        ctx[s] = (rank_ctx){.log = &logs[s]};
        hooks[s] = (fu_dist_hooks){.ctx = &ctx[s], .grads_ready = log_ready};
        b[s]->dist = &hooks[s];
    }
    fu_pass train = {.train = true, .dropout = true, .seed = 7, .step = 3}, eval = {0};
    const float *in = x;
    for (int s = 0; s < k && rc == 0; s++) {
        rc = b[s]->forward(b[s], n, params + st[s].param0, r->state + st[s].state0, r->counts + st[s].count0, in,
                           labels, cw, &train, s == k - 1 ? &r->loss : NULL);
        if (rc == 0) in = b[s]->logits(b[s]);
    }
    if (rc == 0) memcpy(r->logits, in, nl * sizeof(float));
    const float *dy = NULL;
    for (int s = k - 1; s >= 0 && rc == 0; s--) {
        rc = b[s]->backward(b[s], params + st[s].param0, dy, r->grads + st[s].param0);
        dy = rc == 0 && b[s]->input_grad ? b[s]->input_grad(b[s]) : NULL;
        if (rc == 0 && (s > 0) != (dy != NULL))
            rc = fu_fail("stages", "stage %d %s an input gradient", s, s > 0 ? "has no" : "hands out");
    }
    if (rc == 0 && eval_logits) {
        float *st_eval = malloc((m->n_state ? m->n_state : 1) * sizeof(float));
        int64_t *cnt = calloc(m->n_counts ? m->n_counts : 1, sizeof(int64_t));
        memcpy(st_eval, r->state, m->n_state * sizeof(float));
        in = x;
        for (int s = 0; s < k && rc == 0; s++) {
            rc = b[s]->forward(b[s], n, params + st[s].param0, st_eval + st[s].state0, cnt + st[s].count0, in, NULL,
                               NULL, &eval, NULL);
            if (rc == 0) in = b[s]->logits(b[s]);
        }
        if (rc == 0) memcpy(eval_logits, in, nl * sizeof(float));
        free(st_eval), free(cnt);
    }
    for (int s = 0; s < made; s++) {
        fu_backend_destroy(b[s]);
        fu_model_free(&sm[s]);
    }
    return rc;
}

// One way of cutting the model.
typedef struct {
    const char *name;
    fu_stage st[FU_MAX_STAGES];
    int k;
} cut;

// The chain c against the whole model's step `whole` (and eval logits) on
// the same backend and precision.
static void check_chain(const char *backend, fu_amp amp, const fu_model *m, const cut *c, int n, const float *params,
                        const float *state0, const float *x, const int *labels, const float *cw, const result *whole,
                        const float *whole_eval) {
    size_t nl = (size_t)n * m->classes;
    double tol = amp == FU_AMP_OFF ? TOL_STAGES : TOL_STAGES_AMP;
    char name[256], where[80] = "", why[160] = "";
    result r = {0};
    ready_log logs[FU_MAX_STAGES];
    float *eval_logits = malloc(nl * sizeof(float));
    snprintf(name, sizeof name, "%s stages %s, amp %s: the chain runs", backend, c->name, fu_amp_name(amp));
    int rc;
    // fp16: from the scale the whole model's step started at, halved until the gradients are finite, as it was.
    for (float scale = FP16_START;; scale /= 2) {
        rc = run_chain(backend, amp, m, c->st, c->k, n, scale, params, state0, x, labels, cw, &r, eval_logits, logs);
        if (rc < 0 || amp != FU_AMP_FP16 || all_finite(m->n_params, r.grads) || scale <= FU_LEAST_LOSS_SCALE) break;
        result_free(&r);
        for (int s = 0; s < c->k; s++) log_free(&logs[s]);
    }
    if (CHECK(rc == 0, name, "%s", fu_error())) {
        double *wg = to_double(m->n_params, whole->grads);
        const char *swhere;
        double e_loss = fabs((double)r.loss - whole->loss) / fabs((double)whole->loss),
               e_logits = rel_ff(nl, r.logits, whole->logits), e_eval = rel_ff(nl, eval_logits, whole_eval),
               e_grad = worst_grad(m, r.grads, wg, where), e_state = worst_state(m, r.state, whole->state, &swhere);
        bool counts = true, finite = all_finite(m->n_params, r.grads) && all_finite(nl, r.logits) &&
                                     isfinite(r.loss) && all_finite(m->n_state, r.state);
        for (size_t i = 0; i < m->n_counts; i++) counts &= r.counts[i] == 1 && whole->counts[i] == 1;
        snprintf(name, sizeof name,
                 "%s stages %s, amp %s: as the whole model: loss %.1e, logits %.1e, eval logits %.1e, gradients "
                 "%.1e, running stats %.1e",
                 backend, c->name, fu_amp_name(amp), e_loss, e_logits, e_eval, e_grad, e_state);
        CHECK(finite && counts && e_loss <= tol && e_logits <= tol && e_eval <= tol && e_grad <= tol && e_state <= tol,
              name, "%s; counts %s; worst gradient at %s, running stat %s", finite ? "finite" : "NOT finite",
              counts ? "ok" : "wrong", where, swhere);
        bool ok = true;
        for (int s = 0; s < c->k && ok; s++) {
            ok = ready_ok(&logs[s], r.grads + c->st[s].param0, why, sizeof why);
            if (!ok) snprintf(why + strlen(why), sizeof why - strlen(why), " (stage %d)", s);
        }
        snprintf(name, sizeof name, "%s stages %s, amp %s: grads_ready covers every parameter of each stage once",
                 backend, c->name, fu_amp_name(amp));
        CHECK(ok, name, "%s", why);
        free(wg);
    }
    for (int s = 0; s < c->k; s++) log_free(&logs[s]);
    result_free(&r);
    free(eval_logits);
}

// MedicalCNN cut four ways: balanced into 2 and 3 stages, by hand at the
// global pool (the last stage takes a vector), and inside the fc head (after
// its first dropout), each chain against the whole model in each precision
// of amps[] (the 3-stage cut only in the half precisions).
static void check_stages(const char *backend, const fu_model *m, const fu_amp *amps, int n_amps) {
    enum { N = 4 };
    cut cuts[4] = {{.name = "balanced 2"}, {.name = "balanced 3"},
                          {.name = "stem,stage1,stage2|stage3_res,stage3_md,stage4_res|fc"},
                          {.name = "stem,stage1,stage2,stage3_res|stage3_md,stage4_res,fc.0,fc.1|fc.4,fc.5,fc.8"}};
    char name[200];
    bool ok = fu_stages_balanced(m, 2, cuts[0].st) == 0 && fu_stages_balanced(m, 3, cuts[1].st) == 0 &&
              fu_stages_parse(m, cuts[2].name, cuts[2].st, FU_MAX_STAGES, &cuts[2].k) == 0 &&
              fu_stages_parse(m, cuts[3].name, cuts[3].st, FU_MAX_STAGES, &cuts[3].k) == 0;
    cuts[0].k = 2, cuts[1].k = 3;
    if (!CHECK(ok, "MedicalCNN 64x64: cut into stages", "%s", fu_error())) return;
    float *params = malloc(m->n_params * sizeof(float)), *state = malloc(m->n_state * sizeof(float)),
          *x = random_batch(m, N, 21), cw[2] = {0.6f, 0.4f}, *whole_eval = malloc((size_t)N * m->classes * sizeof(float));
    int64_t *counts = calloc(m->n_counts, sizeof(int64_t));
    int labels[N] = {0, 1, 1, 0};
    fu_model_init(m, 21, params, state, counts);
    for (int a = 0; a < n_amps; a++) {
        result whole = {0};
        snprintf(name, sizeof name, "%s MedicalCNN 64x64, amp %s: the whole model runs", backend,
                 fu_amp_name(amps[a]));
        if (CHECK(run_backend(backend, amps[a], m, N, params, state, x, labels, cw, &whole, whole_eval) == 0, name,
                  "%s", fu_error()))
            for (int c = 0; c < 4; c++)
                if (amps[a] == FU_AMP_OFF || c == 1)
                    check_chain(backend, amps[a], m, &cuts[c], N, params, state, x, labels, cw, &whole, whole_eval);
        result_free(&whole);
    }
    free(params), free(state), free(x), free(counts), free(whole_eval);
}

// ---- data parallelism: sync-BN over simulated ranks (sim_ranks.h) -------------------------

#define DP_BATCH 8

static int fail_sum(void *ctx, double *v, int n) { return fu_fail("comm", "the peer is gone"); }

// One rank's training step (dropout off: masks would be drawn per rank).
typedef struct {
    fu_backend *b;
    int n;
    const float *x, *params, *cw;
    const int *labels;
    float *state, *grads, *logits, loss;
    int64_t *counts;
    int rc;
    char err[256];
} step;

static void *run_step(void *arg) {
    step *s = arg;
    const fu_model *m = s->b->m;
    fu_pass train = {.train = true, .seed = 5, .step = 1};
    s->rc = s->b->forward(s->b, s->n, s->params, s->state, s->counts, s->x, s->labels, s->cw, &train, &s->loss);
    if (s->rc == 0) memcpy(s->logits, s->b->logits(s->b), (size_t)s->n * m->classes * sizeof(float));
    if (s->rc == 0) s->rc = s->b->backward(s->b, s->params, NULL, s->grads);
    if (s->rc < 0) snprintf(s->err, sizeof s->err, "%s", fu_error());
    return NULL;
}

// A step of n images from image `at` of the problem, on a new backend with
// hooks h (NULL: none).
typedef struct {
    fu_model m;
    float *params, *state, *x, cw[2];
    int labels[DP_BATCH];
} problem;

static int step_make_amp(const char *backend, const problem *p, int at, int n, fu_amp amp, const fu_dist_hooks *h,
                         step *s) {
    const fu_model *m = &p->m;
    memset(s, 0, sizeof *s);
    s->n = n;
    s->x = p->x + (size_t)at * 3 * m->height * m->width;
    s->labels = p->labels + at, s->params = p->params, s->cw = p->cw;
    s->state = malloc(m->n_state * sizeof(float));
    memcpy(s->state, p->state, m->n_state * sizeof(float));
    s->counts = calloc(m->n_counts, sizeof(int64_t));
    s->grads = malloc(m->n_params * sizeof(float));
    memset(s->grads, 0xff, m->n_params * sizeof(float)); // NaN: backward must overwrite every one
    s->logits = malloc((size_t)n * m->classes * sizeof(float));
    if (fu_backend_create(backend, m, &(fu_backend_opts){.batch = n, .amp = amp}, &s->b) < 0 ||
        fu_backend_start_loss_scale(s->b, FP16_START) < 0) {
        snprintf(s->err, sizeof s->err, "%s", fu_error());
        return -1;
    }
    s->b->dist = h;
    return 0;
}

static int step_make(const char *backend, const problem *p, int at, int n, const fu_dist_hooks *h, step *s) {
    return step_make_amp(backend, p, at, n, FU_AMP_OFF, h, s);
}

static void step_free(step *s) {
    fu_backend_destroy(s->b);
    free(s->state), free(s->counts), free(s->grads), free(s->logits);
}

static void problem_make(problem *p, int side) {
    fu_medicalcnn(&p->m, side, side);
    const fu_model *m = &p->m;
    p->params = malloc(m->n_params * sizeof(float));
    p->state = malloc(m->n_state * sizeof(float));
    sim_weights(m, p->params, p->state);
    p->x = random_batch(m, DP_BATCH, 17);
    static const int labels[DP_BATCH] = {0, 1, 1, 0, 1, 1, 1, 0};
    memcpy(p->labels, labels, sizeof labels);
    p->cw[0] = 0.7f, p->cw[1] = 0.3f; // unequal: ranks' shares differ from their image counts
}

static void problem_free(problem *p) {
    free(p->params), free(p->state), free(p->x);
    fu_model_free(&p->m);
}

// Ranks part[0] + part[1] = DP_BATCH with sync-BN and grads_ready against
// the whole batch `full` (sync-BN in a world of one rank).
static void check_split(const char *backend, const problem *p, const step *full, const ready_log *full_log,
                        const int part[RANKS]) {
    const fu_model *m = &p->m;
    char name[200], why[160] = "";
    world *w = world_make(RANKS);
    step s[RANKS];
    rank_ctx ctx[RANKS];
    ready_log log[RANKS];
    fu_dist_hooks hooks[RANKS];
    double share[RANKS] = {0, 0}, wsum = 0;
    bool made = true;
    for (int r = 0, at = 0; r < RANKS; at += part[r], r++) {
        ctx[r] = (rank_ctx){.w = w, .rank = r, .log = &log[r]};
        hooks[r] = (fu_dist_hooks){.ctx = &ctx[r], .sum = world_sum, .grads_ready = log_ready};
        made &= step_make(backend, p, at, part[r], &hooks[r], &s[r]) == 0;
        log_init(&log[r], m->n_params, s[r].grads);
        for (int i = 0; i < part[r]; i++) share[r] += p->cw[p->labels[at + i]];
        wsum += share[r];
    }
    snprintf(name, sizeof name, "%s sync-BN, ranks %d+%d: steps run", backend, part[0], part[1]);
    pthread_t th[RANKS];
    if (made) {
        for (int r = 0; r < RANKS; r++) pthread_create(&th[r], NULL, run_step, &s[r]);
        for (int r = 0; r < RANKS; r++) pthread_join(th[r], NULL);
    }
    if (CHECK(made && s[0].rc == 0 && s[1].rc == 0, name, "%s | %s", s[0].err, s[1].err)) {
        for (int r = 0; r < RANKS; r++) share[r] /= wsum;
        const char *where;
        double e_state = worst_state(m, s[0].state, full->state, &where);
        bool ranks_same = !memcmp(s[0].state, s[1].state, m->n_state * sizeof(float)), counts = true;
        for (size_t i = 0; i < m->n_counts; i++) counts &= s[0].counts[i] == 1 && s[1].counts[i] == 1;
        snprintf(name, sizeof name,
                 "%s sync-BN, ranks %d+%d: running mean/var as the whole batch's (%.1e), same on every rank",
                 backend, part[0], part[1], e_state);
        CHECK(e_state <= 1e-5 && ranks_same && counts, name, "worst %.3g at %s; ranks %s; counts %s", e_state, where,
              ranks_same ? "agree" : "differ", counts ? "ok" : "wrong");

        size_t nl = (size_t)DP_BATCH * m->classes, n0 = (size_t)part[0] * m->classes;
        float *logits = malloc(nl * sizeof(float));
        memcpy(logits, s[0].logits, n0 * sizeof(float));
        memcpy(logits + n0, s[1].logits, (nl - n0) * sizeof(float));
        double e_logits = rel_ff(nl, logits, full->logits);
        double loss = share[0] * s[0].loss + share[1] * s[1].loss, e_loss = fabs(loss - full->loss) / fabs(full->loss);
        snprintf(name, sizeof name, "%s sync-BN, ranks %d+%d: logits (%.1e), loss = sum share_r loss_r (%.1e)",
                 backend, part[0], part[1], e_logits, e_loss);
        CHECK(e_logits <= 1e-4 && e_loss <= 1e-4, name, "relative errors %.3g, %.3g", e_logits, e_loss);

        // Per tensor: whole == sum_r share_r grads_r, relative to the larger of
        // |whole| and sum_r share_r |grads_r| (a bias feeding a BN has a zero
        // gradient, rounding noise to which the ranks' parts add up).
        double e_grad = 0;
        const char *worst = "";
        for (int t = 0; t < m->n_tensors; t++) {
            const fu_tensor *ts = &m->tensors[t];
            if (ts->buffer != FU_BUF_PARAMS) continue;
            double d2 = 0, f2 = 0, p0 = 0, p1 = 0;
            for (size_t i = ts->offset; i < ts->offset + ts->numel; i++) {
                double sum = share[0] * s[0].grads[i] + share[1] * s[1].grads[i];
                d2 += (sum - full->grads[i]) * (sum - full->grads[i]);
                f2 += (double)full->grads[i] * full->grads[i];
                p0 += (double)s[0].grads[i] * s[0].grads[i], p1 += (double)s[1].grads[i] * s[1].grads[i];
            }
            double den = fmax(sqrt(f2), share[0] * sqrt(p0) + share[1] * sqrt(p1));
            double e = den > 0 ? sqrt(d2) / den : sqrt(d2);
            if (e > e_grad) e_grad = e, worst = ts->name;
        }
        // The loop above skips NaN (NaN > e_grad is false), and grads start NaN (step_make).
        bool finite = true;
        for (int r = 0; r < RANKS; r++)
            finite &= all_finite(m->n_params, s[r].grads) && all_finite(m->n_state, s[r].state);
        snprintf(name, sizeof name, "%s sync-BN, ranks %d+%d: whole-batch gradients = sum share_r grads_r (%.1e)",
                 backend, part[0], part[1], e_grad);
        CHECK(finite && e_grad <= 1e-4, name, "worst %.3g at %s; %s", e_grad, worst,
              finite ? "all finite" : "some gradient or running stat is NOT finite");

        bool ok = true;
        for (int r = 0; r < RANKS && ok; r++) ok = ready_ok(&log[r], s[r].grads, why, sizeof why);
        snprintf(name, sizeof name, "%s sync-BN, ranks %d+%d: grads_ready covers every parameter once, values final",
                 backend, part[0], part[1]);
        CHECK(ok, name, "%s", why);
        snprintf(name, sizeof name, "%s sync-BN, ranks %d+%d: grads_ready in the same order on every rank (%d ranges)",
                 backend, part[0], part[1], log[0].n_order);
        CHECK(same_order(&log[0], &log[1]) && same_order(&log[0], full_log), name, "orders differ (%d, %d, %d ranges)",
              log[0].n_order, log[1].n_order, full_log->n_order);
        int bns = 0;
        for (int i = 0; i < m->n_ops; i++) bns += m->ops[i].kind == FU_OP_BN;
        snprintf(name, sizeof name, "%s sync-BN, ranks %d+%d: sum called once per BN in forward and in backward",
                 backend, part[0], part[1]);
        CHECK(w->calls[0] == 2 * bns && w->calls[1] == 2 * bns, name, "%d and %d calls for %d BNs", w->calls[0],
              w->calls[1], bns);
        free(logits);
    }
    for (int r = 0; r < RANKS; r++) step_free(&s[r]), log_free(&log[r]);
    world_free(w);
}

// Sync-BN and grads_ready: the whole batch without hooks, with grads_ready
// only, and with sync-BN in a world of one rank (the same arithmetic as
// plain BN: the "sum" of one rank changes no bit); then two ranks 4+4 and
// 5+3 against it; a failing sum fails the forward.
static void check_dist(const char *backend, int side) {
    problem p;
    problem_make(&p, side);
    const fu_model *m = &p.m;
    char name[200], why[160] = "";
    step plain = {0}, ready = {0}, one = {0}, broken = {0};
    ready_log full_log;
    world *w1 = world_make(1);
    rank_ctx ready_ctx = {.log = &full_log}, one_ctx = {.w = w1};
    fu_dist_hooks only_ready = {.ctx = &ready_ctx, .grads_ready = log_ready}, sync1 = {.ctx = &one_ctx, .sum = world_sum},
                  fails = {.sum = fail_sum};
    bool made = step_make(backend, &p, 0, DP_BATCH, NULL, &plain) == 0 &&
                step_make(backend, &p, 0, DP_BATCH, &only_ready, &ready) == 0 &&
                step_make(backend, &p, 0, DP_BATCH, &sync1, &one) == 0 &&
                step_make(backend, &p, 0, DP_BATCH, &fails, &broken) == 0;
    log_init(&full_log, m->n_params, ready.grads);
    if (made) run_step(&plain), run_step(&ready), run_step(&one), run_step(&broken);
    snprintf(name, sizeof name, "%s %dx%d, batch %d: whole batch runs with and without hooks", backend, side, side,
             DP_BATCH);
    if (CHECK(made && plain.rc == 0 && ready.rc == 0 && one.rc == 0, name, "%s%s%s%s", plain.err, ready.err, one.err,
              broken.err)) {
        snprintf(name, sizeof name, "%s: reports_grads, and hooks without sum change no byte", backend);
        CHECK(ready.b->reports_grads && ready.loss == plain.loss &&
                  !memcmp(ready.grads, plain.grads, m->n_params * sizeof(float)) &&
                  !memcmp(ready.state, plain.state, m->n_state * sizeof(float)),
              name, "reports_grads %d; they differ", ready.b->reports_grads);
        snprintf(name, sizeof name, "%s, one process: grads_ready covers every parameter once, values final (%d ranges)",
                 backend, full_log.n_order);
        CHECK(ready_ok(&full_log, ready.grads, why, sizeof why), name, "%s", why);
        const char *where;
        double e_state = worst_state(m, one.state, plain.state, &where),
               e_logits = rel_ff((size_t)DP_BATCH * m->classes, one.logits, plain.logits),
               e_grads = rel_ff(m->n_params, one.grads, plain.grads);
        snprintf(name, sizeof name,
                 "%s: sync-BN on one rank = plain BN (running stats %.1e, logits %.1e, all gradients %.1e)", backend,
                 e_state, e_logits, e_grads);
        CHECK(e_state <= 1e-6 && e_logits <= 1e-6 && e_grads <= 1e-6, name, "running stats %.3g (%s), logits %.3g, "
              "gradients %.3g", e_state, where, e_logits, e_grads);
        check_split(backend, &p, &one, &full_log, (int[RANKS]){4, 4});
        check_split(backend, &p, &one, &full_log, (int[RANKS]){5, 3});
        snprintf(name, sizeof name, "%s: a failing sum fails the forward with its message", backend);
        CHECK(broken.rc < 0 && strstr(broken.err, "the peer is gone") && strstr(broken.err, "sync-BN"), name,
              "rc %d, '%s'", broken.rc, broken.err);
    }
    step_free(&plain), step_free(&ready), step_free(&one), step_free(&broken);
    log_free(&full_log);
    world_free(w1);
    problem_free(&p);
}

static double now(void) {
    struct timespec t;
    clock_gettime(CLOCK_MONOTONIC, &t);
    return (double)t.tv_sec + 1e-9 * (double)t.tv_nsec;
}

// ---- NCCL gradient allreduce, one rank ------------------------------------------------

#define NCCL_BUCKET_BYTES ((size_t)4 << 20) // 4 MB: 23 buckets of MedicalCNN's 90 MB
#define NCCL_STEPS 3

static int nccl_steps(void) { return quick() ? 2 : NCCL_STEPS; }

// nccl_steps() training steps of the problem's whole batch on a new cuda
// backend in `amp` with hooks h; with c, a sync over c attached first
// (gradients times scale) into *sync. The last step's results into s.
static int nccl_run(const problem *p, fu_amp amp, const fu_dist_hooks *h, fu_comm *c, double scale, step *s,
                    fu_nccl_sync **sync) {
    if (step_make_amp("cuda", p, 0, DP_BATCH, amp, h, s) < 0) return -1;
    if (c) {
        if (s->b->nccl->attach(s->b, c, NCCL_BUCKET_BYTES, false) < 0) return -1;
        s->b->nccl->set_scale(s->b, scale);
        *sync = fu_cuda_nccl_sync(s->b);
    }
    for (int k = 0; k < nccl_steps() && s->rc == 0; k++) run_step(s);
    if (s->rc < 0) fu_set_error(s->err, NULL);
    return s->rc;
}

// The bucket plan: consecutive from the end of the buffer, every float once;
// *early: every bucket started while backward ran.
static bool plan_ok(const fu_nccl_bucket *b, int nb, size_t n, bool *early, char *why, size_t size) {
    size_t end = n;
    *early = true;
    for (int k = 0; k < nb; k++) {
        if (b[k].len == 0 || b[k].off + b[k].len != end) {
            snprintf(why, size, "bucket %d is [%zu, %zu), expected to end at %zu", k, b[k].off, b[k].off + b[k].len, end);
            return false;
        }
        end = b[k].off;
        *early &= b[k].early;
    }
    if (end != 0) snprintf(why, size, "the buckets leave [0, %zu) out", end);
    return end == 0;
}

// A two-rank communicator whose second rank never comes: creating it must
// fail within FU_NCCL_TIMEOUT (3 s here), not hang. SIGALRM ends the test
// if it hangs anyway.
static void check_nccl_timeout(const problem *p) {
    fu_comm lonely = {.rank = 0, .size = 2, .local_rank = 0, .local_size = 1};
    step s;
    setenv("FU_NCCL_TIMEOUT", "3", 1);
    alarm(120);
    double t0 = now();
    bool made = step_make("cuda", p, 0, DP_BATCH, NULL, &s) == 0;
    int rc = made ? s.b->nccl->attach(s.b, &lonely, NCCL_BUCKET_BYTES, false) : 0;
    double took = now() - t0;
    alarm(0);
    unsetenv("FU_NCCL_TIMEOUT");
    char name[200];
    snprintf(name, sizeof name, "NCCL: a communicator missing a rank fails in %.1f s (limit 3 s), not hangs: %s", took,
             fu_error());
    CHECK(made && rc < 0 && strstr(fu_error(), "no progress") && took < 30, name, "rc %d, '%s'", rc, fu_error());
    step_free(&s);
    // A limit that is not a positive number of seconds: refused, not ignored.
    fu_comm one = {.rank = 0, .size = 1, .local_rank = 0, .local_size = 1};
    setenv("FU_NCCL_TIMEOUT", "0", 1);
    made = step_make("cuda", p, 0, DP_BATCH, NULL, &s) == 0;
    rc = made ? s.b->nccl->attach(s.b, &one, NCCL_BUCKET_BYTES, false) : 0;
    unsetenv("FU_NCCL_TIMEOUT");
    CHECK(made && rc < 0 && strstr(fu_error(), "FU_NCCL_TIMEOUT=0: seconds, a positive number"),
          "NCCL: FU_NCCL_TIMEOUT=0 refused in one line", "rc %d, '%s'", rc, fu_error());
    step_free(&s);
}

// A rank that dies mid-step, as the fake NCCL plays it (FAKE_NCCL_HANG_AT:
// the communicator's 3rd allreduce, a bucket of the first backward, never
// ends, and the device hangs behind it until the communicator is aborted).
// The host does not wait for the sums, so NCCL's watchdog must give up
// within FU_NCCL_TIMEOUT (2 s here) and abort, and the step fail saying so,
// neither hanging in its download of the gradients nor handing out what it
// holds. With FAKE_NCCL_HANG_ERROR NCCL reports an error itself: no timeout
// (60 s then) is needed. On a real GPU this check does nothing: a real NCCL
// has no such switch. SIGALRM ends the test if it hangs anyway.
void fake_cuda_hang(void) __attribute__((weak)); // tests/cuda-emu/fake_cudart.cpp's: NULL on a real runtime
static void check_nccl_dead_rank(fu_comm *one, const problem *p) {
    static const struct {
        const char *error, *timeout, *says;
    } cases[] = {{"0", "2", "the gradient allreduce: no progress in 2 s"},
                 {"1", "60", "the gradient allreduce: unhandled system error"}};
    if (!fake_cuda_hang) return;
    for (size_t c = 0; c < sizeof cases / sizeof *cases; c++) {
        setenv("FAKE_NCCL_HANG_AT", "3", 1);
        setenv("FAKE_NCCL_HANG_ERROR", cases[c].error, 1);
        setenv("FU_NCCL_TIMEOUT", cases[c].timeout, 1);
        alarm(120);
        double t0 = now();
        step s; // (2 images: what is checked does not depend on the batch, and emulated steps are slow)
        int rc = step_make("cuda", p, 0, 2, NULL, &s);
        if (rc == 0) rc = s.b->nccl->attach(s.b, one, NCCL_BUCKET_BYTES, false);
        unsetenv("FAKE_NCCL_HANG_AT"), unsetenv("FAKE_NCCL_HANG_ERROR"), unsetenv("FU_NCCL_TIMEOUT");
        if (rc < 0) snprintf(s.err, sizeof s.err, "%s", fu_error());
        if (rc == 0) { // (the step whose sum hangs must fail, not the next)
            run_step(&s);
            rc = s.rc;
        }
        double took = now() - t0;
        alarm(0);
        char name[700];
        snprintf(name, sizeof name, "NCCL: a rank dead in a bucket's allreduce (%s): the step fails in %.1f s: %s",
                 c ? "NCCL reports an error" : "silent, 2 s timeout", took, s.err);
        CHECK(rc < 0 && strstr(s.err, cases[c].says) && took < 30, name, "rc %d", rc);
        step_free(&s);
    }
}

// fp16 data parallel with the gradients summed on the host (no NCCL): the
// ranks agree on a gradient overflow through the hooks' `any`, so that
// their loss scales stay equal. Two ranks as threads, rank 0 started at
// 2^60 (its loss gradient overflows half whatever the batch), rank 1 at
// 2^4: with the hook both halve (2^59, 2^3) and neither counts a clean pass;
// without it rank 1's pass is clean.
static void check_overflow_agreement(int side) {
    problem p;
    problem_make(&p, side);
    float got[2][RANKS];
    int clean[2][RANKS], rc = 0;
    for (int agree = 0; agree < 2 && rc == 0; agree++) {
        world *w = world_make(RANKS);
        rank_ctx ctx[RANKS];
        fu_dist_hooks hooks[RANKS];
        step s[RANKS];
        pthread_t th[RANKS];
        for (int r = 0; r < RANKS; r++) {
            ctx[r] = (rank_ctx){.w = w, .rank = r};
            hooks[r] = (fu_dist_hooks){.ctx = &ctx[r], .any = world_any};
            fu_loss_scale start = {r == 0 ? 0x1p60f : 0x1p4f, 0};
            if (step_make_amp("cuda", &p, r * (DP_BATCH / RANKS), DP_BATCH / RANKS, FU_AMP_FP16,
                              agree ? &hooks[r] : NULL, &s[r]) < 0 ||
                s[r].b->set_loss_scaling(s[r].b, &start) < 0)
                rc = -1;
        }
        for (int r = 0; r < RANKS && rc == 0; r++) pthread_create(&th[r], NULL, run_step, &s[r]);
        for (int r = 0; r < RANKS && rc == 0; r++) pthread_join(th[r], NULL);
        for (int r = 0; r < RANKS && rc == 0; r++) {
            fu_loss_scale now;
            rc = s[r].rc == 0 && s[r].b->loss_scaling(s[r].b, &now) == 0 ? 0 : -1;
            got[agree][r] = now.scale, clean[agree][r] = now.clean;
        }
        for (int r = 0; r < RANKS; r++) step_free(&s[r]);
        world_free(w);
    }
    CHECK(rc == 0 && got[1][0] == 0x1p59f && got[1][1] == 0x1p3f && clean[1][1] == 0 && got[0][1] == 0x1p4f &&
              clean[0][1] == 1,
          "fp16, gradients summed on the host: an overflow on one rank halves every rank's loss scale (`any`)",
          "rc %d (%s); with the hook %g and %g (clean %d), without %g (clean %d)", rc, rc < 0 ? fu_error() : "",
          got[1][0], got[1][1], clean[1][1], got[0][1], clean[0][1]);
    problem_free(&p);
}

// The hooks' sum where sync-BN must not call it (its sums go over NCCL).
static int host_sums;
static int count_host_sum(void *ctx, double *v, int n) {
    (void)ctx, (void)v, (void)n;
    host_sums++;
    return 0;
}

// The NCCL sync on one rank (a world of one process: NCCL's sum of one is
// the identity) against no sync: gradients bit for bit in fp32 and fp16
// (which also agrees on overflows over NCCL), times the share bit for bit;
// grads_ready never called; sync-BN's sums over NCCL on the device (the
// hooks' sum never called), the running stats the same bytes; the bucket
// plan, the stats, a calibration.
static void check_nccl(fu_comm *one, int side) {
    problem p;
    problem_make(&p, side);
    const fu_model *m = &p.m;
    size_t np = m->n_params;
    char name[240], why[200] = "";
    static const fu_amp amps[] = {FU_AMP_OFF, FU_AMP_FP16};
    // grads_ready must not be called; where it is, the log copies from scratch.
    float *scratch = calloc(np, sizeof(float));
    bool no_lib = false;
    for (size_t a = 0; a < sizeof amps / sizeof *amps && !no_lib; a++) {
        step plain, synced, halved;
        fu_nccl_sync *sync = NULL, *sync_half = NULL;
        ready_log log;
        log_init(&log, np, scratch);
        rank_ctx ctx = {.log = &log};
        fu_dist_hooks hooks = {.ctx = &ctx, .sum = count_host_sum, .grads_ready = log_ready};
        host_sums = 0;
        memset(&plain, 0, sizeof plain), memset(&synced, 0, sizeof synced), memset(&halved, 0, sizeof halved);
        int rc = nccl_run(&p, amps[a], NULL, NULL, 1, &plain, NULL);
        if (rc == 0) rc = nccl_run(&p, amps[a], &hooks, one, 1, &synced, &sync);
        no_lib = rc < 0 && strstr(fu_error(), "cannot load libnccl");
        if (no_lib) printf("skip - NCCL: %s\n", fu_error());
        if (rc == 0) rc = nccl_run(&p, amps[a], NULL, one, 0.5, &halved, &sync_half);
        snprintf(name, sizeof name, "NCCL, 1 rank, amp %s: %d steps with and without the sync run", fu_amp_name(amps[a]),
                 nccl_steps());
        if (!no_lib && CHECK(rc == 0, name, "%s", fu_error())) {
            double e = rel_ff(np, synced.grads, plain.grads);
            snprintf(name, sizeof name, "NCCL, 1 rank, amp %s: gradients = without it, bit for bit (%.1e); loss the same",
                     fu_amp_name(amps[a]), e);
            CHECK(!memcmp(synced.grads, plain.grads, np * sizeof(float)) && synced.loss == plain.loss, name,
                  "relative error %.3g; loss %.9g vs %.9g", e, synced.loss, plain.loss);
            size_t bad = 0;
            for (size_t i = 0; i < np; i++) bad += halved.grads[i] != 0.5f * plain.grads[i];
            snprintf(name, sizeof name, "NCCL, 1 rank, amp %s: scale 0.5 gives half of every gradient, bit for bit",
                     fu_amp_name(amps[a]));
            CHECK(bad == 0, name, "%zu of %zu differ", bad, np);
            snprintf(name, sizeof name, "NCCL, amp %s: backward never calls grads_ready, reports_grads off",
                     fu_amp_name(amps[a]));
            CHECK(log.n_order == 0 && !synced.b->reports_grads, name, "%d calls; reports_grads %d", log.n_order,
                  synced.b->reports_grads);
            snprintf(name, sizeof name, "NCCL, 1 rank, amp %s: sync-BN's sums over NCCL, on the device: running "
                     "stats = without it, bit for bit", fu_amp_name(amps[a]));
            CHECK(host_sums == 0 && !memcmp(synced.state, plain.state, m->n_state * sizeof(float)), name,
                  "%d sums on the host; running stats %s", host_sums,
                  memcmp(synced.state, plain.state, m->n_state * sizeof(float)) ? "differ" : "equal");
        }
        if (rc == 0 && amps[a] == FU_AMP_OFF) {
            fu_nccl_bucket plan[256];
            int nb = fu_nccl_sync_plan(sync, plan, 256);
            bool early = false, ok = nb <= 256 && plan_ok(plan, nb, np, &early, why, sizeof why);
            snprintf(name, sizeof name, "NCCL: %d buckets of <= %zu MB cover every parameter once, from the end", nb,
                     NCCL_BUCKET_BYTES >> 20);
            CHECK(ok, name, "%s", why);
            snprintf(name, sizeof name, "NCCL: every bucket started during backward (overlapping it)");
            CHECK(ok && early, name, "some started only after backward");
            fu_grad_sync_stats st = fu_nccl_sync_stats_of(sync);
            snprintf(name, sizeof name, "NCCL: stats filled: %d buckets, %.1f MB per step, %.2f ms allreduce and "
                     "%.2f ms exposed per step", st.buckets, st.mb_per_step, 1e3 * st.seconds / nccl_steps(),
                     1e3 * st.exposed / nccl_steps());
            CHECK(st.buckets == nb && fabs(st.mb_per_step - (double)np * 4 / 1e6) < 1e-9 && st.seconds > 0 &&
                      st.exposed >= 0 && st.exposed <= st.seconds, name, "buckets %d, %.3f MB, %.3g s, exposed %.3g s",
                  st.buckets, st.mb_per_step, st.seconds, st.exposed);
            double t = 0;
            int crc = fu_nccl_sync_calibrate(sync, 3, &t);
            snprintf(name, sizeof name, "NCCL: calibrate: one blocking allreduce of %.1f MB takes %.3f ms (1 rank)",
                     (double)np * 4 / 1e6, 1e3 * t);
            CHECK(crc == 0 && t > 0, name, "rc %d, %.3g s: %s", crc, t, fu_error());
        }
        log_free(&log);
        step_free(&plain), step_free(&synced), step_free(&halved);
    }
    if (!no_lib) check_nccl_timeout(&p);
    if (!no_lib) check_nccl_dead_rank(one, &p);
    free(scratch);
    problem_free(&p);
}

// One resident training step of a 2-stage pipe (sharing this GPU) of
// `micro` micro-batches, from params: the gradient norm (clipping off) and
// the weights after it. With c, the pipe's NCCL syncs (one per stage) are
// attached first, the gradients times scale; *st their stats.
static int pipe_nccl_step(const fu_model *m, int micro, fu_amp amp, fu_comm *c, double scale, const float *params,
                          double *norm, float *after, fu_grad_sync_stats *st, fu_backend **keep) {
    enum { N = 8 };
    fu_backend *b = NULL;
    fu_pipe_opts po = {.backend = "cuda", .stages = 2, .micro_batches = micro, .shared_device = true};
    float *state = malloc(m->n_state * sizeof(float)), *scratch = malloc(m->n_params * sizeof(float)), loss;
    float *x = random_batch(m, N, 77), cw[2] = {0.4f, 0.6f};
    int64_t *counts = calloc(m->n_counts, sizeof(int64_t));
    int labels[N] = {0, 1, 1, 0, 1, 0, 0, 1};
    fu_model_init(m, 31, scratch, state, counts);
    fu_param_group *groups = NULL;
    int n_groups = fu_param_groups(m, true, &groups);
    fu_adamw_opts ao = fu_adamw_defaults();
    fu_pass train = {.train = true, .dropout = true, .seed = 7, .step = 1};
    int rc = n_groups > 0 ? fu_pipe_create(m, &po, &(fu_backend_opts){.batch = N, .amp = amp}, &b) : -1;
    if (rc == 0 && (!b->resident || !b->nccl)) rc = fu_fail("test", "a pipe of cuda stages is not resident with NCCL");
    if (rc == 0) rc = fu_backend_start_loss_scale(b, FP16_START);
    if (rc == 0 && c && (rc = b->nccl->attach(b, c, NCCL_BUCKET_BYTES, false)) == 0) b->nccl->set_scale(b, scale);
    if (rc == 0) rc = b->resident->load(b, params, state, NULL, NULL);
    if (rc == 0) rc = b->forward(b, N, NULL, NULL, counts, x, labels, cw, &train, &loss);
    if (rc == 0) rc = b->backward(b, NULL, NULL, NULL);
    if (rc == 0) rc = b->resident->step(b, &ao, groups, n_groups, 1e-3, 1, 1e30, norm);
    if (rc == 0) rc = b->resident->store(b, after, NULL, NULL, NULL);
    if (rc == 0 && c) *st = b->nccl->stats_of(b);
    if (keep) *keep = b;
    else fu_backend_destroy(b);
    free(state), free(scratch), free(x), free(counts), free(groups);
    return rc;
}

// Model parallel x data parallel on the GPU: the pipe's NCCL sums (a
// communicator per stage, each stage's gradients summed after its
// micro-batches are added up) on one rank against no sum: the same norm and
// weights bit for bit, scale 0.5 exactly half the norm (a sum started
// before the micro-batches were added up would not be); the stats of both
// stages; a host gradient buffer refused.
static void check_pipe_nccl(fu_comm *one, const fu_model *m) {
    static const struct {
        int micro;
        fu_amp amp;
    } runs[] = {{4, FU_AMP_FP16}, {4, FU_AMP_OFF}}; // (1 micro-batch: the stages' sums alone)
    size_t n_runs = quick() ? 1 : sizeof runs / sizeof *runs; // quick: fp16 alone (its scaled sums)
    size_t np = m->n_params;
    float *params = malloc(np * sizeof(float)), *state = malloc(m->n_state * sizeof(float));
    float *plain = malloc(np * sizeof(float)), *synced = malloc(np * sizeof(float));
    float *halved = malloc(np * sizeof(float));
    int64_t *counts = calloc(m->n_counts, sizeof(int64_t));
    fu_model_init(m, 31, params, state, counts);
    for (size_t r = 0; r < n_runs; r++) {
        double n_plain = NAN, n_synced = NAN, n_halved = NAN;
        fu_grad_sync_stats st = {0}, unused;
        fu_backend *b = NULL;
        int rc = pipe_nccl_step(m, runs[r].micro, runs[r].amp, NULL, 1, params, &n_plain, plain, &unused, NULL);
        if (rc == 0) rc = pipe_nccl_step(m, runs[r].micro, runs[r].amp, one, 1, params, &n_synced, synced, &st, &b);
        if (rc < 0 && strstr(fu_error(), "cannot load libnccl")) {
            printf("skip - pipe with NCCL: %s\n", fu_error());
            fu_backend_destroy(b);
            break;
        }
        if (rc == 0)
            rc = pipe_nccl_step(m, runs[r].micro, runs[r].amp, one, 0.5, params, &n_halved, halved, &unused, NULL);
        char name[300];
        snprintf(name, sizeof name, "pipe of 2 stages x %d micro-batches, amp %s, NCCL on 1 rank: norm and weights = "
                 "without it, bit for bit; scale 0.5 halves the norm exactly (%.6g, %.6g)", runs[r].micro,
                 fu_amp_name(runs[r].amp), n_plain, n_halved);
        CHECK(rc == 0 && n_synced == n_plain && same_floats(np, synced, plain) && n_halved == 0.5 * n_plain, name,
              "rc %d (%s); norms %.9g, %.9g (NCCL), %.9g (scale 0.5); weights %s", rc, rc < 0 ? fu_error() : "",
              n_plain, n_synced, n_halved, same_floats(np, synced, plain) ? "same" : "differ");
        if (rc == 0 && r == 0) {
            snprintf(name, sizeof name, "pipe with NCCL: stats of both stages (%d buckets, %.1f MB per step), "
                     "reports_grads off", st.buckets, st.mb_per_step);
            CHECK(st.buckets >= 2 && fabs(st.mb_per_step - (double)np * 4 / 1e6) < 1e-9 && st.seconds > 0 &&
                      !b->reports_grads, name, "buckets %d, %.3f MB, %.3g s; reports_grads %d", st.buckets,
                  st.mb_per_step, st.seconds, b->reports_grads);
            double t = 0;
            int crc = b->nccl->calibrate(b, 2, &t);
            CHECK(crc == 0 && t > 0, "pipe with NCCL: calibrate times every stage's allreduce", "rc %d, %.3g s: %s",
                  crc, t, fu_error());
            float loss, *g = malloc(np * sizeof(float));
            int labels[2] = {0, 1};
            float *x = random_batch(m, 2, 5), cw[2] = {0.5f, 0.5f};
            fu_pass train = {.train = true};
            int frc = b->forward(b, 2, NULL, NULL, counts, x, labels, cw, &train, &loss);
            int brc = frc == 0 ? b->backward(b, NULL, NULL, g) : 0;
            CHECK(frc == 0 && brc < 0 && strstr(fu_error(), "takes no host buffer"),
                  "pipe with NCCL: backward into a host gradient buffer refused", "rc %d/%d: %s", frc, brc, fu_error());
            free(g), free(x);
        }
        if (rc == 0 && runs[r].amp == FU_AMP_FP16) {
            // fp16: one scale for the pipe, which its caller's verdict on
            // each step updates (the step above left it where it started).
            fu_loss_scale s[3] = {{0}};
            int lrc = b->loss_scaling(b, &s[0]);
            if (lrc == 0) lrc = b->loss_scale_update(b, true);
            if (lrc == 0) lrc = b->loss_scaling(b, &s[1]);
            if (lrc == 0) lrc = b->loss_scale_update(b, false);
            if (lrc == 0) lrc = b->loss_scaling(b, &s[2]);
            CHECK(lrc == 0 && s[0].scale == FP16_START && s[0].clean == 0 && s[1].scale == FP16_START / 2 &&
                      s[1].clean == 0 && s[2].scale == FP16_START / 2 && s[2].clean == 1,
                  "pipe, fp16: one loss scale, halved by an overflowed step, a clean one counted",
                  "%s; %g/%d, %g/%d, %g/%d", lrc ? fu_error() : "", s[0].scale, s[0].clean, s[1].scale, s[1].clean,
                  s[2].scale, s[2].clean);
        }
        fu_backend_destroy(b);
    }
    free(params), free(state), free(plain), free(synced), free(halved), free(counts);
}

// fp32 training steps of the bench's problem with a one-rank NCCL sync
// attached (25 MB buckets, as cnn-train), then NCCL's calibration: in-place
// allreduces of the whole 90 MB gradient. One rank moves no data (the sum of
// one is itself), so that time is the call's own cost, not a bandwidth: bus
// bandwidth needs 2+ GPUs (`mpirun -np 2 cnn-train --device cuda` prints it).
static int bench_nccl(fu_comm *one, const fu_model *m, const float *params, float *state, int64_t *counts,
                      const float *x, const int *labels, const float *cw, int n, int warm, int timed) {
    fu_backend *b;
    fu_nccl_sync *sync;
    float *grads = malloc(m->n_params * sizeof(float)), loss;
    if (fu_backend_create("cuda", m, &(fu_backend_opts){.batch = n}, &b) < 0) return free(grads), -1;
    int rc = b->nccl->attach(b, one, 25000000, false);
    sync = fu_cuda_nccl_sync(b);
    double busy = 0;
    fu_grad_sync_stats warmup = {0}, st = {0};
    for (int s = 0; s < warm + timed && rc == 0; s++) {
        fu_pass pass = {.train = true, .dropout = true, .seed = 1, .step = (uint64_t)s};
        if (s == warm) warmup = fu_nccl_sync_stats_of(sync);
        double t0 = now();
        rc = b->forward(b, n, params, state, counts, x, labels, cw, &pass, &loss);
        if (rc == 0) rc = b->backward(b, params, NULL, grads);
        if (s >= warm) busy += now() - t0;
    }
    if (rc == 0) st = fu_nccl_sync_stats_of(sync);
    double full = 0;
    if (rc == 0) rc = fu_nccl_sync_calibrate(sync, 5, &full);
    if (rc == 0)
        printf("# bench: NCCL, 1 rank, fp32: %.1f ms per training step with the sync attached (%d buckets of 25 MB; "
               "allreduce %.2f ms, exposed %.2f ms per step); in-place allreduce of %.1f MB: %.3f ms (median of 5: "
               "one rank moves no data, so this is the call's cost, not a bandwidth; bus bandwidth needs 2+ GPUs)\n",
               1e3 * busy / timed, st.buckets, 1e3 * (st.seconds - warmup.seconds) / timed,
               1e3 * (st.exposed - warmup.exposed) / timed, st.mb_per_step, 1e3 * full);
    else
        printf("# bench: NCCL: %s\n", fu_error());
    fu_backend_destroy(b);
    free(grads);
    return rc;
}

// One bench subject's timed steps: forward, backward and the host's clipping
// + AdamW (what the trainer does after backward with host_step), seconds per
// step.
typedef struct {
    double fwd, bwd, opt;
} step_times;

static int time_steps(fu_backend *b, const fu_model *m, int n, float *params, float *state, int64_t *counts,
                      const float *x, const int *labels, const float *cw, int warm, int timed, step_times *t) {
    float *grads = malloc(m->n_params * sizeof(float)), *m1 = calloc(m->n_params, sizeof(float)),
          *m2 = calloc(m->n_params, sizeof(float)), loss;
    fu_param_group *groups = NULL;
    int n_groups = fu_param_groups(m, false, &groups), rc = grads && m1 && m2 && n_groups > 0 ? 0 : -1;
    fu_adamw_opts o = fu_adamw_defaults();
    *t = (step_times){0};
    for (int s = 0; s < warm + timed && rc == 0; s++) {
        fu_pass pass = {.train = true, .dropout = true, .seed = 1, .step = (uint64_t)s};
        double t0 = now();
        rc = b->forward(b, n, params, state, counts, x, labels, cw, &pass, &loss);
        double t1 = now();
        if (rc == 0) rc = b->backward(b, params, NULL, grads);
        double t2 = now();
        fu_clip_grad_norm(grads, m->n_params, 1.0);
        fu_adamw_step(&o, 1e-6, s + 1, groups, n_groups, params, grads, m1, m2);
        if (s >= warm) t->fwd += (t1 - t0) / timed, t->bwd += (t2 - t1) / timed, t->opt += (now() - t2) / timed;
    }
    free(grads), free(m1), free(m2), free(groups);
    return rc;
}

// Mean milliseconds of `timed` trainer steps after `warm`, on batch x (n
// images, already in the trainer's pinned buffers). Each step's forward
// copies its batch in (behind the step before on the GPU), or, with
// prefetch, takes it from the copy a thread started during the step before,
// as cnn-train's loading thread does (the two pinned buffers in turn). With
// keep, the steps are fu_train_step_into's, as cnn-train's epochs run them
// (on the cuda backend none waits for the GPU: the host runs ahead, and the
// timed span ends when the last step's figures are back); else
// fu_train_step's, each ending with its loss and norm on the host. With
// FU_CUDA_PROFILE set, prints where the GPU time of the timed steps went.
static int trainer_ms(fu_trainer *t, int n, const int *labels, int warm, int timed, bool prefetch, bool keep,
                      const char *what, double *ms) {
    int rc = 0;
    char report[4096];
    fu_epoch_stats st = {0};
    double t0 = 0;
    *ms = 0;
    prefetch = prefetch && t->be->prefetch;
    if (prefetch) {
        memcpy(t->x[1], t->x[0], fu_op_numel(t->m, 0, n) * sizeof(float));
        rc = t->be->prefetch(t->be, t->x[0], n);
    }
    for (int s = 0; s < warm + timed && rc == 0; s++) {
        float loss;
        int correct, seen;
        if (s == warm) {
            rc = fu_train_settle(t, &st); // the warm-up's steps done
            fu_cuda_profile_report(t->be, report, sizeof report, true); // from here
            t0 = now();
        }
        prefetch_job next = {t->be, t->x[(s + 1) % 2], n, 0};
        pthread_t thread;
        bool started = rc == 0 && prefetch && pthread_create(&thread, NULL, run_prefetch, &next) == 0;
        if (rc == 0 && prefetch && !started) rc = next.rc = fu_fail("bench", "no thread for the prefetch");
        const float *x = t->x[prefetch ? s % 2 : 0];
        if (rc == 0)
            rc = keep ? fu_train_step_into(t, n, x, labels, 1e-6, &st, &loss)
                      : fu_train_step(t, n, x, labels, 1e-6, &loss, &correct, &seen);
        if (started) pthread_join(thread, NULL);
        if (rc == 0 && next.rc < 0) rc = -1;
    }
    if (rc == 0) rc = fu_train_settle(t, &st);
    if (rc == 0) *ms = 1e3 * (now() - t0) / timed;
    fu_cuda_profile_report(t->be, report, sizeof report, true);
    for (char *at, *line = strtok_r(report, "\n", &at); rc == 0 && line; line = strtok_r(NULL, "\n", &at))
        printf("# profile: %s: %s\n", what, line);
    return rc;
}

// The trainer's whole step (fu_train_step: forward, loss, backward,
// clipping, AdamW) of the study's size at batch n, resident (weights,
// gradients and AdamW on the GPU) and, with host_too, with host_step (90 MB
// of weights up, 90 MB of gradients down, clipping and AdamW on the host),
// per precision: warm-up steps, then timed ones, inputs from the trainer's
// pinned buffer. With profile, then a few resident steps more under
// FU_CUDA_PROFILE (its events and flushes slow a step: its time is not the
// bench's figure), which print where the GPU time went. Then resident with
// fusion off (FU_CUDA_FUSE=0; FU_BENCH_UNFUSED=0: not): what fusion saves;
// under amp also with FU_CUDA_HALF_ACT=0 (BatchNorm outputs and block ends
// in fp32; likewise skipped): what keeping them in half saves.
// Then resident with measured convolution engines (--conv-algos: the graph
// API's, or the legacy API's algorithms where it runs a convolution),
// recorded in FU_BENCH_CONV_ALGOS (default /tmp/fu-bench-conv-algos.txt, so
// that a rerun takes the same ones; FU_BENCH_MEASURED=0: not): what
// measuring gains over the heuristics. Then resident with each next batch prefetched
// during the step, as cnn-train runs (FU_BENCH_PREFETCH=0: not): the first
// figure has every step wait for its own batch's copy (at batch 256 in
// fp32, 154 MB), which PyTorch's bench, its batch kept on the GPU, does not.
// Then resident with every convolution on cuDNN's legacy API and its
// heuristics (FU_CUDNN_API=legacy; FU_BENCH_LEGACY=0: not): what the graph
// API's plans (lib/cuda/conv_graph.h) gain or lose against it. Then
// prefetched with the steps' figures kept on the GPU (fu_train_step_into:
// cnn-train's step; FU_BENCH_KEPT=0: not): what not waiting for the GPU at
// each step's end saves.
static int bench_trainer(const fu_model *m, const float *x, const int *labels, int n, int warm, int timed,
                         bool host_too, bool profile) {
    static const fu_amp amps[] = {FU_AMP_OFF, FU_AMP_BF16, FU_AMP_FP16};
    const char *unfused_env = getenv("FU_BENCH_UNFUSED"), *measured_env = getenv("FU_BENCH_MEASURED"),
               *algos = getenv("FU_BENCH_CONV_ALGOS"), *prefetch_env = getenv("FU_BENCH_PREFETCH"),
               *legacy_env = getenv("FU_BENCH_LEGACY"), *kept_env = getenv("FU_BENCH_KEPT");
    bool unfused = !unfused_env || strcmp(unfused_env, "0") != 0;
    bool measured = !measured_env || strcmp(measured_env, "0") != 0;
    bool prefetched = !prefetch_env || strcmp(prefetch_env, "0") != 0;
    bool legacy = !legacy_env || strcmp(legacy_env, "0") != 0;
    bool kept = prefetched && (!kept_env || strcmp(kept_env, "0") != 0);
    for (size_t a = 0; a < sizeof amps / sizeof *amps; a++) {
        double ms[9] = {0}, init_s[9] = {0};
        size_t mib = 0, mib_unfused = 0, mib_measured = 0, mib_fp32_acts = 0;
        // run 0: resident; 1: host step; 2: resident, profiled; 3: resident, fusion off; 4: resident, measured;
        // 5: resident, amp's BatchNorm outputs and block ends in fp32; 6: resident, prefetched;
        // 7: resident, the legacy API's convolutions; 8: resident, prefetched, figures kept
        bool half_acts = unfused && amps[a] != FU_AMP_OFF;
        for (int run = 0; run < 9; run++) {
            if ((run == 1 && !host_too) || (run == 2 && !profile) || (run == 3 && !unfused) ||
                (run == 4 && !measured) || (run == 5 && !half_acts) || (run == 6 && !prefetched) ||
                (run == 7 && !legacy) || (run == 8 && !kept))
                continue;
            fu_train_opts o = fu_train_defaults();
            o.batch = n, o.amp = amps[a], o.augment = false, o.host_step = run == 1;
            if (run == 4) o.conv_algos = algos ? algos : "/tmp/fu-bench-conv-algos.txt";
            fu_trainer t;
            if (run == 2) setenv("FU_CUDA_PROFILE", "1", 1);
            if (run == 3) setenv("FU_CUDA_FUSE", "0", 1);
            if (run == 5) setenv("FU_CUDA_HALF_ACT", "0", 1);
            char *api = getenv("FU_CUDNN_API") ? strdup(getenv("FU_CUDNN_API")) : NULL;
            if (run == 7) setenv("FU_CUDNN_API", "legacy", 1);
            double t0 = now();
            int rc = fu_trainer_init(&t, m, &o, "cuda", omp_get_max_threads());
            init_s[run] = now() - t0; // with measured engines, the measuring
            unsetenv("FU_CUDA_PROFILE");
            unsetenv("FU_CUDA_FUSE");
            unsetenv("FU_CUDA_HALF_ACT");
            if (api) setenv("FU_CUDNN_API", api, 1);
            else unsetenv("FU_CUDNN_API");
            free(api);
            if (rc < 0) {
                printf("# bench: trainer, batch %d, amp %s: %s\n", n, fu_amp_name(amps[a]), fu_error());
                return -1;
            }
            t.class_w[0] = t.class_w[1] = 0.5f;
            memcpy(t.x[0], x, (size_t)n * 3 * m->height * m->width * sizeof(float));
            char what[96];
            snprintf(what, sizeof what, "batch %d, amp %s", n, fu_amp_name(amps[a]));
            rc = trainer_ms(&t, n, labels, warm, run == 2 ? 3 : timed, run == 6 || run == 8, run == 8, what, &ms[run]);
            if (run == 0) mib = t.be->device_bytes >> 20;
            if (run == 3) mib_unfused = t.be->device_bytes >> 20;
            if (run == 4) mib_measured = t.be->device_bytes >> 20;
            if (run == 5) mib_fp32_acts = t.be->device_bytes >> 20;
            if (rc < 0) printf("# bench: trainer, %s%s: %s\n", what, run == 1 ? ", host step" : "", fu_error());
            fu_trainer_free(&t);
            if (rc < 0) return -1;
        }
        printf("# bench: trainer step (fu_train_step), MedicalCNN %dx%d, batch %d, amp %s: %.1f ms per training "
               "step resident, %.0f img/s (mean of %d); %zu MiB on the GPU\n",
               m->height, m->width, n, fu_amp_name(amps[a]), ms[0], 1e3 * n / ms[0], timed, mib);
        if (host_too)
            printf("# bench: batch %d, amp %s: host step %.1f ms (weights up, gradients down, clipping + AdamW on "
                   "the host): resident saves %.1f ms\n",
                   n, fu_amp_name(amps[a]), ms[1], ms[1] - ms[0]);
        if (profile) printf("# bench: batch %d, amp %s: %.1f ms per step profiled\n", n, fu_amp_name(amps[a]), ms[2]);
        if (unfused)
            printf("# bench: batch %d, amp %s: fusion off (FU_CUDA_FUSE=0) %.1f ms per step, %zu MiB: fusion saves "
                   "%.1f ms and %ld MiB\n",
                   n, fu_amp_name(amps[a]), ms[3], mib_unfused, ms[3] - ms[0], (long)mib_unfused - (long)mib);
        if (half_acts)
            printf("# bench: batch %d, amp %s: BatchNorm outputs and block ends in fp32 (FU_CUDA_HALF_ACT=0) %.1f "
                   "ms per step, %zu MiB: half saves %.1f ms and %ld MiB\n",
                   n, fu_amp_name(amps[a]), ms[5], mib_fp32_acts, ms[5] - ms[0], (long)mib_fp32_acts - (long)mib);
        if (measured)
            printf("# bench: batch %d, amp %s: measured convolution engines (--conv-algos) %.1f ms per step, %zu "
                   "MiB: %.1f ms faster than the heuristics'; set-up %.1f s (the heuristics' %.1f s)\n",
                   n, fu_amp_name(amps[a]), ms[4], mib_measured, ms[0] - ms[4], init_s[4], init_s[0]);
        if (prefetched)
            printf("# bench: batch %d, amp %s: prefetched (each next batch copied during the step, as cnn-train "
                   "does) %.1f ms per step, %.0f img/s: the copy hidden saves %.1f ms\n",
                   n, fu_amp_name(amps[a]), ms[6], 1e3 * n / ms[6], ms[0] - ms[6]);
        if (legacy)
            printf("# bench: batch %d, amp %s: convolutions on cuDNN's legacy API (FU_CUDNN_API=legacy) %.1f ms per "
                   "step: the graph API's plans save %.1f ms\n",
                   n, fu_amp_name(amps[a]), ms[7], ms[7] - ms[0]);
        if (kept)
            printf("# bench: batch %d, amp %s: prefetched, figures kept (fu_train_step_into: no step waits for the "
                   "GPU, as cnn-train's epochs run) %.1f ms per step, %.0f img/s: not waiting saves %.1f ms\n",
                   n, fu_amp_name(amps[a]), ms[8], 1e3 * n / ms[8], ms[6] - ms[8]);
    }
    return 0;
}

// One trainer's mean step time (trainer_ms) with options o at batch n, on
// batch x; info: its stages' busy seconds (a pipe's), NULL: not asked.
static int trainer_run_ms(const fu_model *m, fu_train_opts o, const float *x, const int *labels, int n, int warm,
                          int timed, const char *what, double *ms, fu_pipe_stage_info *info) {
    fu_trainer t;
    o.batch = n, o.augment = false;
    if (fu_trainer_init(&t, m, &o, "cuda", omp_get_max_threads()) < 0) {
        printf("# bench: %s: %s\n", what, fu_error());
        return -1;
    }
    t.class_w[0] = t.class_w[1] = 0.5f;
    memcpy(t.x[0], x, (size_t)n * 3 * m->height * m->width * sizeof(float));
    int rc = trainer_ms(&t, n, labels, warm, timed, false, false, what, ms);
    if (rc < 0) printf("# bench: %s: %s\n", what, fu_error());
    if (info) fu_pipe_info(t.be, info, FU_MAX_STAGES);
    fu_trainer_free(&t);
    return rc;
}

// Model parallel: 2 stages sharing this GPU, each driven by its thread,
// through the trainer (resident: each stage's weights, gradients and AdamW
// on the GPU; and with host_step), at 1 and 4 micro-batches, in fp32 and
// fp16, beside the unsplit model's resident step: the cost of the split.
static int bench_pipe(const fu_model *m, const float *x, const int *labels, int n, int warm, int timed) {
    static const fu_amp amps[] = {FU_AMP_OFF, FU_AMP_FP16};
    static const int micro[] = {1, 4};
    for (size_t a = 0; a < sizeof amps / sizeof *amps; a++) {
        fu_train_opts o = fu_train_defaults();
        o.amp = amps[a];
        char what[128];
        double plain;
        snprintf(what, sizeof what, "unsplit, batch %d, amp %s", n, fu_amp_name(amps[a]));
        if (trainer_run_ms(m, o, x, labels, n, warm, timed, what, &plain, NULL) < 0) return -1;
        for (size_t k = 0; k < sizeof micro / sizeof *micro; k++) {
            double ms[2];
            fu_pipe_stage_info info[FU_MAX_STAGES];
            for (int host = 0; host < 2; host++) {
                o.stages = 2, o.micro_batches = micro[k], o.shared_gpu = true, o.host_step = host;
                snprintf(what, sizeof what, "2 stages x %d, batch %d, amp %s%s", micro[k], n, fu_amp_name(amps[a]),
                         host ? ", host step" : "");
                if (trainer_run_ms(m, o, x, labels, n, warm, timed, what, &ms[host], host ? NULL : info) < 0)
                    return -1;
            }
            printf("# bench: trainer step, 2 stages sharing the GPU x %d micro-batch%s, batch %d, amp %s: %.1f ms "
                   "resident (%.0f img/s; unsplit %.1f ms: %+.0f%%), %.1f ms with host_step; stages busy since "
                   "set-up: %s %.2f s, %s %.2f s\n",
                   micro[k], micro[k] == 1 ? "" : "es", n, fu_amp_name(amps[a]), ms[0], 1e3 * n / ms[0], plain,
                   100 * (ms[0] / plain - 1), ms[1], info[0].stage.name, info[0].busy_seconds, info[1].stage.name,
                   info[1].busy_seconds);
        }
    }
    return 0;
}

// Forward + backward of the study's size through the host-pointer interface
// (parameter, state and gradient copies included) and the host's clipping +
// AdamW: set-up, then 2 steps warm-up and 10 timed, per precision; the
// trainer's step resident and with host_step (bench_trainer); 2 stages
// sharing the GPU through the trainer (bench_pipe: the cost of the split),
// then the plain step with NCCL (bench_nccl). FU_BENCH_SIDE: another image
// side than the study's 224 (a quick run of the bench's code paths).
static int bench(fu_comm *one) {
    enum { N = 32, WARM = 2, TIMED = 10 };
    const char *side_env = getenv("FU_BENCH_SIDE");
    int side = side_env ? atoi(side_env) : 224;
    fu_model m;
    if (fu_medicalcnn(&m, side, side) < 0) return 1;
    float *params = malloc(m.n_params * sizeof(float)), *state = malloc(m.n_state * sizeof(float)),
          *x = random_batch(&m, N, 1), cw[2] = {0.5f, 0.5f};
    int64_t *counts = calloc(m.n_counts, sizeof(int64_t));
    int labels[N];
    for (int i = 0; i < N; i++) labels[i] = i % 2;
    fu_model_init(&m, 1, params, state, counts);
    // FU_BENCH_TRAINER_ONLY=1: the trainer's steps alone, unsplit and as stages (device.sh, short of time).
    const char *only = getenv("FU_BENCH_TRAINER_ONLY");
    bool trainer_only = only && strcmp(only, "0") != 0;
    static const fu_amp amps[] = {FU_AMP_OFF, FU_AMP_BF16, FU_AMP_FP16};
    int rc = 0;
    for (size_t a = 0; a < sizeof amps / sizeof *amps && rc == 0 && !trainer_only; a++) {
        fu_backend *b;
        double t0 = now();
        step_times t;
        if (fu_backend_create("cuda", &m, &(fu_backend_opts){.batch = N, .amp = amps[a]}, &b) < 0 ||
            time_steps(b, &m, N, params, state, counts, x, labels, cw, WARM, TIMED, &t) < 0) {
            printf("# bench: amp %s: %s\n", fu_amp_name(amps[a]), fu_error());
            rc = 1;
        } else {
            printf("# bench: MedicalCNN %dx%d, batch %d, amp %s: %.1f ms per training step (forward %.1f, "
                   "backward %.1f, host clipping + AdamW %.1f; mean of %d), set-up and warm-up %.2f s, %.0f MiB "
                   "of device buffers\n",
                   side, side, N, fu_amp_name(amps[a]), 1e3 * (t.fwd + t.bwd + t.opt), 1e3 * t.fwd, 1e3 * t.bwd,
                   1e3 * t.opt, TIMED, now() - t0 - TIMED * (t.fwd + t.bwd + t.opt), b->act_bytes / 1048576.0);
        }
        fu_backend_destroy(b);
    }
    const char *prof = getenv("FU_BENCH_PROFILE");
    bool profile = !prof || strcmp(prof, "0") != 0;
    if (rc == 0) rc = bench_trainer(&m, x, labels, N, WARM, TIMED, !trainer_only, profile) < 0;
    // Larger batches (FU_BENCH_BATCHES, default 256): the trainer's resident step alone.
    const char *more = getenv("FU_BENCH_BATCHES");
    char list[64];
    snprintf(list, sizeof list, "%s", more ? more : "256");
    for (char *at, *tok = strtok_r(list, ",", &at); tok && rc == 0; tok = strtok_r(NULL, ",", &at)) {
        int big = atoi(tok);
        if (big <= N) continue;
        float *xb = random_batch(&m, big, 1);
        int *lb = malloc((size_t)big * sizeof *lb);
        for (int i = 0; lb && i < big; i++) lb[i] = i % 2;
        rc = !xb || !lb || bench_trainer(&m, xb, lb, big, WARM, TIMED, false, profile) < 0;
        free(xb), free(lb);
    }
    if (rc == 0) rc = bench_pipe(&m, x, labels, N, WARM, TIMED) < 0;
    if (rc == 0 && !trainer_only) rc = bench_nccl(one, &m, params, state, counts, x, labels, cw, N, WARM, TIMED) < 0;
    free(params), free(state), free(x), free(counts);
    fu_model_free(&m);
    return rc;
}

// --sanitize: a short run for compute-sanitizer's memcheck (run-bundle.sh):
// a few trainer steps of MedicalCNN 32x32 resident, with host_step, in fp16,
// and as 2 stages x 2 micro-batches sharing the GPU; a prefetched batch and
// the stages' GPU hand-over. Everything is freed before exit, so that the
// leak check sees every allocation returned.
static int sanitize_run(void) {
    fu_model m;
    if (!CHECK(fu_medicalcnn(&m, 32, 32) == 0, "MedicalCNN 32x32", "%s", fu_error())) return check_done();
    static const struct {
        const char *name;
        fu_amp amp;
        bool host_step;
        int stages, micro;
    } runs[] = {{"resident fp32", FU_AMP_OFF, false, 1, 1}, {"host_step fp32", FU_AMP_OFF, true, 1, 1},
                {"resident fp16", FU_AMP_FP16, false, 1, 1}, {"2 stages x 2 micro-batches", FU_AMP_OFF, false, 2, 2}};
    for (size_t r = 0; r < sizeof runs / sizeof *runs; r++) {
        fu_train_opts o = fu_train_defaults();
        o.batch = 4, o.amp = runs[r].amp, o.host_step = runs[r].host_step;
        o.stages = runs[r].stages, o.micro_batches = runs[r].micro, o.shared_gpu = true;
        float loss[3];
        char name[128];
        snprintf(name, sizeof name, "sanitize: 3 trainer steps, %s", runs[r].name);
        int rc = train_losses_with(&m, "cuda", o, 3, loss);
        CHECK(rc == 0 && isfinite(loss[2]), name, "rc %d (%s), loss %g", rc, rc < 0 ? fu_error() : "", loss[2]);
    }
    check_prefetch(&m);
    check_handoff(&m);
    fu_model_free(&m);
    return check_done();
}

int main(int argc, char **argv) {
    char why[160], device[256];
    if (!fu_cuda_device_count(why, sizeof why)) {
        printf("skip - cuda backend: no CUDA device (%s)\n", why);
        return 0;
    }
    if (fu_cuda_device_name(device, sizeof device) == 0) printf("# device: %s\n", device);
    fu_comm one; // a world of one process, for NCCL
    if (fu_comm_init(&one, &argc, &argv) < 0 || one.size != 1) {
        printf("not ok - a world of one process: %s\n", fu_error());
        return 1;
    }
    if (argc > 1 && strcmp(argv[1], "--bench") == 0) return bench(&one);
    if (argc > 1 && strcmp(argv[1], "--sanitize") == 0) return sanitize_run();
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
        compare(name, &m, 3, 11 + i, false, TOL);
        free(m.ops);
    }
    check_too_large();
    static const int sizes[] = {32, 64};
    for (size_t i = 0; i < sizeof sizes / sizeof *sizes; i++) {
        fu_model m;
        char name[64];
        snprintf(name, sizeof name, "MedicalCNN 4x3x%dx%d", sizes[i], sizes[i]);
        if (!CHECK(fu_medicalcnn(&m, sizes[i], sizes[i]) == 0, name, "%s", fu_error())) continue;
        compare(name, &m, 4, 42, true, TOL);
        if (sizes[i] == 64) {
            compare_amp("MedicalCNN 4x3x64x64, amp bf16", &m, 4, 42, FU_AMP_BF16);
            compare_amp("MedicalCNN 4x3x64x64, amp fp16", &m, 4, 42, FU_AMP_FP16);
            check_determinism(&m, 4);
            check_fusion(&m, 4);
            check_reuse(&m, 4);
            check_conv_algos(&m, 4);
            check_smaller_batch(&m);
            check_out_of_memory(&m);
            check_training(&m);
            static const fu_amp amps[] = {FU_AMP_OFF, FU_AMP_FP16, FU_AMP_BF16};
            check_stages("cuda", &m, amps, quick() ? 2 : 3);
            check_pipe(&m);
            check_pipe_nccl(&one, &m);
            check_resident(&m);
            check_resident_trainer(&m);
            check_kept_figures();
            check_loss_scaling(&m);
            check_prefetch(&m);
            check_handoff(&m);
            check_profile(&m);
        }
        fu_model_free(&m);
    }
    check_dist("cuda", 64);
    check_overflow_agreement(32);
    check_nccl(&one, 64);
    return check_done();
}
