// Bootstrap percentile intervals of the metrics: `reps` resamples of the n
// predictions drawn with replacement, each from the stream
// fu_rng_make(seed, replicate, 0), so the intervals are the same on every
// run and machine. The interval of a metric is the (alpha/2, 1 - alpha/2)
// percentile of its values over the resamples, with numpy's default linear
// interpolation. A resample holding one class only has no AUC; AUC's
// interval is taken over the others, and how many there were is reported.
#ifndef FU_METRICS_BOOTSTRAP_H
#define FU_METRICS_BOOTSTRAP_H

#include "metrics/metrics.h"

#include <stddef.h>
#include <stdint.h>

typedef struct {
    double lo[FU_M_COUNT], hi[FU_M_COUNT]; // NaN when no resample defines the metric
    size_t auc_reps;                       // resamples with both classes
} fu_bootstrap_ci;

// Percentile q in [0, 100] of v[0..n-1] (sorted in place), as numpy.percentile.
double fu_percentile(double *v, size_t n, double q);

int fu_bootstrap(const double *score, const int *label, const int *pred, size_t n, int reps, uint64_t seed,
                 double level, fu_bootstrap_ci *out);

#endif
