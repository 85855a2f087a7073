// The cuda backend's training state on the device (cuda_net.cu describes the
// backend, its "Resident mode" and "Mixed precision" paragraphs this part):
// the weights, BN state and AdamW moments loaded and stored, the step
// (clipping and AdamW, cuda_optim.h) and its kept figures, fp16's loss
// scale, the pipe's split step over stages and micro-batches; and the NCCL
// gradient sums' hooks (fu_nccl_api, nccl_sync.h).
#include "cuda/cuda_net.h"
#include "cuda/cuda_optim.h"

#include <stdlib.h>
#include <string.h>

// The profile's section of the step (cuda_profile.h).
static const char *const OPTIMIZER = "optimizer: norm, clipping, AdamW";

// ---- resident training state (backend.h's fu_resident_api) -------------------------

// A backend that borrows its weights (weights_of) has no moments nor step.
static int check_lender(const cu_net *d, bool moments) {
    if (d->borrowed && moments)
        return fu_fail("cuda backend", "this backend borrows another's weights: it holds no AdamW moments and makes "
                                       "no optimizer step");
    return 0;
}

static int cu_load(fu_backend *b, const float *params, const float *state, const float *m1, const float *m2) {
    cu_net *d = (cu_net *)b->impl;
    size_t np = d->m->n_params * sizeof(float), ns = d->m->n_state * sizeof(float);
    if (check_lender(d, m1 || m2) < 0 || use_device(d) < 0) return -1;
    snprintf(d->what, sizeof d->what, "loading weights, BN state and AdamW moments onto the GPU");
    if (params) CU(cudaMemcpy(d->params, params, np, cudaMemcpyHostToDevice));
    if (state) CU(cudaMemcpy(d->state, state, ns, cudaMemcpyHostToDevice));
    if (m1) CU(cudaMemcpy(d->m1, m1, np, cudaMemcpyHostToDevice));
    if (m2) CU(cudaMemcpy(d->m2, m2, np, cudaMemcpyHostToDevice));
    return 0;
}

static int cu_store(fu_backend *b, float *params, float *state, float *m1, float *m2) {
    cu_net *d = (cu_net *)b->impl;
    size_t np = d->m->n_params * sizeof(float), ns = d->m->n_state * sizeof(float);
    if (check_lender(d, m1 || m2) < 0 || use_device(d) < 0) return -1;
    snprintf(d->what, sizeof d->what, "storing weights, BN state and AdamW moments from the GPU");
    if (params) DOWNLOAD(params, d->params, np);
    if (state) DOWNLOAD(state, d->state, ns);
    if (m1) DOWNLOAD(m1, d->m1, np);
    if (m2) DOWNLOAD(m2, d->m2, np);
    return 0;
}

static bool same_groups(const fu_param_group *a, const fu_param_group *b, int n) {
    for (int j = 0; j < n; j++)
        if (a[j].offset != b[j].offset || a[j].count != b[j].count || a[j].decay != b[j].decay) return false;
    return true;
}

static int by_offset(const void *a, const void *b) {
    size_t x = ((const fu_param_group *)a)->offset, y = ((const fu_param_group *)b)->offset;
    return x < y ? -1 : x > y;
}

// cu_adamw finds an element's group by binary search: the groups (sorted)
// must lie within the parameters and not overlap.
static int check_groups(const cu_net *d, const fu_param_group *sorted, int n) {
    size_t np = d->m->n_params, end = 0;
    for (int j = 0; j < n; j++) {
        const fu_param_group *g = &sorted[j];
        if (g->offset < end || g->offset > np || g->count > np - g->offset)
            return fu_fail("cuda backend", "AdamW's parameter group [%zu, %zu) overlaps another or lies beyond the "
                                           "%zu parameters", g->offset, g->offset + g->count, np);
        end = g->offset + g->count;
    }
    return 0;
}

// The sorted groups into d->groups, replacing the ones there.
static int put_groups(cu_net *d, const fu_param_group *sorted, int n) {
    size_t bytes = ((size_t)n + 1) * sizeof *sorted; // one spare: never 0 bytes
    snprintf(d->what, sizeof d->what, "uploading AdamW's %d parameter groups", n);
    CU(cudaFree(d->groups));
    d->b->device_bytes -= d->groups_bytes;
    d->groups = NULL, d->groups_bytes = 0, d->n_dev_groups = 0;
    if (dev_alloc(d, &d->groups, bytes) < 0) return -1;
    d->groups_bytes = bytes;
    CU(cudaMemcpy(d->groups, sorted, (size_t)n * sizeof *sorted, cudaMemcpyHostToDevice));
    d->n_dev_groups = n;
    return 0;
}

// The step's groups on the device: the caller's without empty ones, sorted
// by offset. Uploaded on the first step and again when the caller's change
// (compared with a host copy of what was uploaded last).
static int upload_groups(cu_net *d, const fu_param_group *groups, int n) {
    if (d->host_groups && n == d->n_groups && same_groups(groups, d->host_groups, n)) return 0;
    free(d->host_groups);
    d->host_groups = NULL, d->n_groups = 0; // until the new ones are on the device
    fu_param_group *sorted = (fu_param_group *)fu_malloc(((size_t)n + 1) * sizeof *sorted);
    fu_param_group *copy = (fu_param_group *)fu_malloc(((size_t)n + 1) * sizeof *copy);
    int kept = 0, rc = sorted && copy ? 0 : -1;
    for (int j = 0; j < n && rc == 0; j++)
        if (groups[j].count) sorted[kept++] = groups[j];
    if (rc == 0) qsort(sorted, (size_t)kept, sizeof *sorted, by_offset);
    if (rc == 0) rc = check_groups(d, sorted, kept);
    if (rc == 0) rc = put_groups(d, sorted, kept);
    if (rc == 0) {
        if (n) memcpy(copy, groups, (size_t)n * sizeof *copy);
        d->host_groups = copy, d->n_groups = n;
        copy = NULL;
    }
    free(sorted), free(copy);
    return rc;
}

// Before a step: the device, the groups uploaded, d->what.
static int begin_step(cu_net *d, const fu_param_group *groups, int n_groups, int64_t t, double max_norm) {
    if (check_lender(d, true) < 0 || use_device(d) < 0 || upload_groups(d, groups, n_groups) < 0) return -1;
    snprintf(d->what, sizeof d->what, "optimizer step %lld (gradient norm, clipping at %g, AdamW)", (long long)t,
             max_norm);
    mark(d, OPTIMIZER);
    return 0;
}

// AdamW clipped with the norm in d->norm (device memory), with the step's
// scalars as the host forms them (adamw_math.h) for t and the 15 steps
// before, passed by value: the kernel takes t less the refusals the host has
// not read yet (d->refused), writes nothing where the norm is not finite,
// and then, where count_refusal (the norm stays on the device), counts one
// more refusal.
static int adamw(cu_net *d, const fu_adamw_opts *o, double lr, int64_t t, double max_norm, bool count_refusal) {
    cu_adamw_coefs ks;
    for (int j = 0; j < FU_FIGURE_SLOTS; j++)
        ks.k[j] = fu_adamw_coef_of(o->beta1, o->beta2, o->eps, o->weight_decay, lr, t - j > 1 ? t - j : 1);
    cu_adamw(d->m->n_params, d->groups, d->n_dev_groups, &ks, d->refused, count_refusal, max_norm, d->norm, d->grads,
             d->params, d->m1, d->m2);
    if (op_done(d) < 0) return -1;
    cu_profile_flush(d->prof);
    return 0;
}

// Clipping and AdamW on the gradients of the last backward (in d->grads),
// as fu_clip_grad_norm and fu_adamw_step on the host; the norm stays on the
// device for the kernel, and comes back after, or (norm NULL) goes to the
// step's figures, with fp16's loss scale: after a forward that kept its loss
// there, the step is done and its slot taken.
static int cu_step(fu_backend *b, const fu_adamw_opts *o, const fu_param_group *groups, int n_groups, double lr,
                   int64_t t, double max_norm, double *norm) {
    cu_net *d = (cu_net *)b->impl;
    if (begin_step(d, groups, n_groups, t, max_norm) < 0) return -1;
    cu_grad_norm(d->m->n_params, d->grads, d->norm_part, d->norm);
    if (adamw(d, o, lr, t, max_norm, !norm) < 0) return -1;
    if (norm) {
        DOWNLOAD(norm, d->norm, sizeof *norm);
        return 0;
    }
    fu_step_figures *fig = &d->figs[d->fig_slot];
    CU(cudaMemcpyAsync(&fig->norm, d->norm, sizeof *d->norm, cudaMemcpyDeviceToDevice, 0));
    if (d->scaler) CU(cudaMemcpyAsync(&fig->loss_scale, &d->scaler->scale, sizeof(float), cudaMemcpyDeviceToDevice, 0));
    if (d->fig_slot == d->fig_next) d->fig_next++;
    d->fig_slot = FU_FIGURE_SLOTS; // a second step of the same forward cannot take another slot
    return 0;
}

// The scaler's state comes from the device (a wait), goes back there.
int cu_loss_scaling(const fu_backend *b, fu_loss_scale *out) {
    cu_net *d = (cu_net *)b->impl;
    if (use_device(d) < 0) return -1;
    snprintf(d->what, sizeof d->what, "reading the fp16 loss scale");
    DOWNLOAD(out, d->scaler, sizeof *out);
    return 0;
}

int cu_set_loss_scaling(fu_backend *b, const fu_loss_scale *in) {
    cu_net *d = (cu_net *)b->impl;
    if (!fu_loss_scale_valid(in)) return fu_fail("cuda backend", "not a loss scaling state");
    if (use_device(d) < 0) return -1;
    snprintf(d->what, sizeof d->what, "setting the fp16 loss scale");
    CU(cudaMemcpy(d->scaler, in, sizeof *in, cudaMemcpyHostToDevice));
    return 0;
}

// The kept steps' figures (backend.h), the one wait of those steps; the
// steps refused among them are the host's to count from here.
static int cu_figures(fu_backend *b, fu_step_figures *out, int *steps) {
    cu_net *d = (cu_net *)b->impl;
    if (use_device(d) < 0) return -1;
    snprintf(d->what, sizeof d->what, "reading the figures of %d steps", d->fig_next);
    if (d->fig_next) DOWNLOAD(out, d->figs, (size_t)d->fig_next * sizeof *out);
    CU(cudaMemsetAsync(d->refused, 0, sizeof(int), 0));
    *steps = d->fig_next;
    d->fig_next = 0;
    return 0;
}

// The pipe's step over stages (backend.h): each stage's norm, then AdamW
// clipped with the whole model's.
static int cu_grad_norm_of(fu_backend *b, double *norm) {
    cu_net *d = (cu_net *)b->impl;
    if (use_device(d) < 0) return -1;
    snprintf(d->what, sizeof d->what, "the gradient norm");
    mark(d, OPTIMIZER);
    cu_grad_norm(d->m->n_params, d->grads, d->norm_part, d->norm);
    if (op_done(d) < 0) return -1;
    DOWNLOAD(norm, d->norm, sizeof *norm);
    cu_profile_flush(d->prof);
    return 0;
}

static int cu_step_with_norm(fu_backend *b, const fu_adamw_opts *o, const fu_param_group *groups, int n_groups,
                             double lr, int64_t t, double max_norm, double norm) {
    cu_net *d = (cu_net *)b->impl;
    if (begin_step(d, groups, n_groups, t, max_norm) < 0) return -1;
    CU(cudaMemcpy(d->norm, &norm, sizeof norm, cudaMemcpyHostToDevice));
    return adamw(d, o, lr, t, max_norm, false);
}

// The micro-batches' weighted sum: dst's gradients = a dst's + w src's.
static int cu_add_grads(fu_backend *db, float a, fu_backend *sb, float w) {
    cu_net *d = (cu_net *)db->impl, *s = sb ? (cu_net *)sb->impl : NULL;
    if (sb && (sb->destroy != cu_destroy || s->m->n_params != d->m->n_params || s->device != d->device))
        return fu_fail("cuda backend", "adding gradients: not a cuda backend of the same model on GPU %d", d->device);
    if (use_device(d) < 0) return -1;
    snprintf(d->what, sizeof d->what, "adding a micro-batch's gradients");
    cu_scale_add(d->m->n_params, a, d->grads, w, s ? s->grads : NULL);
    return op_done(d);
}

const fu_resident_api CU_RESIDENT_API = {cu_load, cu_store, cu_step, cu_grad_norm_of, cu_step_with_norm,
                                         cu_add_grads, cu_figures};

// fu_nccl_api (nccl_sync.h): a sync on this backend's device gradient
// buffer, in backward (d->nccl) or after it (d->nccl_after).
static fu_nccl_sync *sync_of(const fu_backend *b) {
    const cu_net *d = (const cu_net *)b->impl;
    return d->nccl ? d->nccl : d->nccl_after;
}

static int cu_attach_nccl(fu_backend *b, fu_comm *c, size_t bucket_bytes, bool after) {
    cu_net *d = (cu_net *)b->impl;
    if (sync_of(b)) return fu_fail("cuda backend", "an NCCL gradient sync is attached already");
    fu_nccl_sync **s = after ? &d->nccl_after : &d->nccl;
    if (fu_nccl_sync_create(c, d->device, d->grads, d->m->n_params, bucket_bytes, s) < 0) return -1;
    b->reports_grads = false;
    return 0;
}

// Every bucket reported at once: each starts after the device's work so far.
static int cu_nccl_sum_start(fu_backend *b) {
    cu_net *d = (cu_net *)b->impl;
    if (!d->nccl_after) return fu_fail("cuda backend", "no NCCL sync attached to be summed after backward");
    if (use_device(d) < 0) return -1;
    fu_nccl_sync_begin(d->nccl_after);
    fu_nccl_sync_ready(d->nccl_after, 0, d->m->n_params);
    return 0;
}

static int cu_nccl_sum_wait(fu_backend *b) {
    cu_net *d = (cu_net *)b->impl;
    if (!d->nccl_after) return fu_fail("cuda backend", "no NCCL sync attached to be summed after backward");
    if (use_device(d) < 0) return -1;
    return fu_nccl_sync_end(d->nccl_after);
}

static void cu_nccl_set_scale(fu_backend *b, double scale) { fu_nccl_sync_set_scale(sync_of(b), scale); }
static fu_grad_sync_stats cu_nccl_stats(const fu_backend *b) { return fu_nccl_sync_stats_of(sync_of(b)); }
static int cu_nccl_calibrate(fu_backend *b, int reps, double *seconds) {
    return fu_nccl_sync_calibrate(sync_of(b), reps, seconds);
}

const fu_nccl_api CU_NCCL_API = {cu_attach_nccl,    cu_nccl_sum_start, cu_nccl_sum_wait,
                                 cu_nccl_set_scale, cu_nccl_stats,     cu_nccl_calibrate};

fu_nccl_sync *fu_cuda_nccl_sync(const fu_backend *b) {
    return b && b->nccl == &CU_NCCL_API ? sync_of(b) : NULL;
}
