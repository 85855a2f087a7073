// lib/metrics/scaling: the scaling model's arithmetic. A ring allreduce's
// cost, steps per rank, a fit that gives back the 1-rank time exactly and
// the 2-rank allreduce and exposed times, efficiency falling with N, and the
// fit's refusals; the table's workers and series of model-parallel runs.
#include "check.h"
#include "core/error.h"
#include "metrics/scaling.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

static int near(double a, double b) { return fabs(a - b) <= 1e-9 * fmax(1, fabs(b)); }

// 1 rank: 4 epochs of 32 x 32 = 1024 images, batch 32: 32 steps an epoch,
// 128 in all; 9.9 s compute and 0.1 s data wait a step, 2 s fixed.
static fu_run one_rank(void) {
    fu_run r;
    memset(&r, 0, sizeof r);
    strcpy(r.config, "cpu1"), strcpy(r.device, "cpu");
    r.file = "cpu1.csv", r.line = 2, r.ranks = 1, r.threads_per_rank = 1, r.workers = 1, r.cpu = true;
    r.batch_per_rank = 32, r.epochs = 4, r.train_images = 1024;
    r.steps = 128, r.compute_seconds = 128 * 9.9, r.data_wait_seconds = 128 * 0.1;
    r.train_seconds = r.compute_seconds + r.data_wait_seconds + 2;
    r.allreduce_seconds = r.allreduce_exposed_seconds = 0;
    r.allreduce_full_seconds = NAN;
    return r;
}

// 2 ranks: 16 steps an epoch, 64 in all; the allreduce takes 0.5 s a step,
// of which 0.1 s is exposed.
static fu_run two_ranks(void) {
    fu_run r = one_rank();
    strcpy(r.config, "cpux2");
    r.ranks = 2, r.workers = 2, r.steps = 64;
    r.allreduce_seconds = 64 * 0.5, r.allreduce_exposed_seconds = 64 * 0.1;
    r.train_seconds = 64 * (9.9 + 0.1 + 0.1) + 2;
    return r;
}

static void test_ring(void) {
    CHECK(fu_ring_allreduce_seconds(1, 1.0, 1e-3) == 0, "ring: nothing on one rank", "%g",
          fu_ring_allreduce_seconds(1, 1.0, 1e-3));
    // N = 4: 2 x 3/4 x 1 s + 6 x 1 ms.
    CHECK(near(fu_ring_allreduce_seconds(4, 1.0, 1e-3), 1.5 + 0.006), "ring: 2(N-1)/N x B/bw + 2(N-1) x latency",
          "%.17g", fu_ring_allreduce_seconds(4, 1.0, 1e-3));
    CHECK(fu_ring_allreduce_seconds(64, 1.0, 0) < 2, "ring: bandwidth term below 2 B/bw", "%g",
          fu_ring_allreduce_seconds(64, 1.0, 0));
}

static void test_fit(void) {
    fu_run a = one_rank(), b = two_ranks();
    fu_scaling_model m = {0};
    CHECK(fu_scaling_fit(&a, &b, 1e-3, &m) == 0, "fit", "%s", fu_error());
    CHECK(near(m.step_compute, 9.9) && near(m.step_wait, 0.1) && near(m.fixed, 2), "fit: per-step costs",
          "compute %.17g wait %.17g fixed %.17g", m.step_compute, m.step_wait, m.fixed);
    CHECK(near(m.bytes_per_bw, 0.5 - 0.002) && near(m.hide, 0.4), "fit: bandwidth term and what backward hides",
          "B/bw %.17g hide %.17g", m.bytes_per_bw, m.hide);
    CHECK(fu_scaling_steps(&m, 1) == 128 && fu_scaling_steps(&m, 2) == 64 && fu_scaling_steps(&m, 3) == 44 &&
              fu_scaling_steps(&m, 64) == 4,
          "steps per rank = epochs x ceil(images / (N x batch))", "%g %g %g %g", fu_scaling_steps(&m, 1),
          fu_scaling_steps(&m, 2), fu_scaling_steps(&m, 3), fu_scaling_steps(&m, 64));

    fu_scaling_point p1 = fu_scaling_predict(&m, 1), p2 = fu_scaling_predict(&m, 2);
    CHECK(p1.seconds == a.train_seconds && p1.allreduce == 0 && p1.exposed == 0, "N = 1 gives the measured time",
          "%.17g vs %.17g", p1.seconds, a.train_seconds);
    CHECK(near(p2.allreduce, 0.5) && near(p2.exposed, 0.1) && near(p2.seconds, b.train_seconds),
          "N = 2 gives the measured allreduce, exposed part and time", "%.17g %.17g %.17g", p2.allreduce, p2.exposed,
          p2.seconds);
    // N = 4: allreduce 1.5 x 0.498 + 6 ms = 0.753 s, 0.353 s exposed, 32 steps.
    fu_scaling_point p4 = fu_scaling_predict(&m, 4);
    CHECK(near(p4.seconds, 32 * (9.9 + 0.1 + 0.353) + 2), "N = 4 by hand", "%.17g", p4.seconds);

    double last = 1.1;
    int falls = 1;
    for (int n = 1; n <= 32; n *= 2) {
        double eff = a.train_seconds / fu_scaling_predict(&m, n).seconds / n;
        falls &= eff < last && eff > 0;
        last = eff;
    }
    CHECK(falls, "efficiency falls with N (1..32)", "last %g", last);

    // The 2-rank run hid all of it: backward (2/3 of compute) bounds what hides.
    b.allreduce_exposed_seconds = 0;
    CHECK(fu_scaling_fit(&a, &b, 1e-3, &m) == 0 && near(m.hide, 9.9 * 2 / 3) && fu_scaling_predict(&m, 32).exposed == 0,
          "fully hidden at 2 ranks: hidden up to backward", "hide %.17g", m.hide);

    // An older 1-rank file: no steps or compute columns.
    a.steps = a.compute_seconds = NAN;
    CHECK(fu_scaling_fit(&a, &b, 1e-3, &m) == 0 && fu_scaling_predict(&m, 1).seconds == a.train_seconds &&
              near(m.step_compute, 10.0 - 0.1 + 2.0 / 128),
          "no steps or compute column: derived, N = 1 still exact", "compute %.17g", m.step_compute);
}

// With the blocking allreduce measured (allreduce_full_seconds), the
// bandwidth comes from it; what the step hid still from the training's.
static void test_full_allreduce(void) {
    fu_run a = one_rank(), b = two_ranks();
    b.allreduce_full_seconds = 0.4;
    fu_scaling_model m = {0};
    CHECK(fu_scaling_fit(&a, &b, 1e-3, &m) == 0 && near(m.bytes_per_bw, 0.4 - 0.002) && near(m.hide, 0.4) &&
              near(fu_scaling_predict(&m, 2).allreduce, 0.4) && near(fu_scaling_predict(&m, 2).exposed, 0) &&
              fu_scaling_predict(&m, 1).seconds == a.train_seconds,
          "bandwidth from the blocking allreduce", "B/bw %.17g hide %.17g", m.bytes_per_bw, m.hide);
}

static void test_refusals(void) {
    fu_run a = one_rank(), b = two_ranks();
    fu_scaling_model m = {0};
    b.epochs = 5;
    CHECK(fu_scaling_fit(&a, &b, 1e-3, &m) < 0 && strstr(fu_error(), "not one recipe"), "other recipe refused", "%s",
          fu_error());
    b = two_ranks();
    b.allreduce_seconds = NAN;
    CHECK(fu_scaling_fit(&a, &b, 1e-3, &m) < 0 && strstr(fu_error(), "no allreduce_seconds"),
          "no allreduce column refused", "%s", fu_error());
    CHECK(fu_scaling_fit(&b, &a, 1e-3, &m) < 0, "ranks the wrong way round refused", "%s", fu_error());
}

static char *write_tmp(const char *text) {
    char *path = strdup("/tmp/test_scaling.XXXXXX");
    int fd = mkstemp(path);
    if (fd < 0 || write(fd, text, strlen(text)) != (ssize_t)strlen(text)) abort();
    close(fd);
    return path;
}

// Workers are the GPUs a GPU run used, ranks x threads a CPU run's; the
// series follows amp and model_parallel. An older file has neither
// gpus_per_rank nor a meaningful amp: one GPU per rank, plain DDP.
static void test_table_workers(void) {
    char *now = write_tmp("config,device,ranks,threads_per_rank,amp,model_parallel,gpus_per_rank,micro_batches,"
                          "stage_busy_seconds,train_seconds,test_acc,test_auc\n"
                          "cpu1,cpu,1,1,fp32,1,0,1,,100,0.8,0.9\n"
                          "cpux2t2_bf16_mp,cpu,2,2,bf16,2,0,4,20.000;19.500,40,0.8,0.9\n"
                          "h100x1_amp_mp,cuda,1,4,fp16,2,1,4,3.000;2.900,10,0.8,0.9\n"
                          "h100x4_amp_mp,cuda,2,4,fp16,2,2,4,1.500;1.400,4,0.8,0.9\n"
                          "h100x2_bf16,cuda,2,4,bf16,1,1,1,,5,0.8,0.9\n");
    char *old = write_tmp("config,device,ranks,threads_per_rank,amp,model_parallel,train_seconds,test_acc,test_auc\n"
                          "v100x4_amp,cuda,4,8,0,0,8,0.8,0.9\n");
    const char *paths[] = {now, old};
    fu_run *runs;
    size_t n;
    int rc = fu_runs_load(paths, 2, &runs, &n);
    CHECK(rc == 0 && n == 6, "table: results with and without the model-parallel columns", "rc %d n %zu: %s", rc, n,
          fu_error());
    if (rc == 0 && n == 6) {
        static const int want_workers[] = {1, 4, 1, 4, 2, 4};
        static const char *const want_series[] = {"CPU", "CPU+bf16+MP", "DDP+AMP+MP", "DDP+AMP+MP", "DDP+bf16", "DDP"};
        for (size_t i = 0; i < n; i++)
            CHECK(runs[i].workers == want_workers[i] && strcmp(runs[i].series, want_series[i]) == 0,
                  runs[i].config, "workers %d (want %d), series %s (want %s)", runs[i].workers, want_workers[i],
                  runs[i].series, want_series[i]);
        CHECK(runs[3].micro_batches == 4 && strcmp(runs[3].stage_busy, "1.500;1.400") == 0 &&
                  isnan(runs[5].gpus_per_rank) && isnan(runs[5].micro_batches) && !*runs[5].stage_busy,
              "table: micro-batches and stage busy seconds read, absent in older files", "%g '%s' %g",
              runs[3].micro_batches, runs[3].stage_busy, runs[5].gpus_per_rank);
        fu_table_row *t;
        size_t rows;
        rc = fu_table_of_runs(runs, n, "cpu1", &t, &rows);
        CHECK(rc == 0 && rows == 6 && strcmp(t[3].series, "DDP+AMP+MP") == 0 && near(t[3].speedup, 25) &&
                  near(t[3].efficiency, 25.0 / 4),
              "table: h100x4_amp_mp: 2 ranks x 2 GPUs, efficiency per GPU", "rc %d: %s", rc, fu_error());
        if (rc == 0) free(t);
    }
    free(runs);
    for (char *p[] = {now, old}, **q = p; q < p + 2; q++) {
        unlink(*q);
        free(*q);
    }
}

int main(void) {
    test_ring();
    test_fit();
    test_full_allreduce();
    test_refusals();
    test_table_workers();
    return check_done();
}
