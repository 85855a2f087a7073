// ROC curve points exactly as sklearn.metrics.roc_curve(y, score,
// drop_intermediate=False) in scikit-learn 1.2: one point per distinct score,
// from the highest, preceded by (0, 0) at threshold max(score) + 1. fpr is NaN
// when there are no negatives and tpr NaN when there are no positives
// (sklearn warns and divides by zero the same way).
#ifndef FU_METRICS_ROC_H
#define FU_METRICS_ROC_H

#include <stddef.h>

typedef struct {
    double fpr, tpr, threshold;
} fu_roc_point;

// *points is malloc'd (n distinct scores + 1 entries); -1 + message on failure.
int fu_roc_curve(const double *score, const int *label, size_t n, fu_roc_point **points, size_t *count);

#endif
