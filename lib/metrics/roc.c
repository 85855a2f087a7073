#include "metrics/roc.h"

#include "core/error.h"

#include <math.h>
#include <stdlib.h>

typedef struct {
    double score;
    int label;
} scored;

static int by_score_desc(const void *a, const void *b) {
    double x = ((const scored *)a)->score, y = ((const scored *)b)->score;
    return (x < y) - (x > y);
}

int fu_roc_curve(const double *score, const int *label, size_t n, fu_roc_point **points, size_t *count) {
    *points = NULL;
    *count = 0;
    if (n == 0) return fu_fail("roc", "no samples");
    scored *s = fu_malloc(n * sizeof *s);
    fu_roc_point *p = fu_malloc((n + 1) * sizeof *p);
    if (!s || !p) {
        free(s);
        free(p);
        return -1;
    }
    for (size_t i = 0; i < n; i++) s[i] = (scored){score[i], label[i] != 0};
    // Order within a run of equal scores does not matter: a point is taken
    // only at the end of each run, as sklearn's distinct_value_indices.
    qsort(s, n, sizeof *s, by_score_desc);
    size_t k = 1, tps = 0, fps = 0;
    for (size_t i = 0; i < n; i++) {
        if (s[i].label) tps++;
        else fps++;
        if (i + 1 == n || s[i + 1].score != s[i].score) p[k++] = (fu_roc_point){(double)fps, (double)tps, s[i].score};
    }
    p[0] = (fu_roc_point){0, 0, s[0].score + 1};
    for (size_t i = 0; i < k; i++) {
        p[i].fpr = fps ? p[i].fpr / (double)fps : NAN;
        p[i].tpr = tps ? p[i].tpr / (double)tps : NAN;
    }
    free(s);
    *points = p;
    *count = k;
    return 0;
}
