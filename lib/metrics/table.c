#include "metrics/table.h"

#include "core/csv.h"
#include "core/error.h"

#include <errno.h>
#include <math.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

enum { COL_CONFIG, COL_DEVICE, COL_RANKS, COL_THREADS, COL_SECONDS, COL_ACC, COL_AUC, N_COLS };
static const char *const col_names[N_COLS] = {"config",        "device",   "ranks",   "threads_per_rank",
                                              "train_seconds", "test_acc", "test_auc"};

typedef struct {
    fu_table_row *rows;
    size_t count, cap;
    double *acc_sum, *auc_sum; // per row; NaN once a run lacks the value
} table;

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

static int add_run(table *t, fu_csv *c, const int *col) {
    const char *config = c->fields[col[COL_CONFIG]], *device = c->fields[col[COL_DEVICE]];
    double ranks = 0, threads = 0, seconds = 0, acc = NAN, auc = NAN;
    if (!*config) return fu_fail(c->name, "line %ld: empty config", c->line);
    if (strlen(config) >= sizeof t->rows[0].config)
        return fu_fail(c->name, "line %ld: config name longer than %zu bytes", c->line,
                       sizeof t->rows[0].config - 1);
    if (parse_num(c, "ranks", c->fields[col[COL_RANKS]], false, &ranks) < 0 ||
        parse_num(c, "threads_per_rank", c->fields[col[COL_THREADS]], false, &threads) < 0 ||
        parse_num(c, "train_seconds", c->fields[col[COL_SECONDS]], false, &seconds) < 0 ||
        parse_num(c, "test_acc", c->fields[col[COL_ACC]], true, &acc) < 0 ||
        parse_num(c, "test_auc", c->fields[col[COL_AUC]], true, &auc) < 0)
        return -1;
    if (ranks < 1 || threads < 1 || ranks != floor(ranks) || threads != floor(threads) || ranks * threads > 1e6)
        return fu_fail(c->name, "line %ld: ranks and threads_per_rank must be positive integers", c->line);
    if (!(seconds > 0)) return fu_fail(c->name, "line %ld: train_seconds must be > 0", c->line);
    bool cpu = strncmp(device, "cpu", 3) == 0;
    int workers = (int)(cpu ? ranks * threads : ranks);

    size_t i = 0;
    while (i < t->count && strcmp(t->rows[i].config, config) != 0) i++;
    if (i == t->count) {
        if (t->count == t->cap) {
            size_t cap = t->cap ? 2 * t->cap : 16;
            fu_table_row *r = fu_realloc(t->rows, cap * sizeof *r);
            if (!r) return -1;
            t->rows = r;
            double *a = fu_realloc(t->acc_sum, cap * sizeof *a);
            if (!a) return -1;
            t->acc_sum = a;
            double *b = fu_realloc(t->auc_sum, cap * sizeof *b);
            if (!b) return -1;
            t->auc_sum = b;
            t->cap = cap;
        }
        fu_table_row *r = &t->rows[t->count++];
        memset(r, 0, sizeof *r);
        snprintf(r->config, sizeof r->config, "%s", config);
        snprintf(r->device, sizeof r->device, "%s", device);
        r->workers = workers;
        t->acc_sum[i] = t->auc_sum[i] = 0;
    }
    fu_table_row *r = &t->rows[i];
    if (r->workers != workers)
        return fu_fail(c->name, "line %ld: config %s has %d workers here but %d in an earlier run", c->line,
                       config, workers, r->workers);
    r->runs++;
    r->train_seconds += seconds;
    t->acc_sum[i] += acc; // NaN sticks: a mean over runs that lack it is undefined
    t->auc_sum[i] += auc;
    return 0;
}

static int read_file(table *t, const char *path) {
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
        if (col[k] < 0) {
            fu_fail(path, "line 1: no column '%s' (a results CSV, DESIGN.md section 6)", col_names[k]);
            fu_csv_close(&c);
            return -1;
        }
    }
    size_t runs = 0;
    while ((rc = fu_csv_next(&c)) == 1) {
        if (c.n != ncols) {
            rc = fu_fail(path, "line %ld: %d fields, the header has %d", c.line, c.n, ncols);
            break;
        }
        if ((rc = add_run(t, &c, col)) < 0) break;
        runs++;
    }
    if (rc == 0 && runs == 0) rc = fu_fail(path, "no runs after the header");
    fu_csv_close(&c);
    return rc < 0 ? -1 : 0;
}

int fu_speedup_table(const char *const *paths, int n_paths, const char *baseline, fu_table_row **rows,
                     size_t *count) {
    table t = {0};
    *rows = NULL;
    *count = 0;
    for (int i = 0; i < n_paths; i++) {
        if (read_file(&t, paths[i]) < 0) goto fail;
    }
    const fu_table_row *base = NULL;
    for (size_t i = 0; i < t.count; i++) {
        fu_table_row *r = &t.rows[i];
        r->train_seconds /= r->runs;
        r->test_acc = t.acc_sum[i] / r->runs;
        r->test_auc = t.auc_sum[i] / r->runs;
        if (strcmp(r->config, baseline) == 0) base = r;
    }
    if (!base) {
        fu_fail(baseline, "no run of this baseline config in the %d results file%s", n_paths,
                n_paths == 1 ? "" : "s");
        fu_hint("--baseline names a value of the config column, e.g. cpu1");
        goto fail;
    }
    for (size_t i = 0; i < t.count; i++) {
        fu_table_row *r = &t.rows[i];
        r->speedup = base->train_seconds / r->train_seconds;
        r->efficiency = r->speedup / r->workers;
    }
    free(t.acc_sum);
    free(t.auc_sum);
    *rows = t.rows;
    *count = t.count;
    return 0;
fail:
    free(t.rows);
    free(t.acc_sum);
    free(t.auc_sum);
    return -1;
}
