// Compiles the reference ops (ref_ops.inc) in float and in double.
#include "nn/ref_ops.h"

#include <math.h>
#include <string.h>

void fu_window_out(fu_window *s) {
    s->p = (s->h + 2 * s->pad - s->dil * (s->r - 1) - 1) / s->stride + 1;
    s->q = (s->w + 2 * s->pad - s->dil * (s->r - 1) - 1) / s->stride + 1;
}

// Output indices o in [*lo, *hi) whose input o * stride + offset lies in [0, in):
// hoisting the bounds keeps the innermost loops free of tests.
static void valid_range(int out, int in, int stride, int offset, int *lo, int *hi) {
    *lo = offset >= 0 ? 0 : (-offset + stride - 1) / stride;
    *hi = in - 1 - offset < 0 ? 0 : (in - 1 - offset) / stride + 1;
    if (*hi > out) *hi = out;
    if (*hi < *lo) *hi = *lo;
}

#define real float
#define FN(name) name##_f32
#include "nn/ref_ops.inc"
#undef real
#undef FN

#define real double
#define FN(name) name##_f64
#include "nn/ref_ops.inc"
#undef real
#undef FN
