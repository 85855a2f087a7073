#include "metrics/table.h"

#include "core/csv.h"
#include "core/error.h"

#include <errno.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

// ---- reading results CSVs ----------------------------------------------------------

enum {
    // required
    COL_CONFIG, COL_DEVICE, COL_RANKS, COL_THREADS, COL_SECONDS, COL_ACC, COL_AUC, N_REQUIRED,
    // optional, text
    COL_DATASET = N_REQUIRED, COL_DEVICE_NAME, COL_AMP, COL_IMAGE_SIZE, COL_STAGE_BUSY,
    // optional, numbers
    COL_MP, COL_BATCH, COL_EPOCHS, COL_IMAGES, COL_RATE, COL_WAIT, COL_STEPS, COL_ALLREDUCE, COL_EXPOSED,
    COL_FULL, COL_GRAD_MB, COL_COMPUTE, COL_MICRO, COL_GPUS, N_COLS
};
static const char *const col_names[N_COLS] = {
    "config", "device", "ranks", "threads_per_rank", "train_seconds", "test_acc", "test_auc",
    "dataset", "device_name", "amp", "image_size", "stage_busy_seconds",
    "model_parallel", "batch_per_rank", "epochs", "train_images", "images_per_second", "data_wait_seconds",
    "steps", "allreduce_seconds", "allreduce_exposed_seconds", "allreduce_full_seconds", "grad_mb",
    "compute_seconds", "micro_batches", "gpus_per_rank"};

typedef struct {
    fu_run *v;
    size_t n, cap;
} run_list;

static int parse_num(fu_csv *c, const char *col, const char *s, bool allow_empty, double *out) {
    if (!*s && allow_empty) {
        *out = NAN;
        return 0;
    }
    char *end;
    errno = 0;
    double v = strtod(s, &end);
    if (!*s || *end || errno || !isfinite(v))
        return fu_fail(c->name, "line %ld: %s '%s' is not a number", c->line, col, s);
    *out = v;
    return 0;
}

// Copies an optional text field (empty when the column is absent).
static void put_text(char *dst, size_t n, const fu_csv *c, int col) {
    snprintf(dst, n, "%s", col >= 0 ? c->fields[col] : "");
}

// The run's series (table.h): its kind, precision and model parallelism.
// The amp column says fp32 (older files: off, 0 or nothing) unless it ran
// fp16 or bf16.
static void series_of(fu_run *r) {
    const char *amp = strcmp(r->amp, "fp16") == 0 ? "+AMP" : strcmp(r->amp, "bf16") == 0 ? "+bf16" : "";
    snprintf(r->series, sizeof r->series, "%s%s%s", r->cpu ? "CPU" : "DDP", amp, r->model_parallel > 1 ? "+MP" : "");
}

static int parse_run(fu_csv *c, const int *col, fu_run *r) {
    memset(r, 0, sizeof *r);
    const char *config = c->fields[col[COL_CONFIG]];
    if (!*config) return fu_fail(c->name, "line %ld: empty config", c->line);
    if (strlen(config) >= sizeof r->config)
        return fu_fail(c->name, "line %ld: config name longer than %zu bytes", c->line, sizeof r->config - 1);
    snprintf(r->config, sizeof r->config, "%s", config);
    put_text(r->device, sizeof r->device, c, col[COL_DEVICE]);
    put_text(r->dataset, sizeof r->dataset, c, col[COL_DATASET]);
    put_text(r->device_name, sizeof r->device_name, c, col[COL_DEVICE_NAME]);
    put_text(r->amp, sizeof r->amp, c, col[COL_AMP]);
    put_text(r->image_size, sizeof r->image_size, c, col[COL_IMAGE_SIZE]);
    put_text(r->stage_busy, sizeof r->stage_busy, c, col[COL_STAGE_BUSY]);
    r->file = c->name, r->line = c->line;

    double ranks = 0, threads = 0;
    if (parse_num(c, "ranks", c->fields[col[COL_RANKS]], false, &ranks) < 0 ||
        parse_num(c, "threads_per_rank", c->fields[col[COL_THREADS]], false, &threads) < 0 ||
        parse_num(c, "train_seconds", c->fields[col[COL_SECONDS]], false, &r->train_seconds) < 0 ||
        parse_num(c, "test_acc", c->fields[col[COL_ACC]], true, &r->test_acc) < 0 ||
        parse_num(c, "test_auc", c->fields[col[COL_AUC]], true, &r->test_auc) < 0)
        return -1;
    double *opt[] = {&r->model_parallel, &r->batch_per_rank, &r->epochs, &r->train_images, &r->images_per_second,
                     &r->data_wait_seconds, &r->steps, &r->allreduce_seconds, &r->allreduce_exposed_seconds,
                     &r->allreduce_full_seconds, &r->grad_mb, &r->compute_seconds, &r->micro_batches,
                     &r->gpus_per_rank};
    for (int k = COL_MP; k < N_COLS; k++) {
        double *v = opt[k - COL_MP];
        if (col[k] < 0) *v = NAN;
        else if (parse_num(c, col_names[k], c->fields[col[k]], true, v) < 0) return -1;
    }
    if (ranks < 1 || threads < 1 || ranks != floor(ranks) || threads != floor(threads) || ranks * threads > 1e6)
        return fu_fail(c->name, "line %ld: ranks and threads_per_rank must be positive integers", c->line);
    if (!(r->train_seconds > 0)) return fu_fail(c->name, "line %ld: train_seconds must be > 0", c->line);
    double gpus = r->gpus_per_rank;
    if (!isnan(gpus) && (gpus < 0 || gpus != floor(gpus) || gpus > 1024))
        return fu_fail(c->name, "line %ld: gpus_per_rank must be an integer from 0 to 1024", c->line);
    r->ranks = (int)ranks, r->threads_per_rank = (int)threads;
    r->cpu = strncmp(r->device, "cpu", 3) == 0;
    // A GPU run's workers are the GPUs it used; an older file (no
    // gpus_per_rank) ran one per rank.
    r->workers = r->cpu ? r->ranks * r->threads_per_rank : r->ranks * (gpus >= 1 ? (int)gpus : 1);
    series_of(r);
    return 0;
}

static int push(run_list *l, const fu_run *r) {
    if (l->n == l->cap) {
        size_t cap = l->cap ? 2 * l->cap : 16;
        fu_run *v = fu_realloc(l->v, cap * sizeof *v);
        if (!v) return -1;
        l->v = v, l->cap = cap;
    }
    l->v[l->n++] = *r;
    return 0;
}

static int read_file(run_list *l, const char *path) {
    fu_csv c;
    if (fu_csv_open(&c, path) < 0) return -1;
    int rc = fu_csv_next(&c);
    if (rc <= 0) {
        if (rc == 0) fu_fail(path, "empty file: want a header row");
        fu_csv_close(&c);
        return -1;
    }
    int ncols = c.n, col[N_COLS];
    for (int k = 0; k < N_COLS; k++) {
        col[k] = -1;
        for (int j = 0; j < c.n; j++)
            if (strcmp(c.fields[j], col_names[k]) == 0) col[k] = j;
        if (col[k] < 0 && k < N_REQUIRED) {
            fu_fail(path, "line 1: no column '%s' (a results CSV, DESIGN.md section 6)", col_names[k]);
            fu_csv_close(&c);
            return -1;
        }
    }
    size_t before = l->n;
    fu_run r;
    while ((rc = fu_csv_next(&c)) == 1) {
        if (c.n != ncols) {
            rc = fu_fail(path, "line %ld: %d fields, the header has %d", c.line, c.n, ncols);
            break;
        }
        if ((rc = parse_run(&c, col, &r)) < 0 || (rc = push(l, &r)) < 0) break;
    }
    if (rc == 0 && l->n == before) rc = fu_fail(path, "no runs after the header");
    fu_csv_close(&c);
    return rc < 0 ? -1 : 0;
}

int fu_runs_load(const char *const *paths, int n_paths, fu_run **runs, size_t *count) {
    run_list l = {0};
    for (int i = 0; i < n_paths; i++) {
        if (read_file(&l, paths[i]) < 0) {
            free(l.v);
            *runs = NULL, *count = 0;
            return -1;
        }
    }
    *runs = l.v, *count = l.n;
    return 0;
}

// ---- the speedup table -----------------------------------------------------------------

int fu_table_of_runs(const fu_run *runs, size_t n_runs, const char *baseline, fu_table_row **rows, size_t *count) {
    *rows = NULL, *count = 0;
    fu_table_row *t = fu_realloc(NULL, (n_runs ? n_runs : 1) * sizeof *t);
    if (!t) return -1;
    size_t n = 0;
    for (size_t k = 0; k < n_runs; k++) {
        const fu_run *r = &runs[k];
        size_t i = 0;
        while (i < n && strcmp(t[i].config, r->config) != 0) i++;
        if (i == n) {
            memset(&t[n], 0, sizeof t[n]);
            snprintf(t[n].config, sizeof t[n].config, "%s", r->config);
            snprintf(t[n].device, sizeof t[n].device, "%s", r->device);
            snprintf(t[n].series, sizeof t[n].series, "%s", r->series);
            t[n++].workers = r->workers;
        }
        // (the message reads t: t is freed after it)
        if (t[i].workers != r->workers) {
            fu_fail(r->file, "line %ld: config %s has %d workers here but %d in an earlier run", r->line, r->config,
                    r->workers, t[i].workers);
            free(t);
            return -1;
        }
        if (strcmp(t[i].series, r->series) != 0) {
            fu_fail(r->file, "line %ld: config %s is a %s run here but %s in an earlier run", r->line, r->config,
                    r->series, t[i].series);
            free(t);
            return -1;
        }
        // Sums for now; NaN sticks: a mean over runs that lack a value is undefined.
        t[i].runs++;
        t[i].train_seconds += r->train_seconds;
        t[i].test_acc += r->test_acc;
        t[i].test_auc += r->test_auc;
    }
    const fu_table_row *base = NULL;
    for (size_t i = 0; i < n; i++) {
        t[i].train_seconds /= t[i].runs;
        t[i].test_acc /= t[i].runs;
        t[i].test_auc /= t[i].runs;
        if (strcmp(t[i].config, baseline) == 0) base = &t[i];
    }
    if (!base) {
        free(t);
        fu_fail(baseline, "no run of this baseline config among the %zu runs", n_runs);
        fu_hint("--baseline names a value of the config column, e.g. cpu1");
        return -1;
    }
    for (size_t i = 0; i < n; i++) {
        t[i].speedup = base->train_seconds / t[i].train_seconds;
        t[i].efficiency = t[i].speedup / t[i].workers;
    }
    *rows = t, *count = n;
    return 0;
}

int fu_speedup_table(const char *const *paths, int n_paths, const char *baseline, fu_table_row **rows,
                     size_t *count) {
    fu_run *runs;
    size_t n;
    *rows = NULL, *count = 0;
    if (fu_runs_load(paths, n_paths, &runs, &n) < 0) return -1;
    int rc = fu_table_of_runs(runs, n, baseline, rows, count);
    free(runs);
    return rc;
}
