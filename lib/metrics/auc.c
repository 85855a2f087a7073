// ROC AUC through ranks (auc.h): AUC = (sum of the positives' ranks -
// P (P + 1) / 2) / (P N), with tied scores sharing their mean rank, which
// equals the trapezoid rule over the ROC curve scikit-learn integrates.
#include "metrics/auc.h"

#include <math.h>
#include <stdlib.h>

typedef struct {
    double score;
    int label;
} scored;

static int by_score(const void *a, const void *b) {
    double x = ((const scored *)a)->score, y = ((const scored *)b)->score;
    return (x > y) - (x < y);
}

double fu_roc_auc(const double *score, const int *label, size_t n) {
    size_t pos = 0, neg = 0;
    for (size_t i = 0; i < n; i++) label[i] == 1 ? pos++ : neg++;
    if (!pos || !neg) return NAN;
    scored *s = malloc(n * sizeof *s);
    if (!s) return NAN;
    for (size_t i = 0; i < n; i++) s[i] = (scored){score[i], label[i] == 1};
    qsort(s, n, sizeof *s, by_score);
    double rank_sum = 0; // of the positives, ranks 1-based, ties averaged
    for (size_t i = 0; i < n;) {
        size_t j = i, p = 0;
        while (j < n && s[j].score == s[i].score) p += (size_t)s[j++].label;
        rank_sum += (double)p * ((double)(i + 1) + (double)j) / 2;
        i = j;
    }
    free(s);
    return (rank_sum - (double)pos * ((double)pos + 1) / 2) / ((double)pos * (double)neg);
}
