#include "metrics/bootstrap.h"

#include "core/error.h"
#include "core/rng.h"

#include <math.h>
#include <stdlib.h>

static int cmp_double(const void *a, const void *b) {
    double x = *(const double *)a, y = *(const double *)b;
    return (x > y) - (x < y);
}

double fu_percentile(double *v, size_t n, double q) {
    if (n == 0) return NAN;
    qsort(v, n, sizeof *v, cmp_double);
    double pos = q / 100.0 * (double)(n - 1);
    size_t i = (size_t)floor(pos);
    if (i + 1 >= n) return v[n - 1];
    double frac = pos - (double)i;
    return v[i] + (v[i + 1] - v[i]) * frac;
}

int fu_bootstrap(const double *score, const int *label, const int *pred, size_t n, int reps, uint64_t seed,
                 double level, fu_bootstrap_ci *out) {
    if (n == 0) return fu_fail("bootstrap", "no samples");
    if (reps < 1) return fu_fail("bootstrap", "%d resamples: need at least 1", reps);
    double *s = fu_malloc(n * sizeof *s);
    int *l = fu_malloc(n * sizeof *l), *p = fu_malloc(n * sizeof *p);
    double *vals = fu_malloc((size_t)reps * FU_M_COUNT * sizeof *vals); // (FU_M_COUNT, reps)
    if (!s || !l || !p || !vals) {
        free(s), free(l), free(p), free(vals);
        return -1;
    }
    size_t auc_reps = 0;
    for (int r = 0; r < reps; r++) {
        fu_rng rng = fu_rng_make(seed, (uint64_t)r, 0);
        for (size_t i = 0; i < n; i++) {
            size_t j = n <= UINT32_MAX ? fu_rng_below(&rng, (uint32_t)n) : fu_rng_u64(&rng) % n;
            s[i] = score[j], l[i] = label[j], p[i] = pred[j];
        }
        fu_metrics m;
        fu_metrics_compute(s, l, p, n, &m);
        for (int k = 0; k < FU_M_AUC; k++) vals[(size_t)k * reps + r] = fu_metric_value(&m, k);
        if (!isnan(m.auc)) vals[(size_t)FU_M_AUC * reps + auc_reps++] = m.auc;
    }
    double tail = (1 - level) / 2 * 100;
    for (int k = 0; k < FU_M_COUNT; k++) {
        size_t cnt = k == FU_M_AUC ? auc_reps : (size_t)reps;
        out->lo[k] = fu_percentile(vals + (size_t)k * reps, cnt, tail);
        out->hi[k] = fu_percentile(vals + (size_t)k * reps, cnt, 100 - tail);
    }
    out->auc_reps = auc_reps;
    free(s), free(l), free(p), free(vals);
    return 0;
}
