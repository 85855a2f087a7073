// Trainer state for --resume (checkpoint.h).
#include "nn/checkpoint.h"

#include "core/error.h"
#include "nn/safetensors.h"

#include <inttypes.h>
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
    t->step = strtoll(v[0], NULL, 10);
    t->skipped = 0;
    const char *scaling = fu_st_meta(f, "fp16_loss_scaling");
    if (scaling && loss_scaling_from(path, scaling, fu_st_meta(f, "fp16_steps_skipped"), t) < 0) goto done;
    s->st = (fu_epoch_stats){.epoch = atoi(v[1]), .next_batch = atoi(v[2]), .loss_sum = strtod(v[3], NULL),
                             .seen = strtoll(v[4], NULL, 10), .correct = strtoll(v[5], NULL, 10),
                             .seconds = strtod(v[6], NULL), .wait = strtod(v[7], NULL)};
    s->best_epoch = atoi(v[8]);
    s->best_score = strtod(v[9], NULL);
    s->train_seconds = strtod(v[10], NULL);
    s->wait_seconds = strtod(v[11], NULL);
    s->images = strtoll(v[12], NULL, 10);
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
