// Trainer state for --resume (checkpoint.h).
#include "nn/checkpoint.h"

#include "core/error.h"
#include "nn/safetensors.h"

#include <errno.h>
#include <inttypes.h>
#include <limits.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

enum { MAX_META = 96 }; // metadata entries (names and values) of the state file

static void path_in(char *out, size_t n, const char *dir, const char *file) { snprintf(out, n, "%s/%s", dir, file); }

// fp16's loss scaling (fu_backend.loss_scaling), so that a resumed run scales
// as the uninterrupted one: "SCALE CLEAN", the scale in hex; rank 0's, which
// is every rank's (the ranks agree on every overflow); text "" without loss
// scaling. Beside it, the steps skipped (fp16_steps_skipped, the same on
// every rank), for AdamW's step count.
static int loss_scaling_text(const fu_backend *b, char *text, size_t size) {
    fu_loss_scale s;
    text[0] = 0;
    if (!b->loss_scaling) return 0;
    if (b->loss_scaling(b, &s) < 0) return -1;
    fu_loss_scale_format(&s, text, size);
    return 0;
}

static int loss_scaling_from(const char *path, const char *text, const char *skipped, fu_trainer *t) {
    fu_backend *b = t->be;
    if (!b->set_loss_scaling) return fu_fail(path, "holds fp16 loss scaling, and this run has none");
    char *end;
    long long k = skipped ? strtoll(skipped, &end, 10) : -1;
    if (!skipped || end == skipped || *end || k < 0 || k > t->step)
        return fu_fail(path, "fp16_steps_skipped is not a count of the %" PRId64 " steps: '%s'", t->step,
                       skipped ? skipped : "(unset)");
    fu_loss_scale s;
    if (fu_loss_scale_parse(text, &s) < 0)
        return fu_fail(path, "fp16_loss_scaling is not a loss scaling state: '%s'", text);
    if (b->set_loss_scaling(b, &s) < 0) return -1;
    t->skipped = k;
    return 0;
}

int fu_checkpoint_save(const char *dir, fu_trainer *t, const fu_run_state *s, const char *const *settings) {
    const fu_model *m = t->m;
    if (fu_trainer_pull(t) < 0) return -1;
    char path[4096], step[32], epoch[32], next[32], loss[64], seen[32], correct[32], secs[64], wait[64];
    char best_epoch[32], best_score[64], tsecs[64], twait[64], images[32], skipped[32];
    snprintf(tsecs, sizeof tsecs, "%a", s->train_seconds);
    snprintf(twait, sizeof twait, "%a", s->wait_seconds);
    snprintf(images, sizeof images, "%" PRId64, s->images);
    snprintf(step, sizeof step, "%" PRId64, t->step);
    snprintf(epoch, sizeof epoch, "%d", s->st.epoch);
    snprintf(next, sizeof next, "%d", s->st.next_batch);
    snprintf(loss, sizeof loss, "%a", s->st.loss_sum);
    snprintf(seen, sizeof seen, "%" PRId64, s->st.seen);
    snprintf(correct, sizeof correct, "%" PRId64, s->st.correct);
    snprintf(secs, sizeof secs, "%a", s->st.seconds);
    snprintf(wait, sizeof wait, "%a", s->st.wait);
    snprintf(best_epoch, sizeof best_epoch, "%d", s->best_epoch);
    snprintf(best_score, sizeof best_score, "%a", s->best_score);
    const char *meta[MAX_META] = {"step", step};
    path_in(path, sizeof path, dir, "last.safetensors");
    if (fu_model_save(path, m, t->params, t->state, t->counts, meta) < 0) return -1;

    const char *fixed[] = {"format", "fundus-trainer-state-1", "step", step, "epoch", epoch, "next_batch", next,
                           "loss_sum", loss, "seen", seen, "correct", correct, "seconds", secs, "wait", wait,
                           "best_epoch", best_epoch, "best_score", best_score, "train_seconds", tsecs,
                           "wait_seconds", twait, "images", images, "log", s->log ? s->log : ""};
    int k = 0;
    for (size_t i = 0; i < sizeof fixed / sizeof *fixed; i++) meta[k++] = fixed[i];
    char scaling[64];
    if (loss_scaling_text(t->be, scaling, sizeof scaling) < 0) return -1;
    snprintf(skipped, sizeof skipped, "%" PRId64, t->skipped);
    if (scaling[0]) {
        meta[k++] = "fp16_loss_scaling", meta[k++] = scaling;
        meta[k++] = "fp16_steps_skipped", meta[k++] = skipped;
    }
    for (int i = 0; settings && settings[i]; i += 2) {
        if (k + 2 >= MAX_META) return fu_fail(dir, "more run settings than a checkpoint holds (%d)", MAX_META / 2);
        meta[k++] = settings[i];
        meta[k++] = settings[i + 1];
    }
    meta[k] = NULL;
    fu_st_tensor moments[2] = {
        {.name = "adamw.exp_avg", .dtype = FU_ST_F32, .ndim = 1, .shape = {(int64_t)m->n_params}, .data = t->m1},
        {.name = "adamw.exp_avg_sq", .dtype = FU_ST_F32, .ndim = 1, .shape = {(int64_t)m->n_params}, .data = t->m2}};
    path_in(path, sizeof path, dir, "state.safetensors");
    return fu_st_write(path, moments, 2, meta);
}

// A metadata value that is a whole number from lo to hi, into *out; else an
// error naming it (a damaged or hand-edited state must not steer the
// trainer off its data: a batch index of -5 read before the epoch's order).
static int whole(const char *path, const char *key, const char *text, long long lo, long long hi, long long *out) {
    char *end;
    errno = 0;
    long long v = strtoll(text, &end, 10);
    if (end == text || *end || errno || v < lo || v > hi) {
        if (lo == hi) return fu_fail(path, "%s is not %lld: '%s'", key, lo, text);
        if (hi == LLONG_MAX) return fu_fail(path, "%s is not a whole number from %lld up: '%s'", key, lo, text);
        return fu_fail(path, "%s is not a whole number from %lld to %lld: '%s'", key, lo, hi, text);
    }
    *out = v;
    return 0;
}

// A metadata value that is a number from 0 up, finite (or NaN where nan_ok:
// an undefined score), into *out; else an error naming it.
static int amount(const char *path, const char *key, const char *text, bool nan_ok, double *out) {
    char *end;
    double v = strtod(text, &end);
    if (end == text || *end || !(isnan(v) ? nan_ok : isfinite(v) && v >= 0))
        return fu_fail(path, "%s is not a number from 0 up: '%s'", key, text);
    *out = v;
    return 0;
}

// A metadata value that must be present.
static const char *need(const fu_st_file *f, const char *path, const char *key) {
    const char *v = fu_st_meta(f, key);
    if (!v) fu_fail(path, "no '%s' in the trainer state", key);
    return v;
}

static int moments_in(const fu_st_file *f, const char *path, const char *name, size_t n, float *out) {
    const fu_st_tensor *s = fu_st_find(f, name);
    if (!s || s->dtype != FU_ST_F32 || s->ndim != 1 || (size_t)s->shape[0] != n)
        return fu_fail(path, "%s is missing or not %zu floats: not the state of this model", name, n);
    memcpy(out, s->data, n * sizeof *out);
    return 0;
}

int fu_checkpoint_load(const char *dir, fu_trainer *t, fu_run_state *s, const char *const *settings) {
    const fu_model *m = t->m;
    char path[4096], last[4096], best[4096];
    path_in(path, sizeof path, dir, "state.safetensors");
    path_in(last, sizeof last, dir, "last.safetensors");
    path_in(best, sizeof best, dir, "model.safetensors");
    fu_st_file *f = fu_st_open(path);
    if (!f) {
        fu_hint("--resume continues a run in the same --out folder");
        return -1;
    }
    int rc = -1;
    fu_st_file *lf = NULL;
    const char *format = fu_st_meta(f, "format");
    if (!format || strcmp(format, "fundus-trainer-state-1") != 0) {
        fu_fail(path, "not a cnn-train state file");
        goto done;
    }
    for (int i = 0; settings && settings[i]; i += 2) {
        const char *was = fu_st_meta(f, settings[i]);
        if (!was || strcmp(was, settings[i + 1]) != 0) {
            fu_fail(path, "the run was started with %s %s, this one has %s", settings[i], was ? was : "(unset)",
                    settings[i + 1]);
            fu_hint("resume with the original options, or train into a new --out folder");
            goto done;
        }
    }
    const char *keys[] = {"step", "epoch", "next_batch", "loss_sum", "seen", "correct", "seconds", "wait",
                          "best_epoch", "best_score", "train_seconds", "wait_seconds", "images", "log"};
    enum { N_KEYS = sizeof keys / sizeof *keys };
    const char *v[N_KEYS];
    for (int i = 0; i < N_KEYS; i++)
        if (!(v[i] = need(f, path, keys[i]))) goto done;
    // Each within what a run of these settings can have reached (the batch
    // index within the epoch: the trainer checks it against the data).
    long long step = 0, epoch = 0, next = 0, seen = 0, correct = 0, best_epoch = -1, images = 0;
    double loss_sum = 0, secs = 0, wait = 0, score = 0, tsecs = 0, twait = 0;
    if (whole(path, "step", v[0], 0, LLONG_MAX, &step) < 0 ||
        whole(path, "epoch", v[1], 0, t->o.epochs, &epoch) < 0 ||
        whole(path, "next_batch", v[2], 0, INT_MAX, &next) < 0 ||
        amount(path, "loss_sum", v[3], false, &loss_sum) < 0 ||
        whole(path, "seen", v[4], 0, LLONG_MAX, &seen) < 0 ||
        whole(path, "correct", v[5], 0, seen, &correct) < 0 ||
        amount(path, "seconds", v[6], false, &secs) < 0 ||
        amount(path, "wait", v[7], false, &wait) < 0 ||
        whole(path, "best_epoch", v[8], -1, epoch - 1, &best_epoch) < 0 ||
        amount(path, "best_score", v[9], true, &score) < 0 ||
        amount(path, "train_seconds", v[10], false, &tsecs) < 0 ||
        amount(path, "wait_seconds", v[11], false, &twait) < 0 ||
        whole(path, "images", v[12], 0, LLONG_MAX, &images) < 0)
        goto done;
    lf = fu_st_open(last);
    if (!lf) goto done;
    const char *lstep = fu_st_meta(lf, "step");
    if (!lstep || strcmp(lstep, v[0]) != 0) {
        fu_fail(dir, "last.safetensors (step %s) and state.safetensors (step %s) do not belong together",
                lstep ? lstep : "?", v[0]);
        goto done;
    }
    fu_trainer_host_changed(t); // the host buffers are written from here on
    if (fu_model_load(last, m, t->params, t->state, t->counts) < 0) goto done;
    if (moments_in(f, path, "adamw.exp_avg", m->n_params, t->m1) < 0 ||
        moments_in(f, path, "adamw.exp_avg_sq", m->n_params, t->m2) < 0)
        goto done;
    // (None in a checkpoint from before the scale was kept: the scale starts over.)
    t->step = step;
    t->skipped = 0;
    const char *scaling = fu_st_meta(f, "fp16_loss_scaling");
    if (scaling && loss_scaling_from(path, scaling, fu_st_meta(f, "fp16_steps_skipped"), t) < 0) goto done;
    s->st = (fu_epoch_stats){.epoch = (int)epoch, .next_batch = (int)next, .loss_sum = loss_sum, .seen = seen,
                             .correct = correct, .seconds = secs, .wait = wait};
    s->best_epoch = (int)best_epoch;
    s->best_score = score;
    s->train_seconds = tsecs;
    s->wait_seconds = twait;
    s->images = images;
    free(s->log);
    s->log = strdup(v[13]);
    if (!s->log) {
        fu_fail(path, "out of memory");
        goto done;
    }
    if (s->best_epoch >= 0) {
        fu_st_file *bf = fu_st_open(best);
        if (!bf) goto done;
        const char *be = fu_st_meta(bf, "epoch");
        bool same = be && atoi(be) == s->best_epoch + 1;
        fu_st_close(bf);
        if (!same) {
            fu_fail(best, "holds epoch %s, the trainer state selected epoch %d", be ? be : "?", s->best_epoch + 1);
            goto done;
        }
        if (fu_model_load(best, m, t->best_params, t->best_state, t->best_counts) < 0) goto done;
    }
    rc = 0;
done:
    if (lf) fu_st_close(lf);
    fu_st_close(f);
    return rc;
}
