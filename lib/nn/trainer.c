// The training loop (trainer.h).
#include "nn/trainer.h"

#include "core/error.h"
#include "core/progress.h"
#include "core/rng.h"
#include "cuda/nccl_sync.h" // C declarations only: reached through fu_backend.nccl
#include "dist/sampler.h"
#include "metrics/auc.h"
#include "nn/pipe.h"
#include "shard/shard.h" // fu_crc32

#include <math.h>
#include <pthread.h>
#include <stdlib.h>
#include <string.h>

fu_train_opts fu_train_defaults(void) {
    return (fu_train_opts){.epochs = 10, .batch = 32, .lr = 1e-3, .weight_decay = 1e-4, .max_grad_norm = 1.0,
                           .no_decay_bn_bias = false, .augment = true, .dropout = true, .seed = 42};
}

void fu_trainer_free(fu_trainer *t) {
    fu_grad_sync_free(t->sync);
    fu_backend_destroy(t->be);
    free(t->params), free(t->grads), free(t->m1), free(t->m2), free(t->state), free(t->counts);
    free(t->best_params), free(t->best_state), free(t->best_counts), free(t->groups);
    void (*x_free)(void *) = t->x_free ? t->x_free : free;
    for (int k = 0; k < 2; k++) x_free(t->x[k]), free(t->labels[k]);
    memset(t, 0, sizeof *t);
}

int fu_trainer_init(fu_trainer *t, const fu_model *m, const fu_train_opts *o, const char *backend, int threads) {
    memset(t, 0, sizeof *t);
    fu_backend_opts bo = {
        .batch = o->batch, .threads = threads, .amp = o->amp, .device = o->device, .conv_algos = o->conv_algos};
    fu_pipe_opts po = {.backend = backend, .stages = o->stages > 1 ? o->stages : 1, .cuts = o->stage_cuts,
                       .micro_batches = o->micro_batches > 1 ? o->micro_batches : 1, .shared_device = o->shared_gpu,
                       .deferred_bn = o->deferred_bn};
    fu_backend *be;
    int rc = po.stages > 1 || po.micro_batches > 1 ? fu_pipe_create(m, &po, &bo, &be)
                                                   : fu_backend_create(backend, m, &bo, &be);
    return rc < 0 ? -1 : fu_trainer_init_with(t, m, o, be);
}

int fu_trainer_init_with(fu_trainer *t, const fu_model *m, const fu_train_opts *o, fu_backend *be) {
    memset(t, 0, sizeof *t);
    t->m = m;
    t->o = *o;
    t->be = be;
    t->adamw = fu_adamw_defaults();
    t->adamw.weight_decay = o->weight_decay;
    t->resident = be->resident && !o->host_step;
    t->device_stale = t->resident; // the weights are made here, below
    t->last_loss = NAN;
    size_t np = m->n_params, ns = m->n_state, nc = m->n_counts;
    size_t pix = (size_t)o->batch * 3 * m->height * m->width;
    t->params = fu_malloc(np * sizeof(float));
    t->grads = fu_calloc(np, sizeof(float));
    t->m1 = fu_calloc(np, sizeof(float));
    t->m2 = fu_calloc(np, sizeof(float));
    t->state = fu_malloc(ns * sizeof(float));
    t->counts = fu_calloc(nc, sizeof(int64_t));
    t->best_params = fu_malloc(np * sizeof(float));
    t->best_state = fu_malloc(ns * sizeof(float));
    t->best_counts = fu_calloc(nc, sizeof(int64_t));
    // Input batches where the backend copies from fastest (pinned for a GPU).
    t->x_free = be->host_alloc ? be->host_free : free;
    for (int k = 0; k < 2; k++) {
        t->x[k] = be->host_alloc ? be->host_alloc(pix * sizeof(float)) : fu_malloc(pix * sizeof(float));
        if (!t->x[k] && be->host_alloc) fu_fail("trainer", "cannot allocate %zu MiB of pinned host memory", (pix * sizeof(float)) >> 20);
        t->labels[k] = fu_calloc((size_t)o->batch, sizeof(int));
    }
    t->n_groups = fu_param_groups(m, o->no_decay_bn_bias, &t->groups);
    if (!t->params || !t->grads || !t->m1 || !t->m2 || !t->state || !t->counts || !t->best_params ||
        !t->best_state || !t->best_counts || !t->x[0] || !t->x[1] || !t->labels[0] || !t->labels[1] ||
        t->n_groups < 0 || (o->loss_scale > 0 && fu_backend_start_loss_scale(be, o->loss_scale) < 0)) {
        fu_trainer_free(t);
        return -1;
    }
    fu_model_init(m, o->seed, t->params, t->state, t->counts);
    return fu_trainer_keep_best(t);
}

int fu_trainer_pull(fu_trainer *t) {
    if (!t->resident || !t->host_stale) return 0;
    if (t->be->resident->store(t->be, t->params, t->state, t->m1, t->m2) < 0) return -1;
    t->host_stale = false;
    return 0;
}

void fu_trainer_host_changed(fu_trainer *t) {
    t->host_stale = false;
    t->device_stale = t->resident;
}

// Before the backend computes with the weights it holds.
static int push(fu_trainer *t) {
    if (!t->resident || !t->device_stale) return 0;
    if (t->be->resident->load(t->be, t->params, t->state, t->m1, t->m2) < 0) return -1;
    t->device_stale = false;
    return 0;
}

// The backend's hooks, with the trainer as their context.
static int dist_sum(void *ctx, double *v, int n) { return fu_comm_sum(((fu_trainer *)ctx)->comm, v, n); }
static void dist_grads_ready(void *ctx, size_t off, size_t len) { fu_grad_sync_ready(((fu_trainer *)ctx)->sync, off, len); }
static int dist_any(void *ctx, int *flag) {
    double v = *flag;
    if (fu_comm_sum(((fu_trainer *)ctx)->comm, &v, 1) < 0) return -1;
    *flag = v > 0;
    return 0;
}

int fu_trainer_distribute(fu_trainer *t, fu_comm *c, bool sync_bn, size_t bucket_bytes) {
    if (c->size < 2) return 0;
    const fu_model *m = t->m;
    if (fu_trainer_pull(t) < 0) return -1;
    if (fu_comm_bcast(c, t->params, m->n_params * sizeof(float), 0) < 0 ||
        fu_comm_bcast(c, t->state, m->n_state * sizeof(float), 0) < 0 ||
        fu_comm_bcast(c, t->counts, m->n_counts * sizeof(int64_t), 0) < 0)
        return -1;
    // Every rank has the same backend and options, so all take the same
    // branch (attaching NCCL is collective).
    if (t->be->nccl && !t->o.mpi_allreduce) {
        if (t->be->nccl->attach(t->be, c, bucket_bytes, false) < 0) return -1;
        t->nccl = true;
    } else if (fu_grad_sync_create(c, t->grads, m->n_params, bucket_bytes, &t->sync) < 0) {
        return -1;
    }
    // Summed on the host, the gradients must come to the host, and the step
    // runs there too.
    if (t->sync) t->resident = false;
    fu_trainer_host_changed(t);
    t->comm = c;
    // With NCCL the backend sums in backward: the host must not sum again.
    t->hooks = (fu_dist_hooks){.ctx = t, .sum = sync_bn ? dist_sum : NULL,
                               .grads_ready = t->sync ? dist_grads_ready : NULL, .any = dist_any};
    t->be->dist = &t->hooks;
    if (fu_trainer_keep_best(t) < 0) return -1;
    return fu_trainer_check_in_sync(t);
}

const char *fu_trainer_allreduce_name(const fu_trainer *t) { return t->nccl ? "NCCL" : t->sync ? "MPI" : NULL; }

fu_grad_sync_stats fu_trainer_allreduce_stats(const fu_trainer *t) {
    if (t->nccl) return t->be->nccl->stats_of(t->be);
    return t->sync ? fu_grad_sync_stats_of(t->sync) : (fu_grad_sync_stats){0};
}

int fu_trainer_allreduce_calibrate(fu_trainer *t, int reps, double *seconds) {
    *seconds = 0;
    if (t->nccl) return t->be->nccl->calibrate(t->be, reps, seconds);
    return t->sync ? fu_grad_sync_calibrate(t->sync, reps, seconds) : 0;
}

int fu_trainer_check_in_sync(fu_trainer *t) {
    if (!t->comm) return 0;
    const fu_model *m = t->m;
    if (fu_trainer_pull(t) < 0) return -1;
    // Two CRC-32s (weights, BN state) per rank, compared with rank 0's.
    double mine[2] = {fu_crc32(t->params, m->n_params * sizeof(float)),
                      fu_crc32(t->state, m->n_state * sizeof(float))};
    int size = t->comm->size;
    double *all = fu_malloc((size_t)size * 2 * sizeof *all);
    int *counts = fu_malloc((size_t)size * sizeof *counts);
    int rc = all && counts ? fu_comm_allgather(t->comm, mine, 2, all, counts) : -1;
    for (int r = 1; r < size && rc == 0; r++)
        if (all[2 * r] != all[0] || all[2 * r + 1] != all[1])
            rc = fu_fail("data parallel", "rank %d's weights differ from rank 0's (checksums %08x/%08x vs %08x/%08x)",
                         r, (unsigned)all[2 * r], (unsigned)all[2 * r + 1], (unsigned)all[0], (unsigned)all[1]);
    free(all), free(counts);
    return rc;
}

int fu_trainer_keep_best(fu_trainer *t) {
    if (fu_trainer_pull(t) < 0) return -1;
    memcpy(t->best_params, t->params, t->m->n_params * sizeof(float));
    memcpy(t->best_state, t->state, t->m->n_state * sizeof(float));
    memcpy(t->best_counts, t->counts, t->m->n_counts * sizeof(int64_t));
    return 0;
}

int fu_class_weights(const size_t *count, int classes, float *w) {
    double sum = 0;
    for (int c = 0; c < classes; c++) {
        if (!count[c]) return fu_fail("train split", "has no image of class %d (the loss weights 1/count)", c);
        sum += 1.0 / (double)count[c];
    }
    for (int c = 0; c < classes; c++) w[c] = (float)(1.0 / (double)count[c] / sum);
    return 0;
}

static int argmax(const float *v, int n) {
    int k = 0;
    for (int i = 1; i < n; i++)
        if (v[i] > v[k]) k = i;
    return k;
}

// Dropout masks are drawn from (seed, step, op): each rank gets a seed of its
// own, or every rank would drop the same units of its i-th image. Rank 0
// keeps the run's seed, so a single process is unchanged.
static uint64_t dropout_seed(const fu_trainer *t) {
    int rank = t->comm ? t->comm->rank : 0;
    return rank ? fu_mix64(t->o.seed ^ fu_mix64((uint64_t)rank)) : t->o.seed;
}

// Whether t's steps may leave their loss, hits and norm on the backend, to
// be read every FU_FIGURE_SLOTS steps (fu_train_settle), so that a step
// never waits for the GPU: on a resident backend that can.
static bool keeps_figures(const fu_trainer *t) {
    return t->resident && t->be->resident->figures && !t->be->loss_scale_update;
}

// A step that leaves its figures on the backend: what the host knows of the
// global batch (its loss weight, its images) summed now, the rest when
// fu_train_settle reads them.
static int kept_step(fu_trainer *t, int n, const float *x, const int *labels, double lr, const fu_pass *pass,
                     double w_mine, int *seen) {
    int64_t step = t->step + 1;
    double g[2] = {w_mine, n};
    if (t->comm && fu_comm_sum(t->comm, g, 2) < 0) return -1;
    if (t->be->forward(t->be, n, NULL, NULL, t->counts, x, labels, t->class_w, pass, NULL) < 0) return -1;
    t->host_stale = true;
    if (t->nccl) t->be->nccl->set_scale(t->be, w_mine / g[0]);
    if (t->be->backward(t->be, NULL, NULL, NULL) < 0 ||
        t->be->resident->step(t->be, &t->adamw, t->groups, t->n_groups, lr, step - t->skipped, t->o.max_grad_norm,
                              NULL) < 0)
        return -1;
    t->pending[t->n_pending++] = (fu_kept_step){.step = step, .seen = (int64_t)g[1], .w_mine = w_mine, .w_all = g[0]};
    t->step = step;
    *seen = (int)g[1];
    return 0;
}

float fu_trainer_loss_scale(const fu_trainer *t) {
    fu_loss_scale s;
    return t->be->loss_scaling && t->be->loss_scaling(t->be, &s) == 0 ? s.scale : NAN;
}

// A step whose gradient norm is not finite, which the backend refused: under
// fp16 loss scaling an overflow, skipped, as GradScaler skips it, the
// backend having halved its scale (scale_after; NAN: ask it; a pipe's was
// halved by loss_scale_update); an error otherwise, or where that scale is
// down to its least.
static int skip_step(fu_trainer *t, long long step, double norm, float scale_after) {
    if (!t->be->loss_scaling) return fu_fail("training", "step %lld: the gradient norm is %f", step, norm);
    if (isnan(scale_after) && isnan(scale_after = fu_trainer_loss_scale(t))) return -1; // its error said why
    if (!(scale_after > FU_LEAST_LOSS_SCALE))
        return fu_fail("training", "step %lld: the gradient norm is %f with the fp16 loss scale down to %g: not an "
                       "overflow that scaling avoids", step, norm, (double)scale_after);
    t->skipped++;
    return 0;
}

int fu_train_settle(fu_trainer *t, fu_epoch_stats *st) {
    int k = t->n_pending, got = 0;
    if (!k) return 0;
    fu_step_figures f[FU_FIGURE_SLOTS];
    t->n_pending = 0;
    if (t->be->resident->figures(t->be, f, &got) < 0) return -1;
    if (got != k) return fu_fail("training", "the backend kept the figures of %d steps, not %d", got, k);
    double g[2 * FU_FIGURE_SLOTS];
    for (int s = 0; s < k; s++) g[2 * s] = (double)f[s].loss * t->pending[s].w_mine, g[2 * s + 1] = f[s].hits;
    if (t->comm && fu_comm_sum(t->comm, g, 2 * k) < 0) return -1;
    for (int s = 0; s < k; s++) {
        long long step = (long long)t->pending[s].step;
        double loss = g[2 * s] / t->pending[s].w_all;
        if (!isfinite(loss)) return fu_fail("training", "step %lld: the loss is %f", step, loss);
        if (!isfinite(f[s].norm) && skip_step(t, step, f[s].norm, f[s].loss_scale) < 0) return -1;
        t->grad_norm = f[s].norm;
        t->last_loss = (float)loss;
        st->loss_sum += (double)t->last_loss * (double)t->pending[s].seen;
        st->correct += (int64_t)g[2 * s + 1];
    }
    return 0;
}

// One step; keep: its figures left on the backend (kept_step), *loss and
// *correct then not set.
static int train_step(fu_trainer *t, int n, const float *x, const int *labels, double lr, bool keep, float *loss,
                      int *correct, int *seen) {
    fu_pass pass = {.train = true, .dropout = t->o.dropout, .seed = dropout_seed(t), .step = (uint64_t)t->step};
    int64_t step = t->step + 1; // as people count them
    float l = NAN;
    // Held by the backend: NULL buffers are its own (backend.h).
    bool held = t->resident;
    float *params = held ? NULL : t->params, *state = held ? NULL : t->state, *grads = held ? NULL : t->grads;
    if (push(t) < 0) return -1;
    // The loss is a weighted mean over this rank's images; the global batch's
    // is the weight-share-weighted sum of the ranks' (grad_sync.h).
    double w_mine = 0;
    for (int i = 0; i < n; i++) w_mine += t->class_w[labels[i]];
    if (keep) return kept_step(t, n, x, labels, lr, &pass, w_mine, seen);
    if (t->be->forward(t->be, n, params, state, t->counts, x, labels, t->class_w, &pass, &l) < 0) return -1;
    t->host_stale = held; // the BN running statistics moved there
    const float *logits = t->be->logits(t->be);
    int hits = 0, k = t->m->classes;
    for (int i = 0; i < n; i++) hits += argmax(logits + (size_t)i * k, k) == labels[i];
    double g[4] = {w_mine, (double)l * w_mine, hits, n};
    if (t->comm && fu_comm_sum(t->comm, g, 4) < 0) return -1;
    double global_loss = g[1] / g[0];
    if (!isfinite(global_loss)) return fu_fail("training", "step %lld: the loss is %f", (long long)step, global_loss);
    if (t->sync) fu_grad_sync_begin(t->sync, w_mine / g[0]);
    if (t->nccl) t->be->nccl->set_scale(t->be, w_mine / g[0]);
    if (t->be->backward(t->be, params, NULL, grads) < 0) return -1;
    if (t->sync && fu_grad_sync_end(t->sync) < 0) return -1;
    double norm;
    int64_t adamw_t = step - t->skipped; // the optimizer's step: skipped ones do not count
    if (held) {
        if (t->be->resident->step(t->be, &t->adamw, t->groups, t->n_groups, lr, adamw_t, t->o.max_grad_norm, &norm) < 0)
            return -1;
    } else {
        norm = fu_clip_grad_norm(t->grads, t->m->n_params, t->o.max_grad_norm);
    }
    t->grad_norm = norm;
    if (t->be->loss_scale_update && t->be->loss_scale_update(t->be, !isfinite(norm)) < 0) return -1;
    if (!isfinite(norm)) {
        if (skip_step(t, (long long)step, norm, NAN) < 0) return -1;
    } else if (!held) {
        fu_adamw_step(&t->adamw, lr, adamw_t, t->groups, t->n_groups, t->params, t->grads, t->m1, t->m2);
    }
    t->step = step;
    *loss = (float)global_loss;
    *correct = (int)g[2];
    *seen = (int)g[3];
    return 0;
}

int fu_train_step(fu_trainer *t, int n, const float *x, const int *labels, double lr, float *loss, int *correct,
                  int *seen) {
    return train_step(t, n, x, labels, lr, false, loss, correct, seen);
}

int fu_train_step_into(fu_trainer *t, int n, const float *x, const int *labels, double lr, fu_epoch_stats *st,
                       float *loss) {
    int hits = 0, seen;
    bool keep = keeps_figures(t);
    *loss = NAN;
    if (train_step(t, n, x, labels, lr, keep, loss, &hits, &seen) < 0) return -1;
    st->seen += seen;
    if (!keep) {
        st->loss_sum += (double)*loss * seen;
        st->correct += hits;
        return 0;
    }
    if (t->n_pending == FU_FIGURE_SLOTS && fu_train_settle(t, st) < 0) return -1;
    *loss = t->last_loss;
    return 0;
}

int fu_epoch_batches(size_t n, int batch, bool *dropped_one) {
    size_t b = (n + (size_t)batch - 1) / (size_t)batch;
    *dropped_one = n % (size_t)batch == 1;
    return (int)(b - *dropped_one);
}

int fu_trainer_batches(const fu_trainer *t, size_t n, bool *dropped_one) {
    return fu_epoch_batches(t->comm ? fu_rank_share(n, t->comm->size) : n, t->o.batch, dropped_one);
}

// ---- the next batch, made in a background thread --------------------------

typedef struct {
    fu_backend *be; // its prefetch, when it has one
    const fu_dataset *d;
    const uint32_t *indices;
    int n;
    bool augment;
    uint64_t seed, epoch;
    int threads;
    float *x;
    int *labels;
    pthread_t thread;
    bool running;
    int rc;
    char err[512], hint[256];
} loading;

static void *load_main(void *arg) {
    loading *j = arg;
    j->rc = fu_load_batch(j->d, j->indices, j->n, j->augment, j->seed, j->epoch, j->threads, j->x, j->labels);
    // On its way to the GPU while the step before computes.
    if (j->rc == 0 && j->be->prefetch) j->rc = j->be->prefetch(j->be, j->x, j->n);
    if (j->rc < 0) {
        snprintf(j->err, sizeof j->err, "%s", fu_error());
        snprintf(j->hint, sizeof j->hint, "%s", fu_error_hint());
    }
    return NULL;
}

static int load_start(loading *j) {
    if (pthread_create(&j->thread, NULL, load_main, j) != 0) {
        j->running = false;
        return load_main(j), j->rc; // no thread to spare: load it here
    }
    j->running = true;
    return 0;
}

// Waits for the batch; adds the seconds waited to *wait.
static int load_finish(loading *j, double *wait) {
    double t0 = fu_now();
    if (j->running) pthread_join(j->thread, NULL);
    j->running = false;
    *wait += fu_now() - t0;
    if (j->rc < 0) fu_set_error(j->err, j->hint[0] ? j->hint : NULL);
    return j->rc;
}

// Batch k of `order` (total samples) into buffer slot s.
static loading job_of(fu_trainer *t, const fu_dataset *d, const uint32_t *order, size_t total, int k, int s,
                      bool augment, uint64_t epoch) {
    size_t off = (size_t)k * (size_t)t->o.batch, left = total - off;
    return (loading){.be = t->be, .d = d, .indices = order + off, .n = (int)(left < (size_t)t->o.batch ? left : (size_t)t->o.batch),
                     .augment = augment, .seed = t->o.seed, .epoch = epoch, .threads = t->o.load_threads,
                     .x = t->x[s], .labels = t->labels[s]};
}

// Batches [first, end) of `order`: calls fn on each while the next one loads
// into the other buffer. Stops at the first non-zero return of fn.
typedef int (*batch_fn)(void *ctx, int k, int n, const float *x, const int *labels);

static int run_batches(fu_trainer *t, const fu_dataset *d, const uint32_t *order, size_t total, int first,
                       int end, bool augment, uint64_t epoch, double *wait, batch_fn fn, void *ctx) {
    loading job[2];
    if (first < end) {
        job[0] = job_of(t, d, order, total, first, 0, augment, epoch);
        if (load_start(&job[0]) < 0) return -1;
    }
    int rc = 0;
    for (int k = first; k < end && rc == 0; k++) {
        int s = (k - first) & 1;
        if (load_finish(&job[s], wait) < 0) return -1;
        bool more = k + 1 < end;
        if (more) {
            job[!s] = job_of(t, d, order, total, k + 1, !s, augment, epoch);
            if (load_start(&job[!s]) < 0) return -1;
        }
        rc = fn(ctx, k, job[s].n, job[s].x, job[s].labels);
        if (rc != 0 && more) {
            double ignored = 0;
            load_finish(&job[!s], &ignored);
        }
    }
    return rc;
}

// ---- training epochs ------------------------------------------------------

typedef struct {
    fu_trainer *t;
    double lr;
    int64_t max_steps;
    int batches;
    fu_epoch_stats *st;
    fu_step_report report;
    void *ctx;
    double t0, wait0;
} epoch_ctx;

static int train_batch(void *arg, int k, int n, const float *x, const int *labels) {
    epoch_ctx *e = arg;
    fu_trainer *t = e->t;
    if (e->max_steps >= 0 && t->step >= e->max_steps) return 1;
    float loss;
    fu_epoch_stats *st = e->st;
    if (fu_train_step_into(t, n, x, labels, e->lr, st, &loss) < 0) return -1;
    st->next_batch = k + 1;
    double now = fu_now();
    st->seconds += now - e->t0;
    e->t0 = now;
    if (e->report) e->report(e->ctx, st, e->batches, loss);
    return 0;
}

int fu_train_epoch(fu_trainer *t, const fu_dataset *d, double lr, int64_t max_steps, fu_epoch_stats *st,
                   fu_step_report report, void *ctx) {
    int rank = t->comm ? t->comm->rank : 0, size = t->comm ? t->comm->size : 1;
    size_t share = fu_rank_share(d->n, size);
    uint32_t *scratch = fu_malloc((d->n + (size_t)size) * sizeof *scratch), *order = fu_malloc(share * sizeof *order);
    if (!scratch || !order) return free(scratch), free(order), -1;
    fu_rank_order(t->o.seed, (uint64_t)st->epoch, d->n, rank, size, scratch, order);
    bool dropped;
    epoch_ctx e = {t, lr, max_steps, fu_epoch_batches(share, t->o.batch, &dropped), st, report, ctx, fu_now(), 0};
    if (st->next_batch < 0 || st->next_batch > e.batches) {
        free(scratch), free(order);
        return fu_fail("training", "the epoch is to go on at batch %d, and it has %d", st->next_batch, e.batches);
    }
    int rc = run_batches(t, d, order, share, st->next_batch, e.batches, t->o.augment, (uint64_t)st->epoch,
                         &st->wait, train_batch, &e);
    free(scratch), free(order);
    if (rc >= 0 && fu_train_settle(t, st) < 0) rc = -1;
    if (rc >= 0 && t->comm) {
        // BN running statistics are per rank unless synchronised: every rank
        // takes rank 0's (as DDP's broadcast_buffers does), so evaluation and
        // checkpoints see one model; then the weights must agree bit for bit.
        if (fu_trainer_pull(t) < 0 || fu_comm_bcast(t->comm, t->state, t->m->n_state * sizeof(float), 0) < 0 ||
            fu_comm_bcast(t->comm, t->counts, t->m->n_counts * sizeof(int64_t), 0) < 0)
            return -1;
        fu_trainer_host_changed(t);
        if (fu_trainer_check_in_sync(t) < 0) return -1;
    }
    return rc;
}

// ---- evaluation -----------------------------------------------------------

typedef struct {
    fu_trainer *t;
    const float *params;
    float *state;
    const uint32_t *order; // the records this rank evaluates
    fu_eval *out;
    double loss_num, loss_den;
} eval_ctx;

static int eval_batch(void *arg, int k, int n, const float *x, const int *labels) {
    eval_ctx *e = arg;
    fu_trainer *t = e->t;
    fu_pass pass = {.train = false};
    if (t->be->forward(t->be, n, e->params, e->state, NULL, x, NULL, NULL, &pass, NULL) < 0) return -1;
    const float *logits = t->be->logits(t->be);
    int classes = t->m->classes;
    for (int i = 0; i < n; i++) {
        const float *z = logits + (size_t)i * classes;
        double mx = z[0], sum = 0;
        for (int c = 1; c < classes; c++) mx = z[c] > mx ? z[c] : mx;
        for (int c = 0; c < classes; c++) sum += exp((double)z[c] - mx);
        double logsum = mx + log(sum);
        size_t j = e->order[(size_t)k * t->o.batch + (size_t)i];
        e->out->p1[j] = exp((double)z[1] - logsum);
        e->out->pred[j] = argmax(z, classes);
        double w = t->class_w[labels[i]];
        e->loss_num += w * (logsum - z[labels[i]]);
        e->loss_den += w;
    }
    return 0;
}

void fu_eval_free(fu_eval *e) {
    free(e->p1);
    free(e->pred);
    memset(e, 0, sizeof *e);
}

// Data parallel: every rank's records (index, p1, prediction) to every rank.
static int gather_predictions(fu_comm *c, const uint32_t *order, size_t mine, fu_eval *out) {
    double *send = fu_malloc((mine ? mine : 1) * 3 * sizeof *send), *all = fu_malloc(out->n * 3 * sizeof *all);
    int *counts = fu_malloc((size_t)c->size * sizeof *counts);
    int rc = send && all && counts ? 0 : -1;
    for (size_t j = 0; j < mine && rc == 0; j++) {
        uint32_t i = order[j];
        send[3 * j] = i, send[3 * j + 1] = out->p1[i], send[3 * j + 2] = out->pred[i];
    }
    if (rc == 0) rc = fu_comm_allgather(c, send, (int)(3 * mine), all, counts);
    for (size_t j = 0; j < out->n && rc == 0; j++) {
        size_t i = (size_t)all[3 * j];
        out->p1[i] = all[3 * j + 1], out->pred[i] = (int)all[3 * j + 2];
    }
    free(send), free(all), free(counts);
    return rc;
}

int fu_evaluate(fu_trainer *t, const fu_dataset *d, const float *params, const float *state, fu_eval *out) {
    memset(out, 0, sizeof *out);
    out->n = d->n;
    out->p1 = fu_calloc(d->n, sizeof *out->p1);
    out->pred = fu_calloc(d->n, sizeof *out->pred);
    uint32_t *order = fu_malloc(d->n * sizeof *order);
    if (!out->p1 || !out->pred || !order) {
        free(order);
        fu_eval_free(out);
        return -1;
    }
    // The live weights where the backend holds them are used there; others
    // are uploaded by each forward and replace the held ones, which the host
    // must have first and give back before the next step.
    bool live = params == t->params && state == t->state, replaced = t->resident && !live;
    if (t->resident && (live ? push(t) : fu_trainer_pull(t)) < 0) {
        free(order);
        fu_eval_free(out);
        return -1;
    }
    if (t->resident && live) params = NULL, state = NULL;
    // Rank r of s evaluates records r, r + s, ...: no padding, no record twice.
    int rank = t->comm ? t->comm->rank : 0, size = t->comm ? t->comm->size : 1;
    size_t mine = 0;
    for (size_t i = (size_t)rank; i < d->n; i += (size_t)size) order[mine++] = (uint32_t)i;
    // Eval mode reads the BN state and never writes it.
    eval_ctx e = {t, params, (float *)state, order, out, 0, 0};
    int batches = (int)((mine + (size_t)t->o.batch - 1) / (size_t)t->o.batch);
    int rc = run_batches(t, d, order, mine, 0, batches, false, 0, &out->wait, eval_batch, &e);
    if (replaced) fu_trainer_host_changed(t);
    if (t->comm) {
        // Every rank takes part in the collectives even when its own part
        // failed, so the job ends together instead of hanging.
        int first = fu_comm_first_failure(t->comm, rc == 0);
        if (first >= 0 && rc == 0) rc = fu_fail("evaluation", "rank %d failed", first);
        double sums[2] = {e.loss_num, e.loss_den};
        if (rc == 0) rc = fu_comm_sum(t->comm, sums, 2);
        e.loss_num = sums[0], e.loss_den = sums[1];
        if (rc == 0) rc = gather_predictions(t->comm, order, mine, out);
    }
    free(order);
    if (rc < 0) {
        fu_eval_free(out);
        return -1;
    }
    size_t tp = 0, tn = 0, fp = 0, fn = 0;
    for (size_t i = 0; i < d->n; i++) {
        bool pos = d->labels[i] == 1, said = out->pred[i] == 1;
        tp += pos && said, fn += pos && !said, fp += !pos && said, tn += !pos && !said;
    }
    out->loss = e.loss_num / e.loss_den;
    out->acc = (double)(tp + tn) / (double)d->n;
    out->sensitivity = tp + fn ? (double)tp / (double)(tp + fn) : NAN;
    out->specificity = tn + fp ? (double)tn / (double)(tn + fp) : NAN;
    out->f1 = tp ? 2.0 * (double)tp / (double)(2 * tp + fp + fn) : 0;
    out->auc = fu_roc_auc(out->p1, d->labels, d->n);
    return 0;
}
