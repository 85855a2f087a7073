// Cosine annealing (schedule.h).
#include "nn/schedule.h"

#include <math.h>

double fu_cosine_lr(double base, double eta_min, int t_max, int epoch) {
    if (t_max <= 0) return base;
    return eta_min + (base - eta_min) * (1 + cos(M_PI * epoch / t_max)) / 2;
}
