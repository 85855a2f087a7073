// Area under the ROC curve of scores for binary labels (1 = positive), with
// ties counted as scikit-learn's roc_auc_score does (trapezoids between the
// distinct thresholds, i.e. a tied positive/negative pair counts one half).
#ifndef FU_METRICS_AUC_H
#define FU_METRICS_AUC_H

#include <stddef.h>

// NAN when either class is missing (the AUC is undefined).
double fu_roc_auc(const double *score, const int *label, size_t n);

#endif
