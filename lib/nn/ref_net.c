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

// Elements of op's weight: conv OIHW, linear (out, in), BN gamma (C).
static size_t weight_numel(const fu_model *m, const fu_op *op) {
    size_t in = (size_t)m->ops[op->in[0]].c;
    if (op->kind == FU_OP_CONV) return (size_t)op->c * in * op->k * op->k;
    if (op->kind == FU_OP_LINEAR) return (size_t)op->c * in;
    return (size_t)op->c;
}

void fu_params_ready(const fu_model *m, int i, void (*ready)(void *ctx, size_t off, size_t len), void *ctx) {
    const fu_op *op = &m->ops[i];
    if (op->weight < 0) return;
    size_t off = (size_t)op->weight, wn = weight_numel(m, op), bn = op->bias_off >= 0 ? (size_t)op->c : 0;
    if (bn && (size_t)op->bias_off != off + wn) {
        ready(ctx, off, wn);
        ready(ctx, (size_t)op->bias_off, bn);
    } else {
        ready(ctx, off, wn + bn);
    }
}

fu_rng fu_dropout_rng(const fu_model *m, int i, const fu_pass *pass) {
    fu_rng rng = fu_rng_make(pass->seed, pass->step, (uint64_t)(i + m->op_base));
    fu_rng_skip(&rng, (uint64_t)pass->image0 * fu_op_numel(m, i, 1));
    return rng;
}

// The op whose output is the model's: the logits before the loss, or a
// stage's last op.
static int output_op(const fu_model *m) {
    int last = m->n_ops - 1;
    return m->ops[last].kind == FU_OP_XENT ? m->ops[last].in[0] : last;
}

// The widest BN: the length of sync-BN's summed vector is 2 * its channels + 2.
static int widest_bn(const fu_model *m) {
    int c = 0;
    for (int i = 0; i < m->n_ops; i++)
        if (m->ops[i].kind == FU_OP_BN && m->ops[i].c > c) c = m->ops[i].c;
    return c;
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
