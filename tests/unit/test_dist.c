// The data-parallel pieces that run without a launcher: the sampler
// (disjoint, complete, equal steps, deterministic, the global batch of one
// process), the single-process world, and the gradient buckets' bookkeeping
// (scaled, every bucket once, whatever order ranges arrive in).
#include "check.h"
#include "dist/comm.h"
#include "dist/grad_sync.h"
#include "dist/sampler.h"
#include "nn/loader.h"

#include <stdbool.h>
#include <stdlib.h>
#include <string.h>

// Every rank's slice for (n, size): disjoint apart from the padding,
// together every sample, the same length, the same on a second call.
static void check_sampler(size_t n, int size) {
    char name[128];
    size_t share = fu_rank_share(n, size);
    uint32_t *scratch = malloc((n + (size_t)size) * sizeof *scratch);
    uint32_t *slice = malloc(share * (size_t)size * sizeof *slice), *again = malloc(share * sizeof *again);
    int *seen = calloc(n, sizeof *seen);
    for (int r = 0; r < size; r++) fu_rank_order(42, 3, n, r, size, scratch, slice + (size_t)r * share);
    bool same = true;
    for (int r = 0; r < size; r++) {
        fu_rank_order(42, 3, n, r, size, scratch, again);
        same = same && !memcmp(again, slice + (size_t)r * share, share * sizeof *again);
    }
    size_t total = share * (size_t)size, twice = 0, missing = 0;
    for (size_t i = 0; i < total; i++) seen[slice[i]]++;
    for (size_t i = 0; i < n; i++) twice += seen[i] > 1 ? (size_t)seen[i] - 1 : 0, missing += !seen[i];
    snprintf(name, sizeof name, "sampler n=%zu size=%d: every sample, %zu each, padding %zu", n, size, share,
             total - n);
    CHECK(missing == 0 && twice == total - n, name, "%zu missing, %zu repeated", missing, twice);
    snprintf(name, sizeof name, "sampler n=%zu size=%d: deterministic", n, size);
    CHECK(same, name, "a second call differs");
    // Step k of the ranks with batch b together = step k of one process with
    // batch b * size, on the epoch's order.
    uint32_t *order = malloc(n * sizeof *order);
    fu_epoch_order(42, 3, n, order);
    int b = 3;
    bool global = true;
    for (size_t k = 0; (k + 1) * (size_t)b <= share && global; k++) {
        int *hit = calloc(n, sizeof *hit);
        for (int r = 0; r < size; r++)
            for (int j = 0; j < b; j++) hit[slice[(size_t)r * share + k * (size_t)b + (size_t)j]]++;
        for (size_t p = k * (size_t)b * (size_t)size; p < (k + 1) * (size_t)b * (size_t)size && p < n; p++)
            global = global && hit[order[p]] > 0;
        free(hit);
    }
    snprintf(name, sizeof name, "sampler n=%zu size=%d: each step is one process's global batch", n, size);
    CHECK(global, name, "a step's images differ from the global batch's");
    free(scratch), free(slice), free(again), free(seen), free(order);
}

static void check_single_process(void) {
    fu_comm c;
    int argc = 1;
    char *args[] = {"test_dist", NULL}, **argv = args;
    unsetenv("OMPI_COMM_WORLD_SIZE"), unsetenv("PMIX_RANK"), unsetenv("PMI_RANK"), unsetenv("PMI_SIZE");
    int rc = fu_comm_init(&c, &argc, &argv);
    CHECK(rc == 0 && c.size == 1 && c.rank == 0 && !c.mpi, "comm: without a launcher, rank 0 of 1, no MPI",
          "rc %d size %d rank %d mpi %d", rc, c.size, c.rank, c.mpi);
    double v[2] = {1.5, -2};
    CHECK(fu_comm_sum(&c, v, 2) == 0 && v[0] == 1.5 && v[1] == -2, "comm: a sum over one rank is the value", "%g %g",
          v[0], v[1]);
    CHECK(fu_comm_first_failure(&c, true) == -1 && fu_comm_first_failure(&c, false) == 0,
          "comm: first failure of one rank", "wrong rank");

    // Buckets of 10 floats over 35: ranges reported back to front, in
    // pieces that straddle buckets; each value scaled once.
    float g[35];
    for (int i = 0; i < 35; i++) g[i] = (float)i;
    fu_grad_sync *s;
    CHECK(fu_grad_sync_create(&c, g, 35, 10 * sizeof(float), &s) == 0 && fu_grad_sync_stats_of(s).buckets == 4,
          "grad sync: 35 floats in buckets of 10 make 4", "wrong count");
    fu_grad_sync_begin(s, 0.5);
    fu_grad_sync_ready(s, 28, 7);
    fu_grad_sync_ready(s, 3, 25);
    // [25, 35), [15, 25), [5, 15) are complete and scaled; [0, 5) not yet.
    bool scaled_early = g[30] == 15.0f && g[10] == 5.0f && g[4] == 4.0f;
    fu_grad_sync_ready(s, 0, 3);
    bool all = fu_grad_sync_end(s) == 0;
    for (int i = 0; i < 35; i++) all = all && g[i] == 0.5f * (float)i;
    CHECK(scaled_early, "grad sync: a bucket starts as soon as its last range is final", "g[30] %g g[10] %g g[4] %g", g[30],
          g[10], g[4]);
    CHECK(all, "grad sync: every value scaled exactly once", "a value differs");
    // A backend that never reports: everything starts at the end.
    fu_grad_sync_begin(s, 2.0);
    all = fu_grad_sync_end(s) == 0;
    for (int i = 0; i < 35; i++) all = all && g[i] == (float)i;
    CHECK(all, "grad sync: without reports, every bucket at the end", "a value differs");
    fu_grad_sync_free(s);
}

int main(void) {
    check_sampler(100, 1);
    check_sampler(100, 2);
    check_sampler(101, 4);
    check_sampler(7, 3);
    check_sampler(2, 5); // fewer samples than ranks: padding wraps more than once
    check_single_process();
    return check_done();
}
