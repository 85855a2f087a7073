// Model parallelism on the reference backend: the cut (nn/stages.h) and the
// pipe of stages with micro-batches (nn/pipe.h).
//   - cuts: balanced ones cover the model, stage ranges tile the flat
//     buffers, boundaries are single tensors, compute is balanced; hand cuts
//     by module names, and every way to get them wrong;
//   - a chain of stage models (each stage's output fed to the next, each
//     input gradient back) computes the whole model's loss, logits,
//     gradients, BN state and counts bit for bit;
//   - the pipe backend: K = 2, 3 stages with one micro-batch equal the whole
//     model bit for bit; K stages with M micro-batches equal one stage with M
//     bit for bit, which equals M passes on their own with gradients weighed
//     by their class-weight shares; dropout masks of micro-batches are the
//     whole batch's; 2 trainer steps with 2 stages equal the plain trainer's;
//   - refusals: too few images per micro-batch, more stages than cuts, GPUs
//     that are not there, sync-BN.
#include "check.h"

#include "core/error.h"
#include "core/rng.h"
#include "nn/backend.h"
#include "nn/model.h"
#include "nn/pipe.h"
#include "nn/ref_net.h"
#include "nn/stages.h"
#include "nn/trainer.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>

#define SIZE 32
#define BATCH 8

// One model's buffers, and the inputs of a training pass.
typedef struct {
    float *params, *grads, *state;
    int64_t *counts;
    float logits[BATCH * 2];
    float loss;
} run_bufs;

static const fu_model *model(void) {
    static fu_model m;
    if (!m.ops && fu_medicalcnn(&m, SIZE, SIZE) < 0) abort();
    return &m;
}

static float x[BATCH * 3 * SIZE * SIZE];
static int labels[BATCH] = {0, 1, 1, 0, 1, 1, 1, 0};
static const float class_w[2] = {0.7f, 0.3f};

static void bufs_init(run_bufs *r) {
    const fu_model *m = model();
    r->params = malloc(m->n_params * sizeof(float));
    r->grads = calloc(m->n_params, sizeof(float));
    r->state = malloc(m->n_state * sizeof(float));
    r->counts = calloc(m->n_counts, sizeof(int64_t));
    fu_model_init(m, 3, r->params, r->state, r->counts);
}

static void bufs_free(run_bufs *r) { free(r->params), free(r->grads), free(r->state), free(r->counts); }

static bool same_bytes(const run_bufs *a, const run_bufs *b) {
    const fu_model *m = model();
    return memcmp(a->grads, b->grads, m->n_params * sizeof(float)) == 0 &&
           memcmp(a->state, b->state, m->n_state * sizeof(float)) == 0 &&
           memcmp(a->counts, b->counts, m->n_counts * sizeof(int64_t)) == 0 &&
           memcmp(a->logits, b->logits, sizeof a->logits) == 0 && a->loss == b->loss;
}

// Largest |a - b| / (max |b| + tiny) over the gradients.
static double grad_rel(const run_bufs *a, const run_bufs *b) {
    const fu_model *m = model();
    double diff = 0, scale = 1e-30;
    for (size_t i = 0; i < m->n_params; i++) {
        diff = fmax(diff, fabs((double)a->grads[i] - b->grads[i]));
        scale = fmax(scale, fabs((double)b->grads[i]));
    }
    return diff / scale;
}

// Cosine similarity of the two gradients.
static double grad_cos(const run_bufs *a, const run_bufs *b) {
    double ab = 0, aa = 0, bb = 0;
    for (size_t i = 0; i < model()->n_params; i++) {
        ab += (double)a->grads[i] * b->grads[i];
        aa += (double)a->grads[i] * a->grads[i];
        bb += (double)b->grads[i] * b->grads[i];
    }
    return ab / sqrt(aa * bb + 1e-300);
}

static const fu_pass train_pass = {.train = true, .dropout = true, .seed = 9, .step = 4};

// A training pass (forward + backward) of backend b on the batch.
static int train_on(fu_backend *b, run_bufs *r) {
    if (b->forward(b, BATCH, r->params, r->state, r->counts, x, labels, class_w, &train_pass, &r->loss) < 0) return -1;
    memcpy(r->logits, b->logits(b), sizeof r->logits);
    return b->backward(b, r->params, NULL, r->grads);
}

// The same on the whole model, once: what the stages must compute.
static const run_bufs *whole(void) {
    static run_bufs w;
    if (w.params) return &w;
    bufs_init(&w);
    fu_backend *b = NULL;
    fu_backend_opts o = {.batch = BATCH, .threads = 2};
    if (fu_backend_create("ref", model(), &o, &b) < 0 || train_on(b, &w) < 0) abort();
    fu_backend_destroy(b);
    return &w;
}

// ---- cuts -----------------------------------------------------------------------

static void test_balanced(void) {
    const fu_model *m = model();
    for (int k = 1; k <= 4; k++) {
        fu_stage st[4];
        char name[96];
        snprintf(name, sizeof name, "balanced %d stages tile ops and buffers", k);
        int rc = fu_stages_balanced(m, k, st);
        bool ok = rc == 0 && st[0].first == 0 && st[k - 1].last == m->n_ops - 1 && st[0].param0 == 0;
        double total = 0, largest = 0;
        for (int s = 0; ok && s < k; s++) {
            if (s > 0)
                ok = st[s].first == st[s - 1].last + 1 && fu_model_can_cut(m, st[s - 1].last) &&
                     st[s].param0 == st[s - 1].param0 + st[s - 1].n_params &&
                     st[s].state0 == st[s - 1].state0 + st[s - 1].n_state &&
                     st[s].count0 == st[s - 1].count0 + st[s - 1].n_counts;
            total += st[s].macs;
            largest = fmax(largest, st[s].macs);
        }
        ok = ok && st[k - 1].param0 + st[k - 1].n_params == m->n_params &&
             st[k - 1].state0 + st[k - 1].n_state == m->n_state && st[k - 1].count0 + st[k - 1].n_counts == m->n_counts;
        CHECK(ok, name, "rc %d: %s", rc, fu_error());
        // Blocks are the unit: the largest stage cannot be far above an even share.
        snprintf(name, sizeof name, "balanced %d stages: the largest has <= 1.35x an even share of the MACs", k);
        CHECK(rc == 0 && largest <= 1.35 * total / k, name, "largest %.3g of %.3g", largest, total);
    }
    fu_stage st[2];
    fu_stages_balanced(m, 2, st);
    CHECK(strncmp(st[0].name, "stem..", 6) == 0 && strstr(st[1].name, "..fc") != NULL, "stage names say their modules",
          "'%s' / '%s'", st[0].name, st[1].name);
    fu_stage many[FU_MAX_STAGES];
    CHECK(fu_stages_balanced(m, FU_MAX_STAGES + 1, many) < 0, "more stages than possible refused", "accepted");
}

static void test_parse(void) {
    const fu_model *m = model();
    fu_stage st[FU_MAX_STAGES];
    int k = 0;
    int rc = fu_stages_parse(m, "stem,stage1|stage2, stage3_res|stage3_md,stage4_res|fc", st, FU_MAX_STAGES, &k);
    CHECK(rc == 0 && k == 4 && strcmp(st[0].name, "stem..stage1") == 0 && strcmp(st[3].name, "fc") == 0 &&
              m->ops[st[3].first].kind == FU_OP_LINEAR && st[3].last == m->n_ops - 1,
          "hand cut by modules", "rc %d k %d '%s' '%s': %s", rc, k, st[0].name, st[3].name, fu_error());
    rc = fu_stages_parse(m, "stem,stage1,stage2,stage3_res.0,stage3_res.1|stage3_res.2,stage3_res.3,stage3_res.4,"
                            "stage3_res.5,stage3_md,stage4_res,fc", st, FU_MAX_STAGES, &k);
    CHECK(rc == 0 && k == 2 && strcmp(st[1].name, "stage3_res.2..fc") == 0, "hand cut between blocks",
          "rc %d '%s': %s", rc, k == 2 ? st[1].name : "", fu_error());
    struct {
        const char *spec, *says;
    } bad[] = {
        {"stem,stage1|stage2|stage3_res|stage3_md|stage4_res|fcc", "'fcc' names no module"},
        {"stem,stage1|stage2|stage3_res|stage3_md|fc", "'stage4_res.0' is in no stage"},
        {"stem,stage2|stage1|stage3_res,stage3_md,stage4_res,fc", "forward order"},
        {"stem,stage1,stage1|stage2,stage3_res,stage3_md,stage4_res,fc", "listed twice"},
        {"stem,stage1||stage2,stage3_res,stage3_md,stage4_res,fc", "empty module name"},
    };
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        rc = fu_stages_parse(m, bad[i].spec, st, FU_MAX_STAGES, &k);
        char name[96];
        snprintf(name, sizeof name, "bad cut refused: %s", bad[i].says);
        CHECK(rc < 0 && strstr(fu_error(), bad[i].says), name, "rc %d: '%s'", rc, fu_error());
    }
    int inside = -1;
    for (int i = 0; i < m->n_ops; i++)
        if (strcmp(m->ops[i].name, "stage1.0.conv1") == 0) inside = i;
    CHECK(inside > 0 && !fu_model_can_cut(m, inside), "no cut inside a block (the shortcut crosses)", "op %d", inside);
}

// The stage models' tensors are the whole model's, rebased.
static void test_stage_models(void) {
    const fu_model *m = model();
    fu_stage st[3];
    fu_stages_balanced(m, 3, st);
    int tensors = 0;
    bool ok = true;
    for (int s = 0; s < 3; s++) {
        fu_model sub;
        if (fu_model_stage(m, &st[s], &sub) < 0) {
            ok = false;
            break;
        }
        tensors += sub.n_tensors;
        for (int t = 0; t < sub.n_tensors; t++) {
            const fu_tensor *w = fu_model_find(m, sub.tensors[t].name);
            size_t base = w->buffer == FU_BUF_PARAMS ? st[s].param0 : w->buffer == FU_BUF_STATE ? st[s].state0 : st[s].count0;
            ok = ok && w && w->offset == sub.tensors[t].offset + base && w->numel == sub.tensors[t].numel;
        }
        ok = ok && sub.inner_input == (s > 0) && sub.op_base == (s ? st[s].first - 1 : 0) &&
             sub.ops[0].kind == FU_OP_INPUT && sub.ops[0].c == m->ops[sub.op_base].c;
        fu_model_free(&sub);
    }
    CHECK(ok && tensors == m->n_tensors, "stage models hold the whole model's tensors, rebased", "%d of %d tensors",
          tensors, m->n_tensors);
}

// ---- the chain and the pipe ------------------------------------------------------------

// Stage by stage on ref backends: the whole model's numbers, bit for bit.
static void test_chain(int k, const char *cuts) {
    const fu_model *m = model();
    const run_bufs *w = whole();
    run_bufs c;
    bufs_init(&c);
    fu_backend *bs[FU_MAX_STAGES] = {0};
    fu_model sub[FU_MAX_STAGES];
    fu_stage st[FU_MAX_STAGES];
    int rc = cuts ? fu_stages_parse(m, cuts, st, FU_MAX_STAGES, &k) : fu_stages_balanced(m, k, st);
    fu_backend_opts o = {.batch = BATCH, .threads = 2};
    for (int s = 0; rc == 0 && s < k; s++)
        if (fu_model_stage(m, &st[s], &sub[s]) < 0 || fu_backend_create("ref", &sub[s], &o, &bs[s]) < 0) rc = -1;
    for (int s = 0; rc == 0 && s < k; s++)
        rc = bs[s]->forward(bs[s], BATCH, c.params + st[s].param0, c.state + st[s].state0, c.counts + st[s].count0,
                            s ? bs[s - 1]->logits(bs[s - 1]) : x, labels, class_w, &train_pass, &c.loss);
    if (rc == 0) memcpy(c.logits, bs[k - 1]->logits(bs[k - 1]), sizeof c.logits);
    for (int s = k - 1; rc == 0 && s >= 0; s--)
        rc = bs[s]->backward(bs[s], c.params + st[s].param0, s < k - 1 ? bs[s + 1]->input_grad(bs[s + 1]) : NULL,
                             c.grads + st[s].param0);
    char name[128];
    snprintf(name, sizeof name, "%d stages (%s) chained = the whole model, bit for bit", k, cuts ? cuts : "balanced");
    CHECK(rc == 0 && same_bytes(&c, w), name, "rc %d (%s); loss %.9g vs %.9g, gradients %.3g", rc, fu_error(),
          c.loss, w->loss, grad_rel(&c, w));
    for (int s = 0; s < k; s++)
        if (bs[s]) fu_backend_destroy(bs[s]), fu_model_free(&sub[s]);
    bufs_free(&c);
}

static int pipe_make(int k, int micro, const char *cuts, fu_backend **b) {
    fu_pipe_opts po = {.backend = "ref", .stages = k, .micro_batches = micro, .cuts = cuts};
    fu_backend_opts o = {.batch = BATCH, .threads = 2};
    return fu_pipe_create(model(), &po, &o, b);
}

// A pipe's training pass into r.
static int pipe_run(int k, int micro, run_bufs *r) {
    fu_backend *b = NULL;
    int rc = pipe_make(k, micro, NULL, &b);
    if (rc == 0) rc = train_on(b, r);
    fu_backend_destroy(b);
    return rc;
}

static void test_pipe(void) {
    const fu_model *m = model();
    const run_bufs *w = whole();
    for (int k = 2; k <= 3; k++) {
        run_bufs p;
        bufs_init(&p);
        int prc = pipe_run(k, 1, &p);
        char name[96];
        snprintf(name, sizeof name, "pipe of %d stages, 1 micro-batch = the whole model, bit for bit", k);
        CHECK(prc == 0 && same_bytes(&p, w), name, "rc %d (%s), gradients %.3g", prc, fu_error(), grad_rel(&p, w));
        bufs_free(&p);
    }
    // M micro-batches: the same numbers whether the model is cut or not.
    run_bufs one, two;
    bufs_init(&one), bufs_init(&two);
    int rc1 = pipe_run(1, 4, &one), rc2 = pipe_run(2, 4, &two);
    CHECK(rc1 == 0 && rc2 == 0 && same_bytes(&one, &two), "2 stages x 4 micro-batches = 1 stage x 4, bit for bit",
          "rc %d %d (%s), gradients %.3g", rc1, rc2, fu_error(), grad_rel(&two, &one));
    // What M micro-batches compute: each micro-batch's pass on its own (BN
    // on its statistics, running stats updated in turn, dropout masks of
    // its images in the whole batch), gradients added weighed by each one's
    // share of the class weights, last micro-batch first.
    run_bufs half, parts;
    bufs_init(&half), bufs_init(&parts);
    int rc4 = pipe_run(2, 2, &half);
    fu_backend *bp = NULL;
    fu_backend_opts o4 = {.batch = BATCH / 2, .threads = 2};
    float *g[2] = {calloc(m->n_params, sizeof(float)), calloc(m->n_params, sizeof(float))}, loss[2];
    double wsum[2] = {0, 0};
    bool ok = fu_backend_create("ref", m, &o4, &bp) == 0;
    for (int j = 0; ok && j < 2; j++) {
        fu_pass pass = train_pass;
        pass.image0 = j * BATCH / 2;
        for (int i = 0; i < BATCH / 2; i++) wsum[j] += class_w[labels[pass.image0 + i]];
        ok = bp->forward(bp, BATCH / 2, parts.params, parts.state, parts.counts, x + (size_t)pass.image0 * 3 * SIZE * SIZE,
                         labels + pass.image0, class_w, &pass, &loss[j]) == 0 &&
             bp->backward(bp, parts.params, NULL, g[j]) == 0;
    }
    float share[2] = {(float)(wsum[0] / (wsum[0] + wsum[1])), (float)(wsum[1] / (wsum[0] + wsum[1]))};
    for (size_t i = 0; ok && i < m->n_params; i++) parts.grads[i] = share[1] * g[1][i], parts.grads[i] += share[0] * g[0][i];
    float ploss = (float)(share[0] * (double)loss[0] + share[1] * (double)loss[1]);
    CHECK(ok && rc4 == 0 && memcmp(half.grads, parts.grads, m->n_params * sizeof(float)) == 0 &&
              memcmp(half.state, parts.state, m->n_state * sizeof(float)) == 0 && fabsf(half.loss - ploss) <= 1e-6f,
          "2 micro-batches = 2 passes of 4 weighed by their class-weight shares", "rc %d (%s), gradients %.3g",
          rc4, fu_error(), grad_rel(&half, &parts));
    printf("# 2 micro-batches vs the whole batch: loss %.6f vs %.6f, gradient cosine %.4f\n", half.loss, w->loss,
           grad_cos(&half, w));
    fu_backend_destroy(bp);
    free(g[0]), free(g[1]);
    bufs_free(&half), bufs_free(&parts);
    CHECK(rc1 == 0 && one.counts[0] == 4 && w->counts[0] == 1, "BatchNorm counts a step's 4 micro-batches",
          "%lld", (long long)one.counts[0]);
    // Reruns: same bytes, whatever the threads' timing.
    bufs_free(&one), bufs_free(&two);
}

// Deferred BN: one update of the running statistics per batch, with the
// whole batch's statistics pooled from the micro-batches'. Where a BN's input
// does not depend on earlier BNs (the stem's), that is the unsplit model's
// update; deeper ones see inputs normalised per micro-batch. The counts are
// the unsplit model's; gradients and loss are per-micro-batch BN's, which it
// leaves alone.
static void test_deferred_bn(void) {
    const fu_model *m = model();
    const run_bufs *w = whole();
    run_bufs plain, deferred;
    bufs_init(&plain), bufs_init(&deferred);
    fu_backend *b = NULL;
    fu_pipe_opts po = {.backend = "ref", .stages = 2, .micro_batches = 2, .deferred_bn = true};
    fu_backend_opts o = {.batch = BATCH, .threads = 2};
    int rc = fu_pipe_create(m, &po, &o, &b);
    if (rc == 0) rc = train_on(b, &deferred);
    fu_backend_destroy(b);
    int rc2 = pipe_run(2, 2, &plain);
    const fu_tensor *mean = fu_model_find(m, "stem.1.running_mean"), *var = fu_model_find(m, "stem.1.running_var");
    double worst = 0;
    for (size_t c = 0; c < mean->numel; c++)
        for (int k = 0; k < 2; k++) {
            size_t i = (k ? var : mean)->offset + c;
            worst = fmax(worst, fabs((double)deferred.state[i] - w->state[i]) / fmax(1e-3, fabs(w->state[i])));
        }
    CHECK(rc == 0 && worst < 1e-5 && memcmp(deferred.counts, w->counts, m->n_counts * sizeof(int64_t)) == 0,
          "deferred BN, 2 micro-batches: the stem's running statistics and every count are the unsplit model's",
          "rc %d, worst %.3g", rc, worst);
    CHECK(rc == 0 && rc2 == 0 && memcmp(deferred.grads, plain.grads, m->n_params * sizeof(float)) == 0 &&
              memcmp(deferred.logits, plain.logits, sizeof plain.logits) == 0 && deferred.loss == plain.loss,
          "deferred BN: the same gradients and loss as per-micro-batch BN", "rc %d %d", rc, rc2);
    double apart = 0;
    for (size_t c = 0; c < mean->numel; c++)
        apart = fmax(apart, fabs((double)plain.state[var->offset + c] - w->state[var->offset + c]));
    CHECK(rc2 == 0 && apart > 1e-4 && plain.counts[0] == 2,
          "per-micro-batch BN's running statistics differ from the unsplit model's (the control)",
          "largest difference %.3g, count %lld", apart, (long long)plain.counts[0]);
    bufs_free(&plain), bufs_free(&deferred);
}

// Eval: per image, so micro-batches and stages change nothing.
static void test_pipe_eval(void) {
    const fu_model *m = model();
    run_bufs w;
    bufs_init(&w);
    fu_backend *b = NULL, *bw2 = NULL;
    fu_backend_opts o = {.batch = BATCH, .threads = 2};
    fu_pass eval = {.train = false};
    float lw = 0, lp = 0, logits[BATCH * 2];
    bool ok = pipe_make(3, 4, NULL, &b) == 0 && fu_backend_create("ref", m, &o, &bw2) == 0 &&
              bw2->forward(bw2, 7, w.params, w.state, w.counts, x, labels, class_w, &eval, &lw) == 0;
    if (ok) memcpy(logits, bw2->logits(bw2), 7 * 2 * sizeof(float));
    ok = ok && b->forward(b, 7, w.params, w.state, w.counts, x, labels, class_w, &eval, &lp) == 0;
    CHECK(ok && memcmp(logits, b->logits(b), 7 * 2 * sizeof(float)) == 0 && fabsf(lw - lp) <= 1e-6f * fabsf(lw),
          "eval of 7 images through 3 stages x 4 = the whole model", "%s; loss %.9g vs %.9g", fu_error(), lp, lw);
    fu_pipe_stage_info info[FU_MAX_STAGES];
    int k = fu_pipe_info(b, info, FU_MAX_STAGES);
    CHECK(k == 3 && info[0].busy_seconds > 0 && info[2].busy_seconds > 0 && info[0].device == -1 &&
              fu_pipe_info(bw2, info, FU_MAX_STAGES) == 0,
          "per-stage busy time is measured", "k %d", k);
    fu_backend_destroy(b), fu_backend_destroy(bw2);
    bufs_free(&w);
}

// Micro-batch j's masks are images part0.. of the whole batch's.
static void test_dropout_masks(void) {
    const fu_model *m = model();
    int drop = -1;
    for (int i = 0; i < m->n_ops; i++)
        if (m->ops[i].kind == FU_OP_DROPOUT) drop = i;
    fu_pass whole_pass = train_pass, part = train_pass;
    part.image0 = 5;
    fu_rng a = fu_dropout_rng(m, drop, &whole_pass), b = fu_dropout_rng(m, drop, &part);
    size_t per = fu_op_numel(m, drop, 1);
    for (size_t i = 0; i < 5 * per; i++) fu_rng_uniform(&a);
    bool same = true;
    for (size_t i = 0; i < 3 * per; i++) same = same && fu_rng_uniform(&a) == fu_rng_uniform(&b);
    CHECK(drop > 0 && same, "a micro-batch's dropout masks are the whole batch's", "op %d", drop);
    // A stage model keys its masks by the whole model's op index.
    fu_stage st[FU_MAX_STAGES];
    int k = 0;
    fu_model sub;
    bool ok = fu_stages_parse(m, "stem,stage1,stage2,stage3_res,stage3_md,stage4_res|fc", st, FU_MAX_STAGES, &k) == 0 &&
              fu_model_stage(m, &st[1], &sub) == 0;
    if (ok) {
        fu_rng c = fu_dropout_rng(m, drop, &whole_pass), d = fu_dropout_rng(&sub, drop - sub.op_base, &whole_pass);
        ok = sub.ops[drop - sub.op_base].kind == FU_OP_DROPOUT && fu_rng_u64(&c) == fu_rng_u64(&d);
        fu_model_free(&sub);
    }
    CHECK(ok, "a stage draws the whole model's dropout masks", "%s", fu_error());
}

// Two optimizer steps: 2 stages x 1 micro-batch = the plain trainer.
static void test_trainer(void) {
    const fu_model *m = model();
    fu_trainer a, b;
    fu_train_opts o = fu_train_defaults();
    o.batch = BATCH, o.seed = 4;
    fu_train_opts op = o;
    op.stages = 2;
    bool ok = fu_trainer_init(&a, m, &o, "ref", 2) == 0 && fu_trainer_init(&b, m, &op, "ref", 2) == 0;
    memcpy(a.class_w, class_w, sizeof class_w), memcpy(b.class_w, class_w, sizeof class_w);
    for (int s = 0; ok && s < 2; s++) {
        float la, lb;
        int ca, cb, na, nb;
        ok = fu_train_step(&a, BATCH, x, labels, 1e-3, &la, &ca, &na) == 0 &&
             fu_train_step(&b, BATCH, x, labels, 1e-3, &lb, &cb, &nb) == 0 && la == lb && ca == cb;
    }
    CHECK(ok && memcmp(a.params, b.params, m->n_params * sizeof(float)) == 0 &&
              memcmp(a.state, b.state, m->n_state * sizeof(float)) == 0,
          "2 trainer steps on 2 stages = the plain trainer, bit for bit", "%s", fu_error());
    fu_trainer_free(&a), fu_trainer_free(&b);
}

// What grads_ready saw: the ranges in order, and the values then.
typedef struct {
    const float *grads;
    float *seen; // (n_params)
    size_t ranges[FU_MAX_STAGES][2];
    int n;
} ready_log;

static void log_ready(void *ctx, size_t off, size_t len) {
    ready_log *l = ctx;
    if (l->n < FU_MAX_STAGES) l->ranges[l->n][0] = off, l->ranges[l->n][1] = len;
    l->n++;
    memcpy(l->seen + off, l->grads + off, len * sizeof(float));
}

// Data parallelism sees every stage's gradients once, final, last stage first.
static void test_reports(void) {
    const fu_model *m = model();
    run_bufs r;
    bufs_init(&r);
    ready_log log = {.grads = r.grads, .seen = calloc(m->n_params, sizeof(float))};
    fu_dist_hooks hooks = {.ctx = &log, .grads_ready = log_ready};
    fu_backend *b = NULL;
    fu_stage st[3];
    fu_stages_balanced(m, 3, st);
    int rc = pipe_make(3, 2, NULL, &b);
    if (rc == 0) b->dist = &hooks, rc = train_on(b, &r);
    bool ok = rc == 0 && log.n == 3 && memcmp(log.seen, r.grads, m->n_params * sizeof(float)) == 0;
    for (int i = 0; ok && i < 3; i++) ok = log.ranges[i][0] == st[2 - i].param0 && log.ranges[i][1] == st[2 - i].n_params;
    CHECK(ok, "grads_ready: each stage's range once, final, last stage first", "rc %d (%s), %d reports", rc, fu_error(),
          log.n);
    fu_backend_destroy(b);
    free(log.seen);
    bufs_free(&r);
}

// A sync-BN sum the pipe must refuse before calling.
static int never_sum(void *ctx, double *v, int n) {
    (void)ctx, (void)v, (void)n;
    abort();
}

static void test_refusals(void) {
    fu_backend *b = NULL;
    CHECK(pipe_make(2, 5, NULL, &b) < 0 && strstr(fu_error(), "micro-batches of 2 images"),
          "5 micro-batches of a batch of 8 refused", "%s", fu_error());
    CHECK(pipe_make(2, 1, "stem,stage1,stage2|stage3_res,stage3_md|stage4_res,fc", &b) < 0 &&
              strstr(fu_error(), "lists 3 stages, not the 2"),
          "a hand cut with the wrong number of stages refused", "%s", fu_error());
    fu_pipe_opts pc = {.backend = "cpu", .stages = 2, .micro_batches = 1};
    fu_backend_opts fp16 = {.batch = BATCH, .amp = FU_AMP_FP16};
    CHECK(fu_pipe_create(model(), &pc, &fp16, &b) < 0 && strncmp(fu_error(), "stage 0 (stem..", 15) == 0,
          "a stage's backend refusing names the stage", "%s", fu_error());
    fu_pipe_opts po = {.backend = "cuda", .stages = 2, .micro_batches = 1};
    fu_backend_opts o = {.batch = BATCH};
    char why[160];
    if (fu_backend_gpu_count(why, sizeof why) < 2)
        CHECK(fu_pipe_create(model(), &po, &o, &b) < 0 && strstr(fu_error(), "need 2 GPUs"),
              "2 stages on GPUs that are not there refused", "%s", fu_error());
    // Sync-BN's sums would meet micro-batch by micro-batch: refused.
    fu_dist_hooks hooks = {.sum = never_sum};
    run_bufs r;
    bufs_init(&r);
    int rc = pipe_make(2, 1, NULL, &b);
    if (rc == 0) b->dist = &hooks;
    CHECK(rc == 0 && train_on(b, &r) < 0 && strstr(fu_error(), "synchronised BatchNorm"), "sync-BN refused",
          "%s", fu_error());
    fu_backend_destroy(b);
    bufs_free(&r);
}

int main(void) {
    fu_rng rng = fu_rng_make(1, 2, 3);
    for (size_t i = 0; i < sizeof x / sizeof x[0]; i++) x[i] = (float)fu_rng_normal(&rng);
    test_balanced();
    test_parse();
    test_stage_models();
    test_dropout_masks();
    test_chain(4, NULL);
    test_chain(0, "stem|stage1,stage2,stage3_res,stage3_md,stage4_res|fc");
    test_pipe();
    test_pipe_eval();
    test_deferred_bn();
    test_trainer();
    test_reports();
    test_refusals();
    return check_done();
}
