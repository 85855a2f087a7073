#include "metrics/metrics.h"

#include "metrics/auc.h"

const char *const fu_metric_names[FU_M_COUNT] = {"accuracy", "sensitivity", "specificity",
                                                 "precision", "f1",          "auc"};

double fu_metric_value(const fu_metrics *m, int which) {
    switch (which) {
    case FU_M_ACCURACY: return m->accuracy;
    case FU_M_SENSITIVITY: return m->sensitivity;
    case FU_M_SPECIFICITY: return m->specificity;
    case FU_M_PRECISION: return m->precision;
    case FU_M_F1: return m->f1;
    default: return m->auc;
    }
}

// zero_division=0, as sklearn reports (with a warning) for an empty denominator.
static double ratio(size_t num, size_t den) { return den ? (double)num / (double)den : 0.0; }

void fu_metrics_compute(const double *score, const int *label, const int *pred, size_t n, fu_metrics *out) {
    fu_confusion cm = {0, 0, 0, 0};
    for (size_t i = 0; i < n; i++) {
        if (label[i]) {
            if (pred[i]) cm.tp++;
            else cm.fn++;
        } else {
            if (pred[i]) cm.fp++;
            else cm.tn++;
        }
    }
    out->n = n;
    out->cm = cm;
    out->positives = cm.tp + cm.fn;
    out->negatives = cm.tn + cm.fp;
    out->accuracy = ratio(cm.tp + cm.tn, n);
    out->sensitivity = ratio(cm.tp, cm.tp + cm.fn);
    out->specificity = ratio(cm.tn, cm.tn + cm.fp);
    out->precision = ratio(cm.tp, cm.tp + cm.fp);
    // sklearn's F-beta: (1 + b^2) P R / (b^2 P + R) with b = 1, 0 when P + R = 0.
    double p = out->precision, r = out->sensitivity;
    out->f1 = p + r > 0 ? 2 * p * r / (p + r) : 0.0;
    out->auc = fu_roc_auc(score, label, n);
}
