// The data-parallel hooks (backend.h's fu_dist_hooks) in the ref and cpu
// backends. Two ranks are two threads of this process, each with its own
// backend planned for its part of the batch; their `sum` hook meets at a
// barrier and adds the ranks' vectors in rank order. Against one backend on
// the whole batch (same parameters, state and images; sync-BN in a world of
// one rank, so that both run the same BN code):
//   - sync-BN: running mean/var after the step (and every rank's the same
//     bytes), logits, loss = sum_r share_r * loss_r, and gradients: full ==
//     sum_r share_r * grads_r, share_r = W_r / W (W_r: the class weights of
//     rank r's labels, each rank's loss being normalised by its own W_r);
//   - splits 4+4 and 5+3 (uneven: the last batch of an epoch);
//   - grads_ready: every parameter exactly once, the values then final, the
//     same order on every rank and call;
//   - hooks without `sum` leave every byte as it was; sync-BN on one rank
//     against plain BN; a failing sum fails the pass.
// The mathematics also in double on the reference network (1e-9).
#include "check.h"
#include "sim_ranks.h"

#include "core/error.h"
#include "core/rng.h"
#include "nn/backend.h"
#include "nn/model.h"
#include "nn/ref_net.h"

#include <math.h>
#include <omp.h>
#include <pthread.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#define BATCH 8

// One training step's inputs and what it gives.
typedef struct {
    fu_backend *b;
    int n;             // images
    const float *x;    // (n, 3, H, W)
    const int *labels; // (n)
    const float *params, *cw;
    float *state, *grads, *logits, loss;
    int64_t *counts;
    int threads; // OpenMP threads of the thread that runs it
    int rc;
    char err[256];
} step;

static void step_alloc(step *s, const fu_model *m, int n, const float *state0) {
    s->n = n;
    s->state = malloc(m->n_state * sizeof(float));
    memcpy(s->state, state0, m->n_state * sizeof(float));
    s->counts = calloc(m->n_counts, sizeof(int64_t));
    s->grads = malloc(m->n_params * sizeof(float));
    memset(s->grads, 0xff, m->n_params * sizeof(float)); // NaN: backward must overwrite every one
    s->logits = malloc((size_t)n * m->classes * sizeof(float));
}

static void step_free(step *s) {
    if (s->b) fu_backend_destroy(s->b);
    free(s->state), free(s->counts), free(s->grads), free(s->logits);
}

// Training forward (BN on batch statistics, dropout off: masks would be
// drawn per rank), the logits, backward.
static void *run_step(void *arg) {
    step *s = arg;
    const fu_model *m = s->b->m;
    omp_set_num_threads(s->threads);
    fu_pass train = {.train = true, .seed = 5, .step = 1};
    s->rc = s->b->forward(s->b, s->n, s->params, s->state, s->counts, s->x, s->labels, s->cw, &train, &s->loss);
    if (s->rc == 0) memcpy(s->logits, s->b->logits(s->b), (size_t)s->n * m->classes * sizeof(float));
    if (s->rc == 0) s->rc = s->b->backward(s->b, s->params, NULL, s->grads);
    if (s->rc < 0) snprintf(s->err, sizeof s->err, "%s", fu_error());
    return NULL;
}

// ---- comparisons -----------------------------------------------------------------

static double l2(size_t n, const float *a) {
    double s = 0;
    for (size_t i = 0; i < n; i++) s += (double)a[i] * a[i];
    return sqrt(s);
}

// ||a - b||
static double dist(size_t n, const double *a, const float *b) {
    double s = 0;
    for (size_t i = 0; i < n; i++) s += (a[i] - b[i]) * (a[i] - b[i]);
    return sqrt(s);
}

typedef struct {
    const char *backend;
    int h, w;
    double tol_state, tol_logits, tol_grad;
    double tol_one; // all gradients, sync-BN on one rank against plain BN
} setup;

typedef struct {
    fu_model m;
    float *params, *state, *x, cw[2];
    int labels[BATCH];
} problem;

static void problem_make(problem *p, int h, int w) {
    fu_medicalcnn(&p->m, h, w);
    const fu_model *m = &p->m;
    p->params = malloc(m->n_params * sizeof(float));
    p->state = malloc(m->n_state * sizeof(float));
    fu_rng r = sim_weights(m, p->params, p->state);
    size_t nx = (size_t)BATCH * 3 * h * w;
    p->x = malloc(nx * sizeof(float));
    for (size_t i = 0; i < nx; i++) p->x[i] = (float)fu_rng_normal(&r);
    static const int labels[BATCH] = {0, 1, 1, 0, 1, 1, 1, 0};
    memcpy(p->labels, labels, sizeof labels);
    p->cw[0] = 0.7f, p->cw[1] = 0.3f; // unequal: ranks' shares differ from their image counts
}

static void problem_free(problem *p) {
    free(p->params), free(p->state), free(p->x);
    fu_model_free(&p->m);
}

// Ranks run one thread each, the full batch both cores.
static int make_backend(const setup *su, const fu_model *m, int batch, int threads, fu_backend **b) {
    return fu_backend_create(su->backend, m, &(fu_backend_opts){.batch = batch, .threads = threads}, b);
}

// The whole batch on one backend with hooks h (NULL: none); log: what
// grads_ready records, or NULL.
static int run_full(const setup *su, const problem *p, const fu_dist_hooks *h, ready_log *log, step *s) {
    step_alloc(s, &p->m, BATCH, p->state);
    s->threads = 2;
    if (make_backend(su, &p->m, BATCH, s->threads, &s->b) < 0) {
        snprintf(s->err, sizeof s->err, "%s", fu_error());
        return -1;
    }
    if (log) log_init(log, p->m.n_params, s->grads);
    s->b->dist = h;
    s->x = p->x, s->labels = p->labels, s->params = p->params, s->cw = p->cw;
    run_step(s);
    return s->rc;
}

static bool same_bytes(const fu_model *m, const step *a, const step *b) {
    return a->loss == b->loss && !memcmp(a->grads, b->grads, m->n_params * sizeof(float)) &&
           !memcmp(a->state, b->state, m->n_state * sizeof(float)) &&
           !memcmp(a->logits, b->logits, (size_t)a->n * m->classes * sizeof(float)) &&
           !memcmp(a->counts, b->counts, m->n_counts * sizeof(int64_t));
}

// The split part[0] + part[1] = BATCH on two ranks with sync-BN and
// grads_ready, against the full batch `full`.
static void check_split(const setup *su, const problem *p, const step *full, const ready_log *full_log,
                        const int part[RANKS]) {
    const fu_model *m = &p->m;
    char name[160], why[160];
    world *w = world_make(RANKS);
    step s[RANKS] = {0};
    rank_ctx ctx[RANKS];
    ready_log log[RANKS];
    fu_dist_hooks hooks[RANKS];
    pthread_t th[RANKS];
    double share[RANKS], wsum = 0;
    int at = 0;
    bool made = true;
    for (int r = 0; r < RANKS; r++) {
        step_alloc(&s[r], m, part[r], p->state);
        s[r].threads = 1;
        made &= make_backend(su, m, part[r], s[r].threads, &s[r].b) == 0;
        if (!made) break;
        s[r].x = p->x + (size_t)at * 3 * m->height * m->width;
        s[r].labels = p->labels + at;
        s[r].params = p->params, s[r].cw = p->cw;
        log_init(&log[r], m->n_params, s[r].grads);
        ctx[r] = (rank_ctx){.w = w, .rank = r, .log = &log[r]};
        hooks[r] = (fu_dist_hooks){.ctx = &ctx[r], .sum = world_sum, .grads_ready = log_ready};
        s[r].b->dist = &hooks[r];
        share[r] = 0;
        for (int i = 0; i < part[r]; i++) share[r] += p->cw[p->labels[at + i]];
        wsum += share[r];
        at += part[r];
    }
    snprintf(name, sizeof name, "%s %dx%d, ranks %d+%d: steps run", su->backend, m->width, m->height, part[0],
             part[1]);
    if (!made) {
        CHECK(0, name, "%s", fu_error());
        return;
    }
    for (int r = 0; r < RANKS; r++) pthread_create(&th[r], NULL, run_step, &s[r]);
    for (int r = 0; r < RANKS; r++) pthread_join(th[r], NULL);
    if (!CHECK(s[0].rc == 0 && s[1].rc == 0, name, "%s | %s", s[0].err, s[1].err)) return;
    for (int r = 0; r < RANKS; r++) share[r] /= wsum;

    // running stats: every rank's the same bytes, and the full batch's
    const char *where;
    double e_state = worst_state(m, s[0].state, full->state, &where);
    bool ranks_same = !memcmp(s[0].state, s[1].state, m->n_state * sizeof(float));
    bool counts = true;
    for (size_t i = 0; i < m->n_counts; i++) counts &= s[0].counts[i] == 1 && s[1].counts[i] == 1;
    snprintf(name, sizeof name,
             "%s %dx%d, ranks %d+%d: running mean/var as the full batch's (%.1e), same on every rank", su->backend,
             m->width, m->height, part[0], part[1], e_state);
    CHECK(e_state <= su->tol_state && ranks_same && counts, name, "worst %.3g at %s; ranks %s; counts %s", e_state,
          where, ranks_same ? "agree" : "differ", counts ? "ok" : "wrong");

    // logits and loss
    size_t nl = (size_t)BATCH * m->classes;
    float *logits = malloc(nl * sizeof(float));
    memcpy(logits, s[0].logits, (size_t)part[0] * m->classes * sizeof(float));
    memcpy(logits + (size_t)part[0] * m->classes, s[1].logits, (size_t)part[1] * m->classes * sizeof(float));
    double e_logits = rel_ff(nl, logits, full->logits);
    double loss = share[0] * s[0].loss + share[1] * s[1].loss, e_loss = fabs(loss - full->loss) / fabs(full->loss);
    snprintf(name, sizeof name, "%s %dx%d, ranks %d+%d: logits (%.1e), loss = sum share_r loss_r (%.1e)", su->backend,
             m->width, m->height, part[0], part[1], e_logits, e_loss);
    CHECK(e_logits <= su->tol_logits && e_loss <= su->tol_logits, name, "relative errors %.3g, %.3g", e_logits,
          e_loss);

    // gradients per tensor: full == sum_r share_r * grads_r, relative to the
    // larger of |full| and the summands' sum_r share_r |grads_r|: a linear
    // bias feeding a BatchNorm has a zero gradient (rounding noise) to which
    // the ranks' parts add up by cancelling.
    double e_grad = 0;
    const char *worst = "";
    double *sum = malloc(m->n_params * sizeof(double));
    for (size_t i = 0; i < m->n_params; i++) sum[i] = share[0] * s[0].grads[i] + share[1] * s[1].grads[i];
    for (int t = 0; t < m->n_tensors; t++) {
        const fu_tensor *ts = &m->tensors[t];
        if (ts->buffer != FU_BUF_PARAMS) continue;
        size_t k = ts->numel, o = ts->offset;
        double parts = share[0] * l2(k, s[0].grads + o) + share[1] * l2(k, s[1].grads + o);
        double den = fmax(l2(k, full->grads + o), parts), d = dist(k, sum + o, full->grads + o);
        double e = den > 0 ? d / den : d;
        if (e > e_grad) e_grad = e, worst = ts->name;
    }
    snprintf(name, sizeof name, "%s %dx%d, ranks %d+%d: full-batch gradients = sum share_r * grads_r (worst %.1e)",
             su->backend, m->width, m->height, part[0], part[1], e_grad);
    CHECK(e_grad <= su->tol_grad, name, "worst %.3g at %s", e_grad, worst);

    // grads_ready
    bool ok = true;
    for (int r = 0; r < RANKS && ok; r++) ok = ready_ok(&log[r], s[r].grads, why, sizeof why);
    snprintf(name, sizeof name, "%s, ranks %d+%d: grads_ready covers every parameter once, values final when announced",
             su->backend, part[0], part[1]);
    CHECK(ok, name, "%s", why);
    snprintf(name, sizeof name, "%s, ranks %d+%d: grads_ready in the same order on every rank and call (%d ranges)",
             su->backend, part[0], part[1], log[0].n_order);
    CHECK(same_order(&log[0], &log[1]) && same_order(&log[0], full_log), name, "orders differ (%d, %d, %d ranges)",
          log[0].n_order, log[1].n_order, full_log->n_order);
    int bns = 0;
    for (int i = 0; i < m->n_ops; i++) bns += m->ops[i].kind == FU_OP_BN;
    snprintf(name, sizeof name, "%s, ranks %d+%d: sum called once per BN in forward and once in backward", su->backend,
             part[0], part[1]);
    CHECK(w->calls[0] == 2 * bns && w->calls[1] == 2 * bns, name, "%d and %d calls for %d BNs", w->calls[0],
          w->calls[1], bns);

    free(logits), free(sum);
    for (int r = 0; r < RANKS; r++) step_free(&s[r]), log_free(&log[r]);
    world_free(w);
}

// A failing sum: the forward fails with its message.
static int fail_sum(void *ctx, double *v, int n) { return fu_fail("comm", "the peer is gone"); }

static void check_backend(const setup *su) {
    problem p;
    problem_make(&p, su->h, su->w);
    const fu_model *m = &p.m;
    char name[200], why[160] = "";
    // plain: no hooks; ready: grads_ready only; one: sync-BN in a world of
    // one rank (the full batch the splits are measured against)
    step plain = {0}, ready = {0}, one = {0};
    ready_log full_log;
    rank_ctx ready_ctx = {.log = &full_log};
    world *w1 = world_make(1);
    rank_ctx one_ctx = {.w = w1};
    fu_dist_hooks only_ready = {.ctx = &ready_ctx, .grads_ready = log_ready};
    fu_dist_hooks sync1 = {.ctx = &one_ctx, .sum = world_sum};
    snprintf(name, sizeof name, "%s %dx%d: full batch runs", su->backend, su->w, su->h);
    bool ok = run_full(su, &p, NULL, NULL, &plain) == 0 && run_full(su, &p, &only_ready, &full_log, &ready) == 0 &&
              run_full(su, &p, &sync1, NULL, &one) == 0;
    if (!CHECK(ok, name, "%s%s%s", plain.err, ready.err, one.err)) return;
    snprintf(name, sizeof name, "%s: hooks without sum (grads_ready only) change no byte", su->backend);
    CHECK(same_bytes(m, &plain, &ready), name, "they differ");
    snprintf(name, sizeof name, "%s, one process: grads_ready covers every parameter once, values final", su->backend);
    CHECK(ready_ok(&full_log, ready.grads, why, sizeof why), name, "%s", why);

    // Sync-BN on one rank is plain BN computed another way (sums in double
    // rather than oneDNN's statistics): forward to rounding; gradients too,
    // but for float rounding behind training-mode BNs over 8 values, which
    // moves cpu gradients by ~1% against the reference backend just the same.
    const char *where;
    double e_state = worst_state(m, one.state, plain.state, &where);
    double e_logits = rel_ff((size_t)BATCH * m->classes, one.logits, plain.logits);
    double e_grads = rel_ff(m->n_params, one.grads, plain.grads);
    snprintf(name, sizeof name,
             "%s: sync-BN on one rank = plain BN (running stats %.1e, logits %.1e, all gradients %.1e)", su->backend,
             e_state, e_logits, e_grads);
    CHECK(e_state <= su->tol_state && e_logits <= su->tol_logits && e_grads <= su->tol_one, name,
          "running stats %.3g (%s), logits %.3g, gradients %.3g", e_state, where, e_logits, e_grads);

    check_split(su, &p, &one, &full_log, (int[RANKS]){4, 4});
    check_split(su, &p, &one, &full_log, (int[RANKS]){5, 3});

    fu_dist_hooks broken = {.sum = fail_sum};
    step f = {0};
    snprintf(name, sizeof name, "%s: a failing sum fails the forward with its message", su->backend);
    int rcode = run_full(su, &p, &broken, NULL, &f);
    CHECK(rcode < 0 && strstr(f.err, "the peer is gone") && strstr(f.err, "sync-BN"), name, "rc %d, '%s'", rcode,
          f.err);
    step_free(&f);
    step_free(&plain), step_free(&ready), step_free(&one), log_free(&full_log);
    world_free(w1);
    problem_free(&p);
}

// ---- the mathematics in double --------------------------------------------------

typedef struct {
    fu_ref_net_f64 net;
    int n;
    const double *x, *params, *cw;
    const int *labels;
    double *state, *grads, loss;
    int64_t *counts;
    int threads, rc;
} dstep;

static void *run_dstep(void *arg) {
    dstep *s = arg;
    omp_set_num_threads(s->threads);
    fu_pass train = {.train = true};
    s->rc = fu_ref_forward_f64(&s->net, s->n, s->params, s->state, s->counts, s->x, s->labels, s->cw, &train,
                               &s->loss);
    if (s->rc == 0) s->rc = fu_ref_backward_f64(&s->net, s->params, NULL, s->grads);
    return NULL;
}

// The reference network in double, ranks 5+3 against the full batch:
// exact but for rounding (gradients 1e-9 relative to the largest tensor's).
static void check_double(void) {
    problem p;
    problem_make(&p, 32, 32);
    const fu_model *m = &p.m;
    size_t nx = (size_t)BATCH * 3 * 32 * 32;
    double *params = malloc(m->n_params * sizeof(double)), *x = malloc(nx * sizeof(double)), cw[2] = {0.7, 0.3};
    for (size_t i = 0; i < m->n_params; i++) params[i] = p.params[i];
    for (size_t i = 0; i < nx; i++) x[i] = p.x[i];
    dstep s[RANKS + 1];
    int part[RANKS + 1] = {5, 3, BATCH}, at[RANKS + 1] = {0, 5, 0};
    world *w = world_make(RANKS);
    rank_ctx ctx[RANKS];
    bool ok = true;
    for (int r = 0; r <= RANKS; r++) {
        s[r] = (dstep){.n = part[r], .x = x + (size_t)at[r] * 3 * 32 * 32, .params = params, .cw = cw,
                       .labels = p.labels + at[r], .threads = r < RANKS ? 1 : 2};
        s[r].state = malloc(m->n_state * sizeof(double));
        for (size_t i = 0; i < m->n_state; i++) s[r].state[i] = p.state[i];
        s[r].grads = malloc(m->n_params * sizeof(double));
        s[r].counts = calloc(m->n_counts, sizeof(int64_t));
        ok &= fu_ref_net_init_f64(&s[r].net, m, part[r]) == 0;
        if (r < RANKS) {
            ctx[r] = (rank_ctx){.w = w, .rank = r};
            s[r].net.dist_ctx = &ctx[r];
            s[r].net.dist_sum = world_sum;
        }
    }
    pthread_t th[RANKS];
    for (int r = 0; r < RANKS; r++) pthread_create(&th[r], NULL, run_dstep, &s[r]);
    for (int r = 0; r < RANKS; r++) pthread_join(th[r], NULL);
    run_dstep(&s[RANKS]);
    ok &= s[0].rc == 0 && s[1].rc == 0 && s[2].rc == 0;
    if (CHECK(ok, "ref in double, ranks 5+3: steps run", "%s", fu_error())) {
        double wr[RANKS] = {0, 0};
        for (int r = 0; r < RANKS; r++)
            for (int i = 0; i < part[r]; i++) wr[r] += cw[p.labels[at[r] + i]];
        double a0 = wr[0] / (wr[0] + wr[1]), a1 = wr[1] / (wr[0] + wr[1]);
        double num = 0, den = 0, big = 0, state = 0, sden = 0;
        for (size_t i = 0; i < m->n_params; i++) {
            double d = a0 * s[0].grads[i] + a1 * s[1].grads[i] - s[2].grads[i];
            num += d * d, den += s[2].grads[i] * s[2].grads[i];
            big = fmax(big, fabs(d) / (fabs(s[2].grads[i]) + 1e-6));
        }
        for (size_t i = 0; i < m->n_state; i++) {
            state += (s[0].state[i] - s[2].state[i]) * (s[0].state[i] - s[2].state[i]);
            sden += s[2].state[i] * s[2].state[i];
        }
        double loss = a0 * s[0].loss + a1 * s[1].loss;
        CHECK(sqrt(num / den) <= 1e-9 && sqrt(state / sden) <= 1e-12 && fabs(loss - s[2].loss) <= 1e-12,
              "ref in double, ranks 5+3: gradients, running stats and loss as the full batch's",
              "gradients %.3g (largest element %.3g), running stats %.3g, loss %.3g", sqrt(num / den), big,
              sqrt(state / sden), fabs(loss - s[2].loss));
    }
    for (int r = 0; r <= RANKS; r++) {
        fu_ref_net_free_f64(&s[r].net);
        free(s[r].state), free(s[r].grads), free(s[r].counts);
    }
    world_free(w);
    free(params), free(x);
    problem_free(&p);
}

int main(void) {
    alarm(900); // a rank stuck at the barrier fails the test rather than hanging it
    check_double();
    check_backend(&(setup){.backend = "ref", .h = 32, .w = 32, .tol_state = 1e-5, .tol_logits = 1e-4, .tol_grad = 1e-4,
                           .tol_one = 1e-6});
    check_backend(&(setup){.backend = "cpu", .h = 64, .w = 64, .tol_state = 1e-5, .tol_logits = 1e-4, .tol_grad = 1e-4,
                           .tol_one = 3e-2});
    return check_done();
}
