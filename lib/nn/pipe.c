// The model-parallel backend (pipe.h): K stage threads over K x M backends.
//
// Backend (s, j) runs stage s on micro-batch j, so every micro-batch's
// forward is kept for its backward without recomputation, and the cut
// tensors stay where their backends left them: stage s + 1 reads stage s's
// output (its logits()) and stage s reads stage s + 1's input gradient
// directly, from GPU memory where the backends can (device_output), so that
// GPU stages hand them over GPU to GPU. A job (a forward or a backward of one batch) is posted to the
// stage threads; each runs its micro-batches in order, waiting for the stage
// before (forward) or after (backward) to finish the same micro-batch.
// Each stage writes only its own ranges of the flat buffers, and does its
// micro-batches in a fixed order, so the results do not depend on timing.
//
// Resident (backends with fu_resident_api's pipe members: cuda): the
// backends of stage s share backend (s, 0)'s weights and BN state
// (fu_backend_opts.weights_of), which holds the stage's AdamW moments too;
// the pipe's own resident API loads, stores and steps stage by stage
// (clipping with the whole model's norm), and a backward's micro-batch
// gradients are summed on the device into backend (s, 0)'s. A step then
// moves only the batch, the cut tensors and the logits.
#include "nn/pipe.h"

#include "core/error.h"
#include "cuda/nccl_sync.h" // C declarations only: reached through the stages' fu_backend.nccl

#include <math.h>
#include <omp.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

enum { MAX_MICRO = 64 };

typedef enum { JOB_NONE, JOB_FORWARD, JOB_BACKWARD, JOB_QUIT } job_kind;

typedef struct pipe pipe;

typedef struct {
    pipe *p;
    int s;
    pthread_t thread;
    bool started;
} worker;

struct pipe {
    const fu_model *m;
    int k, micro;                         // stages, micro-batches planned
    int threads;                          // OpenMP threads of each stage's thread
    fu_model sub[FU_MAX_STAGES];          // stage s as a model
    fu_pipe_stage_info info[FU_MAX_STAGES];
    fu_backend **be;                      // (k, micro): be[s * micro + j]
    float *scratch[FU_MAX_STAGES];        // micro > 1: stage s's gradient of one micro-batch
    // Deferred BN (micro > 1): stage s's running statistics before the
    // batch and after each micro-batch, (micro + 1, stage n_state), and its
    // BatchNorm counts before the batch.
    bool deferred_bn;
    float *bn_seen[FU_MAX_STAGES];
    float *bn_pooled[FU_MAX_STAGES];      // resident: stage s's pooled statistics, on their way to the device
    int64_t *counts_before[FU_MAX_STAGES];
    float *logits;                        // (batch, classes): the last stage's, gathered
    worker workers[FU_MAX_STAGES];
    // The posted job and its batch.
    pthread_mutex_t mu;
    pthread_cond_t cv;
    job_kind job;
    unsigned long job_id;
    int parts;                            // micro-batches of this batch
    int part0[MAX_MICRO], part_n[MAX_MICRO]; // each one's first image and size
    double share[MAX_MICRO];              // its class-weight share of the batch (training)
    float loss[MAX_MICRO];
    const float *params;
    float *state, *grads;                 // NULL: held by the backends (resident)
    bool nccl;                            // data parallel: each stage's held gradients summed by NCCL
    int64_t *counts;
    const float *x;                       // (n, 3, H, W)
    const int *labels;
    const float *class_w;
    fu_pass pass;
    int done[FU_MAX_STAGES];              // micro-batches stage s finished in this job
    int finished;                         // stages done with this job
    bool failed;                          // a stage failed: the others stop
    char error[512], hint[256];           // the first failure
    bool ready;                           // a training forward ran: backward may follow
    char conv_note[1600];                 // fu_backend.conv_note: each stage's (cuda)
    // fp16: the loss scale every backend scales by (they leave it to the
    // pipe: loss_scale_by_caller), and its clean steps, as GradScaler's one.
    fu_loss_scale scale;
};

static pipe *pipe_of(const fu_backend *b) { return b->impl; }
static fu_backend *be_at(pipe *p, int s, int j) { return p->be[s * p->micro + j]; }

// A stage's part of a flat buffer; NULL stays NULL (held by the backends).
#define PART(buf, off) ((buf) ? (buf) + (off) : NULL)

static double now(void) {
    struct timespec t;
    clock_gettime(CLOCK_MONOTONIC, &t);
    return (double)t.tv_sec + 1e-9 * (double)t.tv_nsec;
}

// Waits until stage `s` has finished micro-batch j of this job (or some
// stage failed: false).
static bool wait_for(pipe *p, int s, int j) {
    pthread_mutex_lock(&p->mu);
    while (p->done[s] <= j && !p->failed) pthread_cond_wait(&p->cv, &p->mu);
    bool ok = !p->failed;
    pthread_mutex_unlock(&p->mu);
    return ok;
}

static void mark_done(pipe *p, int s) {
    pthread_mutex_lock(&p->mu);
    p->done[s]++;
    pthread_cond_broadcast(&p->cv);
    pthread_mutex_unlock(&p->mu);
}

static void mark_failed(pipe *p, int s) {
    pthread_mutex_lock(&p->mu);
    if (!p->failed) {
        snprintf(p->error, sizeof p->error, "stage %d (%s): %s", s, p->info[s].stage.name, fu_error());
        snprintf(p->hint, sizeof p->hint, "%s", fu_error_hint());
    }
    p->failed = true;
    pthread_cond_broadcast(&p->cv);
    pthread_mutex_unlock(&p->mu);
}

// The error of a call for stage s, naming the stage.
static int stage_failed(const pipe *p, int s) {
    fu_error_prefix("stage %d (%s)", s, p->info[s].stage.name);
    return -1;
}

// Deferred BN: whether this training forward defers the running statistics.
static bool defers(const pipe *p) { return p->deferred_bn && p->pass.train && p->parts > 1; }

// A stage's output, and its input's gradient, as the neighbour stage takes
// them: GPU memory where the backends take it (a copy GPU to GPU), else host.
static const float *output_of(fu_backend *b) { return b->device_output ? b->device_output(b) : b->logits(b); }
static const float *input_grad_of(fu_backend *b) {
    return b->device_input_grad ? b->device_input_grad(b) : b->input_grad(b);
}

// Stage s's running statistics into out (n_state): from the host's, or
// from its backends' (resident).
static int read_bn(pipe *p, int s, float *out) {
    const fu_stage *st = &p->info[s].stage;
    fu_backend *own = be_at(p, s, 0);
    if (!p->state) return own->resident->store(own, NULL, out, NULL, NULL);
    memcpy(out, p->state + st->state0, st->n_state * sizeof(float));
    return 0;
}

static int forward_micro(pipe *p, int s, int j) {
    const fu_stage *st = &p->info[s].stage;
    fu_backend *b = be_at(p, s, j);
    if (defers(p) && j == 0) {
        if (read_bn(p, s, p->bn_seen[s]) < 0) return -1;
        memcpy(p->counts_before[s], p->counts + st->count0, st->n_counts * sizeof(int64_t));
    }
    int n = p->part_n[j], first = p->part0[j];
    fu_backend *prev = s > 0 ? be_at(p, s - 1, j) : NULL; // its output is this stage's input
    const float *x = prev ? output_of(prev) : p->x + (size_t)first * fu_op_numel(p->m, 0, 1); // (n, C, H, W)
    fu_pass pass = p->pass;
    pass.image0 = first;
    const int *labels = p->labels ? p->labels + first : NULL;
    int rc = b->forward(b, n, PART(p->params, st->param0), PART(p->state, st->state0), p->counts + st->count0, x,
                        labels, p->class_w, &pass, s == p->k - 1 ? &p->loss[j] : NULL);
    if (rc == 0 && defers(p)) rc = read_bn(p, s, p->bn_seen[s] + (size_t)(j + 1) * st->n_state);
    return rc;
}

// Deferred BN, once stage s has run every micro-batch forward: each
// micro-batch's statistics are read back from the running statistics' steps
// (r_j = (1 - m) r_(j-1) + m s_j), pooled into the whole batch's (mean; the
// variance within and between micro-batches, unbiased), and the running
// statistics set to one update with those, the counts to one more batch.
static int defer_bn(pipe *p, int s) {
    const fu_model *sub = &p->sub[s];
    const fu_stage *st = &p->info[s].stage;
    const float *seen = p->bn_seen[s]; // (parts + 1, n_state)
    float *state = p->state ? p->state + st->state0 : p->bn_pooled[s];
    if (!p->state) memcpy(state, seen + (size_t)p->parts * st->n_state, st->n_state * sizeof(float));
    const double m = FU_BN_MOMENTUM;
    for (int i = 0; i < sub->n_ops; i++) {
        const fu_op *op = &sub->ops[i];
        if (op->kind != FU_OP_BN) continue;
        for (int c = 0; c < op->c; c++) {
            size_t mo = (size_t)op->mean + c, vo = (size_t)op->var + c;
            double n_all = 0, sum = 0, within = 0, mu_j[MAX_MICRO], n_j[MAX_MICRO];
            for (int j = 0; j < p->parts; j++) {
                const float *before = seen + (size_t)j * st->n_state, *after = before + st->n_state;
                n_j[j] = (double)p->part_n[j] * op->h * op->w;
                mu_j[j] = (after[mo] - (1 - m) * before[mo]) / m;
                double unbiased = (after[vo] - (1 - m) * before[vo]) / m;
                within += unbiased * (n_j[j] - 1); // n_j x the biased variance
                sum += n_j[j] * mu_j[j];
                n_all += n_j[j];
            }
            double mu = sum / n_all, between = 0;
            for (int j = 0; j < p->parts; j++) between += n_j[j] * (mu_j[j] - mu) * (mu_j[j] - mu);
            state[mo] = (float)((1 - m) * seen[mo] + m * mu);
            state[vo] = (float)((1 - m) * seen[vo] + m * (within + between) / (n_all - 1));
        }
    }
    for (size_t c = 0; c < st->n_counts; c++) p->counts[st->count0 + c] = p->counts_before[s][c] + 1;
    fu_backend *own = be_at(p, s, 0);
    return p->state ? 0 : own->resident->load(own, NULL, state, NULL, NULL);
}

// Resident: the gradients stay with the backends, and the stage's sum over
// micro-batches, weighed by their shares, is made in backend (s, 0)'s (the
// one that steps) in the host path's order: backward runs the last
// micro-batch first, whose backend keeps the running sum until the first
// micro-batch's (backward's last) adds it in.
static int backward_held(pipe *p, int s, int j, const float *dy) {
    fu_backend *b = be_at(p, s, j), *sum = be_at(p, s, p->parts - 1);
    if (b->backward(b, NULL, dy, NULL) < 0) return -1;
    if (p->parts == 1) return 0;
    int (*add)(fu_backend *, float, fu_backend *, float) = b->resident->add_grads;
    float w = (float)p->share[j];
    if (j == p->parts - 1) return add(sum, w, NULL, 0);
    return j > 0 ? add(sum, 1, b, w) : add(b, w, sum, 1);
}

// Micro-batch j's backward through stage s; with several micro-batches its
// gradient goes to scratch and is added to the stage's, weighed by its share.
static int backward_micro(pipe *p, int s, int j) {
    const fu_stage *st = &p->info[s].stage;
    fu_backend *b = be_at(p, s, j);
    fu_backend *next = s < p->k - 1 ? be_at(p, s + 1, j) : NULL; // its input gradient is this stage's dy
    const float *dy = next ? input_grad_of(next) : NULL; // (n, C, H, W); NULL: the loss stage
    if (!p->grads) return backward_held(p, s, j, dy);
    float *grads = p->grads + st->param0; // (stage params)
    if (p->parts == 1) return b->backward(b, p->params + st->param0, dy, grads);
    float *g = p->scratch[s];
    if (b->backward(b, p->params + st->param0, dy, g) < 0) return -1;
    float w = (float)p->share[j];
    if (j == p->parts - 1) // the first backward of this batch
        for (size_t i = 0; i < st->n_params; i++) grads[i] = w * g[i];
    else
        for (size_t i = 0; i < st->n_params; i++) grads[i] += w * g[i];
    return 0;
}

// Stage s's part of a job: forward in micro-batch order, backward in reverse
// (GPipe: the last micro-batch's forward ends last, so its backward starts first).
static void run_job(pipe *p, int s, job_kind job) {
    double busy = 0;
    for (int step = 0; step < p->parts; step++) {
        int j = job == JOB_FORWARD ? step : p->parts - 1 - step;
        int from = job == JOB_FORWARD ? s - 1 : s + 1; // the stage this one waits for
        if (from >= 0 && from < p->k && !wait_for(p, from, step)) return;
        double t0 = now();
        int rc = job == JOB_FORWARD ? forward_micro(p, s, j) : backward_micro(p, s, j);
        busy += now() - t0;
        if (rc < 0) {
            mark_failed(p, s);
            return;
        }
        mark_done(p, s);
    }
    if (job == JOB_FORWARD && defers(p) && defer_bn(p, s) < 0) {
        mark_failed(p, s);
        return;
    }
    p->info[s].busy_seconds += busy;
}

static void *worker_main(void *arg) {
    worker *w = arg;
    pipe *p = w->p;
    unsigned long seen = 0;
    omp_set_num_threads(p->threads); // this thread's OpenMP team, for the stage's backends
    for (;;) {
        pthread_mutex_lock(&p->mu);
        while (p->job_id == seen) pthread_cond_wait(&p->cv, &p->mu);
        seen = p->job_id;
        job_kind job = p->job;
        pthread_mutex_unlock(&p->mu);
        if (job == JOB_QUIT) return NULL;
        run_job(p, w->s, job);
        pthread_mutex_lock(&p->mu);
        p->finished++;
        pthread_cond_broadcast(&p->cv);
        pthread_mutex_unlock(&p->mu);
    }
}

// Under data parallelism, stage s's gradients are final (every micro-batch's
// backward through it is done): their sum over ranks starts, by NCCL on the
// stage's GPU (pipe_attach_nccl) or through the trainer's grads_ready.
static int stage_grads_final(pipe *p, int s, const fu_dist_hooks *report) {
    const fu_stage *st = &p->info[s].stage;
    fu_backend *own = be_at(p, s, 0);
    if (!st->n_params) return 0;
    if (p->nccl) return own->nccl->sum_start(own);
    report->grads_ready(report->ctx, st->param0, st->n_params);
    return 0;
}

// Waits for the stages' NCCL sums, in the order they started.
static int wait_nccl(pipe *p) {
    for (int s = p->k - 1; s >= 0; s--) {
        fu_backend *own = be_at(p, s, 0);
        if (p->info[s].stage.n_params && own->nccl->sum_wait(own) < 0) return stage_failed(p, s);
    }
    return 0;
}

// Posts a job to every stage thread and waits for all of them. A backward
// under data parallelism (NCCL, or `report`: the trainer's hooks) hands each
// stage's gradients to the sum from this thread, the one that may call MPI,
// as soon as that stage is done: stage s finishes after stage s + 1 (its
// last micro-batch waits for theirs), so the sums start last stage first on
// every rank, and overlap the earlier stages' backward.
static int run(pipe *p, job_kind job, const fu_dist_hooks *report) {
    bool sums = job == JOB_BACKWARD && (p->nccl || report);
    pthread_mutex_lock(&p->mu);
    p->job = job;
    p->job_id++;
    p->finished = 0;
    p->failed = false;
    memset(p->done, 0, sizeof p->done);
    pthread_cond_broadcast(&p->cv);
    int next = p->k - 1; // the next stage whose sum starts
    for (;;) {
        while (sums && !p->failed && next >= 0 && p->done[next] == p->parts) {
            int s = next--;
            pthread_mutex_unlock(&p->mu);
            if (stage_grads_final(p, s, report) < 0) mark_failed(p, s);
            pthread_mutex_lock(&p->mu);
        }
        if (p->finished == p->k) break;
        pthread_cond_wait(&p->cv, &p->mu);
    }
    bool failed = p->failed;
    pthread_mutex_unlock(&p->mu);
    if (!failed) return sums && p->nccl ? wait_nccl(p) : 0;
    fu_set_error(p->error, p->hint[0] ? p->hint : NULL);
    return -1;
}

// Splits n images into micro-batches: as many as planned, fewer when the
// batch is too small for 2 images each in training (BatchNorm needs two);
// sizes differ by at most one.
static void split(pipe *p, int n, bool train) {
    int parts = p->micro < n ? p->micro : n;
    if (train && parts > n / 2) parts = n / 2;
    if (parts < 1) parts = 1;
    p->parts = parts;
    for (int j = 0, at = 0; j < parts; j++) {
        p->part0[j] = at;
        p->part_n[j] = n / parts + (j < n % parts);
        at += p->part_n[j];
    }
}

static int pipe_forward(fu_backend *b, int n, const float *params, float *state, int64_t *counts, const float *x,
                        const int *labels, const float *class_w, const fu_pass *pass, float *loss) {
    pipe *p = pipe_of(b);
    p->ready = false;
    if (fu_backend_check_batch(b, n, labels, class_w, pass) < 0) return -1;
    if (pass->train && b->dist && b->dist->sum)
        return fu_fail("model parallel", "synchronised BatchNorm across ranks is not supported with stages "
                                         "or micro-batches");
    split(p, n, pass->train);
    p->params = params, p->state = state, p->counts = counts, p->x = x;
    p->labels = labels, p->class_w = class_w, p->pass = *pass;
    // Each micro-batch's loss is normalised by its own label weight W_j; the
    // batch's is their sum weighed by W_j / W.
    double w_all = 0;
    for (int j = 0; j < p->parts; j++) {
        double w = 0;
        for (int i = 0; labels && i < p->part_n[j]; i++) w += class_w[labels[p->part0[j] + i]];
        p->share[j] = w;
        w_all += w;
    }
    for (int j = 0; j < p->parts; j++) p->share[j] = w_all > 0 ? p->share[j] / w_all : 1.0 / p->parts;
    if (run(p, JOB_FORWARD, NULL) < 0) return -1;
    int k = p->m->classes;
    double total = 0;
    for (int j = 0; j < p->parts; j++) {
        fu_backend *last = be_at(p, p->k - 1, j);
        memcpy(p->logits + (size_t)p->part0[j] * k, last->logits(last), (size_t)p->part_n[j] * k * sizeof(float));
        total += p->share[j] * p->loss[j];
    }
    if (labels && loss) *loss = p->parts == 1 ? p->loss[0] : (float)total;
    p->ready = pass->train;
    return 0;
}

static const float *pipe_logits(fu_backend *b) { return pipe_of(b)->logits; }

static int pipe_backward(fu_backend *b, const float *params, const float *dy, float *grads) {
    pipe *p = pipe_of(b);
    if (!p->ready) return fu_fail("model", "backward needs a training forward with labels first");
    if (dy) return fu_fail("model", "a pipe of stages ends in the loss and takes no output gradient");
    if (p->nccl && grads)
        return fu_fail("model parallel", "NCCL sums the gradients the stages hold: backward takes no host buffer");
    p->params = params, p->grads = grads;
    p->ready = false;
    return run(p, JOB_BACKWARD, b->dist && b->dist->grads_ready ? b->dist : NULL);
}

static void pipe_destroy(fu_backend *b) {
    pipe *p = pipe_of(b);
    if (p) {
        pthread_mutex_lock(&p->mu);
        p->job = JOB_QUIT;
        p->job_id++;
        pthread_cond_broadcast(&p->cv);
        pthread_mutex_unlock(&p->mu);
        for (int s = 0; s < p->k; s++)
            if (p->workers[s].started) pthread_join(p->workers[s].thread, NULL);
        // Backwards: a stage's first backend lends its weights to the others.
        for (int i = p->k * p->micro - 1; p->be && i >= 0; i--) fu_backend_destroy(p->be[i]);
        for (int s = 0; s < p->k; s++) {
            fu_model_free(&p->sub[s]);
            free(p->scratch[s]), free(p->bn_seen[s]), free(p->bn_pooled[s]), free(p->counts_before[s]);
        }
        free(p->be);
        free(p->logits);
        pthread_mutex_destroy(&p->mu);
        pthread_cond_destroy(&p->cv);
        free(p);
    }
    free(b);
}

// ---- resident (backend.h's fu_resident_api): stage by stage ------------------------

static int pipe_load(fu_backend *b, const float *params, const float *state, const float *m1, const float *m2) {
    pipe *p = pipe_of(b);
    for (int s = 0; s < p->k; s++) {
        const fu_stage *st = &p->info[s].stage;
        fu_backend *own = be_at(p, s, 0);
        if (own->resident->load(own, PART(params, st->param0), PART(state, st->state0), PART(m1, st->param0),
                                PART(m2, st->param0)) < 0)
            return stage_failed(p, s);
    }
    return 0;
}

static int pipe_store(fu_backend *b, float *params, float *state, float *m1, float *m2) {
    pipe *p = pipe_of(b);
    for (int s = 0; s < p->k; s++) {
        const fu_stage *st = &p->info[s].stage;
        fu_backend *own = be_at(p, s, 0);
        if (own->resident->store(own, PART(params, st->param0), PART(state, st->state0), PART(m1, st->param0),
                                 PART(m2, st->param0)) < 0)
            return stage_failed(p, s);
    }
    return 0;
}

// The groups' parts within stage st, as offsets into its own parameters;
// returns how many (out holds n_groups).
static int stage_groups(const fu_stage *st, const fu_param_group *groups, int n_groups, fu_param_group *out) {
    size_t lo = st->param0, hi = st->param0 + st->n_params;
    int n = 0;
    for (int g = 0; g < n_groups; g++) {
        size_t a = groups[g].offset > lo ? groups[g].offset : lo;
        size_t z = groups[g].offset + groups[g].count < hi ? groups[g].offset + groups[g].count : hi;
        if (a < z) out[n++] = (fu_param_group){.offset = a - lo, .count = z - a, .decay = groups[g].decay};
    }
    return n;
}

// Clipping with the whole model's norm, sqrt of the sum of the stages'
// squared norms, then each stage's AdamW.
static int pipe_step(fu_backend *b, const fu_adamw_opts *o, const fu_param_group *groups, int n_groups, double lr,
                     int64_t t, double max_norm, double *norm) {
    pipe *p = pipe_of(b);
    double sq = 0;
    for (int s = 0; s < p->k; s++) {
        fu_backend *own = be_at(p, s, 0);
        double ns;
        if (own->resident->grad_norm(own, &ns) < 0) return stage_failed(p, s);
        sq += ns * ns;
    }
    *norm = sqrt(sq);
    fu_param_group *mine = fu_malloc(((size_t)n_groups + 1) * sizeof *mine);
    if (!mine) return -1;
    int rc = 0;
    for (int s = 0; s < p->k && rc == 0; s++) {
        fu_backend *own = be_at(p, s, 0);
        int n = stage_groups(&p->info[s].stage, groups, n_groups, mine);
        if (own->resident->step_with_norm(own, o, mine, n, lr, t, max_norm, *norm) < 0) rc = stage_failed(p, s);
    }
    free(mine);
    return rc;
}

static const fu_resident_api PIPE_RESIDENT = {.load = pipe_load, .store = pipe_store, .step = pipe_step};

// ---- data parallel with NCCL (cuda/nccl_sync.h's fu_nccl_api) -----------------------

// A communicator per stage, over the ranks' copies of that stage (stage s
// of every rank; created in stage order on every rank), attached to the
// stage's first backend, which holds the stage's gradients after the
// micro-batches' sum: run() starts each stage's sum when the stage is done.
static int pipe_attach_nccl(fu_backend *b, fu_comm *c, size_t bucket_bytes, bool after) {
    pipe *p = pipe_of(b);
    if (after) return fu_fail("model parallel", "the stages' gradients are summed by the pipe, not after it");
    if (p->nccl) return fu_fail("model parallel", "an NCCL gradient sync is attached already");
    for (int s = 0; s < p->k; s++) {
        fu_backend *own = be_at(p, s, 0);
        if (own->nccl->attach(own, c, bucket_bytes, true) < 0) return stage_failed(p, s);
    }
    p->nccl = true;
    b->reports_grads = false;
    return 0;
}

static void pipe_nccl_set_scale(fu_backend *b, double scale) {
    pipe *p = pipe_of(b);
    for (int s = 0; s < p->k; s++) be_at(p, s, 0)->nccl->set_scale(be_at(p, s, 0), scale);
}

// The stages' together: buckets, megabytes, and seconds summed (their sums
// run side by side where the stages have GPUs of their own).
static fu_grad_sync_stats pipe_nccl_stats(const fu_backend *b) {
    pipe *p = pipe_of(b);
    fu_grad_sync_stats all = {0};
    for (int s = 0; s < p->k; s++) {
        fu_grad_sync_stats st = be_at(p, s, 0)->nccl->stats_of(be_at(p, s, 0));
        all.buckets += st.buckets, all.mb_per_step += st.mb_per_step;
        all.seconds += st.seconds, all.exposed += st.exposed;
    }
    return all;
}

// The whole model's gradients, one stage's after the other.
static int pipe_nccl_calibrate(fu_backend *b, int reps, double *seconds) {
    pipe *p = pipe_of(b);
    *seconds = 0;
    for (int s = 0; s < p->k; s++) {
        double t;
        if (be_at(p, s, 0)->nccl->calibrate(be_at(p, s, 0), reps, &t) < 0) return stage_failed(p, s);
        *seconds += t;
    }
    return 0;
}

// sum_start/sum_wait: none, a pipe is not attached `after`.
static const struct fu_nccl_api PIPE_NCCL = {.attach = pipe_attach_nccl, .set_scale = pipe_nccl_set_scale,
                                             .stats_of = pipe_nccl_stats, .calibrate = pipe_nccl_calibrate};

// The start-up report's convolution phrase where the stages' backends have
// one (cuda): "stage 1: ...; stage 2: ...", each for its first micro-batch's
// batch size.
static void note_convolutions(pipe *p, fu_backend *b) {
    size_t at = 0;
    for (int s = 0; s < p->k; s++) {
        const char *note = be_at(p, s, 0)->conv_note;
        if (!note) return;
        int w = snprintf(p->conv_note + at, sizeof p->conv_note - at, "%sstage %d: %s", s ? "; " : "", s + 1, note);
        if (w < 0 || (size_t)w >= sizeof p->conv_note - at) break; // cut short: what fits
        at += (size_t)w;
    }
    b->conv_note = p->conv_note;
}

// fp16: one loss scale for every stage and micro-batch (and every rank:
// the trainer's overflow verdict is the summed gradients' norm), as
// GradScaler's one scale. Each backward leaves it alone; the pipe updates
// it after each step and hands it to the backends where it changed.
static int pipe_loss_scaling(const fu_backend *b, fu_loss_scale *out) {
    *out = pipe_of(b)->scale;
    return 0;
}

static int pipe_set_loss_scaling(fu_backend *b, const fu_loss_scale *in) {
    pipe *p = pipe_of(b);
    for (int i = 0; i < p->k * p->micro; i++)
        if (p->be[i]->set_loss_scaling(p->be[i], in) < 0) return stage_failed(p, i / p->micro);
    p->scale = *in;
    return 0;
}

static int pipe_loss_scale_update(fu_backend *b, bool overflowed) {
    pipe *p = pipe_of(b);
    fu_loss_scale next = p->scale;
    fu_loss_scale_next(&next, overflowed, FU_LEAST_LOSS_SCALE, FU_LOSS_SCALE_GROWTH);
    if (next.scale != p->scale.scale) return pipe_set_loss_scaling(b, &next);
    p->scale = next; // the clean steps counted: the backends need only the scale
    return 0;
}

int fu_pipe_info(const fu_backend *b, fu_pipe_stage_info *info, int max) {
    if (!b || b->destroy != pipe_destroy) return 0;
    const pipe *p = b->impl;
    for (int s = 0; s < p->k && s < max; s++) info[s] = p->info[s];
    return p->k;
}

static int check_opts(const fu_pipe_opts *po, const fu_backend_opts *o) {
    if (po->stages < 1 || po->stages > FU_MAX_STAGES)
        return fu_fail("model parallel", "%d stages: 1..%d can be made", po->stages, FU_MAX_STAGES);
    if (po->micro_batches < 1 || po->micro_batches > MAX_MICRO)
        return fu_fail("model parallel", "%d micro-batches: 1..%d are possible", po->micro_batches, MAX_MICRO);
    if (o->batch < 2 * po->micro_batches)
        return fu_fail("model parallel", "a batch of %d cannot make %d micro-batches of 2 images or more "
                                         "(BatchNorm needs two)", o->batch, po->micro_batches);
    return 0;
}

// Which GPU stage s runs on, and whether there are enough of them.
static int place_stages(pipe *p, const fu_pipe_opts *po, const fu_backend_opts *o) {
    bool gpu = strcmp(po->backend, "cuda") == 0;
    for (int s = 0; s < p->k; s++)
        p->info[s].device = !gpu ? -1 : po->shared_device ? o->device : o->device * p->k + s;
    if (!gpu || po->shared_device || p->k == 1) return 0;
    char why[160] = "";
    int have = fu_backend_gpu_count(why, sizeof why), need = p->info[p->k - 1].device + 1;
    if (have >= need) return 0;
    fu_fail("model parallel", "%d stages on GPUs %d-%d need %d GPUs; this machine has %d%s%s", p->k,
            p->info[0].device, need - 1, need, have, why[0] ? ": " : "", why);
    fu_hint("--allow-shared-gpu puts every stage on one GPU");
    return -1;
}

// Stage s: its model, its M backends (one per micro-batch; the others
// borrowing the first's weights where they can) and, with several
// micro-batches, its gradient scratch and deferred BN's snapshots.
static int make_stage(pipe *p, int s, const char *backend, fu_backend_opts so) {
    const fu_stage *st = &p->info[s].stage;
    if (fu_model_stage(p->m, st, &p->sub[s]) < 0) return -1;
    for (int j = 0; j < p->micro; j++) {
        so.weights_of = j ? p->be[s * p->micro] : NULL;
        if (fu_backend_create(backend, &p->sub[s], &so, &p->be[s * p->micro + j]) < 0) {
            fu_error_prefix("stage %d (%s)", s, st->name);
            return -1;
        }
    }
    if (p->micro == 1) return 0;
    if (!(p->scratch[s] = fu_malloc((st->n_params + 1) * sizeof(float)))) return -1;
    if (p->deferred_bn &&
        (!(p->bn_seen[s] = fu_malloc(((size_t)p->micro + 1) * st->n_state * sizeof(float) + 1)) ||
         !(p->bn_pooled[s] = fu_malloc((st->n_state + 1) * sizeof(float))) ||
         !(p->counts_before[s] = fu_malloc((st->n_counts + 1) * sizeof(int64_t)))))
        return -1;
    return 0;
}

int fu_pipe_create(const fu_model *m, const fu_pipe_opts *po, const fu_backend_opts *o, fu_backend **out) {
    *out = NULL;
    if (check_opts(po, o) < 0) return -1;
    fu_backend *b = fu_calloc(1, sizeof *b);
    pipe *p = fu_calloc(1, sizeof *p);
    if (!b || !p) {
        free(b), free(p);
        return -1;
    }
    pthread_mutex_init(&p->mu, NULL);
    pthread_cond_init(&p->cv, NULL);
    p->m = m, p->k = po->stages, p->micro = po->micro_batches, p->deferred_bn = po->deferred_bn;
    *b = (fu_backend){.m = m, .batch = o->batch, .amp = o->amp, .impl = p, .forward = pipe_forward,
                      .logits = pipe_logits, .backward = pipe_backward, .destroy = pipe_destroy,
                      .reports_grads = true};
    fu_stage st[FU_MAX_STAGES];
    int k = p->k;
    int rc = po->cuts ? fu_stages_parse(m, po->cuts, st, FU_MAX_STAGES, &k) : fu_stages_balanced(m, p->k, st);
    if (rc == 0 && k != p->k)
        rc = fu_fail("model parallel", "--stages lists %d stages, not the %d asked for", k, p->k);
    for (int s = 0; rc == 0 && s < p->k; s++) p->info[s].stage = st[s];
    if (rc == 0) rc = place_stages(p, po, o);
    p->be = fu_calloc((size_t)p->k * p->micro, sizeof *p->be);
    p->logits = fu_calloc((size_t)o->batch * m->classes, sizeof *p->logits);
    if (rc < 0 || !p->be || !p->logits) {
        pipe_destroy(b);
        return -1;
    }
    // Each backend holds one micro-batch: up to ceil(batch / M) images, or 3
    // where a short batch makes fewer, larger ones (split()).
    int per = (o->batch + p->micro - 1) / p->micro;
    fu_backend_opts so = *o;
    so.batch = p->micro > 1 && per < 3 ? 3 : per;
    so.loss_scale_by_caller = true;
    int threads = o->threads > 0 ? o->threads : omp_get_max_threads();
    p->threads = so.threads = threads > p->k ? threads / p->k : 1; // the stages share the cores
    for (int s = 0; s < p->k; s++) {
        so.device = p->info[s].device < 0 ? o->device : p->info[s].device;
        if (make_stage(p, s, po->backend, so) < 0) {
            pipe_destroy(b);
            return -1;
        }
        size_t on_gpu = 0; // this stage's, on its GPU
        for (int j = 0; j < p->micro; j++) {
            b->act_bytes += be_at(p, s, j)->act_bytes;
            b->grad_bytes += be_at(p, s, j)->grad_bytes;
            on_gpu += be_at(p, s, j)->device_bytes;
        }
        // The busiest GPU's: all of them where the stages share one.
        if (po->shared_device) b->device_bytes += on_gpu;
        else if (on_gpu > b->device_bytes) b->device_bytes = on_gpu;
    }
    b->name = p->be[0]->name;
    // Input batches in stage 0's pinned memory (cuda); the rest held if every stage can.
    b->host_alloc = p->be[0]->host_alloc, b->host_free = p->be[0]->host_free;
    b->resident = &PIPE_RESIDENT;
    // NCCL too where every stage has it: it sums the gradients they hold.
    b->nccl = &PIPE_NCCL;
    for (int s = 0; s < p->k; s++) {
        const fu_resident_api *r = be_at(p, s, 0)->resident;
        if (!r || !r->grad_norm || !r->step_with_norm || !r->add_grads) b->resident = NULL;
        if (!be_at(p, s, 0)->nccl) b->nccl = NULL;
    }
    if (!b->resident) b->nccl = NULL;
    if (p->be[0]->loss_scaling) { // fp16: the pipe's scale starts where its backends' do
        b->loss_scaling = pipe_loss_scaling, b->set_loss_scaling = pipe_set_loss_scaling;
        b->loss_scale_update = pipe_loss_scale_update;
        if (p->be[0]->loss_scaling(p->be[0], &p->scale) < 0) {
            pipe_destroy(b);
            return -1;
        }
    }
    note_convolutions(p, b);
    for (int s = 0; s < p->k; s++) {
        p->workers[s] = (worker){.p = p, .s = s};
        if (pthread_create(&p->workers[s].thread, NULL, worker_main, &p->workers[s]) != 0) {
            pipe_destroy(b);
            return fu_fail("model parallel", "cannot start the thread of stage %d", s);
        }
        p->workers[s].started = true;
    }
    *out = b;
    return 0;
}
