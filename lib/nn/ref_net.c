// Forward and backward of a fu_model on the reference ops (ref_ops.h), in
// float and double: ref_net.inc compiled twice.
#include "nn/ref_net.h"

#include "core/error.h"
#include "core/rng.h"
#include "nn/ref_ops.h"

#include <stdlib.h>
#include <string.h>

static fu_window window_of(const fu_model *m, const fu_op *op, int batch) {
    const fu_op *x = &m->ops[op->in[0]];
    return (fu_window){.n = batch, .c = x->c, .h = x->h, .w = x->w, .k = op->c, .r = op->k,
                       .stride = op->stride, .pad = op->pad, .dil = op->dil, .p = op->h, .q = op->w};
}

static fu_bn_shape bn_shape_of(const fu_op *op, int batch) {
    return (fu_bn_shape){.n = batch, .c = op->c, .hw = op->h * op->w, .eps = FU_BN_EPS, .momentum = FU_BN_MOMENTUM};
}

#define real float
#define NET fu_ref_net_f32
#define FN(name) name##_f32
#include "nn/ref_net.inc"
#undef real
#undef NET
#undef FN

#define real double
#define NET fu_ref_net_f64
#define FN(name) name##_f64
#include "nn/ref_net.inc"
#undef real
#undef NET
#undef FN
