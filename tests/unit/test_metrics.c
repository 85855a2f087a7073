// lib/metrics: confusion counts and ratios with sklearn's zero-division
// convention, ROC points with ties, numpy-style percentiles, deterministic
// bootstrap intervals, speedup tables over results CSVs and their errors.
#include "check.h"
#include "core/error.h"
#include "metrics/bootstrap.h"
#include "metrics/metrics.h"
#include "metrics/roc.h"
#include "metrics/table.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

static int near(double a, double b) { return fabs(a - b) <= 1e-12; }

static void test_metrics(void) {
    //                 tp   fn   tp   tn   fp   tn   tn   fn
    const int label[] = {1, 1, 1, 0, 0, 0, 0, 1};
    const int pred[] = {1, 0, 1, 0, 1, 0, 0, 0};
    const double score[] = {0.9, 0.3, 0.8, 0.1, 0.7, 0.3, 0.2, 0.6};
    fu_metrics m;
    fu_metrics_compute(score, label, pred, 8, &m);
    CHECK(m.cm.tp == 2 && m.cm.fn == 2 && m.cm.tn == 3 && m.cm.fp == 1, "confusion counts", "tp %zu fn %zu tn %zu fp %zu",
          m.cm.tp, m.cm.fn, m.cm.tn, m.cm.fp);
    CHECK(near(m.accuracy, 5.0 / 8) && near(m.sensitivity, 0.5) && near(m.specificity, 0.75) &&
              near(m.precision, 2.0 / 3) && near(m.f1, 2 * (2.0 / 3) * 0.5 / (2.0 / 3 + 0.5)),
          "ratios", "acc %g sens %g spec %g prec %g f1 %g", m.accuracy, m.sensitivity, m.specificity, m.precision,
          m.f1);
    // Pairs (pos, neg) ranked right: of 4 x 4 = 16, ties count one half.
    // pos 0.9, 0.8: beat all 4 negatives (8); 0.6 beats 0.1, 0.3, 0.2 (3); 0.3
    // beats 0.1, 0.2 and ties 0.3 (2.5): 13.5 / 16.
    CHECK(near(m.auc, 13.5 / 16), "auc with a tie", "%.17g", m.auc);
    CHECK(near(fu_metric_value(&m, FU_M_F1), m.f1) && strcmp(fu_metric_names[FU_M_AUC], "auc") == 0,
          "metric table", "%s", "");

    const int none[] = {0, 0, 0, 0};
    fu_metrics_compute(score, label, none, 4, &m);
    CHECK(m.precision == 0 && m.f1 == 0 && m.sensitivity == 0, "no predicted positive: precision, f1 0", "%g %g",
          m.precision, m.f1);
    fu_metrics_compute(score + 3, none, none, 4, &m);
    CHECK(isnan(m.auc) && m.sensitivity == 0 && m.specificity == 1 && m.accuracy == 1,
          "one class: auc NaN, the rest defined", "auc %g spec %g", m.auc, m.specificity);
    fu_metrics_compute(score, label, pred, 0, &m);
    CHECK(m.n == 0 && m.accuracy == 0 && isnan(m.auc), "empty set", "%s", "");
}

static void test_roc(void) {
    const double score[] = {0.2, 0.8, 0.5, 0.5, 0.9};
    const int label[] = {0, 1, 0, 1, 1};
    fu_roc_point *p;
    size_t n;
    int rc = fu_roc_curve(score, label, 5, &p, &n);
    // Distinct scores 0.9, 0.8, 0.5, 0.2; sklearn: thresholds [1.9, .9, .8, .5, .2],
    // tps [0, 1, 2, 3, 3] / 3, fps [0, 0, 0, 1, 2] / 2.
    const double fpr[] = {0, 0, 0, 0.5, 1}, tpr[] = {0, 1.0 / 3, 2.0 / 3, 1, 1}, thr[] = {1.9, 0.9, 0.8, 0.5, 0.2};
    int good = rc == 0 && n == 5;
    for (size_t i = 0; good && i < n; i++)
        good = p[i].fpr == fpr[i] && p[i].tpr == tpr[i] && near(p[i].threshold, thr[i]);
    CHECK(good, "roc points with a tie", "rc %d n %zu", rc, n);
    free(p);
    const int pos[] = {1, 1};
    rc = fu_roc_curve(score, pos, 2, &p, &n);
    CHECK(rc == 0 && n == 3 && isnan(p[2].fpr) && p[2].tpr == 1, "roc without negatives: fpr NaN", "%s", "");
    free(p);
    CHECK(fu_roc_curve(score, label, 0, &p, &n) < 0 && p == NULL, "roc of nothing fails", "%s", "");
}

static void test_percentile(void) {
    double v[] = {4, 1, 3, 2};
    CHECK(near(fu_percentile(v, 4, 25), 1.75) && near(fu_percentile(v, 4, 50), 2.5) &&
              near(fu_percentile(v, 4, 100), 4) && near(fu_percentile(v, 4, 0), 1) &&
              near(fu_percentile(v, 4, 97.5), 3.925),
          "percentiles as numpy (linear)", "%g %g", fu_percentile(v, 4, 25), fu_percentile(v, 4, 97.5));
    double one = 7;
    CHECK(fu_percentile(&one, 1, 2.5) == 7 && isnan(fu_percentile(v, 0, 50)), "percentile of 1 and 0 values", "%s", "");
}

static void test_bootstrap(void) {
    enum { N = 120 };
    double score[N];
    int label[N], pred[N];
    for (int i = 0; i < N; i++) {
        label[i] = i % 3 == 0;
        score[i] = fmod(i * 0.37 + label[i] * 0.4, 1.0);
        pred[i] = score[i] >= 0.5;
    }
    fu_bootstrap_ci a, b, c;
    int rc = fu_bootstrap(score, label, pred, N, 300, 9, 0.95, &a) | fu_bootstrap(score, label, pred, N, 300, 9, 0.95, &b) |
             fu_bootstrap(score, label, pred, N, 300, 10, 0.95, &c);
    CHECK(rc == 0 && memcmp(&a, &b, sizeof a) == 0, "bootstrap: same seed, same intervals", "%s", "");
    CHECK(memcmp(a.lo, c.lo, sizeof a.lo) != 0, "bootstrap: another seed, other intervals", "%s", "");
    fu_metrics m;
    fu_metrics_compute(score, label, pred, N, &m);
    int inside = 1;
    for (int k = 0; k < FU_M_COUNT; k++)
        inside &= a.lo[k] <= fu_metric_value(&m, k) && fu_metric_value(&m, k) <= a.hi[k] && a.lo[k] < a.hi[k];
    CHECK(inside && a.auc_reps == 300, "bootstrap: intervals around the estimates", "auc reps %zu", a.auc_reps);
    CHECK(fu_bootstrap(score, label, pred, N, 0, 1, 0.95, &a) < 0, "bootstrap: 0 resamples refused", "%s", "");
}


static char *write_tmp(const char *text) {
    char *path = strdup("/tmp/test_metrics.XXXXXX");
    int fd = mkstemp(path);
    if (fd < 0 || write(fd, text, strlen(text)) != (ssize_t)strlen(text)) abort();
    close(fd);
    return path;
}

static void test_table(void) {
    char *a = write_tmp("config,dataset,device,ranks,threads_per_rank,train_seconds,test_acc,test_auc\n"
                        "cpu1,acrima,cpu,1,1,800,0.8,0.9\n"
                        "cpu1,acrima,cpu,1,1,1000,0.9,0.95\n"
                        "cpux4t2,acrima,cpu,4,2,150,0.85,\n");
    char *b = write_tmp("device,config,ranks,threads_per_rank,train_seconds,test_acc,test_auc\n"
                        "cuda,v100x4_amp,4,8,30,0.88,0.93\n");
    const char *paths[] = {a, b};
    fu_table_row *r;
    size_t n;
    int rc = fu_speedup_table(paths, 2, "cpu1", &r, &n);
    CHECK(rc == 0 && n == 3, "table: one row per config", "rc %d n %zu: %s", rc, n, fu_error());
    if (rc == 0 && n == 3) {
        CHECK(strcmp(r[0].config, "cpu1") == 0 && r[0].runs == 2 && near(r[0].train_seconds, 900) &&
                  near(r[0].test_acc, 0.85) && near(r[0].speedup, 1) && near(r[0].efficiency, 1),
              "table: baseline averaged over its runs", "%g %g", r[0].train_seconds, r[0].test_acc);
        CHECK(r[1].workers == 8 && near(r[1].speedup, 6) && near(r[1].efficiency, 0.75) && isnan(r[1].test_auc),
              "table: cpu workers = ranks x threads, speedup, efficiency", "workers %d speedup %g", r[1].workers,
              r[1].speedup);
        CHECK(r[2].workers == 4 && near(r[2].speedup, 30) && near(r[2].efficiency, 7.5),
              "table: gpu workers = ranks", "workers %d", r[2].workers);
    }
    free(r);
    rc = fu_speedup_table(paths, 2, "cpu2", &r, &n);
    CHECK(rc < 0 && strstr(fu_error(), "cpu2: no run of this baseline"), "table: missing baseline", "%s",
          fu_error());
    char *bad = write_tmp("config,dataset,device,ranks,threads_per_rank,train_seconds,test_acc,test_auc\n"
                          "cpu1,acrima,cpu,1,1,800,0.8,0.9\ncpu2,acrima,cpu,2,1,fast,0.8,0.9\n");
    rc = fu_speedup_table((const char *[]){bad}, 1, "cpu1", &r, &n);
    CHECK(rc < 0 && strstr(fu_error(), bad) && strstr(fu_error(), "line 3: train_seconds 'fast' is not a number"),
          "table: bad number names file and line", "%s", fu_error());
    char *nocol = write_tmp("config,ranks,train_seconds\ncpu1,1,800\n");
    rc = fu_speedup_table((const char *[]){nocol}, 1, "cpu1", &r, &n);
    CHECK(rc < 0 && strstr(fu_error(), "no column 'device'"), "table: missing column", "%s", fu_error());
    char *clash = write_tmp("config,dataset,device,ranks,threads_per_rank,train_seconds,test_acc,test_auc\n"
                            "cpu1,acrima,cpu,1,1,800,0.8,0.9\ncpu1,acrima,cpu,2,1,700,0.8,0.9\n");
    rc = fu_speedup_table((const char *[]){clash}, 1, "cpu1", &r, &n);
    CHECK(rc < 0 && strstr(fu_error(), "line 3: config cpu1 has 2 workers"), "table: config with two sizes",
          "%s", fu_error());
    for (char *p[] = {a, b, bad, nocol, clash}, **q = p; q < p + 5; q++) {
        unlink(*q);
        free(*q);
    }
}

int main(void) {
    test_metrics();
    test_roc();
    test_percentile();
    test_bootstrap();
    test_table();
    return check_done();
}
