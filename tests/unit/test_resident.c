// The trainer over a backend that holds the training state (backend.h's
// fu_resident_api, the cuda backend's way): a stand-in that keeps its own
// copies of the weights, BN state, gradients and AdamW moments (as a GPU
// would) over the cpu backend, counting every transfer. Training, evaluation,
// the best weights, checkpoints and a resume must give the same bytes as the
// plain trainer, and a step must move nothing across "the bus": a forgotten
// pull (stale host weights) or push (stale held weights) shows as a
// difference here. With fp16 loss scaling played (held_scaling: chosen
// steps' gradients "overflow"), those steps must be skipped alike by every
// way of stepping, the optimizer's step count must not move on them, and a
// resume must go on as the uninterrupted run.
#include "check.h"
#include "core/error.h"
#include "nn/checkpoint.h"
#include "nn/trainer.h"
#include "shard/shard.h"

#include <math.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#define SIZE 32
#define BATCH 4
#define IMAGES 10

// ---- the stand-in ---------------------------------------------------------

// A batch prefetched: the host buffer it came from, and its copy.
typedef struct {
    const float *from;
    int n;
    float *copy; // (BATCH, 3, SIZE, SIZE)
} slot;

typedef struct {
    fu_backend *inner;
    float *params, *state, *grads, *m1, *m2; // "device" copies
    bool loaded; // weights held (load, or a forward with host weights)
    int loads, stores, steps, host_weights;  // transfers, steps, forwards given host weights
    slot slots[2];            // prefetched inputs (the trainer's two batch buffers)
    pthread_mutex_t lock;     // prefetch runs in the loading thread
    int prefetched, from_slot; // prefetch calls, forwards that used one
    // With figures (held_create's keep): the steps' figures kept, as a GPU would keep them.
    fu_step_figures figs[FU_FIGURE_SLOTS];
    int fig_next, reads, most; // kept now; figures calls; the most kept at a read
    bool keeping;              // the last forward kept its figures
    // fp16 played (held_scaling): the steps (1, 2, ... as the trainer's pass
    // says) whose gradients overflow, the scale, the kept steps refused since
    // the figures were read (the t of the steps after them is one less
    // each, as on a GPU), and the t of every AdamW step taken.
    uint64_t overflow_steps; // bit s: step s + 1
    fu_loss_scale scale;
    int64_t last_step;       // of the last forward
    int unseen;
    int64_t ts[64];
    int n_ts;
} held;

static held *held_of(fu_backend *b) { return b->impl; }

static int held_forward(fu_backend *b, int n, const float *params, float *state, int64_t *counts, const float *x,
                        const int *labels, const float *class_w, const fu_pass *pass, float *loss) {
    held *h = held_of(b);
    const fu_model *m = b->m;
    if (!params != !state) return fu_fail("held", "params and state must both be host buffers or both NULL");
    if (params) {
        memcpy(h->params, params, m->n_params * sizeof(float));
        memcpy(h->state, state, m->n_state * sizeof(float));
        h->loaded = true, h->host_weights++;
    }
    if (!h->loaded) return fu_fail("held", "a forward on held weights before any were loaded");
    pthread_mutex_lock(&h->lock);
    for (int k = 0; k < 2; k++)
        if (h->slots[k].from == x && h->slots[k].n == n) x = h->slots[k].copy, h->from_slot++;
    pthread_mutex_unlock(&h->lock);
    // On held weights with no loss asked for, a backend with figures keeps them (backend.h).
    h->keeping = b->resident->figures && !params && !loss && pass->train && labels;
    if (h->keeping && h->fig_next == FU_FIGURE_SLOTS) return fu_fail("held", "the figures were not read in time");
    fu_step_figures *f = &h->figs[h->fig_next];
    h->last_step = (int64_t)pass->step + 1;
    int rc = h->inner->forward(h->inner, n, h->params, h->state, counts, x, labels, class_w, pass,
                               h->keeping ? &f->loss : loss);
    if (rc == 0 && state && pass->train) memcpy(state, h->state, m->n_state * sizeof(float));
    if (rc == 0 && h->keeping) {
        const float *z = h->inner->logits(h->inner); // (n, classes)
        int k = m->classes;
        f->hits = 0;
        for (int i = 0; i < n; i++) {
            int top = 0;
            for (int j = 1; j < k; j++) top = z[i * k + j] > z[i * k + top] ? j : top;
            f->hits += top == labels[i];
        }
    }
    return rc;
}

static const float *held_logits(fu_backend *b) { return held_of(b)->inner->logits(held_of(b)->inner); }

static int held_backward(fu_backend *b, const float *params, const float *dy, float *grads) {
    held *h = held_of(b);
    if (h->inner->backward(h->inner, h->params, dy, h->grads) < 0) return -1;
    if (b->loss_scaling) { // GradScaler's update, as the cuda backend's backward ends
        bool overflow = h->last_step <= 64 && (h->overflow_steps >> (h->last_step - 1) & 1);
        if (overflow) h->grads[b->m->n_params / 2] = INFINITY;
        fu_loss_scale_next(&h->scale, overflow, FU_LEAST_LOSS_SCALE, FU_LOSS_SCALE_GROWTH);
    }
    if (grads) memcpy(grads, h->grads, b->m->n_params * sizeof(float));
    return 0;
}

static void copy_in(float *dst, const float *src, size_t n, int *count) {
    if (src) memcpy(dst, src, n * sizeof(float)), ++*count;
}

static int held_load(fu_backend *b, const float *params, const float *state, const float *m1, const float *m2) {
    held *h = held_of(b);
    size_t np = b->m->n_params;
    copy_in(h->params, params, np, &h->loads);
    copy_in(h->state, state, b->m->n_state, &h->loads);
    copy_in(h->m1, m1, np, &h->loads);
    copy_in(h->m2, m2, np, &h->loads);
    h->loaded = h->loaded || params;
    return 0;
}

static int held_store(fu_backend *b, float *params, float *state, float *m1, float *m2) {
    held *h = held_of(b);
    size_t np = b->m->n_params;
    int stores = 0;
    copy_in(params, h->params, params ? np : 0, &stores);
    copy_in(state, h->state, state ? b->m->n_state : 0, &stores);
    copy_in(m1, h->m1, m1 ? np : 0, &stores);
    copy_in(m2, h->m2, m2 ? np : 0, &stores);
    h->stores += stores;
    return 0;
}

static int held_step(fu_backend *b, const fu_adamw_opts *o, const fu_param_group *groups, int n_groups, double lr,
                     int64_t t, double max_norm, double *norm) {
    held *h = held_of(b);
    h->steps++;
    double kept;
    if (!norm && !h->keeping) return fu_fail("held", "a step given no norm after a forward that kept nothing");
    if (!norm) norm = &kept;
    *norm = fu_clip_grad_norm(h->grads, b->m->n_params, max_norm);
    if (isfinite(*norm)) {
        fu_adamw_step(o, lr, t - h->unseen, groups, n_groups, h->params, h->grads, h->m1, h->m2);
        if (h->n_ts < 64) h->ts[h->n_ts++] = t - h->unseen;
    } else if (norm == &kept) {
        h->unseen++;
    }
    if (norm == &kept) {
        h->figs[h->fig_next].loss_scale = h->scale.scale;
        h->figs[h->fig_next++].norm = kept, h->keeping = false;
    }
    return 0;
}

static int held_loss_scaling(const fu_backend *b, fu_loss_scale *out) {
    *out = held_of((fu_backend *)b)->scale;
    return 0;
}

static int held_set_loss_scaling(fu_backend *b, const fu_loss_scale *in) {
    held_of(b)->scale = *in;
    return 0;
}

// fp16 played: the steps in `steps` (bit s: step s + 1) overflow.
static void held_scaling(fu_backend *b, uint64_t steps) {
    b->loss_scaling = held_loss_scaling, b->set_loss_scaling = held_set_loss_scaling;
    held_of(b)->scale = (fu_loss_scale){65536, 0};
    held_of(b)->overflow_steps = steps;
}

static int held_figures(fu_backend *b, fu_step_figures *out, int *steps) {
    held *h = held_of(b);
    memcpy(out, h->figs, (size_t)h->fig_next * sizeof *out);
    *steps = h->fig_next;
    h->unseen = 0; // the host counts them from here
    h->reads++;
    if (h->fig_next > h->most) h->most = h->fig_next;
    h->fig_next = 0;
    return 0;
}

// The copy a GPU would start on its copy stream: taken now, so that a
// trainer that changed x before its forward would be caught.
static int held_prefetch(fu_backend *b, const float *x, int n) {
    held *h = held_of(b);
    pthread_mutex_lock(&h->lock);
    slot *s = h->slots[0].from == x || !h->slots[0].from ? &h->slots[0] : &h->slots[1];
    s->from = x, s->n = n;
    memcpy(s->copy, x, (size_t)n * 3 * SIZE * SIZE * sizeof(float));
    h->prefetched++;
    pthread_mutex_unlock(&h->lock);
    return 0;
}

static int allocations;
static void *counted_alloc(size_t bytes) { return allocations++, malloc(bytes); }
static void counted_free(void *p) {
    if (p) allocations--;
    free(p);
}

static void held_destroy(fu_backend *b) {
    held *h = held_of(b);
    fu_backend_destroy(h->inner);
    free(h->params), free(h->state), free(h->grads), free(h->m1), free(h->m2);
    free(h->slots[0].copy), free(h->slots[1].copy);
    pthread_mutex_destroy(&h->lock);
    free(h);
    free(b);
}

static const fu_resident_api HELD_API = {.load = held_load, .store = held_store, .step = held_step};
static const fu_resident_api KEEP_API = {.load = held_load, .store = held_store, .step = held_step,
                                         .figures = held_figures};

// keep: with figures, as the cuda backend.
static fu_backend *held_create(const fu_model *m, bool keep) {
    fu_backend_opts bo = {.batch = BATCH, .threads = 2};
    fu_backend *b = calloc(1, sizeof *b);
    held *h = calloc(1, sizeof *h);
    if (!b || !h || fu_backend_create("cpu", m, &bo, &h->inner) < 0) abort();
    h->params = malloc(m->n_params * sizeof(float)), h->grads = malloc(m->n_params * sizeof(float));
    h->m1 = malloc(m->n_params * sizeof(float)), h->m2 = malloc(m->n_params * sizeof(float));
    h->state = malloc(m->n_state * sizeof(float));
    for (int k = 0; k < 2; k++) h->slots[k].copy = malloc(sizeof(float) * BATCH * 3 * SIZE * SIZE);
    pthread_mutex_init(&h->lock, NULL);
    *b = (fu_backend){.name = "held", .m = m, .batch = BATCH, .impl = h, .forward = held_forward,
                      .logits = held_logits, .backward = held_backward, .destroy = held_destroy,
                      .resident = keep ? &KEEP_API : &HELD_API, .host_alloc = counted_alloc, .host_free = counted_free,
                      .prefetch = held_prefetch};
    return b;
}

// ---- data -------------------------------------------------------------------

static const fu_model *model(void) {
    static fu_model m;
    if (!m.ops && fu_medicalcnn(&m, SIZE, SIZE) < 0) abort();
    return &m;
}

// `images` pixel records of SIZE x SIZE, labels alternating.
static int write_shard(const char *path, int images) {
    FILE *f = fopen(path, "wb");
    if (!f) return -1;
    fu_shard_writer w;
    fu_shard_writer_init(&w, f, path);
    static uint8_t px[3 * SIZE * SIZE];
    for (int i = 0; i < images; i++) {
        char id[16];
        snprintf(id, sizeof id, "img%d", i);
        for (size_t k = 0; k < sizeof px; k++) px[k] = (uint8_t)((k * (size_t)(i + 3) + k / 97) % 256);
        fu_record r = {.kind = FU_KIND_PIXELS, .label = i % 2, .height = SIZE, .width = SIZE, .channels = 3,
                       .id = id, .id_len = (uint32_t)strlen(id), .payload = px, .payload_len = sizeof px};
        fu_shard_write(&w, &r);
    }
    int rc = fu_shard_finish(&w);
    return fclose(f) == 0 ? rc : -1;
}

static fu_dataset data;
static float x[BATCH * 3 * SIZE * SIZE];
static int labels[BATCH];

static int train(fu_trainer *t, int steps) {
    for (int s = 0; s < steps; s++) {
        uint32_t idx[BATCH];
        for (int i = 0; i < BATCH; i++) idx[i] = (uint32_t)((t->step * BATCH + i) % IMAGES);
        float loss;
        int hits, seen;
        if (fu_load_batch(&data, idx, BATCH, true, 7, (uint64_t)t->step, 1, x, labels) < 0 ||
            fu_train_step(t, BATCH, x, labels, 1e-3, &loss, &hits, &seen) < 0)
            return -1;
    }
    return 0;
}

static fu_train_opts opts(void) {
    fu_train_opts o = fu_train_defaults();
    o.batch = BATCH, o.seed = 5;
    return o;
}

static int make_keeping(fu_trainer *t, bool resident, bool host_step, bool keep) {
    fu_train_opts o = opts();
    o.host_step = host_step;
    int rc = resident ? fu_trainer_init_with(t, model(), &o, held_create(model(), keep))
                      : fu_trainer_init(t, model(), &o, "cpu", 2);
    if (rc == 0) t->class_w[0] = 0.6f, t->class_w[1] = 0.4f;
    return rc;
}

static int make(fu_trainer *t, bool resident, bool host_step) { return make_keeping(t, resident, host_step, false); }

// Live weights, state and moments of two trainers, bit for bit.
static bool same_live(fu_trainer *a, fu_trainer *b) {
    const fu_model *m = model();
    size_t np = m->n_params * sizeof(float);
    return fu_trainer_pull(a) == 0 && fu_trainer_pull(b) == 0 && a->step == b->step &&
           memcmp(a->params, b->params, np) == 0 && memcmp(a->m1, b->m1, np) == 0 && memcmp(a->m2, b->m2, np) == 0 &&
           memcmp(a->state, b->state, m->n_state * sizeof(float)) == 0 &&
           memcmp(a->counts, b->counts, m->n_counts * sizeof(int64_t)) == 0;
}

static bool same_eval(const fu_eval *a, const fu_eval *b) {
    return a->n == b->n && memcmp(a->p1, b->p1, a->n * sizeof *a->p1) == 0 && a->loss == b->loss;
}

static int read_file(const char *path, char **out, size_t *n) {
    FILE *f = fopen(path, "rb");
    if (!f) return -1;
    fseek(f, 0, SEEK_END);
    *n = (size_t)ftell(f);
    rewind(f);
    *out = malloc(*n ? *n : 1);
    size_t got = *out ? fread(*out, 1, *n, f) : 0;
    fclose(f);
    return got == *n ? 0 : -1;
}

static bool same_file(const char *a, const char *b) {
    char *x_ = NULL, *y_ = NULL;
    size_t nx = 0, ny = 0;
    bool same = read_file(a, &x_, &nx) == 0 && read_file(b, &y_, &ny) == 0 && nx == ny && memcmp(x_, y_, nx) == 0;
    free(x_), free(y_);
    return same;
}

// ---- the checks -------------------------------------------------------------

static void test_training(const char *dir) {
    fu_trainer plain, res;
    if (make(&plain, false, false) < 0 || make(&res, true, false) < 0) {
        CHECK(0, "trainers made", "%s", fu_error());
        return;
    }
    held *h = held_of(res.be);
    CHECK(res.resident && !plain.resident && allocations == 2, "a backend with resident holds the state; inputs in its host memory",
          "resident %d, %d buffers from host_alloc", res.resident, allocations);

    bool ok = train(&plain, 3) == 0 && train(&res, 3) == 0;
    CHECK(ok && h->steps == 3 && h->loads == 4 && h->stores == 0 && h->host_weights == 0,
          "3 steps: one push of weights, state and moments, then nothing crosses", "%s; %d steps, %d loads, %d stores, "
          "%d forwards on host weights", fu_error(), h->steps, h->loads, h->stores, h->host_weights);
    CHECK(ok && same_live(&plain, &res) && h->stores == 4, "pulled after 3 steps: the plain trainer's bytes",
          "%d stores", h->stores);

    // Evaluating the live weights runs on the held ones: no transfer.
    fu_eval ep, er;
    int loads = h->loads, stores = h->stores;
    ok = train(&plain, 1) == 0 && train(&res, 1) == 0 && fu_evaluate(&plain, &data, plain.params, plain.state, &ep) == 0 &&
         fu_evaluate(&res, &data, res.params, res.state, &er) == 0;
    CHECK(ok && same_eval(&ep, &er) && h->loads == loads && h->stores == stores && h->host_weights == 0,
          "evaluating the live weights: the same predictions, on the held weights", "%s; %d loads, %d stores",
          fu_error(), h->loads - loads, h->stores - stores);
    if (ok) fu_eval_free(&ep), fu_eval_free(&er);

    // The best weights: kept (a pull), evaluated (uploaded: they replace
    // the held ones), then training goes on from the live ones.
    ok = fu_trainer_keep_best(&plain) == 0 && fu_trainer_keep_best(&res) == 0 && train(&plain, 2) == 0 &&
         train(&res, 2) == 0 && fu_evaluate(&plain, &data, plain.best_params, plain.best_state, &ep) == 0 &&
         fu_evaluate(&res, &data, res.best_params, res.best_state, &er) == 0;
    CHECK(ok && memcmp(plain.best_params, res.best_params, model()->n_params * sizeof(float)) == 0 &&
              same_eval(&ep, &er) && h->host_weights > 0,
          "the best weights: kept from the held ones, evaluated by upload", "%s", fu_error());
    if (ok) fu_eval_free(&ep), fu_eval_free(&er);
    ok = train(&plain, 2) == 0 && train(&res, 2) == 0;
    CHECK(ok && same_live(&plain, &res), "training after evaluating other weights goes on from the live ones",
          "%s", fu_error());

    // Checkpoints: the same files; a resumed resident trainer goes on as the plain one.
    char a[256], b[256], fa[300], fb[300];
    snprintf(a, sizeof a, "%s/plain", dir), snprintf(b, sizeof b, "%s/res", dir);
    fu_run_state rs = {.best_epoch = -1, .log = ""};
    ok = train(&res, 1) == 0 && train(&plain, 1) == 0 && mkdir(a, 0777) == 0 && mkdir(b, 0777) == 0 &&
         fu_checkpoint_save(a, &plain, &rs, NULL) == 0 && fu_checkpoint_save(b, &res, &rs, NULL) == 0;
    snprintf(fa, sizeof fa, "%s/last.safetensors", a), snprintf(fb, sizeof fb, "%s/last.safetensors", b);
    bool same = ok && same_file(fa, fb);
    snprintf(fa, sizeof fa, "%s/state.safetensors", a), snprintf(fb, sizeof fb, "%s/state.safetensors", b);
    CHECK(same && same_file(fa, fb), "a checkpoint right after held steps: the plain trainer's files", "%s",
          fu_error());

    fu_trainer back;
    fu_run_state rs2 = {0};
    ok = make(&back, true, false) == 0 && train(&back, 2) == 0 && fu_checkpoint_load(b, &back, &rs2, NULL) == 0 &&
         train(&back, 2) == 0 && train(&plain, 2) == 0;
    CHECK(ok && same_live(&plain, &back), "resumed from the checkpoint (over other held weights): as the plain run",
          "%s", fu_error());
    if (back.be) fu_trainer_free(&back);
    free(rs2.log);
    fu_trainer_free(&plain), fu_trainer_free(&res);
    CHECK(allocations == 0, "input buffers go back to host_free", "%d left", allocations);
}

// Whole epochs through the loading thread: every batch prefetched, and the
// forward takes the prefetched copy.
static void test_epochs(void) {
    fu_trainer plain, res;
    bool ok = make(&plain, false, false) == 0 && make(&res, true, false) == 0;
    held *h = ok ? held_of(res.be) : NULL;
    fu_epoch_stats sp = {0}, sr = {0};
    for (int e = 0; ok && e < 2; e++) {
        sp = sr = (fu_epoch_stats){.epoch = e};
        ok = fu_train_epoch(&plain, &data, 1e-3, -1, &sp, NULL, NULL) == 0 &&
             fu_train_epoch(&res, &data, 1e-3, -1, &sr, NULL, NULL) == 0;
    }
    bool dropped;
    int batches = fu_epoch_batches(IMAGES, BATCH, &dropped);
    CHECK(ok && same_live(&plain, &res) && sp.loss_sum == sr.loss_sum && h->prefetched == 2 * batches &&
              h->from_slot == 2 * batches,
          "2 epochs: each batch prefetched from the loading thread and used; the plain trainer's bytes",
          "%s; %d prefetched, %d used, %d batches", fu_error(), ok ? h->prefetched : 0, ok ? h->from_slot : 0,
          2 * batches);
    if (ok) fu_trainer_free(&plain), fu_trainer_free(&res);
}

// The report callback's view: the loss it was given at each step.
typedef struct {
    float loss[64];
    int calls;
} reports;

static void note_report(void *ctx, const fu_epoch_stats *st, int batches, float loss) {
    reports *r = ctx;
    if (r->calls < 64) r->loss[r->calls] = loss;
    r->calls++;
}

// A dataset of an epoch of FU_FIGURE_SLOTS + 3 batches, DIR/NAME.
static bool open_many(const char *dir, const char *name, fu_dataset *d) {
    char path[160];
    snprintf(path, sizeof path, "%s/%s", dir, name);
    return CHECK(write_shard(path, BATCH * (FU_FIGURE_SLOTS + 3)) == 0 && fu_dataset_open(d, path, 2) == 0,
                 "a dataset of many batches", "%s", fu_error());
}

// Epochs whose steps keep their figures on the backend (the cuda backend's
// way, fu_resident_api.figures): an epoch of FU_FIGURE_SLOTS + 3 batches,
// then one of `data`'s 3: the plain trainer's bytes and epoch figures, read
// every FU_FIGURE_SLOTS steps and at each epoch's end, the report given the
// last loss read; and a non-finite loss named by its step as the plain
// trainer names it, once read.
static void test_figures(const char *dir) {
    fu_dataset big;
    if (!open_many(dir, "big.shard", &big)) return;
    fu_trainer plain, kept;
    bool ok = make(&plain, false, false) == 0 && make_keeping(&kept, true, false, true) == 0;
    held *h = ok ? held_of(kept.be) : NULL;
    fu_epoch_stats sp = {0}, sk = {0};
    reports rp = {0}, rk = {0};
    int batches = FU_FIGURE_SLOTS + 3;
    for (int e = 0; ok && e < 2; e++) {
        sp = sk = (fu_epoch_stats){.epoch = e};
        const fu_dataset *d = e == 0 ? &big : &data;
        ok = fu_train_epoch(&plain, d, 1e-3, -1, &sp, note_report, &rp) == 0 &&
             fu_train_epoch(&kept, d, 1e-3, -1, &sk, note_report, &rk) == 0;
    }
    CHECK(ok && same_live(&plain, &kept) && sp.loss_sum == sk.loss_sum && sp.correct == sk.correct &&
              sp.seen == sk.seen && plain.grad_norm == kept.grad_norm,
          "epochs keeping the steps' figures: the plain trainer's bytes, loss sum, hits, images and norm",
          "%s; loss sums %.9g, %.9g; hits %lld, %lld", fu_error(), sp.loss_sum, sk.loss_sum, (long long)sp.correct,
          (long long)sk.correct);
    CHECK(ok && h->reads == 3 && h->most == FU_FIGURE_SLOTS && h->fig_next == 0,
          "figures read every FU_FIGURE_SLOTS steps and at each epoch's end, nothing left kept",
          "%d reads, at most %d kept, %d left", ok ? h->reads : -1, ok ? h->most : -1, ok ? h->fig_next : -1);
    bool reported = rp.calls == batches + 3 && rk.calls == rp.calls;
    for (int s = 0; reported && s < FU_FIGURE_SLOTS - 1; s++) reported = isnan(rk.loss[s]);
    for (int s = FU_FIGURE_SLOTS - 1; reported && s < batches; s++)
        reported = rk.loss[s] == rp.loss[FU_FIGURE_SLOTS - 1];
    reported = reported && rk.loss[batches] == rp.loss[batches - 1];
    CHECK(reported, "the report: no loss before the first read, then the last step read's",
          "%d and %d calls; kept %g %g, plain %g", rp.calls, rk.calls, rk.loss[FU_FIGURE_SLOTS - 1],
          rk.loss[batches], rp.loss[FU_FIGURE_SLOTS - 1]);
    if (ok) fu_trainer_free(&plain), fu_trainer_free(&kept);

    // Class 0's weight not finite: the first step with a class-0 image fails.
    char plain_why[256] = "", kept_why[256] = "";
    ok = make(&plain, false, false) == 0 && make_keeping(&kept, true, false, true) == 0;
    if (ok) {
        plain.class_w[0] = kept.class_w[0] = NAN;
        sp = sk = (fu_epoch_stats){0};
        if (fu_train_epoch(&plain, &data, 1e-3, -1, &sp, NULL, NULL) < 0) snprintf(plain_why, sizeof plain_why, "%s", fu_error());
        if (fu_train_epoch(&kept, &data, 1e-3, -1, &sk, NULL, NULL) < 0) snprintf(kept_why, sizeof kept_why, "%s", fu_error());
        fu_trainer_free(&plain), fu_trainer_free(&kept);
    }
    CHECK(ok && strstr(plain_why, "step 1: the loss is") && strcmp(plain_why, kept_why) == 0,
          "a non-finite loss: the same error naming its step, once the figures are read", "plain '%s', kept '%s'",
          plain_why, kept_why);
    fu_dataset_close(&big);
}

// host_step: the same backend run the host way, for comparisons.
static void test_host_step(void) {
    fu_trainer plain, host;
    bool ok = make(&plain, false, false) == 0 && make(&host, true, true) == 0;
    held *h = ok ? held_of(host.be) : NULL;
    ok = ok && !host.resident && train(&plain, 2) == 0 && train(&host, 2) == 0;
    CHECK(ok && h->steps == 0 && h->host_weights == 2 && same_live(&plain, &host),
          "host_step: weights uploaded each forward, the step on the host, the same bytes", "%s", fu_error());
    if (ok) fu_trainer_free(&plain), fu_trainer_free(&host);
}

// fp16 loss scaling played (held_scaling): steps 2, 5 and 18 of an epoch
// of FU_FIGURE_SLOTS + 3 overflow. Stepping with the norm read back each
// step, keeping the figures (read after step 16 and at the epoch's end, so
// step 18's refusal is unseen when steps 19 runs), and on the host
// (host_step) skip the same 3 steps and give the same bytes, AdamW's steps
// counting 1, 2, ... with no gap; a checkpoint after step 10 resumed goes on
// as the uninterrupted run (which needs the skips restored: AdamW's step
// would be 2 more); and overflowing down to the least scale fails, naming
// the step, alike.
static void test_skips(const char *dir) {
    const uint64_t overflow = 1u << 1 | 1u << 4 | 1u << 17;
    fu_dataset big;
    if (!open_many(dir, "skips.shard", &big)) return;
    fu_trainer sync, kept, host, back;
    bool ok = make(&sync, true, false) == 0 && make_keeping(&kept, true, false, true) == 0 &&
              make(&host, true, true) == 0 && make_keeping(&back, true, false, true) == 0;
    if (!CHECK(ok, "trainers made", "%s", fu_error())) return;
    fu_trainer *all[] = {&sync, &kept, &host, &back};
    for (int i = 0; i < 4; i++) held_scaling(all[i]->be, overflow);
    // The kept run stops after step 10 to be saved (the resume below), then goes on.
    char save[256];
    snprintf(save, sizeof save, "%s/skips", dir);
    fu_run_state rs = {.best_epoch = -1, .log = ""}, rs2 = {0};
    fu_epoch_stats st[3] = {{0}};
    ok = fu_train_epoch(&kept, &big, 1e-3, 10, &st[1], NULL, NULL) == 1 && mkdir(save, 0777) == 0 &&
         (rs.st = st[1], fu_checkpoint_save(save, &kept, &rs, NULL) == 0);
    for (int i = 0; i < 3 && ok; i++) ok = fu_train_epoch(all[i], &big, 1e-3, -1, &st[i], NULL, NULL) == 0;
    held *hs = held_of(sync.be), *hk = held_of(kept.be);
    CHECK(ok && sync.skipped == 3 && kept.skipped == 3 && host.skipped == 3 && same_live(&sync, &kept) &&
              same_live(&sync, &host) && st[0].loss_sum == st[1].loss_sum && st[0].loss_sum == st[2].loss_sum,
          "fp16 overflows at steps 2, 5, 18: skipped alike stepping, keeping figures and on the host; same bytes",
          "%s; skipped %lld %lld %lld", fu_error(), (long long)sync.skipped, (long long)kept.skipped,
          (long long)host.skipped);
    bool counted = ok && hs->n_ts == FU_FIGURE_SLOTS && hk->n_ts == FU_FIGURE_SLOTS;
    for (int j = 0; counted && j < hs->n_ts; j++) counted = hs->ts[j] == j + 1 && hk->ts[j] == j + 1;
    CHECK(counted, "AdamW's step counts the steps taken only: 1 to 16 over 19 steps, kept or not",
          "%d and %d steps; the last t %lld and %lld", hs->n_ts, hk->n_ts, (long long)hs->ts[hs->n_ts - 1],
          (long long)hk->ts[hk->n_ts - 1]);
    CHECK(ok && hs->scale.scale == 8192 && hk->scale.scale == 8192, "3 overflows: the scale 2^16 / 8",
          "%g", (double)hs->scale.scale);

    // Resumed from step 10 over other weights: as the uninterrupted run.
    ok = ok && train(&back, 1) == 0 && fu_checkpoint_load(save, &back, &rs2, NULL) == 0;
    bool restored = ok && back.skipped == 2 && held_of(back.be)->scale.scale == 16384;
    ok = ok && fu_train_epoch(&back, &big, 1e-3, -1, &rs2.st, NULL, NULL) == 0;
    CHECK(restored && ok && same_live(&kept, &back) && back.skipped == 3 && rs2.st.loss_sum == st[1].loss_sum,
          "resumed after step 10 (2 skipped, scale 2^14): the uninterrupted run's bytes", "%s; %lld skipped",
          fu_error(), (long long)back.skipped);
    free(rs2.log);
    for (int i = 0; i < 4; i++) fu_trainer_free(all[i]);

    // Every step overflows from 2^-22: step 1 halves it, step 2 reaches the least and fails.
    char why[2][256] = {"", ""};
    for (int keep = 0; keep < 2; keep++) {
        fu_trainer t;
        if (make_keeping(&t, true, false, keep) < 0) continue;
        held_scaling(t.be, ~(uint64_t)0);
        held_of(t.be)->scale.scale = 0x1p-22f;
        fu_epoch_stats e = {0};
        if (fu_train_epoch(&t, &big, 1e-3, -1, &e, NULL, NULL) < 0)
            snprintf(why[keep], sizeof why[keep], "%s", fu_error());
        fu_trainer_free(&t);
    }
    CHECK(strstr(why[0], "step 2: the gradient norm is inf with the fp16 loss scale down to 5.96046e-08") &&
              strcmp(why[0], why[1]) == 0,
          "overflowing at the least loss scale: one error naming the step, kept or not", "'%s', '%s'", why[0], why[1]);
    fu_dataset_close(&big);
}

// The loss scale's update (GradScaler's rule, shared with the cuda kernel)
// and its checkpoint text: a state round trip, several states (a pipe's
// checkpoint from before they were one) giving the least, and every text
// that is not one refused.
static void test_loss_scale_text(void) {
    fu_loss_scale s = {8, 0};
    fu_loss_scale_next(&s, false, 1, 3), fu_loss_scale_next(&s, false, 1, 3);
    bool grew = s.scale == 8 && s.clean == 2;
    fu_loss_scale_next(&s, false, 1, 3);
    grew = grew && s.scale == 16 && s.clean == 0;
    fu_loss_scale_next(&s, false, 1, 3), fu_loss_scale_next(&s, true, 1, 3);
    bool halved = s.scale == 8 && s.clean == 0;
    for (int i = 0; i < 5; i++) fu_loss_scale_next(&s, true, 1, 3);
    CHECK(grew && halved && s.scale == 1, "loss scale: doubled after 3 clean passes (growth 3), halved by an "
          "overflow, not below the least", "%g/%d", (double)s.scale, s.clean);

    const fu_loss_scale some[] = {{0x1p16f, 0}, {FU_LEAST_LOSS_SCALE, FU_LOSS_SCALE_GROWTH - 1}, {3, 7}};
    bool round = true;
    for (size_t i = 0; i < sizeof some / sizeof *some; i++) {
        char text[64];
        fu_loss_scale back = {0};
        fu_loss_scale_format(&some[i], text, sizeof text);
        round = round && fu_loss_scale_parse(text, &back) == 0 && back.scale == some[i].scale &&
                back.clean == some[i].clean;
    }
    CHECK(round, "loss scale text: format then parse gives the state back", "not for every one");
    fu_loss_scale least = {0};
    CHECK(fu_loss_scale_parse("0x1p+20 7;0x1p+9 3;0x1p+18 0", &least) == 0 && least.scale == 0x1p9f &&
              least.clean == 3,
          "loss scale text: of 3 states (a pipe's, before they were one), the least", "%g/%d", (double)least.scale,
          least.clean);
    static const char *const bad[] = {"", " ", "0x1p+8", "0x1p+8 ", "0x1p+8 0;", ";0x1p+8 0", "0x1p+8 0 ",
                                      "0x1p+8 0x", "0x1p+8;0", "0x1p-25 0", "0 0", "-2 0", "nan 0", "inf 0",
                                      "1e39 0", "0x1p+8 2000", "0x1p+8 -1", "0x1p+8 99999999999999999999",
                                      "0x1p+8 0;;0x1p+8 0", "0x1p+8 0;junk"};
    const char *taken = NULL;
    for (size_t i = 0; i < sizeof bad / sizeof *bad && !taken; i++) {
        fu_loss_scale s2;
        if (fu_loss_scale_parse(bad[i], &s2) == 0) taken = bad[i];
    }
    CHECK(!taken, "loss scale text: a missing count, a trailing ';' or blank, junk, a scale not finite or under "
          "2^-24, a count not in 0..1999: refused", "'%s' was taken", taken);
}

int main(void) {
    char dir[] = "/tmp/fu-test-resident-XXXXXX", path[128];
    if (!mkdtemp(dir)) return perror("mkdtemp"), 1;
    snprintf(path, sizeof path, "%s/data.shard", dir);
    if (write_shard(path, IMAGES) < 0 || fu_dataset_open(&data, path, 2) < 0) {
        printf("not ok - test data: %s\n", fu_error());
        return 1;
    }
    test_training(dir);
    test_epochs();
    test_host_step();
    test_figures(dir);
    test_skips(dir);
    test_loss_scale_text();
    fu_dataset_close(&data);
    char cmd[160];
    snprintf(cmd, sizeof cmd, "rm -rf '%s'", dir);
    if (system(cmd) != 0) printf("# could not remove %s\n", dir);
    return check_done();
}
