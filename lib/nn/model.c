// fu_medicalcnn(): the study's model.py as an op list (issue 3, docs/model.md).
#include "nn/model.h"

#include "core/error.h"
#include "core/rng.h"

#include <math.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

enum { MAX_OPS = 512, MAX_TENSORS = 512 }; // MedicalCNN needs 246 and 294

static int add_op(fu_model *m, fu_op_kind kind, int in0, int c, int h, int w) {
    fu_op *op = &m->ops[m->n_ops];
    memset(op, 0, sizeof *op);
    op->kind = kind;
    op->in[0] = in0;
    op->n_in = in0 >= 0 ? 1 : 0;
    op->c = c, op->h = h, op->w = w;
    op->weight = op->bias_off = op->mean = op->var = -1;
    op->count = -1;
    return m->n_ops++;
}

static void set_name(fu_op *op, const char *fmt, va_list ap) { vsnprintf(op->name, sizeof op->name, fmt, ap); }

// Appends a tensor `module.suffix` living in `buffer`; returns its offset.
static size_t add_tensor(fu_model *m, const fu_op *op, const char *suffix, fu_buffer buffer, int ndim,
                         const int64_t *shape) {
    fu_tensor *t = &m->tensors[m->n_tensors++];
    memset(t, 0, sizeof *t);
    snprintf(t->name, sizeof t->name, "%s.%s", op->name, suffix);
    t->buffer = buffer;
    t->ndim = ndim;
    t->numel = 1;
    for (int i = 0; i < ndim; i++) {
        t->shape[i] = shape[i];
        t->numel *= (size_t)shape[i];
    }
    size_t *next = buffer == FU_BUF_PARAMS ? &m->n_params : buffer == FU_BUF_STATE ? &m->n_state : &m->n_counts;
    t->offset = *next;
    *next += t->numel;
    return t->offset;
}

static int out_size(int in, int k, int stride, int pad, int dil) { return (in + 2 * pad - dil * (k - 1) - 1) / stride + 1; }

static __attribute__((format(printf, 8, 9))) int conv(fu_model *m, int in, int cout, int k, int stride, int pad,
                                                      int dil, const char *fmt, ...) {
    const fu_op *x = &m->ops[in];
    int i = add_op(m, FU_OP_CONV, in, cout, out_size(x->h, k, stride, pad, dil), out_size(x->w, k, stride, pad, dil));
    fu_op *op = &m->ops[i];
    op->k = k, op->stride = stride, op->pad = pad, op->dil = dil;
    va_list ap;
    va_start(ap, fmt);
    set_name(op, fmt, ap);
    va_end(ap);
    op->weight = (int64_t)add_tensor(m, op, "weight", FU_BUF_PARAMS, 4, (int64_t[]){cout, x->c, k, k});
    return i;
}

static __attribute__((format(printf, 3, 4))) int bn(fu_model *m, int in, const char *fmt, ...) {
    const fu_op *x = &m->ops[in];
    int i = add_op(m, FU_OP_BN, in, x->c, x->h, x->w);
    fu_op *op = &m->ops[i];
    va_list ap;
    va_start(ap, fmt);
    set_name(op, fmt, ap);
    va_end(ap);
    int64_t c[1] = {x->c};
    op->weight = (int64_t)add_tensor(m, op, "weight", FU_BUF_PARAMS, 1, c);
    op->bias_off = (int64_t)add_tensor(m, op, "bias", FU_BUF_PARAMS, 1, c);
    op->mean = (int64_t)add_tensor(m, op, "running_mean", FU_BUF_STATE, 1, c);
    op->var = (int64_t)add_tensor(m, op, "running_var", FU_BUF_STATE, 1, c);
    op->count = (int)add_tensor(m, op, "num_batches_tracked", FU_BUF_COUNTS, 0, NULL);
    return i;
}

static __attribute__((format(printf, 5, 6))) int linear(fu_model *m, int in, int out, bool bias, const char *fmt,
                                                        ...) {
    const fu_op *x = &m->ops[in];
    int i = add_op(m, FU_OP_LINEAR, in, out, 1, 1);
    fu_op *op = &m->ops[i];
    op->bias = bias;
    va_list ap;
    va_start(ap, fmt);
    set_name(op, fmt, ap);
    va_end(ap);
    op->weight = (int64_t)add_tensor(m, op, "weight", FU_BUF_PARAMS, 2, (int64_t[]){out, x->c});
    if (bias) op->bias_off = (int64_t)add_tensor(m, op, "bias", FU_BUF_PARAMS, 1, (int64_t[]){out});
    return i;
}

static int unary(fu_model *m, fu_op_kind kind, int in) {
    const fu_op *x = &m->ops[in];
    return add_op(m, kind, in, x->c, x->h, x->w);
}

static int binary(fu_model *m, fu_op_kind kind, int in0, int in1) {
    int i = unary(m, kind, in0);
    m->ops[i].in[1] = in1;
    m->ops[i].n_in = 2;
    return i;
}

// conv3x3 -> BN -> ReLU -> conv3x3 -> BN -> SE, plus the shortcut, -> ReLU.
static int residual_block(fu_model *m, int in, int cout, int stride, const char *name) {
    int cin = m->ops[in].c;
    int x = conv(m, in, cout, 3, stride, 1, 1, "%s.conv1", name);
    x = unary(m, FU_OP_RELU, bn(m, x, "%s.bn1", name));
    x = conv(m, x, cout, 3, 1, 1, 1, "%s.conv2", name);
    x = bn(m, x, "%s.bn2", name);
    // Squeeze-and-excitation (reduction 16) on the residual branch.
    int s = unary(m, FU_OP_GAP, x);
    m->ops[s].h = m->ops[s].w = 1;
    s = unary(m, FU_OP_RELU, linear(m, s, cout / 16, false, "%s.se.fc.0", name));
    s = unary(m, FU_OP_SIGMOID, linear(m, s, cout, false, "%s.se.fc.2", name));
    x = binary(m, FU_OP_SCALE, x, s);
    int shortcut = in;
    if (stride != 1 || cin != cout) {
        shortcut = conv(m, in, cout, 1, stride, 0, 1, "%s.downsample.0", name);
        shortcut = bn(m, shortcut, "%s.downsample.1", name);
    }
    return unary(m, FU_OP_RELU, binary(m, FU_OP_ADD, x, shortcut));
}

static int stage(fu_model *m, int in, int cout, int blocks, int stride, const char *name) {
    char block[32];
    for (int i = 0; i < blocks; i++) {
        snprintf(block, sizeof block, "%s.%d", name, i);
        in = residual_block(m, in, cout, i == 0 ? stride : 1, block);
    }
    return in;
}

// Four dilated 3x3 branches (d = 1..4, padding d) concatenated, then a 1x1 fusion.
static int multi_dilated(fu_model *m, int in, int cout, const char *name) {
    int branch[4];
    for (int d = 1; d <= 4; d++) {
        int x = conv(m, in, cout / 4, 3, 1, d, d, "%s.conv%d.conv", name, d);
        branch[d - 1] = unary(m, FU_OP_RELU, bn(m, x, "%s.conv%d.bn", name, d));
    }
    const fu_op *x = &m->ops[branch[0]];
    int cat = add_op(m, FU_OP_CONCAT, branch[0], cout, x->h, x->w);
    fu_op *op = &m->ops[cat];
    memcpy(op->in, branch, sizeof branch);
    op->n_in = 4;
    int y = conv(m, cat, cout, 1, 1, 0, 1, "%s.conv_fusion.conv", name);
    return unary(m, FU_OP_RELU, bn(m, y, "%s.conv_fusion.bn", name));
}

int fu_medicalcnn(fu_model *m, int height, int width) {
    memset(m, 0, sizeof *m);
    if (height < FU_MODEL_MIN_SIZE || width < FU_MODEL_MIN_SIZE) {
        fu_fail("model", "image size %dx%d is below the minimum %dx%d", width, height, FU_MODEL_MIN_SIZE,
                FU_MODEL_MIN_SIZE);
        return -1;
    }
    m->ops = fu_calloc(MAX_OPS, sizeof *m->ops);
    m->tensors = fu_calloc(MAX_TENSORS, sizeof *m->tensors);
    if (!m->ops || !m->tensors) {
        fu_model_free(m);
        return -1;
    }
    m->height = height, m->width = width, m->classes = 2;
    int x = add_op(m, FU_OP_INPUT, -1, 3, height, width);

    x = conv(m, x, 64, 7, 2, 3, 1, "stem.0");
    x = unary(m, FU_OP_RELU, bn(m, x, "stem.1"));
    const fu_op *s = &m->ops[x];
    x = add_op(m, FU_OP_MAXPOOL, x, 64, out_size(s->h, 3, 2, 1, 1), out_size(s->w, 3, 2, 1, 1));
    m->ops[x].k = 3, m->ops[x].stride = 2, m->ops[x].pad = 1, m->ops[x].dil = 1;

    x = stage(m, x, 64, 3, 1, "stage1");
    x = stage(m, x, 128, 4, 2, "stage2");
    x = stage(m, x, 256, 6, 2, "stage3_res");
    x = multi_dilated(m, x, 256, "stage3_md");
    x = stage(m, x, 512, 3, 2, "stage4_res");

    x = unary(m, FU_OP_GAP, x);
    m->ops[x].h = m->ops[x].w = 1;
    // fc: Linear, BN1d, ReLU, Dropout, Linear, BN1d, ReLU, Dropout, Linear (indices 0..8).
    x = linear(m, x, 512, true, "fc.0");
    x = unary(m, FU_OP_RELU, bn(m, x, "fc.1"));
    x = unary(m, FU_OP_DROPOUT, x);
    m->ops[x].p = 0.3f;
    x = linear(m, x, 256, true, "fc.4");
    x = unary(m, FU_OP_RELU, bn(m, x, "fc.5"));
    x = unary(m, FU_OP_DROPOUT, x);
    m->ops[x].p = 0.3f;
    x = linear(m, x, m->classes, true, "fc.8");
    add_op(m, FU_OP_XENT, x, 1, 1, 1);
    return 0;
}

void fu_model_free(fu_model *m) {
    free(m->ops);
    free(m->tensors);
    memset(m, 0, sizeof *m);
}

const fu_tensor *fu_model_find(const fu_model *m, const char *name) {
    for (int i = 0; i < m->n_tensors; i++)
        if (strcmp(m->tensors[i].name, name) == 0) return &m->tensors[i];
    return NULL;
}

static bool ends_with(const char *s, const char *suffix) {
    size_t n = strlen(s), k = strlen(suffix);
    return n >= k && strcmp(s + n - k, suffix) == 0;
}

void fu_model_init(const fu_model *m, uint64_t seed, float *params, float *state, int64_t *counts) {
    // Every tensor has its own stream, so threads cannot change the values.
#pragma omp parallel for schedule(dynamic)
    for (int i = 0; i < m->n_tensors; i++) {
        const fu_tensor *t = &m->tensors[i];
        fu_rng rng = fu_rng_make(seed, (uint64_t)i, 0);
        if (t->buffer == FU_BUF_COUNTS) {
            counts[t->offset] = 0;
            continue;
        }
        float *v = (t->buffer == FU_BUF_PARAMS ? params : state) + t->offset; // (numel)
        double stddev = 0, fill = 0;
        if (t->ndim == 4) // conv OIHW: Kaiming normal, fan_out = O * kH * kW, gain sqrt(2)
            stddev = sqrt(2.0 / (double)(t->shape[0] * t->shape[2] * t->shape[3]));
        else if (t->ndim == 2) // linear (out, in)
            stddev = 0.01;
        else if (ends_with(t->name, ".running_var"))
            fill = 1;
        else if (ends_with(t->name, ".weight")) // BN gamma (the 1-d weights are all BN)
            fill = 1;
        for (size_t j = 0; j < t->numel; j++) v[j] = stddev > 0 ? (float)(stddev * fu_rng_normal(&rng)) : (float)fill;
    }
}

fu_model_summary fu_model_summarize(const fu_model *m) {
    fu_model_summary s = {.params = m->n_params, .state = m->n_state, .tensors = m->n_tensors};
    int blocks = 0;
    for (int i = 0; i < m->n_ops; i++) {
        const fu_op *op = &m->ops[i];
        s.macs += fu_op_macs(m, i);
        if (op->kind == FU_OP_CONV) {
            s.convs++;
        } else if (op->kind == FU_OP_LINEAR) {
            s.linears++;
        } else if (op->kind == FU_OP_BN) {
            s.bns++;
        } else if (op->kind == FU_OP_ADD) {
            blocks++;
        }
    }
    // The study's count, reproduced as it wrote it: 4 (stem) + 6 per residual
    // block + 10 after stage 3 + 10 after stage 4 + 9 (head). With [3, 4, 6, 3]
    // blocks: 4 + 3*6 + 4*6 + (6*6 + 10) + (3*6 + 10) + 9 = 129. It is not a module count.
    s.study_layers = 4 + 6 * blocks + 10 + 10 + 9;
    return s;
}

double fu_op_macs(const fu_model *m, int i) {
    const fu_op *op = &m->ops[i];
    if (op->kind == FU_OP_CONV) return (double)op->c * op->h * op->w * m->ops[op->in[0]].c * op->k * op->k;
    if (op->kind == FU_OP_LINEAR) return (double)op->c * m->ops[op->in[0]].c;
    return 0;
}

size_t fu_op_numel(const fu_model *m, int i, int batch) {
    const fu_op *op = &m->ops[i];
    if (op->kind == FU_OP_XENT) return 1;
    return (size_t)batch * (size_t)op->c * (size_t)op->h * (size_t)op->w;
}

int fu_model_plan(const fu_model *m, int batch, fu_plan *plan) {
    memset(plan, 0, sizeof *plan);
    if (batch < 1) return fu_fail("model", "batch size %d must be at least 1", batch);
    plan->batch = batch;
    plan->act = fu_calloc((size_t)m->n_ops, sizeof *plan->act);
    plan->aux = fu_calloc((size_t)m->n_ops, sizeof *plan->aux);
    if (!plan->act || !plan->aux) {
        fu_plan_free(plan);
        return -1;
    }
    // Keep every output a multiple of 16 elements (64-byte aligned floats) for vector loops.
    size_t act = 0, aux = 0;
    for (int i = 0; i < m->n_ops; i++) {
        const fu_op *op = &m->ops[i];
        plan->act[i] = act;
        act += (fu_op_numel(m, i, batch) + 15) & ~(size_t)15;
        size_t saved = 0;
        if (op->kind == FU_OP_BN) saved = 2 * (size_t)op->c; // batch mean, 1/std
        else if (op->kind == FU_OP_DROPOUT) saved = fu_op_numel(m, i, batch); // mask
        else if (op->kind == FU_OP_XENT) saved = fu_op_numel(m, op->in[0], batch); // probabilities
        plan->aux[i] = aux;
        aux += (saved + 15) & ~(size_t)15;
    }
    plan->act_size = act;
    plan->aux_size = aux;
    return 0;
}

void fu_plan_free(fu_plan *plan) {
    free(plan->act);
    free(plan->aux);
    memset(plan, 0, sizeof *plan);
}
