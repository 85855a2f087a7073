// Model-parallel stages on the cpu backend (lib/nn/dnnl_net.c): MedicalCNN
// cut into stages (nn/stages.h), run as a chain (each stage's output feeds
// the next; backward from the loss, each stage's input gradient becomes the
// output gradient of the stage before), against the whole model on the same
// backend: loss, logits, every parameter gradient, BN running statistics,
// num_batches_tracked and eval logits. The cuts: balanced into 2, 3 and 4
// (stages ending at a residual add, starting with its ReLU), and by hand
// (ending at a fused BN+ReLU, at the pooled vector, inside the fc head after
// a dropout). Each stage's input gradient is also checked against the
// reference backend's for the same stage, input and output gradient; then
// --amp bf16 (skipped without AVX512-BF16), the data-parallel hooks on a
// chain (sync-BN, grads_ready once per parameter) and the refusals.
#include "check.h"

#include "core/error.h"
#include "core/rng.h"
#include "nn/backend.h"
#include "nn/model.h"
#include "nn/stages.h"

#include <math.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#define N 4
#define SIDE 64

typedef struct {
    float loss, logits[N * 2], eval[N * 2];
    float *grads, *state;
    int64_t *counts;
    float *in_grad[FU_MAX_STAGES], *in_x[FU_MAX_STAGES]; // chains: each stage's input gradient and input (NCHW)
    size_t in_numel[FU_MAX_STAGES];
} run_out;

typedef struct {
    const fu_model *m;
    const float *params, *state0, *x;
    const int *labels;
    const float *cw;
    fu_amp amp;
    const fu_dist_hooks *dist; // per stage (NULL: none)
    bool no_eval;              // training step only
} setup;

static void out_alloc(const setup *s, run_out *o) {
    memset(o, 0, sizeof *o);
    o->grads = calloc(s->m->n_params, sizeof(float));
    o->state = malloc(s->m->n_state * sizeof(float));
    o->counts = calloc(s->m->n_counts, sizeof(int64_t));
    memcpy(o->state, s->state0, s->m->n_state * sizeof(float));
}

static void out_free(run_out *o) {
    free(o->grads), free(o->state), free(o->counts);
    for (int i = 0; i < FU_MAX_STAGES; i++)
        free(o->in_grad[i]), free(o->in_x[i]);
}

static const fu_pass train = {.train = true, .dropout = true, .seed = 7, .step = 3}, eval = {0};

// A training step and an eval forward of the stages st[0..k) chained on
// `backend` (k = 1, the whole model: st NULL).
static int run_chain(const setup *s, const char *backend, const fu_stage *st, int k, run_out *o) {
    const fu_model *m = s->m;
    fu_model sm[FU_MAX_STAGES];
    fu_backend *b[FU_MAX_STAGES] = {0};
    fu_stage whole = {.first = 0, .last = m->n_ops - 1};
    bool cut = st != NULL;
    if (!cut)
        st = &whole, k = 1;
    out_alloc(s, o);
    int rc = 0, made = 0; // stage models made
    for (; rc == 0 && made < k; made++) {
        if (cut && fu_model_stage(m, &st[made], &sm[made]) < 0)
            break;
        rc = fu_backend_create(backend, cut ? &sm[made] : m,
                               &(fu_backend_opts){.batch = N, .threads = 2, .amp = s->amp}, &b[made]);
        if (rc == 0)
            b[made]->dist = s->dist ? &s->dist[made] : NULL;
    }
    if (made < k)
        rc = -1;
    float *eval_state = malloc(m->n_state * sizeof(float));
    const float *in = s->x;
    for (int j = 0; rc == 0 && j < k; j++) { // training forward
        o->in_numel[j] = fu_op_numel(cut ? &sm[j] : m, 0, N);
        o->in_x[j] = malloc(o->in_numel[j] * sizeof(float));
        memcpy(o->in_x[j], in, o->in_numel[j] * sizeof(float));
        rc = b[j]->forward(b[j], N, s->params + st[j].param0, o->state + st[j].state0, o->counts + st[j].count0, in,
                           s->labels, s->cw, &train, j == k - 1 ? &o->loss : NULL);
        in = rc == 0 ? b[j]->logits(b[j]) : NULL;
    }
    if (rc == 0)
        memcpy(o->logits, in, sizeof o->logits);
    const float *dy = NULL;
    for (int j = k - 1; rc == 0 && j >= 0; j--) { // backward
        rc = b[j]->backward(b[j], s->params + st[j].param0, dy, o->grads + st[j].param0);
        dy = rc == 0 ? b[j]->input_grad(b[j]) : NULL;
        if (rc == 0 && (j > 0) != (dy != NULL))
            rc = fu_fail("test", "stage %d: input_grad %s", j, dy ? "given for the image" : "missing");
        if (rc == 0 && dy) {
            o->in_grad[j] = malloc(o->in_numel[j] * sizeof(float));
            memcpy(o->in_grad[j], dy, o->in_numel[j] * sizeof(float));
        }
    }
    if (rc == 0)
        memcpy(eval_state, o->state, m->n_state * sizeof(float));
    in = s->x;
    for (int j = 0; rc == 0 && !s->no_eval && j < k; j++) { // eval forward, no labels
        rc = b[j]->forward(b[j], N, s->params + st[j].param0, eval_state + st[j].state0, o->counts + st[j].count0, in,
                           NULL, NULL, &eval, NULL);
        in = rc == 0 ? b[j]->logits(b[j]) : NULL;
    }
    if (rc == 0 && !s->no_eval)
        memcpy(o->eval, in, sizeof o->eval);
    for (int j = 0; j < made; j++) {
        fu_backend_destroy(b[j]);
        if (cut)
            fu_model_free(&sm[j]);
    }
    free(eval_state);
    return rc;
}

static double rel_err(size_t n, const float *a, const float *ref) {
    double num = 0, den = 0;
    for (size_t i = 0; i < n; i++)
        num += ((double)a[i] - ref[i]) * ((double)a[i] - ref[i]), den += (double)ref[i] * ref[i];
    return den > 0 ? sqrt(num / den) : sqrt(num);
}

// The largest relative L2 error of one parameter tensor's gradient (a
// linear bias before a training-mode BN has an exactly zero one: measured
// against at least 1e-6 of the whole gradient's norm).
static double worst_tensor(const fu_model *m, const float *g, const float *ref, char where[80]) {
    double all = 0, worst = 0;
    for (size_t i = 0; i < m->n_params; i++)
        all += (double)ref[i] * ref[i];
    for (int t = 0; t < m->n_tensors; t++) {
        const fu_tensor *tn = &m->tensors[t];
        if (tn->buffer != FU_BUF_PARAMS)
            continue;
        double num = 0, den = 0;
        for (size_t i = tn->offset; i < tn->offset + tn->numel; i++)
            num += ((double)g[i] - ref[i]) * ((double)g[i] - ref[i]), den += (double)ref[i] * ref[i];
        double e = sqrt(num / fmax(den, 1e-12 * all));
        if (e > worst) {
            worst = e;
            snprintf(where, 80, "%s", tn->name);
        }
    }
    return worst;
}

// The chain against the whole model; tol: for everything but the counts.
// Returns the worst relative error.
static double compare(const char *name, const fu_model *m, const run_out *c, const run_out *w, double tol) {
    char where[80] = "", what[256];
    double e_loss = fabs((double)c->loss - w->loss) / fabs(w->loss), e_logits = rel_err(N * 2, c->logits, w->logits),
           e_eval = rel_err(N * 2, c->eval, w->eval), e_grads = worst_tensor(m, c->grads, w->grads, where),
           e_state = rel_err(m->n_state, c->state, w->state);
    bool counts = !memcmp(c->counts, w->counts, m->n_counts * sizeof(int64_t));
    double worst = fmax(fmax(fmax(e_loss, e_logits), fmax(e_eval, e_grads)), e_state);
    snprintf(what, sizeof what,
             "%s: as the whole model (loss %.1e, logits %.1e, eval %.1e, worst gradient %.1e, running stats %.1e)", name,
             e_loss, e_logits, e_eval, e_grads, e_state);
    CHECK(worst <= tol && counts, what, "loss %.3g, logits %.3g, eval %.3g, gradient %.3g at %s, state %.3g, counts %s",
          e_loss, e_logits, e_eval, e_grads, where, e_state, counts ? "equal" : "differ");
    return worst;
}

// Each inner stage's input gradient on the reference backend (same stage
// input and output gradient as the cpu chain c): float rounding apart, equal.
static double check_input_grads(const char *name, const setup *s, const fu_stage *st, int k, const run_out *c) {
    const fu_model *m = s->m;
    double worst = 0;
    char what[256];
    for (int j = 1; j < k; j++) {
        fu_model sm;
        fu_backend *b = NULL;
        float *state = malloc(m->n_state * sizeof(float)), *grads = calloc(m->n_params, sizeof(float));
        int64_t *counts = calloc(m->n_counts, sizeof(int64_t));
        memcpy(state, s->state0, m->n_state * sizeof(float));
        int rc = fu_model_stage(m, &st[j], &sm);
        if (rc == 0) {
            rc = fu_backend_create("ref", &sm, &(fu_backend_opts){.batch = N, .threads = 2}, &b);
            const float *dy = j < k - 1 ? c->in_grad[j + 1] : NULL;
            float loss;
            if (rc == 0)
                rc = b->forward(b, N, s->params + st[j].param0, state + st[j].state0, counts + st[j].count0, c->in_x[j],
                                s->labels, s->cw, &train, &loss);
            if (rc == 0)
                rc = b->backward(b, s->params + st[j].param0, dy, grads + st[j].param0);
            if (rc == 0) {
                double e = rel_err(c->in_numel[j], c->in_grad[j], b->input_grad(b));
                worst = fmax(worst, e);
                snprintf(what, sizeof what, "%.120s: stage %d (%s) input gradient as the ref backend's (%.1e)", name,
                         j, st[j].name, e);
                CHECK(e <= 1e-3, what, "relative error %.3g", e);
            }
            fu_backend_destroy(b);
            fu_model_free(&sm);
        }
        if (rc < 0)
            CHECK(0, "reference stage runs", "%s", fu_error());
        free(state), free(grads), free(counts);
    }
    return worst;
}

// The cuts; the reference backend's input gradients (slow) and --amp bf16
// on the two with most kinds of crossing.
typedef struct {
    const char *name, *spec; // spec NULL: balanced into k
    int k;
    bool vs_ref, bf16;
} cut;

static const cut cuts[] = {
    {"2 stages (balanced)", NULL, 2, false, false},
    {"3 stages (balanced)", NULL, 3, false, false},
    {"4 stages (balanced)", NULL, 4, true, true},
    {"cut at the pooled vector", "stem,stage1,stage2|stage3_res,stage3_md,stage4_res|fc", 0, false, false},
    {"cut at a fused BN+ReLU, the pooled vector, inside the fc head",
     "stem,stage1,stage2,stage3_res,stage3_md|stage4_res|fc.0,fc.1|fc.4,fc.5,fc.8", 0, true, true},
};
#define HAND_CUT 4

static int make_cut(const fu_model *m, const cut *c, fu_stage *st, int *k) {
    if (!c->spec) {
        *k = c->k;
        return fu_stages_balanced(m, c->k, st);
    }
    return fu_stages_parse(m, c->spec, st, FU_MAX_STAGES, k);
}

// The cuts (all, or those marked bf16), chained, against the whole model;
// tol as compare's; ref: check input gradients where a cut is marked vs_ref.
static void check_cuts(const setup *s, const char *tag, double tol, bool all, bool ref) {
    run_out w;
    char what[256];
    if (!CHECK(run_chain(s, "cpu", NULL, 1, &w) == 0, tag, "whole model: %s", fu_error()))
        return;
    double worst = 0, worst_ref = 0;
    for (size_t i = 0; i < sizeof cuts / sizeof *cuts; i++) {
        fu_stage st[FU_MAX_STAGES];
        int k;
        run_out c;
        if (!all && !cuts[i].bf16)
            continue;
        snprintf(what, sizeof what, "%s, %s", tag, cuts[i].name);
        if (!CHECK(make_cut(s->m, &cuts[i], st, &k) == 0 && run_chain(s, "cpu", st, k, &c) == 0, what, "%s",
                   fu_error()))
            continue;
        worst = fmax(worst, compare(what, s->m, &c, &w, tol));
        if (cuts[i].vs_ref && ref)
            worst_ref = fmax(worst_ref, check_input_grads(what, s, st, k, &c));
        out_free(&c);
    }
    printf("# %s: worst relative error chain vs whole %.3g", tag, worst);
    if (ref)
        printf("; input gradients vs the ref backend %.3g", worst_ref);
    printf("\n");
    out_free(&w);
}

// Data-parallel hooks on one rank: sync-BN's sum over ranks is the identity;
// grads_ready counts how often each parameter of the whole model is
// reported (a stage reports offsets in its own range: base is its param0).
typedef struct {
    int *seen;
    size_t base;
} ready_log;

static int sum_one_rank(void *ctx, double *v, int n) {
    (void)ctx, (void)v, (void)n;
    return 0;
}

static void count_ready(void *ctx, size_t off, size_t len) {
    ready_log *r = ctx;
    for (size_t i = off; i < off + len; i++)
        r->seen[r->base + i]++;
}

static void check_hooks(setup s) {
    int *seen = calloc(s.m->n_params, sizeof *seen), *seen_w = calloc(s.m->n_params, sizeof *seen_w);
    fu_stage st[FU_MAX_STAGES];
    ready_log logs[FU_MAX_STAGES], log_w = {.seen = seen_w};
    fu_dist_hooks h[FU_MAX_STAGES], hw = {.ctx = &log_w, .sum = sum_one_rank, .grads_ready = count_ready};
    int k = 0;
    run_out c, w;
    s.no_eval = true; // sync-BN is training's
    s.dist = &hw;
    bool ok = run_chain(&s, "cpu", NULL, 1, &w) == 0 && make_cut(s.m, &cuts[HAND_CUT], st, &k) == 0;
    for (int j = 0; j < k; j++) {
        logs[j] = (ready_log){.seen = seen, .base = st[j].param0};
        h[j] = (fu_dist_hooks){.ctx = &logs[j], .sum = sum_one_rank, .grads_ready = count_ready};
    }
    s.dist = h;
    ok = ok && run_chain(&s, "cpu", st, k, &c) == 0;
    if (!CHECK(ok, "sync-BN hooks on a chain", "%s", fu_error()))
        return;
    compare("sync-BN hooks, cut at a fused BN+ReLU, the pooled vector, inside the fc head", s.m, &c, &w, 1e-5);
    bool once = true, once_w = true;
    for (size_t i = 0; i < s.m->n_params; i++)
        once &= seen[i] == 1, once_w &= seen_w[i] == 1;
    CHECK(once && once_w, "grads_ready reports every parameter of every stage exactly once",
          "the chain %s, the whole model %s", once ? "does" : "does not", once_w ? "does" : "does not");
    out_free(&c), out_free(&w);
    free(seen), free(seen_w);
}

// backward's output gradient: required before the loss, refused at it.
static void check_refusals(const fu_model *m, const setup *s) {
    fu_stage st[FU_MAX_STAGES];
    fu_model sm;
    fu_backend *b = NULL;
    float *grads = calloc(m->n_params, sizeof(float)), *state = malloc(m->n_state * sizeof(float)), dy[N * 2] = {0};
    int64_t *counts = calloc(m->n_counts, sizeof(int64_t));
    memcpy(state, s->state0, m->n_state * sizeof(float));
    int k;
    bool ok = make_cut(m, &cuts[0], st, &k) == 0 && fu_model_stage(m, &st[0], &sm) == 0 &&
              fu_backend_create("cpu", &sm, &(fu_backend_opts){.batch = N, .threads = 2}, &b) == 0 &&
              b->forward(b, N, s->params, state, counts, s->x, s->labels, s->cw, &train, NULL) == 0;
    int rc = ok ? b->backward(b, s->params, NULL, grads) : 0;
    CHECK(ok && rc < 0 && strstr(fu_error(), "needs its output's gradient"),
          "a stage before the loss: backward without dy is refused", "%s", fu_error());
    fu_backend_destroy(b);
    if (ok)
        fu_model_free(&sm);
    b = NULL;
    ok = fu_backend_create("cpu", m, &(fu_backend_opts){.batch = N, .threads = 2}, &b) == 0 &&
         b->forward(b, N, s->params, state, counts, s->x, s->labels, s->cw, &train, NULL) == 0;
    rc = ok ? b->backward(b, s->params, dy, grads) : 0;
    CHECK(ok && rc < 0 && strstr(fu_error(), "takes no output gradient"),
          "the whole model: backward with dy is refused", "%s", fu_error());
    CHECK(ok && b->input_grad(b) == NULL, "the whole model: no input gradient", "one is given");
    fu_backend_destroy(b);
    free(grads), free(state), free(counts);
}

int main(void) {
    fu_model m;
    if (!CHECK(fu_medicalcnn(&m, SIDE, SIDE) == 0, "MedicalCNN 64x64", "%s", fu_error()))
        return check_done();
    size_t nx = (size_t)N * 3 * SIDE * SIDE;
    float *params = malloc(m.n_params * sizeof(float)), *state = malloc(m.n_state * sizeof(float)),
          *x = malloc(nx * sizeof(float));
    int64_t *counts = calloc(m.n_counts, sizeof(int64_t));
    fu_model_init(&m, 42, params, state, counts);
    fu_rng r = fu_rng_make(42, 2, 0);
    for (size_t i = 0; i < nx; i++)
        x[i] = (float)fu_rng_normal(&r);
    int labels[N] = {0, 1, 1, 0};
    float cw[2] = {0.6f, 0.4f};
    setup s = {.m = &m, .params = params, .state0 = state, .x = x, .labels = labels, .cw = cw};
    check_cuts(&s, "fp32", 1e-5, true, true);
    check_hooks(s);
    check_refusals(&m, &s);
    fu_backend *probe = NULL;
    if (fu_backend_create("cpu", &m, &(fu_backend_opts){.batch = N, .threads = 2, .amp = FU_AMP_BF16}, &probe) < 0) {
        printf("skip - --amp bf16 stages: %s\n", fu_error());
    } else {
        fu_backend_destroy(probe);
        s.amp = FU_AMP_BF16;
        check_cuts(&s, "--amp bf16", 1e-3, false, false);
    }
    free(params), free(state), free(x), free(counts);
    fu_model_free(&m);
    return check_done();
}
