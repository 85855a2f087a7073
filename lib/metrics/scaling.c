#include "metrics/scaling.h"

#include "core/error.h"

#include <math.h>

// Backward's share of a step's compute (about two thirds: it does twice
// forward's work), the most an allreduce could hide behind when the 2-rank
// run hid all of its allreduce and so does not show the limit.
#define BACKWARD_SHARE (2.0 / 3.0)

double fu_ring_allreduce_seconds(int ranks, double bytes_per_bw, double latency) {
    if (ranks < 2) return 0;
    // Reduce-scatter then all-gather: 2(N-1) hops, each moving B/N bytes.
    return 2.0 * (ranks - 1) / ranks * bytes_per_bw + 2.0 * (ranks - 1) * latency;
}

double fu_scaling_steps(const fu_scaling_model *m, int ranks) {
    return m->epochs * ceil(m->images / (ranks * m->batch));
}

fu_scaling_point fu_scaling_predict(const fu_scaling_model *m, int ranks) {
    fu_scaling_point p = {.ranks = ranks, .steps = fu_scaling_steps(m, ranks)};
    p.allreduce = fu_ring_allreduce_seconds(ranks, m->bytes_per_bw, m->latency);
    p.exposed = fmax(0, p.allreduce - m->hide);
    p.seconds = p.steps * (m->step_compute + m->step_wait + p.exposed) + m->fixed;
    return p;
}

static int need(const fu_run *r, const char *col, double v) {
    if (isnan(v)) return fu_fail(r->file, "line %ld: %s has no %s (the scaling model needs it)", r->line, r->config, col);
    return 0;
}

// The recipe of a 1-rank run, its per-step compute and wait; whatever else
// the run spent is fixed.
static void fit_one(const fu_run *one, fu_scaling_model *m) {
    *m = (fu_scaling_model){.images = one->train_images, .epochs = one->epochs, .batch = one->batch_per_rank};
    double steps1 = fu_scaling_steps(m, 1);
    double wait1 = isnan(one->data_wait_seconds) ? 0 : one->data_wait_seconds;
    double compute1 = isnan(one->compute_seconds) ? one->train_seconds - wait1 : one->compute_seconds;
    m->step_compute = compute1 / steps1;
    m->step_wait = wait1 / steps1;
    m->fixed = one->train_seconds - compute1 - wait1;
}

static int need_recipe(const fu_run *one) {
    if (need(one, "epochs", one->epochs) < 0 || need(one, "train_images", one->train_images) < 0 ||
        need(one, "batch_per_rank", one->batch_per_rank) < 0)
        return -1;
    return 0;
}

int fu_scaling_fit_nominal(const fu_run *one, double grad_bytes, double bandwidth, double latency,
                           fu_scaling_model *m) {
    if (one->ranks != 1) return fu_fail(one->config, "the scaling model fits a 1-rank run, not %d ranks", one->ranks);
    if (!(grad_bytes > 0) || !(bandwidth > 0) || !(latency >= 0))
        return fu_fail(one->config, "a nominal fit needs positive gradient bytes and bandwidth");
    if (need_recipe(one) < 0) return -1;
    fit_one(one, m);
    m->bytes_per_bw = grad_bytes / bandwidth;
    m->latency = latency;
    m->allreduce2 = m->exposed2 = NAN;
    m->hide = BACKWARD_SHARE * m->step_compute; // buckets overlapping all of backward
    return 0;
}

int fu_scaling_fit(const fu_run *one, const fu_run *two, double latency, fu_scaling_model *m) {
    if (one->ranks != 1 || two->ranks != 2)
        return fu_fail(one->config, "the scaling model fits a 1-rank and a 2-rank run, not %d and %d ranks", one->ranks,
                       two->ranks);
    if (need_recipe(one) < 0 || need(two, "allreduce_seconds", two->allreduce_seconds) < 0 ||
        need(two, "allreduce_exposed_seconds", two->allreduce_exposed_seconds) < 0)
        return -1;
    if (two->epochs != one->epochs || two->train_images != one->train_images ||
        two->batch_per_rank != one->batch_per_rank)
        return fu_fail(two->config, "trained %g epochs of %g images in batches of %g per rank, %s %g of %g in %g: "
                                    "not one recipe",
                       two->epochs, two->train_images, two->batch_per_rank, one->config, one->epochs,
                       one->train_images, one->batch_per_rank);
    fit_one(one, m);

    // Two ranks: the allreduce per step, what backward hid of it, and the
    // bandwidth term, best from one clean blocking allreduce of the gradient.
    double steps2 = isnan(two->steps) ? fu_scaling_steps(m, 2) : two->steps;
    if (!(steps2 > 0)) return fu_fail(two->file, "line %ld: %s ran no steps", two->line, two->config);
    double a2 = two->allreduce_seconds / steps2, e2 = two->allreduce_exposed_seconds / steps2;
    double full = two->allreduce_full_seconds > 0 ? two->allreduce_full_seconds : a2;
    m->latency = fmin(latency, full / 2);
    m->bytes_per_bw = full - 2 * m->latency;
    m->allreduce2 = a2, m->exposed2 = e2;
    m->hide = e2 > 0.01 * a2 ? fmax(0, a2 - e2) : fmax(a2, BACKWARD_SHARE * m->step_compute);
    return 0;
}
