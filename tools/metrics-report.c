// metrics-report: how good a set of predictions is (accuracy, sensitivity,
// specificity, precision, F1, ROC AUC, confusion matrix, bootstrap
// intervals, ROC points), computed as scikit-learn does; and, over results
// CSVs of several runs, speedup and efficiency (--table), the scaling
// model's predictions beside the measurements (--predict) and a markdown
// summary of both (--summary).
#include "core/csv.h"
#include "metrics/bootstrap.h"
#include "metrics/metrics.h"
#include "metrics/roc.h"
#include "metrics/scaling.h"
#include "metrics/table.h"
#include "toolkit.h"

#include <ctype.h>
#include <errno.h>
#include <limits.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static const char USAGE[] =
    "usage: metrics-report [--threshold T] [--ci [--boot N] [--seed S]] [--roc FILE] [--csv]\n"
    "                      [--pool] [-o OUT] [PRED.csv...]\n"
    "       metrics-report --table|--predict|--summary --baseline CONFIG [--csv] [-o OUT] RESULTS.csv...\n"
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
    "                  test_acc,test_auc,baseline,series: speedup = T(baseline) / T(config),\n"
    "                  efficiency = speedup / workers, workers = ranks x threads_per_rank\n"
    "                  on CPUs, the GPUs used (ranks x gpus_per_rank) on GPUs; runs of one\n"
    "                  config are averaged; CPU configs first, by series, then workers;\n"
    "                  baseline names the baseline, series the chart line: CPU or DDP,\n"
    "                  +AMP (fp16) or +bf16, +MP (model parallel): CPU, CPU+MP, DDP,\n"
    "                  DDP+AMP, DDP+AMP+MP...\n"
    "  --predict       the scaling model (docs/experiments.md): from a 1-rank and a 2-rank\n"
    "                  run (allreduce columns), training time, speedup and efficiency on\n"
    "                  1..32 CPU ranks (1..8 GPUs) beside what was measured; assumptions\n"
    "                  in the header lines (#); --csv: every N, no header lines\n"
    "  --latency S     the model's latency per ring hop in seconds (default 2e-05)\n"
    "  --bandwidth GB/s  GPU kinds of run with a 1-rank run only (one GPU at hand) are\n"
    "                  predicted with this ring bus bandwidth (NCCL's busbw: NVLink,\n"
    "                  PCIe) for --grad-mb MB of gradients per step (MedicalCNN's 89.98)\n"
    "  --summary       markdown: every run, the CPU and GPU scaling tables, the model\n"
    "  --baseline C    the config speedups are relative to (e.g. cpu1)\n"
    "  -o, --output FILE  write FILE (atomically) instead of stdout\n"
    "  -q, --quiet     no notes on stderr;  -h, --help;  --version\n"
    "example: metrics-report --ci --roc roc.csv run/predictions-test.csv\n";

enum { OPT_THRESHOLD = TOOL_OPT_FIRST_FREE, OPT_CI, OPT_BOOT, OPT_SEED, OPT_ROC, OPT_CSV, OPT_POOL, OPT_TABLE,
       OPT_BASELINE, OPT_PREDICT, OPT_LATENCY, OPT_SUMMARY, OPT_BANDWIDTH, OPT_GRAD_MB };

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

// ---- results CSVs: the speedup table, the scaling model, the summary --------------

typedef enum { FMT_TEXT, FMT_CSV, FMT_MD } format;

typedef struct {
    fu_run *runs;
    size_t n_runs;
    fu_table_row *rows; // per config, with speedups against the baseline
    size_t n_rows;
    const fu_table_row *base;
} results;

// Tables list CPU configs first, then by series, workers and name: a
// series' rows follow each other, the line a chart draws through them.
typedef struct {
    bool cpu;
    const char *series;
    int workers;
    const char *config;
} sort_key;

static int by_kind_series_workers(sort_key a, sort_key b) {
    if (a.cpu != b.cpu) return a.cpu ? -1 : 1;
    int c = strcmp(a.series, b.series);
    if (c) return c;
    if (a.workers != b.workers) return a.workers < b.workers ? -1 : 1;
    return strcmp(a.config, b.config);
}

static int cmp_run(const void *pa, const void *pb) {
    const fu_run *a = pa, *b = pb;
    int c = by_kind_series_workers((sort_key){a->cpu, a->series, a->workers, a->config},
                                   (sort_key){b->cpu, b->series, b->workers, b->config});
    if (c) return c;
    return a->file != b->file ? strcmp(a->file, b->file) : (a->line > b->line) - (a->line < b->line);
}

static int cmp_row(const void *pa, const void *pb) {
    const fu_table_row *a = pa, *b = pb;
    return by_kind_series_workers((sort_key){strncmp(a->device, "cpu", 3) == 0, a->series, a->workers, a->config},
                                  (sort_key){strncmp(b->device, "cpu", 3) == 0, b->series, b->workers, b->config});
}

static void load_results(results *r, const char *const *paths, int n, const char *baseline) {
    if (fu_runs_load(paths, n, &r->runs, &r->n_runs) < 0 ||
        fu_table_of_runs(r->runs, r->n_runs, baseline, &r->rows, &r->n_rows) < 0)
        tool_fail();
    qsort(r->runs, r->n_runs, sizeof *r->runs, cmp_run);
    qsort(r->rows, r->n_rows, sizeof *r->rows, cmp_row);
    for (size_t i = 0; i < r->n_rows; i++)
        if (strcmp(r->rows[i].config, baseline) == 0) r->base = &r->rows[i];
}

static void print_optional(FILE *out, double v) {
    if (!isnan(v)) fprintf(out, "%.4f", v);
}

static void table_csv(FILE *out, const results *r) {
    fputs("config,device,workers,runs,train_seconds,speedup,efficiency,test_acc,test_auc,baseline,series\n", out);
    for (size_t i = 0; i < r->n_rows; i++) {
        const fu_table_row *t = &r->rows[i];
        fu_csv_put(out, t->config, strlen(t->config));
        fputc(',', out);
        fu_csv_put(out, t->device, strlen(t->device));
        fprintf(out, ",%d,%d,%.3f,%.4f,%.4f,", t->workers, t->runs, t->train_seconds, t->speedup, t->efficiency);
        print_optional(out, t->test_acc);
        fputc(',', out);
        print_optional(out, t->test_auc);
        fputc(',', out);
        fu_csv_put(out, r->base->config, strlen(r->base->config));
        fputc(',', out);
        fu_csv_put(out, t->series, strlen(t->series));
        fputc('\n', out);
    }
}

// The model's families: runs that differ only in their rank count (cpu1,
// cpux2, cpux4: "cpux*"; h100x1_amp, h100x2_amp: "h100x*_amp"). Model-parallel
// GPU ranks of G GPUs each form their own ("h100x*_amp_mp (2 GPUs/rank)":
// h100x2_amp_mp, h100x4_amp_mp), apart from stages sharing one GPU.
#define MAX_FAMILIES 64
#define MAX_CPU_RANKS 32
#define MAX_GPU_RANKS 8
#define DEFAULT_LATENCY 2e-5
#define MEDICALCNN_GRAD_MB 89.977096 // 22,494,274 fp32 gradients

// How the model is fitted: ring latency; for kinds of run with a 1-rank run
// only, a nominal bandwidth (bytes/s; 0: none) and the bytes all-reduced.
typedef struct {
    double latency, bandwidth, grad_bytes;
} model_opts;

typedef struct {
    char name[80];
    char series[FU_SERIES_LEN];
    bool cpu;
    int threads, gpus; // per rank
    const fu_run *one, *two; // the first 1-rank and 2-rank runs
    bool fitted, nominal; // nominal: from the 1-rank run and --bandwidth
    char why[300]; // not fitted: why
    fu_scaling_model m;
} family;

// GPUs one rank of a GPU run drives (older files: one).
static int gpus_per_rank(const fu_run *r) { return r->gpus_per_rank >= 1 ? (int)r->gpus_per_rank : 1; }

static void family_name(const fu_run *r, char *out, size_t n) {
    const char *suffix = strchr(r->config, '_') ? strchr(r->config, '_') : "";
    if (r->cpu) {
        if (r->threads_per_rank == 1) snprintf(out, n, "cpux*%s", suffix);
        else snprintf(out, n, "cpux*t%d%s", r->threads_per_rank, suffix);
        return;
    }
    const char *x = NULL; // the last 'x' before a rank count
    for (const char *p = r->config; *p; p++)
        if (*p == 'x' && isdigit((unsigned char)p[1])) x = p;
    if (!x) {
        snprintf(out, n, "%s", r->config);
        return;
    }
    const char *end = x + 1;
    while (isdigit((unsigned char)*end)) end++;
    char per_rank[32] = "";
    if (gpus_per_rank(r) > 1) snprintf(per_rank, sizeof per_rank, " (%d GPUs/rank)", gpus_per_rank(r));
    snprintf(out, n, "%.*s*%s%s", (int)(x + 1 - r->config), r->config, end, per_rank);
}

static size_t find_families(const results *r, family *f, const model_opts *mo) {
    size_t n = 0;
    for (size_t k = 0; k < r->n_runs; k++) {
        const fu_run *run = &r->runs[k];
        char name[80];
        family_name(run, name, sizeof name);
        size_t i = 0;
        while (i < n && strcmp(f[i].name, name) != 0) i++;
        if (i == n) {
            if (n == MAX_FAMILIES) tool_die("more than %d kinds of run: the model takes fewer", MAX_FAMILIES);
            f[n] = (family){.cpu = run->cpu, .threads = run->threads_per_rank, .gpus = gpus_per_rank(run)};
            snprintf(f[n].series, sizeof f[n].series, "%s", run->series);
            snprintf(f[n++].name, sizeof f[i].name, "%s", name);
        }
        if (run->ranks == 1 && !f[i].one) f[i].one = run;
        if (run->ranks == 2 && !f[i].two) f[i].two = run;
    }
    // A kind of run that cannot be fitted is said so; the others still are.
    for (size_t i = 0; i < n; i++) {
        f[i].nominal = !f[i].cpu && f[i].one && !f[i].two && mo->bandwidth > 0; // GPUs: NCCL over a known link
        int rc = f[i].nominal ? fu_scaling_fit_nominal(f[i].one, mo->grad_bytes, mo->bandwidth, mo->latency, &f[i].m)
                 : f[i].one && f[i].two ? fu_scaling_fit(f[i].one, f[i].two, mo->latency, &f[i].m)
                                        : fu_fail("", "no %d-rank run", f[i].one ? 2 : 1);
        if (rc < 0) snprintf(f[i].why, sizeof f[i].why, "%s", fu_error());
        else f[i].fitted = true;
    }
    return n;
}

// Mean measured training time of the family's runs on `ranks` ranks; NaN if none.
static double measured(const results *r, const family *f, int ranks) {
    double sum = 0;
    int runs = 0;
    for (size_t k = 0; k < r->n_runs; k++) {
        char name[80];
        family_name(&r->runs[k], name, sizeof name);
        if (r->runs[k].ranks == ranks && strcmp(name, f->name) == 0) sum += r->runs[k].train_seconds, runs++;
    }
    return runs ? sum / runs : NAN;
}

static const char *const ASSUMPTIONS[] = {
    "data parallel: every rank trains a fixed batch per step (batch_per_rank, 32 in the study), so steps per "
    "rank = epochs x ceil(train_images / (N x batch))",
    "a step costs on N ranks what it costs on 1 (compute and data wait per step of the 1-rank run): each rank "
    "has cores of its own, no contention for memory bandwidth",
    "gradient allreduce on a ring: 2(N-1)/N x bytes / bandwidth + 2(N-1) x latency per step; bandwidth from the "
    "2-rank run's blocking allreduce of the whole gradient (allreduce_full_seconds; else its allreduce time per "
    "step), latency fixed (--latency)",
    "the allreduce overlaps with backward: the part longer than what the 2-rank run hid (or, when it hid all, "
    "than backward's 2/3 of compute) adds to the step",
    "train time besides the steps (fixed) stays as measured at 1 rank; evaluation is not in train_seconds",
    "GPUs with a 1-rank run only (--bandwidth): the allreduce at the nominal ring bus bandwidth, overlapping all of "
    "backward (2/3 of a step's compute), the GPUs fed as fast as the one was: a ceiling, not a fit",
    NULL};

static void describe_fit(FILE *out, const family *f, const char *prefix, const model_opts *mo) {
    const fu_scaling_model *m = &f->m;
    double full = fu_ring_allreduce_seconds(2, m->bytes_per_bw, m->latency);
    if (f->nominal) {
        fprintf(out, "%s%s: predicted from %s (%s) alone: compute %.4f s/step, data wait %.4f s/step, fixed %.3f s; "
                     "a nominal ring bus bandwidth of %.1f GB/s for %.1f MB of gradients (one allreduce on 2 ranks "
                     "%.4f s), latency %.0f us/hop, hidden behind backward up to %.4f s/step\n",
                prefix, f->name, f->one->config, f->one->file, m->step_compute, m->step_wait,
                fabs(m->fixed) < 5e-4 ? 0 : m->fixed, mo->bandwidth / 1e9, mo->grad_bytes / 1e6, full,
                m->latency * 1e6, m->hide);
        return;
    }
    fprintf(out, "%s%s: fitted to %s (%s) and %s (%s): compute %.4f s/step, data wait %.4f s/step, fixed %.3f s; "
                 "at 2 ranks the allreduce took %.4f s/step, %.4f s of it exposed; ",
            prefix, f->name, f->one->config, f->one->file, f->two->config, f->two->file, m->step_compute,
            m->step_wait, fabs(m->fixed) < 5e-4 ? 0 : m->fixed, m->allreduce2, m->exposed2);
    if (f->two->allreduce_full_seconds > 0) fprintf(out, "one blocking allreduce of the gradient %.4f s", full);
    else fprintf(out, "bandwidth from the allreduce per step");
    if (!isnan(f->two->grad_mb) && m->bytes_per_bw > 0)
        fprintf(out, " (%.1f MB: %.3f GB/s)", f->two->grad_mb, f->two->grad_mb / 1e3 / m->bytes_per_bw);
    fprintf(out, ", latency %.0f us/hop, hidden behind backward up to %.4f s/step\n", m->latency * 1e6, m->hide);
}

static void model_header(FILE *out, const results *r, const family *f, size_t n, format fmt, const model_opts *mo) {
    const char *pre = fmt == FMT_MD ? "- " : "# ";
    if (fmt == FMT_TEXT)
        fputs("# scaling model (docs/experiments.md): training time of N data-parallel ranks, predicted\n", out);
    for (int k = 0; ASSUMPTIONS[k]; k++) fprintf(out, "%s%s\n", pre, ASSUMPTIONS[k]);
    for (size_t i = 0; i < n; i++) {
        if (f[i].fitted) describe_fit(out, &f[i], pre, mo);
        else fprintf(out, "%s%s: not fitted: %s\n", pre, f[i].name, f[i].why);
    }
    fprintf(out, "%sspeedup = T(%s) / T, %s measured: %.3f s; efficiency = speedup / workers\n", pre,
            r->base->config, r->base->config, r->base->train_seconds);
    if (fmt == FMT_MD) fputc('\n', out);
}

static bool shown(const results *r, const family *f, int ranks, format fmt) {
    return fmt == FMT_CSV || (ranks & (ranks - 1)) == 0 || !isnan(measured(r, f, ranks));
}

// One cell of a row: CSV, markdown or aligned text.
static void cell(FILE *out, format fmt, int k, const char *s) {
    if (fmt == FMT_CSV) fprintf(out, "%s%s", k ? "," : "", s);
    else if (fmt == FMT_MD) fprintf(out, "| %s ", s);
    else fprintf(out, k ? " %12s" : "%-12s", s);
}

static void cellf(FILE *out, format fmt, int k, const char *f, double v) {
    char s[64] = "";
    if (!isnan(v)) snprintf(s, sizeof s, f, v);
    cell(out, fmt, k, fmt == FMT_TEXT && !*s ? "-" : s);
}

static void model_rows(FILE *out, const results *r, const family *f, size_t n, format fmt) {
    static const char *const head[] = {"family", "ranks", "workers", "steps", "allreduce_s", "exposed_s", "seconds",
                                       "speedup", "efficiency", "measured_s", "measured_speedup",
                                       "measured_efficiency", "series"};
    for (int k = 0; k < 13; k++) cell(out, fmt, k, head[k]);
    fputs(fmt == FMT_MD ? "|\n|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---|\n" : "\n", out);
    double base = r->base->train_seconds;
    for (size_t i = 0; i < n; i++) {
        if (!f[i].fitted) continue;
        int max = f[i].cpu ? MAX_CPU_RANKS : MAX_GPU_RANKS;
        for (int ranks = 1; ranks <= max; ranks++) {
            if (!shown(r, &f[i], ranks, fmt)) continue;
            fu_scaling_point p = fu_scaling_predict(&f[i].m, ranks);
            int workers = ranks * (f[i].cpu ? f[i].threads : f[i].gpus);
            double got = measured(r, &f[i], ranks);
            cell(out, fmt, 0, f[i].name);
            cellf(out, fmt, 1, "%.0f", ranks);
            cellf(out, fmt, 2, "%.0f", workers);
            cellf(out, fmt, 3, "%.0f", p.steps);
            cellf(out, fmt, 4, "%.4f", p.allreduce);
            cellf(out, fmt, 5, "%.4f", p.exposed);
            cellf(out, fmt, 6, "%.3f", p.seconds);
            cellf(out, fmt, 7, "%.4f", base / p.seconds);
            cellf(out, fmt, 8, "%.4f", base / p.seconds / workers);
            cellf(out, fmt, 9, "%.3f", got);
            cellf(out, fmt, 10, "%.4f", base / got);
            cellf(out, fmt, 11, "%.4f", base / got / workers);
            cell(out, fmt, 12, f[i].series);
            fputs(fmt == FMT_MD ? "|\n" : "\n", out);
        }
    }
}

static void predict(FILE *out, const results *r, const model_opts *mo, format fmt) {
    family f[MAX_FAMILIES];
    size_t n = find_families(r, f, mo);
    size_t fitted = 0;
    for (size_t i = 0; i < n; i++) fitted += f[i].fitted;
    if (!fitted && fmt != FMT_MD)
        tool_note("no kind of run has both a 1-rank and a 2-rank run: nothing to predict (make results/cpux2.csv; "
                  "or --bandwidth for a nominal link)");
    if (fmt != FMT_CSV) model_header(out, r, f, n, fmt, mo);
    if (fitted || fmt == FMT_CSV) model_rows(out, r, f, n, fmt);
}

// ---- the markdown summary ---------------------------------------------------------------

static void md_num(FILE *out, const char *fmt, double v) {
    fputs(" | ", out);
    if (isnan(v)) fputs("-", out);
    else fprintf(out, fmt, v);
}

static void md_runs(FILE *out, const results *r) {
    fputs("| config | dataset | device | ranks x threads | epochs | image | train images | train s | img/s | "
          "data wait s | allreduce s | exposed s | test acc | test AUC | file |\n"
          "|---|---|---|---|---:|---|---:|---:|---:|---:|---:|---:|---:|---:|---|\n", out);
    for (size_t i = 0; i < r->n_runs; i++) {
        const fu_run *u = &r->runs[i];
        fprintf(out, "| %s | %s | %s%s%s | %d x %d", u->config, u->dataset, u->device, *u->device_name ? ": " : "",
                u->device_name, u->ranks, u->threads_per_rank);
        md_num(out, "%.0f", u->epochs);
        fprintf(out, " | %s", u->image_size);
        md_num(out, "%.0f", u->train_images);
        md_num(out, "%.1f", u->train_seconds);
        md_num(out, "%.2f", u->images_per_second);
        md_num(out, "%.2f", u->data_wait_seconds);
        md_num(out, "%.2f", u->allreduce_seconds);
        md_num(out, "%.2f", u->allreduce_exposed_seconds);
        md_num(out, "%.4f", u->test_acc);
        md_num(out, "%.4f", u->test_auc);
        fprintf(out, " | %s |\n", u->file);
    }
}

static bool row_on_cpu(const fu_table_row *t) { return strncmp(t->device, "cpu", 3) == 0; }

// The baseline's row, then every other config of the kind (CPU or GPU).
static void md_scaling(FILE *out, const results *r, bool cpu) {
    size_t others = 0;
    for (size_t i = 0; i < r->n_rows; i++) others += &r->rows[i] != r->base && row_on_cpu(&r->rows[i]) == cpu;
    if (!others) {
        fprintf(out, "No %s runs measured yet.\n", cpu ? "other CPU" : "GPU");
        return;
    }
    fputs("| config | series | workers | runs | train s | speedup | efficiency | test acc | test AUC |\n"
          "|---|---|---:|---:|---:|---:|---:|---:|---:|\n", out);
    for (size_t i = 0; i < r->n_rows; i++) {
        const fu_table_row *t = &r->rows[i];
        if (t != r->base && row_on_cpu(t) != cpu) continue;
        fprintf(out, "| %s%s | %s | %d | %d", t->config, t == r->base ? " (baseline)" : "", t->series, t->workers,
                t->runs);
        md_num(out, "%.1f", t->train_seconds);
        md_num(out, "%.3f", t->speedup);
        md_num(out, "%.3f", t->efficiency);
        md_num(out, "%.4f", t->test_acc);
        md_num(out, "%.4f", t->test_auc);
        fputs(" |\n", out);
    }
}

// The model-parallel runs: how each rank was split and how busy its stages were.
static void md_model_parallel(FILE *out, const results *r) {
    bool any = false;
    for (size_t i = 0; i < r->n_runs; i++) {
        const fu_run *u = &r->runs[i];
        if (!(u->model_parallel > 1)) continue;
        if (!any)
            fputs("\n## Model parallel\n\n"
                  "| config | series | ranks | stages | micro-batches | GPUs/rank | train s | stage busy s | file |\n"
                  "|---|---|---:|---:|---:|---:|---:|---|---|\n", out);
        any = true;
        fprintf(out, "| %s | %s | %d", u->config, u->series, u->ranks);
        md_num(out, "%.0f", u->model_parallel);
        md_num(out, "%.0f", u->micro_batches);
        // The CPU's stages share the rank's cores: no GPUs.
        md_num(out, "%.0f", u->cpu ? NAN : gpus_per_rank(u));
        md_num(out, "%.1f", u->train_seconds);
        fputs(" | ", out);
        for (const char *p = u->stage_busy; *p; p++) {
            if (*p == ';') fputs(", ", out);
            else fputc(*p, out);
        }
        if (!*u->stage_busy) fputs("-", out);
        fprintf(out, " | %s |\n", u->file);
    }
}

static void summary(FILE *out, const results *r, const model_opts *mo) {
    const fu_table_row *b = r->base;
    fputs("# Results summary\n\n", out);
    for (size_t i = 0; i < r->n_runs; i++)
        if (strcmp(r->runs[i].dataset, "synth") == 0) {
            fputs("**The data are synthetic** (fundus-synth images, not patients): the times are real, the "
                  "accuracies say nothing about glaucoma.\n\n", out);
            break;
        }
    fprintf(out, "Baseline: **%s** (%d worker%s, %.1f s). Speedup = T(%s) / T(config); efficiency = speedup / "
                 "workers, workers = ranks x threads per rank on CPUs, the GPUs used (ranks x GPUs per rank) on "
                 "GPUs. Series: CPU or DDP (GPUs), +AMP (fp16) or +bf16, +MP (model parallel). Times are "
                 "train_seconds (training epochs, not evaluation), means over a config's runs.\n\n",
            b->config, b->workers, b->workers == 1 ? "" : "s", b->train_seconds, b->config);
    fputs("## Runs\n\n", out);
    md_runs(out, r);
    md_model_parallel(out, r);
    fputs("\n## CPU scaling\n\n", out);
    md_scaling(out, r, true);
    fputs("\n## GPU scaling\n\n", out);
    md_scaling(out, r, false);
    fputs("\n## Scaling model\n\n", out);
    predict(out, r, mo, FMT_MD);
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
                                         {"predict", no_argument, 0, OPT_PREDICT},
                                         {"latency", required_argument, 0, OPT_LATENCY},
                                         {"bandwidth", required_argument, 0, OPT_BANDWIDTH},
                                         {"grad-mb", required_argument, 0, OPT_GRAD_MB},
                                         {"summary", no_argument, 0, OPT_SUMMARY},
                                         {0, 0, 0, 0}};
    report_opts o = {.threshold = -1, .boot = 1000, .seed = 42};
    bool pool = false, as_table = false, as_predict = false, as_summary = false;
    const char *baseline = NULL;
    model_opts mo = {.latency = DEFAULT_LATENCY, .grad_bytes = MEDICALCNN_GRAD_MB * 1e6};
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
        case OPT_PREDICT: as_predict = true; break;
        case OPT_LATENCY: mo.latency = tool_parse_double("--latency", optarg, 0, 10); break;
        case OPT_BANDWIDTH: mo.bandwidth = 1e9 * tool_parse_double("--bandwidth", optarg, 1e-6, 1e6); break;
        case OPT_GRAD_MB: mo.grad_bytes = 1e6 * tool_parse_double("--grad-mb", optarg, 1e-6, 1e9); break;
        case OPT_SUMMARY: as_summary = true; break;
        default: tool_usage_error("unexpected option");
        }
    }
    const char *const *files = (const char *const *)argv + optind;
    int n_files = argc - optind;
    static const char *const stdin_only[] = {"-"};

    if (as_table + as_predict + as_summary > 1) tool_usage_error("--table, --predict and --summary: one at a time");
    if (as_table || as_predict || as_summary) {
        const char *mode = as_table ? "--table" : as_predict ? "--predict" : "--summary";
        if (!baseline) tool_usage_error("%s needs --baseline CONFIG", mode);
        if (n_files == 0) tool_usage_error("%s needs results CSV files", mode);
        results r = {0};
        load_results(&r, files, n_files, baseline);
        FILE *out = tool_open_output(false);
        if (as_table) table_csv(out, &r);
        else if (as_predict) predict(out, &r, &mo, o.csv ? FMT_CSV : FMT_TEXT);
        else summary(out, &r, &mo);
        tool_commit_output();
        free(r.runs), free(r.rows);
        return 0;
    }
    if (baseline) tool_usage_error("--baseline goes with --table, --predict or --summary");
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
