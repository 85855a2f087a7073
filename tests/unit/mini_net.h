// Small hand-built nets that put every op of a fu_model through forward and
// backward (many convolution shapes: stride 1/2, dilation 1-4, 1x1, 7x7, odd
// sides), and the error measures the backend tests compare with: shared by
// tests/unit/test_dnnl.c (cpu backend) and tests/gpu/test_cuda.c (cuda).
#ifndef TESTS_UNIT_MINI_NET_H
#define TESTS_UNIT_MINI_NET_H

#include "core/rng.h"
#include "nn/model.h"

#include <math.h>
#include <stdbool.h>
#include <stdlib.h>
#include <string.h>

static inline int out_size(int in, int k, int stride, int pad, int dil) {
    return (in + 2 * pad - dil * (k - 1) - 1) / stride + 1;
}

static inline int add(fu_model *m, fu_op_kind kind, int in0, int in1, int c, int h, int w) {
    fu_op *op = &m->ops[m->n_ops];
    *op = (fu_op){.kind = kind, .in = {in0, in1}, .n_in = in0 < 0 ? 0 : in1 < 0 ? 1 : 2, .c = c, .h = h, .w = w,
                  .weight = -1, .bias_off = -1, .mean = -1, .var = -1, .count = -1, .dil = 1, .stride = 1};
    return m->n_ops++;
}

static inline int conv(fu_model *m, int in, int c, int k, int stride, int pad, int dil) {
    const fu_op *x = &m->ops[in];
    int i = add(m, FU_OP_CONV, in, -1, c, out_size(x->h, k, stride, pad, dil), out_size(x->w, k, stride, pad, dil));
    fu_op *op = &m->ops[i];
    op->k = k, op->stride = stride, op->pad = pad, op->dil = dil;
    op->weight = (int64_t)m->n_params;
    m->n_params += (size_t)c * x->c * k * k;
    return i;
}

static inline int bn(fu_model *m, int in) {
    const fu_op *x = &m->ops[in];
    int i = add(m, FU_OP_BN, in, -1, x->c, x->h, x->w);
    fu_op *op = &m->ops[i];
    op->weight = (int64_t)m->n_params, op->bias_off = (int64_t)m->n_params + x->c;
    m->n_params += 2 * (size_t)x->c;
    op->mean = (int64_t)m->n_state, op->var = (int64_t)m->n_state + x->c;
    m->n_state += 2 * (size_t)x->c;
    op->count = (int)m->n_counts++;
    return i;
}

static inline int linear(fu_model *m, int in, int out, bool bias) {
    int i = add(m, FU_OP_LINEAR, in, -1, out, 1, 1);
    fu_op *op = &m->ops[i];
    op->weight = (int64_t)m->n_params;
    m->n_params += (size_t)out * m->ops[in].c;
    op->bias = bias;
    if (bias) op->bias_off = (int64_t)m->n_params, m->n_params += (size_t)out;
    return i;
}

static inline int unary(fu_model *m, fu_op_kind kind, int in) {
    const fu_op *x = &m->ops[in];
    bool gap = kind == FU_OP_GAP;
    return add(m, kind, in, -1, x->c, gap ? 1 : x->h, gap ? 1 : x->w);
}

// Every op kind around two convolutions of the given window: BN, ReLU, SE
// (global pool, linears, sigmoid, scale), max pool, 1x1 and dilated branches,
// concat, add, the head with BN1d, dropout on a feature map and on a vector.
// map_dropout: also a dropout over a feature map (its mask in NCHW order,
// whatever layout a backend keeps).
static inline void mini_net(fu_model *m, int h, int w, int k, int stride, int pad, int dil, bool map_dropout) {
    memset(m, 0, sizeof *m);
    m->ops = calloc(32, sizeof *m->ops);
    m->height = h, m->width = w, m->classes = 2;
    int x = add(m, FU_OP_INPUT, -1, -1, 3, h, w);
    int a = unary(m, FU_OP_RELU, bn(m, conv(m, x, 16, k, stride, pad, dil)));
    int b = bn(m, conv(m, a, 32, k, stride, pad, dil));
    int se = unary(m, FU_OP_SIGMOID,
                   linear(m, unary(m, FU_OP_RELU, linear(m, unary(m, FU_OP_GAP, b), 8, false)), 32, false));
    int sc = add(m, FU_OP_SCALE, b, se, 32, m->ops[b].h, m->ops[b].w);
    const fu_op *s = &m->ops[sc];
    int pool = add(m, FU_OP_MAXPOOL, sc, -1, 32, out_size(s->h, 3, 2, 1, 1), out_size(s->w, 3, 2, 1, 1));
    m->ops[pool].k = 3, m->ops[pool].stride = 2, m->ops[pool].pad = 1;
    int c1 = conv(m, pool, 16, 1, 1, 0, 1), c2 = conv(m, pool, 16, 3, 1, 3, 3);
    int cat = add(m, FU_OP_CONCAT, c1, c2, 32, m->ops[c1].h, m->ops[c1].w);
    int sum = unary(m, FU_OP_RELU, add(m, FU_OP_ADD, cat, pool, 32, m->ops[cat].h, m->ops[cat].w));
    int fdrop = sum;
    if (map_dropout) {
        fdrop = unary(m, FU_OP_DROPOUT, sum);
        m->ops[fdrop].p = 0.2f;
    }
    int head = unary(m, FU_OP_RELU, bn(m, linear(m, unary(m, FU_OP_GAP, fdrop), 16, false)));
    int drop = unary(m, FU_OP_DROPOUT, head);
    m->ops[drop].p = 0.3f;
    int logits = linear(m, drop, 2, true);
    add(m, FU_OP_XENT, logits, -1, 1, 1, 1);
}

static inline void mini_init(const fu_model *m, uint64_t seed, float *params, float *state) {
    fu_rng r = fu_rng_make(seed, 1, 0);
    for (int i = 0; i < m->n_ops; i++) {
        const fu_op *op = &m->ops[i];
        if (op->kind == FU_OP_CONV || op->kind == FU_OP_LINEAR) {
            int fan_in = m->ops[op->in[0]].c * (op->kind == FU_OP_CONV ? op->k * op->k : 1);
            for (size_t j = 0; j < (size_t)op->c * fan_in; j++)
                params[op->weight + j] = (float)(sqrt(2.0 / fan_in) * fu_rng_normal(&r));
            for (int c = 0; op->bias_off >= 0 && c < op->c; c++) params[op->bias_off + c] = (float)(0.1 * fu_rng_normal(&r));
        }
        if (op->kind != FU_OP_BN) continue;
        for (int c = 0; c < op->c; c++) {
            params[op->weight + c] = (float)(1 + 0.2 * fu_rng_normal(&r));
            params[op->bias_off + c] = (float)(0.1 * fu_rng_normal(&r));
            state[op->mean + c] = (float)(0.1 * fu_rng_normal(&r));
            state[op->var + c] = (float)(1 + 0.5 * fu_rng_uniform(&r));
        }
    }
}

// ---- one comparison ---------------------------------------------------------------

static inline double norm(size_t n, const double *v) {
    double s = 0;
    for (size_t i = 0; i < n; i++) s += v[i] * v[i];
    return sqrt(s);
}

// ||a - ref|| / max(||ref||, floor)
static inline double rel_floor(size_t n, const float *a, const double *ref, double floor) {
    double num = 0;
    for (size_t i = 0; i < n; i++) num += (a[i] - ref[i]) * (a[i] - ref[i]);
    double den = norm(n, ref);
    if (den < floor) den = floor;
    return den > 0 ? sqrt(num) / den : sqrt(num);
}

static inline double rel_err(size_t n, const float *a, const double *ref) { return rel_floor(n, a, ref, 0); }

// The largest per-op relative gradient error (weight or bias) against the
// double oracle gd, its op into where. Errors are measured against at least
// 1e-4 of the largest gradient norm (a linear bias feeding a BatchNorm on
// batch statistics has an exactly zero gradient).
static inline double worst_grad(const fu_model *m, const float *g, const double *gd, char where[80]) {
    double floor = 0, worst = 0;
    for (int pass = 0; pass < 2; pass++)
        for (int i = 0; i < m->n_ops; i++) {
            const fu_op *op = &m->ops[i];
            size_t wn = 0;
            if (op->kind == FU_OP_CONV) wn = (size_t)op->c * m->ops[op->in[0]].c * op->k * op->k;
            else if (op->kind == FU_OP_LINEAR) wn = (size_t)op->c * m->ops[op->in[0]].c;
            else if (op->kind == FU_OP_BN) wn = (size_t)op->c;
            else continue;
            if (pass == 0) {
                floor = fmax(floor, 1e-4 * norm(wn, gd + op->weight));
                continue;
            }
            double e = rel_floor(wn, g + op->weight, gd + op->weight, floor);
            if (op->bias_off >= 0) e = fmax(e, rel_floor((size_t)op->c, g + op->bias_off, gd + op->bias_off, floor));
            if (e > worst) {
                worst = e;
                snprintf(where, 80, "op %d %s", i, op->name);
            }
        }
    return worst;
}

#endif
