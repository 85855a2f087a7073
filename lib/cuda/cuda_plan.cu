// Planning the cuda backend's memory for a batch (cuda_net.h): fusion and
// which tensors stay in half (plan_fusion), the scratch buffers, where every
// op's output goes, where the gradients go (sharing memory by lifetime) and
// who writes each first, and what it all takes on the device. Made once per
// backend, at its planned batch.
#include "cuda/cuda_net.h"
#include "cuda/cuda_optim.h"

extern "C" {
#include "nn/lifetimes.h"
}

#include <stdlib.h>
#include <string.h>

// Device bytes create() allocates for d->batch images (after plan_scratch;
// without the convolution workspace, chosen later and capped), and in *fixed
// the part that does not grow with the batch: weights, their gradients, half
// copies and AdamW moments, BN state (gradients and half copies only where
// the weights are borrowed).
size_t planned_bytes(const cu_net *d, size_t *fixed) {
    const fu_model *m = d->m;
    size_t f = sizeof(float), es = d->es;
    size_t held = d->borrowed ? 0 : 3 * m->n_params + m->n_state; // weights, moments, BN state
    *fixed = (m->n_params + held) * f + 2 * d->wt_size * es +
             (d->bnv_size + d->norm_part_size + 1) * sizeof(double);
    return *fixed + (d->plan.act_size + d->dact_size + d->plan.aux_size + d->stage_size + d->coef_size) * f +
           (d->hx_size + d->hy_size) * es + d->part_size * sizeof(double) + d->argmax_size + sizeof(int);
}

// Out of GPU memory at this batch: says so with the largest batch that would
// fit what the GPU has free (batch memory grows linearly with the batch).
int fail_oom(const cu_net *d, size_t need, size_t fixed, size_t free_bytes) {
    double mib = 1.0 / (1 << 20), per_image = (double)(need - fixed) / d->batch;
    long fits = free_bytes > fixed + WORKSPACE_CAP ? (long)((free_bytes - fixed - WORKSPACE_CAP) / per_image) : 0;
    fu_fail("cuda backend", "out of GPU memory: a batch of %d needs %.0f MiB (%.0f MiB of it the weights), "
                            "and %.0f MiB are free", d->batch, need * mib, fixed * mib, free_bytes * mib);
    if (fits >= 2) fu_hint("--batch %ld or less fits (with up to %zu MiB of convolution workspace)", fits, WORKSPACE_CAP >> 20);
    else fu_hint("not even a batch of 2 fits: free the GPU, or use --model-parallel to split the model");
    return -1;
}

// Sizes of the scratch buffers from the op list at the planned batch. The
// NCHW staging buffer takes the input, the model's output (a stage's goes out
// NCHW, its gradient comes in so), and dropout masks.
void plan_scratch(cu_net *d) {
    const fu_model *m = d->m;
    size_t input = fu_op_numel(m, 0, d->batch), output = fu_op_numel(m, output_op(m), d->batch);
    d->stage_size = input > output ? input : output;
    d->bnv_size = 2 * (size_t)widest_bn(m) + 3; // sums, count, W_r; share_dev last
    d->norm_part_size = cu_grad_norm_part_size(m->n_params);
    for (int i = 0; i < m->n_ops; i++) {
        const fu_op *op = &m->ops[i];
        size_t rows = (size_t)d->batch * op->h * op->w;
        if (op->kind == FU_OP_CONV) {
            d->op[i].wt = (d->wt_size + 63) & ~(size_t)63; // 128-byte aligned in half, as tensor cores like
            d->wt_size = d->op[i].wt + (size_t)op->c * m->ops[op->in[0]].c * op->k * op->k;
            size_t in = fu_op_numel(m, op->in[0], d->batch), out = fu_op_numel(m, i, d->batch);
            if (in > d->hx_size) d->hx_size = in;
            // hy: the output or its gradient in half on the way to or from fp32
            if (out > d->hy_size && !(d->op[i].half_out && d->op[i].half_grad)) d->hy_size = out;
        } else if (op->kind == FU_OP_BN) {
            size_t part = cu_bn_part_size(rows, op->c);
            if (part > d->part_size) d->part_size = part;
            if (3 * (size_t)op->c > d->coef_size) d->coef_size = 3 * (size_t)op->c;
        } else if (op->kind == FU_OP_GAP || op->kind == FU_OP_SCALE) {
            const fu_op *x = op->kind == FU_OP_GAP ? &m->ops[op->in[0]] : op; // summed over its positions
            size_t part = cu_pos_part_size(d->batch, x->h * x->w, x->c);
            if (part > d->part_size) d->part_size = part;
        } else if (op->kind == FU_OP_DROPOUT && fu_op_numel(m, i, d->batch) > d->stage_size) {
            d->stage_size = fu_op_numel(m, i, d->batch);
        } else if (op->kind == FU_OP_MAXPOOL) { // a byte per output, 16-byte aligned for the kernels' vectors
            d->op[i].arg = d->argmax_size;
            d->argmax_size += (fu_op_numel(m, i, d->batch) + 15) & ~(size_t)15;
        }
    }
    // After the scratch, each BN's forward map, which backward reads again
    // for a fused ReLU's mask.
    for (int i = 0; i < m->n_ops; i++)
        if (m->ops[i].kind == FU_OP_BN) d->op[i].coef = d->coef_size, d->coef_size += 2 * (size_t)m->ops[i].c;
}

// Whether op r reads op t's output as well in half, its gradient being fp32:
// a conv (converting the gradient from half), global or max pooling, a
// fused SE scale's x, a fused block end's shortcut (block_end, cuda_ops.cu).
static bool reads_half(const cu_net *d, int r, int t) {
    const fu_op *op = &d->m->ops[r];
    switch (op->kind) {
    case FU_OP_CONV: case FU_OP_GAP: case FU_OP_MAXPOOL: return true;
    case FU_OP_SCALE: return d->op[r].fused && op->in[0] == t && op->in[1] != t;
    case FU_OP_ADD: return d->op[r].scale >= 0 && op->in[1] == t && op->in[0] != t;
    default: return false;
    }
}

// A readers_all test: op r is a conv (which rounds its input to half itself).
static bool is_conv(const cu_net *d, int r, int t) {
    (void)t;
    return d->m->ops[r].kind == FU_OP_CONV;
}

// Whether every op that reads op t's output passes ok(d, reader, t).
static bool readers_all(const cu_net *d, int t, bool (*ok)(const cu_net *, int, int)) {
    for (int r = t + 1; r < d->m->n_ops; r++)
        for (int p = 0; p < d->m->ops[r].n_in; p++)
            if (d->m->ops[r].in[p] == t && !ok(d, r, t)) return false;
    return true;
}

// Fusion (cuda_ops.h): a BN whose output only a ReLU reads writes the
// ReLU's output itself, and takes the ReLU's output gradient in backward;
// an add of an SE scale's output (read by nothing else) and a shortcut,
// read only by a ReLU, computes scale, add and ReLU at the add's turn (the
// shortcut is ready by then; the scale's inputs were long before), forward
// and backward. The fused ops' own outputs are then never written nor read.
// Under amp, a conv whose output only a BatchNorm reads keeps that output,
// and its gradient, in half: cuDNN writes the one and reads the other
// there, the BatchNorm reads the one and writes the other, and the two
// conversions between them are gone. Likewise a fused BN + ReLU whose
// output only a conv reads: the BN writes it in half for cuDNN, cuDNN its
// gradient in half for the BN, and the conv's three conversions of its
// input and input gradient are gone (the ReLU's mask in backward comes from
// the BN's input, cuda_ops.h, so the half output is never read back). And
// an input that only convs read (the image: the stem's) arrives in half, its
// conversions in the stem's forward and backward gone.
// FU_CUDA_FUSE=0 in the environment turns it off (the same values, one
// kernel per op, for comparison and profiles).
// Also under amp, as PyTorch's autocast keeps them: a BatchNorm's output
// (no ReLU fused), a residual block's end (the fused SE scale + add +
// ReLU's) and a max pooling's output are written in half where every op
// reading them takes half (reads_half: the convs of the next block, the
// SE's pooling and the block's end, the shortcut, the head's pooling); their
// gradients stay fp32. And a fused BN + ReLU whose output only a max
// pooling reads (the stem's) writes it in half, and the pooling its
// gradient, as for a conv above. Unlike the conversions above, this rounds
// values that fp32 ops read (the shortcut's add, the pooling), and the stem
// ReLU's gradient: FU_CUDA_HALF_ACT=0 keeps all of these fp32 (with fusion,
// the same values as FU_CUDA_FUSE=0).
void plan_fusion(cu_net *d) {
    const fu_model *m = d->m;
    const char *env = getenv("FU_CUDA_FUSE");
    bool on = !env || strcmp(env, "0") != 0;
    int *readers = (int *)calloc((size_t)m->n_ops, sizeof(int)); // how many ops read each op's output
    for (int i = 0; i < m->n_ops; i++) {
        d->op[i].relu = d->op[i].scale = -1;
        for (int p = 0; readers && p < m->ops[i].n_in; p++) readers[m->ops[i].in[p]]++;
    }
    for (int j = 0; on && readers && j < m->n_ops; j++) {
        const fu_op *op = &m->ops[j];
        int i = op->n_in ? op->in[0] : -1;
        if (op->kind != FU_OP_RELU || readers[i] != 1 || i == output_op(m)) continue;
        int sc = m->ops[i].kind == FU_OP_ADD ? m->ops[i].in[0] : -1; // the scale an add adds
        if (m->ops[i].kind == FU_OP_BN) {
            d->op[i].relu = j;
            d->op[j].fused = true;
        } else if (sc >= 0 && m->ops[sc].kind == FU_OP_SCALE && readers[sc] == 1 && sc != output_op(m) &&
                   m->ops[i].in[1] != sc) {
            d->op[i].relu = j, d->op[i].scale = sc;
            d->op[j].fused = d->op[sc].fused = true;
        }
    }
    for (int j = 0; on && readers && d->amp != FU_AMP_OFF && j < m->n_ops; j++) {
        if (m->ops[j].kind != FU_OP_BN) continue;
        int i = m->ops[j].in[0];
        if (m->ops[i].kind == FU_OP_CONV && readers[i] == 1 && i != output_op(m))
            d->op[i].half_out = d->op[i].half_grad = true;
    }
    // The input (the image, or a stage's inner input) that only convs read: written in half as it
    // arrives, as those convs would round it.
    d->op[0].half_out = on && readers && d->amp != FU_AMP_OFF && readers[0] > 0 && m->ops[0].h * m->ops[0].w > 1 &&
                        readers_all(d, 0, is_conv);
    const char *half_env = getenv("FU_CUDA_HALF_ACT");
    bool half_acts = on && readers && d->amp != FU_AMP_OFF && (!half_env || strcmp(half_env, "0") != 0);
    for (int j = 0; on && readers && d->amp != FU_AMP_OFF && j < m->n_ops; j++) {
        if (m->ops[j].kind != FU_OP_CONV && !(m->ops[j].kind == FU_OP_MAXPOOL && half_acts)) continue;
        int r = m->ops[j].in[0];
        if (m->ops[r].kind != FU_OP_RELU || readers[r] != 1 || r == output_op(m)) continue;
        int bn = m->ops[r].in[0];
        if (m->ops[bn].kind == FU_OP_BN && d->op[bn].relu == r) d->op[r].half_out = d->op[r].half_grad = true;
    }
    for (int t = 0; half_acts && t < m->n_ops; t++) {
        const fu_op *op = &m->ops[t];
        bool bn = op->kind == FU_OP_BN && d->op[t].relu < 0, pool = op->kind == FU_OP_MAXPOOL;
        bool block_end = op->kind == FU_OP_RELU && d->op[t].fused && m->ops[op->in[0]].kind == FU_OP_ADD;
        // A stage's output that is a block's end, handed out as fp32 (download_nchw) holding the half
        // values: as in the whole model, where the next block's ops (or the head's pooling) read it.
        bool handed_out = t == output_op(m) && !ends_in_loss(m) && block_end && op->h * op->w > 1;
        bool read_here = t != output_op(m) && readers[t] > 0;
        if (!(bn || block_end || pool) || !(read_here || handed_out)) continue;
        d->op[t].half_out = readers_all(d, t, reads_half);
    }
    free(readers); // (without it: no fusion, the same results)
}

// Outputs that no op reads once fused (a fused BatchNorm's, a fused SE
// scale's and its add's) get no memory, nor do their gradients; outputs kept
// in half get half the floats. Aligned as fu_model_plan aligns them.
static size_t floats_of(const cu_net *d, int i, bool in_half) {
    size_t numel = fu_op_numel(d->m, i, d->batch), floats = in_half ? (numel * d->es + 3) / 4 : numel;
    return (floats + 15) & ~(size_t)15;
}

static size_t out_floats(const cu_net *d, int i) {
    const cu_op *o = &d->op[i];
    fu_op_kind k = d->m->ops[i].kind;
    if ((k == FU_OP_BN && o->relu >= 0) || (k == FU_OP_ADD && o->scale >= 0) || (k == FU_OP_SCALE && o->fused))
        return 0;
    return floats_of(d, i, o->half_out);
}

// Where outputs go: one after another (each unread one's offset is the
// next one's, never read nor written).
void plan_outputs(cu_net *d) {
    size_t at = 0;
    for (int i = 0; i < d->m->n_ops; i++) {
        d->plan.act[i] = at;
        at += out_floats(d, i);
    }
    d->plan.act_size = at;
}

// Op o's output gradient: none for the image (only a stage's inner input
// has one), nor for an output never written, else its output's size in its own type.
static size_t grad_floats(const cu_net *d, int o) {
    if (o == 0 && !d->m->inner_input) return 0;
    return out_floats(d, o) ? floats_of(d, o, d->op[o].half_grad) : 0;
}

// The op whose backward does op j's reading of its inputs: a fused SE
// scale's add (which writes the scale's input gradients), else j.
static int reading_op(const cu_net *d, int j) {
    if (!d->op[j].fused || d->m->ops[j].kind != FU_OP_SCALE) return j;
    for (int a = j + 1; a < d->m->n_ops; a++)
        if (d->op[a].scale == j) return a;
    return j;
}

// Where gradients go (nn/lifetimes.h), and who writes them first. Backward
// runs from the last op to the first: op o's gradient is written first by
// the backward of the last op reading o (the output's arrives before any),
// which writes it without adding (no clearing pass), and read last by o's
// own backward, or by the op that computes a fused ReLU (a BatchNorm, an
// add). One that its first writer writes twice (an add of o to itself), or
// that nothing writes, is cleared instead and every writer adds. Buffers
// alive at different times share memory, as on the cpu backend;
// FU_CUDA_REUSE=0 gives each its own (for comparison: the same values).
int plan_gradients(cu_net *d) {
    const fu_model *m = d->m;
    int n = m->n_ops, out = output_op(m);
    const char *env = getenv("FU_CUDA_REUSE");
    bool reuse = !env || strcmp(env, "0") != 0;
    int *from = (int *)fu_malloc((size_t)n * sizeof(int)), *to = (int *)fu_malloc((size_t)n * sizeof(int));
    size_t *bytes = (size_t *)fu_malloc((size_t)n * sizeof(size_t)), *at = (size_t *)fu_malloc((size_t)n * sizeof(size_t));
    int rc = -1;
    if (from && to && bytes && at) {
        for (int o = 0; o < n; o++) {
            bool fused_relu = m->ops[o].kind == FU_OP_RELU && d->op[o].fused;
            d->op[o].first_writer = o == out ? n : -1;
            from[o] = fused_relu ? m->ops[o].in[0] : o;
            d->op[o].grad_len = grad_floats(d, o);
            bytes[o] = d->op[o].grad_len * sizeof(float);
        }
        for (int j = 0; j < n; j++)
            for (int p = 0; p < m->ops[j].n_in; p++) {
                int o = m->ops[j].in[p], w = reading_op(d, j);
                if (o != out && w > d->op[o].first_writer) d->op[o].first_writer = w;
            }
        for (int o = 0; o < n; o++) { // to[o]: times the first writer writes it
            to[o] = 0;
            if (d->op[o].first_writer < 0) d->op[o].first_writer = o;
        }
        for (int j = 0; j < n; j++)
            for (int p = 0; p < m->ops[j].n_in; p++) {
                int o = m->ops[j].in[p];
                to[o] += reading_op(d, j) == d->op[o].first_writer;
            }
        for (int o = 0; o < n; o++) {
            d->op[o].cleared = o != out && to[o] != 1;
            to[o] = reuse ? d->op[o].first_writer : n;
            if (!reuse) from[o] = 0;
        }
        size_t total;
        rc = fu_place_lifetimes(n, bytes, from, to, 16 * sizeof(float), at, &total);
        for (int o = 0; rc == 0 && o < n; o++) d->op[o].grad = at[o] / sizeof(float);
        d->dact_size = total / sizeof(float);
    }
    free(from), free(to), free(bytes), free(at);
    return rc;
}

// Every op's output within the kernels' 32-bit indexing (CU_MAX_ELEMENTS).
int check_sizes(const cu_net *d) {
    for (int i = 0; i < d->m->n_ops; i++) {
        size_t n = fu_op_numel(d->m, i, d->batch);
        if (n > CU_MAX_ELEMENTS) {
            fu_fail("cuda backend", "op %d '%s' has %zu elements at a batch of %d: the kernels index at most %zu",
                    i, d->m->ops[i].name, n, d->batch, CU_MAX_ELEMENTS);
            fu_hint("a smaller --batch");
            return -1;
        }
    }
    return 0;
}
