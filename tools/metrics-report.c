// metrics-report: how good a set of predictions is (accuracy, sensitivity,
// specificity, precision, F1, ROC AUC, confusion matrix, bootstrap
// intervals, ROC points), computed as scikit-learn does; and, with --table,
// speedup and efficiency over results CSVs of several runs.
#include "core/csv.h"
#include "metrics/bootstrap.h"
#include "metrics/metrics.h"
#include "metrics/roc.h"
#include "metrics/table.h"
#include "toolkit.h"

#include <errno.h>
#include <limits.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static const char USAGE[] =
    "usage: metrics-report [--threshold T] [--ci [--boot N] [--seed S]] [--roc FILE] [--csv]\n"
    "                      [--pool] [-o OUT] [PRED.csv...]\n"
    "       metrics-report --table --baseline CONFIG [-o OUT] RESULTS.csv...\n"
    "Report on predictions: CSV files with the header id,label,p_glaucoma,prediction\n"
    "(as cnn-train and cnn-predict write; other columns are ignored; stdin when no file\n"
    "is named). Labels must be 0 or 1 (1 = glaucoma, the positive class) and\n"
    "p_glaucoma in [0, 1]. One report per file, or one over all of them with --pool.\n"
    "Metrics follow scikit-learn: a ratio with an empty denominator is 0, ROC AUC\n"
    "counts tied scores as half (roc_auc_score) and is undefined, with a note on\n"
    "stderr, when one class is missing.\n"
    "  --threshold T   decide p_glaucoma >= T (0..1) instead of the prediction column\n"
    "  --ci            bootstrap 95% percentile intervals of every metric\n"
    "  --boot N        bootstrap resamples (default 1000)\n"
    "  --seed S        bootstrap seed (default 42); same seed, same intervals\n"
    "  --roc FILE      write the ROC points fpr,tpr,threshold (one per distinct score,\n"
    "                  as sklearn's roc_curve(drop_intermediate=False)) to FILE, for\n"
    "                  gnuplot: set datafile separator ','; plot FILE using 1:2 w l;\n"
    "                  needs one report (one file, or --pool)\n"
    "  --csv           one machine-readable CSV row per report (full precision)\n"
    "  --pool          one report over the rows of all files\n"
    "  --table         read results CSVs (DESIGN.md section 6) and print, per config,\n"
    "                  config,device,workers,runs,train_seconds,speedup,efficiency,\n"
    "                  test_acc,test_auc: speedup = T(baseline) / T(config),\n"
    "                  efficiency = speedup / workers, workers = ranks x threads_per_rank\n"
    "                  on CPUs and ranks on GPUs; runs of one config are averaged\n"
    "  --baseline C    the config the table's speedups are relative to (e.g. cpu1)\n"
    "  -o, --output FILE  write FILE (atomically) instead of stdout\n"
    "  -q, --quiet     no notes on stderr;  -h, --help;  --version\n"
    "example: metrics-report --ci --roc roc.csv run/predictions-test.csv\n";

enum { OPT_THRESHOLD = TOOL_OPT_FIRST_FREE, OPT_CI, OPT_BOOT, OPT_SEED, OPT_ROC, OPT_CSV, OPT_POOL, OPT_TABLE,
       OPT_BASELINE };

typedef struct {
    double *p;
    int *label, *pred;
    size_t n, cap;
} preds;

static int preds_push(preds *d, double p, int label, int pred) {
    if (d->n == d->cap) {
        size_t cap = d->cap ? 2 * d->cap : 1024;
        double *np = fu_realloc(d->p, cap * sizeof *np);
        if (!np) return -1;
        d->p = np;
        int *nl = fu_realloc(d->label, cap * sizeof *nl);
        if (!nl) return -1;
        d->label = nl;
        int *nd = fu_realloc(d->pred, cap * sizeof *nd);
        if (!nd) return -1;
        d->pred = nd;
        d->cap = cap;
    }
    d->p[d->n] = p, d->label[d->n] = label, d->pred[d->n] = pred;
    d->n++;
    return 0;
}

static int column(const fu_csv *c, const char *name) {
    for (int j = 0; j < c->n; j++)
        if (strcmp(c->fields[j], name) == 0) return j;
    return -1;
}

// Appends the rows of one predictions file; need_pred: the prediction column is used.
static int read_predictions(const char *path, bool need_pred, preds *d) {
    fu_csv c;
    if (strcmp(path, "-") == 0) {
        memset(&c, 0, sizeof c);
        c.f = stdin, c.name = "stdin";
    } else if (fu_csv_open(&c, path) < 0) {
        return -1;
    }
    int rc = fu_csv_next(&c), ncols = c.n;
    int col_label = -1, col_p = -1, col_pred = -1;
    if (rc == 0) rc = fu_fail(c.name, "empty file: want the header id,label,p_glaucoma,prediction");
    if (rc > 0) {
        col_label = column(&c, "label"), col_p = column(&c, "p_glaucoma"), col_pred = column(&c, "prediction");
        const char *missing = col_label < 0 ? "label" : col_p < 0 ? "p_glaucoma"
                                                    : need_pred && col_pred < 0 ? "prediction" : NULL;
        if (missing)
            rc = fu_fail(c.name, "line 1: no column '%s' (want the header id,label,p_glaucoma,prediction)",
                         missing);
    }
    size_t before = d->n;
    while (rc > 0 && (rc = fu_csv_next(&c)) == 1) {
        if (c.n != ncols) {
            rc = fu_fail(c.name, "line %ld: %d fields, the header has %d", c.line, c.n, ncols);
            break;
        }
        const char *ls = c.fields[col_label], *ps = c.fields[col_p];
        if (!*ls) {
            rc = fu_fail(c.name, "line %ld: label is empty (metrics need the true labels)", c.line);
            break;
        }
        if (strcmp(ls, "0") != 0 && strcmp(ls, "1") != 0) {
            rc = fu_fail(c.name, "line %ld: label '%s' is not 0 or 1", c.line, ls);
            break;
        }
        char *end;
        errno = 0;
        double p = strtod(ps, &end);
        if (!*ps || *end || errno || isnan(p)) {
            rc = fu_fail(c.name, "line %ld: p_glaucoma '%s' is not a number", c.line, ps);
            break;
        }
        if (p < 0 || p > 1) {
            rc = fu_fail(c.name, "line %ld: p_glaucoma %s is outside [0, 1]", c.line, ps);
            break;
        }
        int pred = 0;
        if (need_pred) {
            const char *ds = c.fields[col_pred];
            if (strcmp(ds, "0") != 0 && strcmp(ds, "1") != 0) {
                rc = fu_fail(c.name, "line %ld: prediction '%s' is not 0 or 1", c.line, ds);
                break;
            }
            pred = ds[0] == '1';
        }
        if (preds_push(d, p, ls[0] == '1', pred) < 0) {
            rc = -1;
            break;
        }
    }
    if (rc == 0 && d->n == before) rc = fu_fail(c.name, "no predictions after the header");
    fu_csv_close(&c);
    return rc < 0 ? -1 : 0;
}

typedef struct {
    double threshold; // < 0: use the prediction column
    bool ci, csv;
    int boot;
    uint64_t seed;
    const char *roc_path;
} report_opts;

static void write_roc(const char *path, const preds *d) {
    fu_roc_point *pts;
    size_t count;
    fu_outfile o;
    if (fu_roc_curve(d->p, d->label, d->n, &pts, &count) < 0 || fu_out_open(&o, path, false) < 0) tool_fail();
    fputs("fpr,tpr,threshold\n", o.f);
    for (size_t i = 0; i < count; i++) fprintf(o.f, "%.17g,%.17g,%.17g\n", pts[i].fpr, pts[i].tpr, pts[i].threshold);
    free(pts);
    if (fu_out_commit(&o) < 0) tool_fail();
}

static void report(FILE *out, const char *name, preds *d, const report_opts *o, bool *header_done) {
    if (o->threshold >= 0)
        for (size_t i = 0; i < d->n; i++) d->pred[i] = d->p[i] >= o->threshold;
    fu_metrics m;
    fu_metrics_compute(d->p, d->label, d->pred, d->n, &m);
    fu_bootstrap_ci ci;
    if (o->ci && fu_bootstrap(d->p, d->label, d->pred, d->n, o->boot, o->seed, 0.95, &ci) < 0) tool_fail();
    if (isnan(m.auc)) tool_note("%s: only class %d present: ROC AUC is undefined", name, m.positives ? 1 : 0);
    if (o->roc_path) write_roc(o->roc_path, d);

    if (o->csv) {
        if (!*header_done) {
            fputs("file,n,positives,negatives,tn,fp,fn,tp", out);
            for (int k = 0; k < FU_M_COUNT; k++) fprintf(out, ",%s", fu_metric_names[k]);
            if (o->ci)
                for (int k = 0; k < FU_M_COUNT; k++)
                    fprintf(out, ",%s_lo,%s_hi", fu_metric_names[k], fu_metric_names[k]);
            fputc('\n', out);
            *header_done = true;
        }
        fu_csv_put(out, name, strlen(name));
        fprintf(out, ",%zu,%zu,%zu,%zu,%zu,%zu,%zu", m.n, m.positives, m.negatives, m.cm.tn, m.cm.fp, m.cm.fn,
                m.cm.tp);
        for (int k = 0; k < FU_M_COUNT; k++) fprintf(out, ",%.17g", fu_metric_value(&m, k));
        if (o->ci)
            for (int k = 0; k < FU_M_COUNT; k++) fprintf(out, ",%.17g,%.17g", ci.lo[k], ci.hi[k]);
        fputc('\n', out);
        return;
    }

    if (*header_done) fputc('\n', out);
    *header_done = true;
    fprintf(out, "%s: %zu predictions, %zu glaucoma (1), %zu normal (0); decision: ", name, m.n, m.positives,
            m.negatives);
    if (o->threshold >= 0) fprintf(out, "p_glaucoma >= %g\n", o->threshold);
    else fputs("prediction column\n", out);
    for (int k = 0; k < FU_M_COUNT; k++) {
        double v = fu_metric_value(&m, k);
        fprintf(out, "  %-13s", fu_metric_names[k]);
        if (isnan(v)) fputs("undefined (one class only)", out);
        else fprintf(out, "%.4f", v);
        if (o->ci && !isnan(v)) {
            if (isnan(ci.lo[k])) fputs("  95% CI undefined", out);
            else fprintf(out, "  95%% CI [%.4f, %.4f]", ci.lo[k], ci.hi[k]);
            if (k == FU_M_AUC && ci.auc_reps != (size_t)o->boot)
                fprintf(out, " (%zu resamples with both classes)", ci.auc_reps);
        }
        fputc('\n', out);
    }
    if (o->ci) fprintf(out, "  bootstrap: %d resamples, seed %llu, percentile intervals\n", o->boot,
                       (unsigned long long)o->seed);
    fputs("  confusion matrix (rows: true class, columns: predicted class)\n", out);
    fprintf(out, "  %10s %8s %8s\n", "", "pred 0", "pred 1");
    fprintf(out, "  %10s %8zu %8zu\n", "true 0", m.cm.tn, m.cm.fp);
    fprintf(out, "  %10s %8zu %8zu\n", "true 1", m.cm.fn, m.cm.tp);
}

static void print_optional(FILE *out, double v) {
    if (!isnan(v)) fprintf(out, "%.4f", v);
}

static void table(FILE *out, const char *const *paths, int n, const char *baseline) {
    fu_table_row *rows;
    size_t count;
    if (fu_speedup_table(paths, n, baseline, &rows, &count) < 0) tool_fail();
    fputs("config,device,workers,runs,train_seconds,speedup,efficiency,test_acc,test_auc\n", out);
    for (size_t i = 0; i < count; i++) {
        const fu_table_row *r = &rows[i];
        fu_csv_put(out, r->config, strlen(r->config));
        fputc(',', out);
        fu_csv_put(out, r->device, strlen(r->device));
        fprintf(out, ",%d,%d,%.3f,%.4f,%.4f,", r->workers, r->runs, r->train_seconds, r->speedup, r->efficiency);
        print_optional(out, r->test_acc);
        fputc(',', out);
        print_optional(out, r->test_auc);
        fputc('\n', out);
    }
    free(rows);
}

int main(int argc, char **argv) {
    tool_init("metrics-report", USAGE);
    static const struct option opts[] = {TOOL_COMMON_LONGOPTS,
                                         {"threshold", required_argument, 0, OPT_THRESHOLD},
                                         {"ci", no_argument, 0, OPT_CI},
                                         {"boot", required_argument, 0, OPT_BOOT},
                                         {"seed", required_argument, 0, OPT_SEED},
                                         {"roc", required_argument, 0, OPT_ROC},
                                         {"csv", no_argument, 0, OPT_CSV},
                                         {"pool", no_argument, 0, OPT_POOL},
                                         {"table", no_argument, 0, OPT_TABLE},
                                         {"baseline", required_argument, 0, OPT_BASELINE},
                                         {0, 0, 0, 0}};
    report_opts o = {.threshold = -1, .boot = 1000, .seed = 42};
    bool pool = false, as_table = false;
    const char *baseline = NULL;
    int c;
    while ((c = tool_getopt(argc, argv, TOOL_COMMON_SHORTOPTS, opts)) != -1) {
        switch (c) {
        case OPT_THRESHOLD: o.threshold = tool_parse_double("--threshold", optarg, 0, 1); break;
        case OPT_CI: o.ci = true; break;
        case OPT_BOOT: o.boot = (int)tool_parse_long("--boot", optarg, 1, 10000000); break;
        case OPT_SEED: o.seed = (uint64_t)tool_parse_long("--seed", optarg, 0, LONG_MAX); break;
        case OPT_ROC: o.roc_path = optarg; break;
        case OPT_CSV: o.csv = true; break;
        case OPT_POOL: pool = true; break;
        case OPT_TABLE: as_table = true; break;
        case OPT_BASELINE: baseline = optarg; break;
        default: tool_usage_error("unexpected option");
        }
    }
    const char *const *files = (const char *const *)argv + optind;
    int n_files = argc - optind;
    static const char *const stdin_only[] = {"-"};

    if (as_table) {
        if (!baseline) tool_usage_error("--table needs --baseline CONFIG");
        if (n_files == 0) tool_usage_error("--table needs results CSV files");
        FILE *out = tool_open_output(false);
        table(out, files, n_files, baseline);
        tool_commit_output();
        return 0;
    }
    if (baseline) tool_usage_error("--baseline goes with --table");
    if (n_files == 0) files = stdin_only, n_files = 1;
    if (o.roc_path && n_files > 1 && !pool) tool_usage_error("--roc writes one curve: name one file, or --pool");

    FILE *out = tool_open_output(false);
    bool header_done = false;
    preds d = {0};
    for (int i = 0; i < n_files; i++) {
        if (read_predictions(files[i], o.threshold < 0, &d) < 0) tool_fail();
        if (pool) continue;
        report(out, strcmp(files[i], "-") == 0 ? "stdin" : files[i], &d, &o, &header_done);
        d.n = 0;
    }
    if (pool) report(out, "pooled", &d, &o, &header_done);
    free(d.p), free(d.label), free(d.pred);
    tool_commit_output();
    return 0;
}
