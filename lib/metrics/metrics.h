// Binary classification metrics of a set of predictions (class 1 = glaucoma,
// the positive class), with scikit-learn's conventions so that the numbers
// agree with sklearn.metrics: a ratio whose denominator is zero is 0
// (zero_division=0, e.g. precision with no predicted positive), and ROC AUC
// is NaN when only one class is present (roc_auc_score raises there).
#ifndef FU_METRICS_METRICS_H
#define FU_METRICS_METRICS_H

#include <stddef.h>

typedef struct {
    size_t tn, fp, fn, tp; // sklearn's confusion_matrix(...).ravel() order
} fu_confusion;

typedef struct {
    size_t n, positives, negatives;
    fu_confusion cm;
    double accuracy;
    double sensitivity; // recall of class 1
    double specificity; // recall of class 0
    double precision;   // of class 1
    double f1;          // of class 1
    double auc;         // NaN when one class is missing
} fu_metrics;

// The metric values of fu_metrics in a fixed order, for loops (bootstrap, CSV).
enum { FU_M_ACCURACY, FU_M_SENSITIVITY, FU_M_SPECIFICITY, FU_M_PRECISION, FU_M_F1, FU_M_AUC, FU_M_COUNT };
extern const char *const fu_metric_names[FU_M_COUNT]; // "accuracy", ..., "auc"
double fu_metric_value(const fu_metrics *m, int which);

// score: p(class 1) per sample; label: 0 or 1; pred: 0 or 1 (the decision).
// n may be 0 (every ratio is then 0 and auc NaN).
void fu_metrics_compute(const double *score, const int *label, const int *pred, size_t n, fu_metrics *out);

#endif
