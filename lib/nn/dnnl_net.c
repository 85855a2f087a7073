// The "cpu" backend: the op list on oneDNN 2.x (C API). Layouts inside:
//   image        (n, 3, H, W) nchw, as given: the stem convolution reads it directly
//   feature maps (n, C, H, W) nChw16c (channel blocks of 16, what oneDNN's
//                AVX-512 kernels are fastest on; every width here is a multiple of 16)
//   vectors      (n, C) plain, from global pooling on: reference ops (tiny)
// Primitives and their memory objects are created once for a batch size; a
// step only points parameter memories at the caller's buffers and executes.
// Per step, per weight (not per activation): conv weights are reordered from
// the flat OIHW params into the primitives' layouts (forward, and backward
// data where it differs), and weight gradients back into the flat grads:
// about 3 x 90 MB of copies, ~0.2 s of a ~2 s step at batch 32, 224x224.
//
// 3x3 stride-1 convolutions run as Winograd F(4x4, 3x3) where oneDNN has it.
// Fusion: a BatchNorm whose only reader is a ReLU runs with fuse_norm_relu
// (backward uses its workspace mask); an add whose only reader is a ReLU
// applies it in the same pass; an SE scale read only by the residual add is
// computed inside it (relu(x * s + shortcut), the scaled branch never stored).
// A fused ReLU, and the add, then share their BN's/add's output buffer.
//
// Backward: oneDNN overwrites a diff_src; a tensor read by several ops (block
// input, SE input, the multi-dilated block's input) gets the first gradient
// written in place and later ones added from a scratch buffer. Gradients
// share memory wherever their lifetimes in the backward pass do not overlap.
//
// --amp bf16 (CPUs with AVX512-BF16), as PyTorch's CPU autocast: each
// convolution reads a bf16 copy of its input (made once per input, kept for
// backward-weights) and bf16 weights (reordered from the fp32 params per
// step), accumulates in fp32 and writes fp32; backward reads the output
// gradient in bf16 and writes fp32 input and weight gradients. Everything
// else (BN, the head, loss, optimizer, the flat params and grads) stays
// fp32, and so do the activations between ops. oneDNN has no bf16 Winograd:
// bf16 convolutions run direct.
//
// A stage of a model cut for model parallelism (model.h, nn/stages.h) runs
// the same way: its input op holds the tensor it receives (a feature map,
// blocked from the caller's NCHW, or a vector), whose gradient backward then
// computes like any other op's and hands out in NCHW (input_grad); where it
// ends before the loss, its last op's output goes out in NCHW (logits) and
// the caller's gradient of it (backward's dy) comes in as that op's gradient.
// Fusion is decided within the stage: a BN or add cut from its ReLU runs
// unfused (same values); a stage ending in a fused ReLU takes dy as the
// fused op's gradient, as the ReLU's readers would have written it.
#include "nn/dnnl_net.h"

#include "core/error.h"
#include "core/rng.h"
#include "nn/blocked_ops.h"
#include "nn/lifetimes.h"
#include "nn/ref_ops.h"

#include <dnnl.h>
#include <dnnl_debug.h>
#include <math.h>
#include <omp.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>

#define DN_ALIGN 64
#define DN_MAX_ARGS 12

// One primitive execution: the primitive and its arguments.
typedef struct {
    dnnl_primitive_t p;
    dnnl_exec_arg_t a[DN_MAX_ARGS];
    int n;
} dn_call;

typedef struct {
    bool vec;        // (n, C) plain: reference ops
    bool relu_fused; // BN or add with its ReLU inside
    bool folded;     // SE scale computed inside the add that reads it (no output stored)
    int owner;       // op whose buffers hold this op's output (a fused ReLU: its BN)
    int readers;     // ops reading this output
    size_t act;      // byte offset of the output in act
    size_t dact;     // byte offset of its gradient in dact (shared with gradients not alive at the same time)
    size_t aux;      // byte offset of saved values (BN mean/var, masks, probabilities)
    size_t ws;       // byte offset of the oneDNN workspace in aux
    // conv: fwd, bwd_data, bwd_w and the weight reorders; BN: fwd (training),
    // fwd_eval, bwd; maxpool: fwd, bwd.
    dn_call fwd, fwd_eval, bwd_data, bwd_w, w_to_fwd, w_to_bwd, dw_to_user;
    float *w_fwd, *w_bwd, *dw; // conv weights in the primitives' layouts (NULL: plain OIHW)
    // memories whose handles move each step
    dnnl_memory_t m_w, m_wb, m_dw, m_scale, m_shift, m_dscale, m_dshift, m_rmean, m_rvar, m_dsrc;
    // --amp bf16. A conv: its input to bf16 (run by the first conv reading
    // that input, in forward) and its output gradient to bf16 (in backward).
    // An op read by convs: the bf16 copy of its output they share (bf_md at
    // the built batch), kept for their backward-weights; bf_by: that first conv.
    dn_call src_to_bf, ddst_to_bf;
    void *bf;
    dnnl_memory_desc_t bf_md;
    int bf_by;
    // A conv whose weight gradient runs on a zero-padded copy of its input
    // (see padded_bwd_w): the copy, and the reorder into its interior.
    dn_call src_to_pad;
    void *padded;
} dn_op;

typedef struct {
    const fu_model *m;
    int batch, built, threads;
    dnnl_engine_t engine;
    dnnl_stream_t stream;
    dn_op *op;
    char *act, *dact, *aux, *tmp, *scratch;
    size_t act_size, dact_size, aux_size, tmp_size, scratch_size;
    dnnl_memory_t *mems; // every memory object made, for destroy
    int n_mems, cap_mems;
    dnnl_primitive_desc_t *pds; // likewise
    int n_pds, cap_pds;
    bool *written; // per op during backward: its gradient holds a value
    int *labels;
    float *class_w;
    bool ready;
    // Sync-BN (backend.h's dist->sum): per-image channel sums (batch, C/16, 2, 16),
    // the vector summed over ranks (2C + 2), this rank's loss share (ref_net.h)
    double *bn_part, *bn_sums, share;
    float *bn_coef; // per-channel coefficients, 3 * the widest BN's C
    fu_amp amp;
    void *dbf; // --amp bf16: a conv's output gradient in bf16, (n, C, H, W) nChw16c, one conv at a time
    // A stage's crossings where they are feature maps (vectors are plain
    // already): its output (n, C, H, W) NCHW after forward, where it ends
    // before the loss; its input's gradient (n, C, H, W) NCHW after backward.
    float *out, *in_grad;
    size_t bf_size; // bytes of the bf16 input copies and dbf
    size_t pad_size; // bytes of the padded input copies
} dn_net;

#define DN(call)                                                                                                       \
    do {                                                                                                               \
        dnnl_status_t st_ = (call);                                                                                    \
        if (st_ != dnnl_success)                                                                                       \
            return fu_fail("cpu backend", "oneDNN: %s (%s:%d)", dnnl_status2str(st_), __FILE__, __LINE__);             \
    } while (0)

static size_t align_up(size_t n) { return (n + DN_ALIGN - 1) & ~(size_t)(DN_ALIGN - 1); }

// Whether op j is the image (NCHW as given, no gradient), rather than a
// stage's inner input or any other op.
static bool is_image(const fu_model *m, int j) { return j == 0 && !m->inner_input; }

// The op whose output is the model's: the logits before the loss, or a
// stage's last op.
static int output_op(const fu_model *m) {
    int last = m->n_ops - 1;
    return m->ops[last].kind == FU_OP_XENT ? m->ops[last].in[0] : last;
}

static bool ends_in_loss(const fu_model *m) { return m->ops[m->n_ops - 1].kind == FU_OP_XENT; }

static dn_op *src_of(dn_net *d, const fu_op *op, int k) { return &d->op[d->op[op->in[k]].owner]; }

static float *act_of(dn_net *d, int i) { return (float *)(d->act + d->op[d->op[i].owner].act); }
static float *dact_of(dn_net *d, int i) { return (float *)(d->dact + d->op[d->op[i].owner].dact); }

// ---- object bookkeeping ---------------------------------------------------

static int keep_mem(dn_net *d, dnnl_memory_t mem) {
    if (d->n_mems == d->cap_mems) {
        int cap = d->cap_mems ? 2 * d->cap_mems : 256;
        dnnl_memory_t *p = realloc(d->mems, (size_t)cap * sizeof *p);
        if (!p)
            return fu_fail("cpu backend", "out of memory");
        d->mems = p;
        d->cap_mems = cap;
    }
    d->mems[d->n_mems++] = mem;
    return 0;
}

static int keep_pd(dn_net *d, dnnl_primitive_desc_t pd) {
    if (d->n_pds == d->cap_pds) {
        int cap = d->cap_pds ? 2 * d->cap_pds : 256;
        dnnl_primitive_desc_t *p = realloc(d->pds, (size_t)cap * sizeof *p);
        if (!p)
            return fu_fail("cpu backend", "out of memory");
        d->pds = p;
        d->cap_pds = cap;
    }
    d->pds[d->n_pds++] = pd;
    return 0;
}

// A memory object over ptr (NULL: its handle is set before each use).
static int mem(dn_net *d, const dnnl_memory_desc_t *md, void *ptr, dnnl_memory_t *out) {
    DN(dnnl_memory_create(out, md, d->engine, ptr ? ptr : DNNL_MEMORY_NONE));
    return keep_mem(d, *out);
}

static void arg(dn_call *c, int kind, dnnl_memory_t m) { c->a[c->n++] = (dnnl_exec_arg_t){kind, m}; }

// Creates c's primitive from pd; its scratchpad (user-managed, shared by all
// primitives) is sized in the first pass and bound once the buffer exists.
static int make_call(dn_net *d, dnnl_primitive_desc_t pd, dn_call *c) {
    memset(c, 0, sizeof *c);
    DN(dnnl_primitive_create(&c->p, pd));
    const dnnl_memory_desc_t *sp = dnnl_primitive_desc_query_md(pd, dnnl_query_scratchpad_md, 0);
    size_t bytes = sp ? dnnl_memory_desc_get_size(sp) : 0;
    if (bytes) {
        if (bytes > d->scratch_size)
            d->scratch_size = bytes;
        dnnl_memory_t m;
        if (mem(d, sp, NULL, &m) < 0)
            return -1;
        arg(c, DNNL_ARG_SCRATCHPAD, m);
    }
    return 0;
}

static int exec(dn_net *d, dn_call *c) {
    if (!c->p)
        return 0;
    DN(dnnl_primitive_execute(c->p, d->stream, c->n, c->a));
    return 0;
}

static int set(dnnl_memory_t m, const void *ptr) {
    DN(dnnl_memory_set_data_handle(m, (void *)ptr));
    return 0;
}

static dnnl_memory_desc_t md4(int n, int c, int h, int w, dnnl_format_tag_t tag) {
    dnnl_memory_desc_t md;
    dnnl_dims_t dims = {n, c, h, w};
    dnnl_memory_desc_init_by_tag(&md, 4, dims, dnnl_f32, tag);
    return md;
}

static dnnl_memory_desc_t md1(int c) {
    dnnl_memory_desc_t md;
    dnnl_dims_t dims = {c};
    dnnl_memory_desc_init_by_tag(&md, 1, dims, dnnl_f32, dnnl_a);
    return md;
}

static dnnl_memory_desc_t act_md(dn_net *d, int i, int n) {
    const fu_op *op = &d->m->ops[i];
    return md4(n, op->c, op->h, op->w, is_image(d->m, i) ? dnnl_nchw : dnnl_nChw16c);
}

// A primitive descriptor with the user-managed scratchpad.
static dnnl_status_t pd_first(dn_net *d, dnnl_primitive_desc_t *pd, const void *desc,
                              const_dnnl_primitive_desc_t hint) {
    dnnl_primitive_attr_t attr;
    dnnl_status_t st = dnnl_primitive_attr_create(&attr);
    if (st != dnnl_success)
        return st;
    dnnl_primitive_attr_set_scratchpad_mode(attr, dnnl_scratchpad_mode_user);
    st = dnnl_primitive_desc_create(pd, desc, attr, d->engine, hint);
    dnnl_primitive_attr_destroy(attr);
    return st;
}

static int pd_create(dn_net *d, dnnl_primitive_desc_t *pd, const void *desc, const_dnnl_primitive_desc_t hint) {
    DN(pd_first(d, pd, desc, hint));
    return keep_pd(d, *pd);
}

// A reorder from `from` to `to` (NULL call when they are the same layout).
static int reorder(dn_net *d, const dnnl_memory_desc_t *from, const dnnl_memory_desc_t *to, dnnl_memory_t src,
                   dnnl_memory_t dst, dn_call *c) {
    memset(c, 0, sizeof *c);
    if (dnnl_memory_desc_equal(from, to))
        return 0;
    dnnl_primitive_desc_t pd;
    dnnl_primitive_attr_t attr;
    DN(dnnl_primitive_attr_create(&attr));
    dnnl_primitive_attr_set_scratchpad_mode(attr, dnnl_scratchpad_mode_user);
    dnnl_status_t st = dnnl_reorder_primitive_desc_create(&pd, from, d->engine, to, d->engine, attr);
    dnnl_primitive_attr_destroy(attr);
    DN(st);
    if (keep_pd(d, pd) < 0 || make_call(d, pd, c) < 0)
        return -1;
    arg(c, DNNL_ARG_FROM, src);
    arg(c, DNNL_ARG_TO, dst);
    return 0;
}

static float *alloc_md(const dnnl_memory_desc_t *md) {
    return aligned_alloc(DN_ALIGN, align_up(dnnl_memory_desc_get_size(md)));
}

// ---- primitives per op -----------------------------------------------------

static void window(const fu_op *op, const fu_op *x, dnnl_dims_t stride, dnnl_dims_t kernel, dnnl_dims_t dil,
                   dnnl_dims_t pad_l, dnnl_dims_t pad_r) {
    stride[0] = stride[1] = op->stride;
    kernel[0] = kernel[1] = op->k;
    int dl = op->kind == FU_OP_CONV ? op->dil : 1;
    dil[0] = dil[1] = dl - 1; // oneDNN counts dilation from 0
    pad_l[0] = pad_l[1] = op->pad;
    // right/bottom padding that makes the output exactly (h, w)
    pad_r[0] = (op->h - 1) * op->stride + (op->k - 1) * dl + 1 - x->h - op->pad;
    pad_r[1] = (op->w - 1) * op->stride + (op->k - 1) * dl + 1 - x->w - op->pad;
}

// ---- --amp bf16: the convolutions' bf16 operands ------------------------------

static void *big_alloc(size_t bytes);

static dnnl_memory_desc_t as_bf16(dnnl_memory_desc_t md) {
    md.data_type = dnnl_bf16; // a plain or blocked layout is the same for any element size
    return md;
}

// What conv i reads its input as: the first conv reading an input picks the
// bf16 layout (feature maps: nChw16c as in fp32; the image: oneDNN's choice),
// the others read the copy it makes.
static dnnl_memory_desc_t bf16_src_md(dn_net *d, int i, int n) {
    const fu_op *op = &d->m->ops[i];
    const dn_op *s = src_of(d, op, 0);
    if (s->bf_by != i)
        return s->bf_md;
    if (is_image(d->m, op->in[0])) {
        const fu_op *x = &d->m->ops[0];
        return as_bf16(md4(n, x->c, x->h, x->w, dnnl_format_tag_any));
    }
    return as_bf16(act_md(d, op->in[0], n));
}

// Conv i's bf16 source memory (src_md: the layout its primitive chose) and
// output-gradient memory, with the reorders that fill them from fp32. The
// input copy is allocated at the first build, for the planned batch (the
// largest), and shared by every conv reading that input.
static int bf16_io(dn_net *d, int i, int n, const dnnl_memory_desc_t *src_md, dnnl_memory_t *m_src,
                   dnnl_memory_t *m_ddst) {
    const fu_op *op = &d->m->ops[i];
    dn_op *o = &d->op[i], *s = src_of(d, op, 0);
    if (s->bf_by == i) {
        size_t bytes = dnnl_memory_desc_get_size(src_md);
        if (!s->bf) {
            if (!(s->bf = big_alloc(bytes)))
                return fu_fail("cpu backend", "out of memory for a %zu-byte bf16 input copy", bytes);
            d->bf_size += bytes;
        }
        s->bf_md = *src_md;
        dnnl_memory_desc_t src = act_md(d, op->in[0], n);
        dnnl_memory_t m32;
        if (mem(d, &src, d->act + s->act, &m32) < 0 || mem(d, src_md, s->bf, m_src) < 0 ||
            reorder(d, &src, src_md, m32, *m_src, &o->src_to_bf) < 0)
            return -1;
    } else if (mem(d, src_md, s->bf, m_src) < 0)
        return -1;
    dnnl_memory_desc_t dst = act_md(d, i, n), dst_bf = as_bf16(dst);
    dnnl_memory_t m_ddst32;
    if (mem(d, &dst, d->dact + o->dact, &m_ddst32) < 0 || mem(d, &dst_bf, d->dbf, m_ddst) < 0)
        return -1;
    return reorder(d, &dst, &dst_bf, m_ddst32, *m_ddst, &o->ddst_to_bf);
}

// ---- convolutions padded by about half their input ---------------------------
// oneDNN 2.6 has no JIT backward-weights kernel for a convolution whose
// padding is about half its input side or more (the multi-dilated block's
// 3x3s with dilation = padding 2..4 on maps under ~10x10, images under ~200
// px): it runs its reference loops, ~100x slower, seconds per step. Such a
// conv's weight gradient is computed instead on a zero-padded copy of its
// input with no padding: the same sums, on the JIT kernels.

static bool is_ref(const_dnnl_primitive_desc_t pd) {
    const char *impl = NULL;
    return dnnl_primitive_desc_query(pd, dnnl_query_impl_info_str, 0, &impl) == dnnl_success && impl &&
           !strncmp(impl, "ref", 3);
}

// Replaces *wpd (conv i's backward weights over src, a feature map in
// nChw16c) by one over the padded copy, when that one has a JIT kernel;
// *m_src then becomes the copy, filled from the old *m_src by src_to_pad.
static int padded_bwd_w(dn_net *d, int i, int n, dnnl_alg_kind_t alg, const dnnl_memory_desc_t *src,
                        const dnnl_memory_desc_t *ddst, const dnnl_memory_desc_t *dw, dnnl_memory_t *m_src,
                        dnnl_primitive_desc_t *wpd) {
    const fu_op *op = &d->m->ops[i], *x = &d->m->ops[op->in[0]];
    dn_op *o = &d->op[i];
    dnnl_dims_t stride, kernel, dil, pl, pr, none = {0, 0};
    window(op, x, stride, kernel, dil, pl, pr);
    if (is_image(d->m, op->in[0]) || pr[0] < 0 || pr[1] < 0)
        return 0;
    dnnl_dims_t dims = {n, x->c, x->h + pl[0] + pr[0], x->w + pl[1] + pr[1]}, inner = {n, x->c, x->h, x->w},
                at = {0, 0, pl[0], pl[1]};
    dnnl_memory_desc_t padded, view, dst = act_md(d, i, n), any_w = md4(op->c, x->c, op->k, op->k, dnnl_format_tag_any);
    DN(dnnl_memory_desc_init_by_tag(&padded, 4, dims, src->data_type, dnnl_nChw16c));
    DN(dnnl_memory_desc_init_submemory(&view, &padded, inner, at));
    any_w.data_type = src->data_type;
    dnnl_convolution_desc_t cd;
    dnnl_primitive_desc_t hint, pd;
    DN(dnnl_dilated_convolution_forward_desc_init(&cd, dnnl_forward_training, alg, &padded, &any_w, NULL, &dst, stride,
                                                  dil, none, none));
    if (pd_create(d, &hint, &cd, NULL) < 0)
        return -1;
    DN(dnnl_dilated_convolution_backward_weights_desc_init(&cd, alg, &padded, dw, NULL, ddst, stride, dil, none,
                                                           none));
    if (pd_create(d, &pd, &cd, hint) < 0)
        return -1;
    if (is_ref(pd))
        return 0;
    if (!o->padded) { // for the planned batch (the largest); the border stays zero
        dims[0] = d->batch;
        dnnl_memory_desc_t full;
        DN(dnnl_memory_desc_init_by_tag(&full, 4, dims, src->data_type, dnnl_nChw16c));
        size_t bytes = dnnl_memory_desc_get_size(&full);
        if (!(o->padded = aligned_alloc(DN_ALIGN, align_up(bytes))))
            return fu_fail("cpu backend", "out of memory for a padded input copy");
        memset(o->padded, 0, align_up(bytes));
        d->pad_size += align_up(bytes);
    }
    dnnl_memory_t m_pad, m_view;
    if (mem(d, &padded, o->padded, &m_pad) < 0 || mem(d, &view, o->padded, &m_view) < 0 ||
        reorder(d, src, &view, *m_src, m_view, &o->src_to_pad) < 0)
        return -1;
    *m_src = m_pad;
    *wpd = pd;
    return 0;
}

static int build_conv(dn_net *d, int i, int n) {
    const fu_op *op = &d->m->ops[i], *x = &d->m->ops[op->in[0]];
    dn_op *o = &d->op[i];
    dnnl_dims_t stride, kernel, dil, pl, pr;
    window(op, x, stride, kernel, dil, pl, pr);
    dnnl_memory_desc_t src = act_md(d, op->in[0], n), dst = act_md(d, i, n);
    dnnl_memory_desc_t user_w = md4(op->c, x->c, op->k, op->k, dnnl_oihw),
                       any_w = md4(op->c, x->c, op->k, op->k, dnnl_format_tag_any), any_dw = any_w;
    // --amp bf16: the convolution reads bf16 (input, weights, output gradient)
    // and accumulates and writes fp32 (output, input and weight gradients).
    bool bf = d->amp == FU_AMP_BF16;
    dnnl_memory_desc_t csrc = bf ? bf16_src_md(d, i, n) : src, cddst = bf ? as_bf16(dst) : dst;
    if (bf)
        any_w = as_bf16(any_w);
    // 3x3 stride-1 convolutions (most of the work) run as Winograd F(4x4, 3x3)
    // where oneDNN has it (AVX-512: forward, backward data and weights): about
    // twice as fast as direct here; the rest, or where it is missing, direct
    // (oneDNN has no bf16 Winograd).
    dnnl_alg_kind_t alg = op->k == 3 && op->stride == 1 && op->dil == 1 && !bf ? dnnl_convolution_winograd
                                                                               : dnnl_convolution_direct;
    dnnl_convolution_desc_t cd;
    dnnl_primitive_desc_t fpd;
    for (;;) {
        DN(dnnl_dilated_convolution_forward_desc_init(&cd, dnnl_forward_training, alg, &csrc, &any_w, NULL, &dst,
                                                      stride, dil, pl, pr));
        dnnl_status_t st = pd_first(d, &fpd, &cd, NULL);
        if (st == dnnl_unimplemented && alg == dnnl_convolution_winograd) {
            alg = dnnl_convolution_direct;
            continue;
        }
        DN(st);
        if (keep_pd(d, fpd) < 0)
            return -1;
        break;
    }
    const dnnl_memory_desc_t *wmd = dnnl_primitive_desc_query_md(fpd, dnnl_query_weights_md, 0);
    dnnl_memory_t m_src, m_dst, m_wf, m_ddst;
    if (bf) {
        csrc = *dnnl_primitive_desc_query_md(fpd, dnnl_query_src_md, 0);
        if (bf16_io(d, i, n, &csrc, &m_src, &m_ddst) < 0)
            return -1;
    } else if (mem(d, &src, d->act + src_of(d, op, 0)->act, &m_src) < 0 ||
               mem(d, &dst, d->dact + o->dact, &m_ddst) < 0)
        return -1;
    if (mem(d, &dst, d->act + o->act, &m_dst) < 0 || mem(d, &user_w, NULL, &o->m_w) < 0)
        return -1;
    if (!dnnl_memory_desc_equal(wmd, &user_w) && !o->w_fwd && !(o->w_fwd = alloc_md(wmd)))
        return fu_fail("cpu backend", "out of memory");
    if (mem(d, wmd, dnnl_memory_desc_equal(wmd, &user_w) ? NULL : o->w_fwd, &m_wf) < 0)
        return -1;
    if (reorder(d, &user_w, wmd, o->m_w, m_wf, &o->w_to_fwd) < 0)
        return -1;
    if (make_call(d, fpd, &o->fwd) < 0)
        return -1;
    arg(&o->fwd, DNNL_ARG_SRC, m_src);
    arg(&o->fwd, DNNL_ARG_WEIGHTS, m_wf);
    arg(&o->fwd, DNNL_ARG_DST, m_dst);
    if (dnnl_memory_desc_equal(wmd, &user_w))
        o->m_wb = m_wf; // plain weights: handle set per step

    if (!is_image(d->m, op->in[0])) { // the image needs no gradient; a stage's inner input does
        DN(dnnl_dilated_convolution_backward_data_desc_init(&cd, alg, &src, &any_w, &cddst, stride, dil, pl, pr));
        dnnl_primitive_desc_t bpd;
        if (pd_create(d, &bpd, &cd, fpd) < 0)
            return -1;
        const dnnl_memory_desc_t *bmd = dnnl_primitive_desc_query_md(bpd, dnnl_query_weights_md, 0);
        dnnl_memory_t m_wb = m_wf;
        if (!dnnl_memory_desc_equal(bmd, wmd)) {
            bool plain = dnnl_memory_desc_equal(bmd, &user_w);
            if (!plain && !o->w_bwd && !(o->w_bwd = alloc_md(bmd)))
                return fu_fail("cpu backend", "out of memory");
            if (mem(d, bmd, plain ? NULL : o->w_bwd, &m_wb) < 0)
                return -1;
            if (plain)
                o->m_wb = m_wb;
            else if (reorder(d, &user_w, bmd, o->m_w, m_wb, &o->w_to_bwd) < 0)
                return -1;
        }
        if (make_call(d, bpd, &o->bwd_data) < 0 || mem(d, &src, NULL, &o->m_dsrc) < 0)
            return -1;
        arg(&o->bwd_data, DNNL_ARG_DIFF_DST, m_ddst);
        arg(&o->bwd_data, DNNL_ARG_WEIGHTS, m_wb);
        arg(&o->bwd_data, DNNL_ARG_DIFF_SRC, o->m_dsrc);
    }

    DN(dnnl_dilated_convolution_backward_weights_desc_init(&cd, alg, &csrc, &any_dw, NULL, &cddst, stride, dil, pl,
                                                           pr));
    dnnl_primitive_desc_t wpd;
    if (pd_create(d, &wpd, &cd, fpd) < 0)
        return -1;
    if (is_ref(wpd) && padded_bwd_w(d, i, n, alg, &csrc, &cddst, &any_dw, &m_src, &wpd) < 0)
        return -1;
    const dnnl_memory_desc_t *dwmd = dnnl_primitive_desc_query_md(wpd, dnnl_query_diff_weights_md, 0);
    bool plain = dnnl_memory_desc_equal(dwmd, &user_w);
    if (mem(d, &user_w, NULL, &o->m_dw) < 0)
        return -1;
    dnnl_memory_t m_dwi = o->m_dw;
    if (!plain) {
        if (!o->dw && !(o->dw = alloc_md(dwmd)))
            return fu_fail("cpu backend", "out of memory");
        if (mem(d, dwmd, o->dw, &m_dwi) < 0 || reorder(d, dwmd, &user_w, m_dwi, o->m_dw, &o->dw_to_user) < 0)
            return -1;
    }
    if (make_call(d, wpd, &o->bwd_w) < 0)
        return -1;
    arg(&o->bwd_w, DNNL_ARG_SRC, m_src);
    arg(&o->bwd_w, DNNL_ARG_DIFF_DST, m_ddst);
    arg(&o->bwd_w, DNNL_ARG_DIFF_WEIGHTS, m_dwi);
    return 0;
}

static int build_bn(dn_net *d, int i, int n) {
    const fu_op *op = &d->m->ops[i];
    dn_op *o = &d->op[i];
    dnnl_memory_desc_t data = act_md(d, i, n), ch = md1(op->c);
    unsigned flags = dnnl_use_scale | dnnl_use_shift | (o->relu_fused ? dnnl_fuse_norm_relu : 0);
    float eps = (float)FU_BN_EPS;
    dnnl_batch_normalization_desc_t bd;
    dnnl_primitive_desc_t fpd, epd, bpd;
    DN(dnnl_batch_normalization_forward_desc_init(&bd, dnnl_forward_training, &data, eps, flags));
    if (pd_create(d, &fpd, &bd, NULL) < 0)
        return -1;
    DN(dnnl_batch_normalization_forward_desc_init(&bd, dnnl_forward_inference, &data, eps,
                                                  flags | dnnl_use_global_stats));
    if (pd_create(d, &epd, &bd, NULL) < 0)
        return -1;
    DN(dnnl_batch_normalization_backward_desc_init(&bd, dnnl_backward, &data, &data, eps, flags));
    if (pd_create(d, &bpd, &bd, fpd) < 0)
        return -1;

    float *mean = (float *)(d->aux + o->aux), *var = mean + op->c;
    dnnl_memory_t m_src, m_dst, m_mean, m_var, m_ws = NULL, m_ddst;
    if (mem(d, &data, d->act + src_of(d, op, 0)->act, &m_src) < 0 || mem(d, &data, d->act + o->act, &m_dst) < 0 ||
        mem(d, &ch, mean, &m_mean) < 0 || mem(d, &ch, var, &m_var) < 0 || mem(d, &ch, NULL, &o->m_scale) < 0 ||
        mem(d, &ch, NULL, &o->m_shift) < 0 || mem(d, &ch, NULL, &o->m_rmean) < 0 || mem(d, &ch, NULL, &o->m_rvar) < 0 ||
        mem(d, &ch, NULL, &o->m_dscale) < 0 || mem(d, &ch, NULL, &o->m_dshift) < 0 ||
        mem(d, &data, d->dact + o->dact, &m_ddst) < 0 || mem(d, &data, NULL, &o->m_dsrc) < 0)
        return -1;
    if (o->relu_fused) {
        const dnnl_memory_desc_t *wsmd = dnnl_primitive_desc_query_md(fpd, dnnl_query_workspace_md, 0);
        if (mem(d, wsmd, d->aux + o->ws, &m_ws) < 0)
            return -1;
    }
    if (make_call(d, fpd, &o->fwd) < 0)
        return -1;
    arg(&o->fwd, DNNL_ARG_SRC, m_src);
    arg(&o->fwd, DNNL_ARG_SCALE, o->m_scale);
    arg(&o->fwd, DNNL_ARG_SHIFT, o->m_shift);
    arg(&o->fwd, DNNL_ARG_DST, m_dst);
    arg(&o->fwd, DNNL_ARG_MEAN, m_mean);
    arg(&o->fwd, DNNL_ARG_VARIANCE, m_var);
    if (m_ws)
        arg(&o->fwd, DNNL_ARG_WORKSPACE, m_ws);
    if (make_call(d, epd, &o->fwd_eval) < 0)
        return -1;
    arg(&o->fwd_eval, DNNL_ARG_SRC, m_src);
    arg(&o->fwd_eval, DNNL_ARG_SCALE, o->m_scale);
    arg(&o->fwd_eval, DNNL_ARG_SHIFT, o->m_shift);
    arg(&o->fwd_eval, DNNL_ARG_MEAN, o->m_rmean);
    arg(&o->fwd_eval, DNNL_ARG_VARIANCE, o->m_rvar);
    arg(&o->fwd_eval, DNNL_ARG_DST, m_dst);
    if (make_call(d, bpd, &o->bwd_data) < 0)
        return -1;
    arg(&o->bwd_data, DNNL_ARG_SRC, m_src);
    arg(&o->bwd_data, DNNL_ARG_MEAN, m_mean);
    arg(&o->bwd_data, DNNL_ARG_VARIANCE, m_var);
    arg(&o->bwd_data, DNNL_ARG_DIFF_DST, m_ddst);
    arg(&o->bwd_data, DNNL_ARG_SCALE, o->m_scale);
    arg(&o->bwd_data, DNNL_ARG_SHIFT, o->m_shift);
    if (m_ws)
        arg(&o->bwd_data, DNNL_ARG_WORKSPACE, m_ws);
    arg(&o->bwd_data, DNNL_ARG_DIFF_SRC, o->m_dsrc);
    arg(&o->bwd_data, DNNL_ARG_DIFF_SCALE, o->m_dscale);
    arg(&o->bwd_data, DNNL_ARG_DIFF_SHIFT, o->m_dshift);
    return 0;
}

static int build_pool(dn_net *d, int i, int n) {
    const fu_op *op = &d->m->ops[i], *x = &d->m->ops[op->in[0]];
    dn_op *o = &d->op[i];
    dnnl_dims_t stride, kernel, dil, pl, pr;
    window(op, x, stride, kernel, dil, pl, pr);
    dnnl_memory_desc_t src = act_md(d, op->in[0], n), dst = act_md(d, i, n);
    dnnl_pooling_v2_desc_t pdsc;
    dnnl_primitive_desc_t fpd, bpd;
    DN(dnnl_pooling_v2_forward_desc_init(&pdsc, dnnl_forward_training, dnnl_pooling_max, &src, &dst, stride, kernel,
                                         dil, pl, pr));
    if (pd_create(d, &fpd, &pdsc, NULL) < 0)
        return -1;
    DN(dnnl_pooling_v2_backward_desc_init(&pdsc, dnnl_pooling_max, &src, &dst, stride, kernel, dil, pl, pr));
    if (pd_create(d, &bpd, &pdsc, fpd) < 0)
        return -1;
    const dnnl_memory_desc_t *wsmd = dnnl_primitive_desc_query_md(fpd, dnnl_query_workspace_md, 0);
    dnnl_memory_t m_src, m_dst, m_ws, m_ddst;
    if (mem(d, &src, d->act + src_of(d, op, 0)->act, &m_src) < 0 || mem(d, &dst, d->act + o->act, &m_dst) < 0 ||
        mem(d, wsmd, d->aux + o->ws, &m_ws) < 0 || mem(d, &dst, d->dact + o->dact, &m_ddst) < 0 ||
        mem(d, &src, NULL, &o->m_dsrc) < 0)
        return -1;
    if (make_call(d, fpd, &o->fwd) < 0 || make_call(d, bpd, &o->bwd_data) < 0)
        return -1;
    arg(&o->fwd, DNNL_ARG_SRC, m_src);
    arg(&o->fwd, DNNL_ARG_DST, m_dst);
    arg(&o->fwd, DNNL_ARG_WORKSPACE, m_ws);
    arg(&o->bwd_data, DNNL_ARG_DIFF_DST, m_ddst);
    arg(&o->bwd_data, DNNL_ARG_WORKSPACE, m_ws);
    arg(&o->bwd_data, DNNL_ARG_DIFF_SRC, o->m_dsrc);
    return 0;
}

static void destroy_call(dn_call *c) {
    if (c->p)
        dnnl_primitive_destroy(c->p);
    memset(c, 0, sizeof *c);
}

static void teardown(dn_net *d) {
    for (int i = 0; i < d->m->n_ops; i++) {
        dn_op *o = &d->op[i];
        dn_call *calls[] = {&o->fwd,        &o->fwd_eval,  &o->bwd_data,   &o->bwd_w,     &o->w_to_fwd,
                            &o->w_to_bwd,   &o->dw_to_user, &o->src_to_bf, &o->ddst_to_bf, &o->src_to_pad};
        for (size_t k = 0; k < sizeof calls / sizeof *calls; k++)
            destroy_call(calls[k]);
    }
    for (int i = 0; i < d->n_mems; i++)
        dnnl_memory_destroy(d->mems[i]);
    for (int i = 0; i < d->n_pds; i++)
        dnnl_primitive_desc_destroy(d->pds[i]);
    d->n_mems = d->n_pds = 0;
    d->built = 0;
}

// Creates every primitive for n images and binds the shared scratchpad.
static int build(dn_net *d, int n) {
    teardown(d);
    size_t old_scratch = d->scratch_size;
    for (int i = 0; i < d->m->n_ops; i++) {
        const fu_op *op = &d->m->ops[i];
        if (d->op[i].vec)
            continue;
        int r = 0;
        if (op->kind == FU_OP_CONV)
            r = build_conv(d, i, n);
        else if (op->kind == FU_OP_BN)
            r = build_bn(d, i, n);
        else if (op->kind == FU_OP_MAXPOOL)
            r = build_pool(d, i, n);
        if (r < 0)
            return -1;
    }
    if (d->scratch_size > old_scratch || !d->scratch) {
        free(d->scratch);
        if (!(d->scratch = aligned_alloc(DN_ALIGN, align_up(d->scratch_size ? d->scratch_size : DN_ALIGN))))
            return fu_fail("cpu backend", "out of memory for a %zu-byte scratchpad", d->scratch_size);
    }
    for (int i = 0; i < d->m->n_ops; i++) {
        dn_op *o = &d->op[i];
        dn_call *calls[] = {&o->fwd,        &o->fwd_eval,  &o->bwd_data,   &o->bwd_w,     &o->w_to_fwd,
                            &o->w_to_bwd,   &o->dw_to_user, &o->src_to_bf, &o->ddst_to_bf, &o->src_to_pad};
        for (size_t k = 0; k < sizeof calls / sizeof *calls; k++)
            for (int a = 0; a < calls[k]->n; a++)
                if (calls[k]->a[a].arg == DNNL_ARG_SCRATCHPAD && set(calls[k]->a[a].memory, d->scratch) < 0)
                    return -1;
    }
    d->built = n;
    return 0;
}

// ---- planning ----------------------------------------------------------------

// Bytes of the oneDNN workspace a BN (with fused ReLU) or max pool needs for
// `batch` images: queried from a throwaway primitive descriptor.
static int workspace_bytes(dn_net *d, int i, size_t *bytes) {
    const fu_op *op = &d->m->ops[i], *x = &d->m->ops[op->in[0]];
    dnnl_memory_desc_t data = act_md(d, i, d->batch);
    dnnl_primitive_desc_t pd;
    if (op->kind == FU_OP_BN) {
        dnnl_batch_normalization_desc_t bd;
        DN(dnnl_batch_normalization_forward_desc_init(&bd, dnnl_forward_training, &data, (float)FU_BN_EPS,
                                                      dnnl_use_scale | dnnl_use_shift | dnnl_fuse_norm_relu));
        DN(dnnl_primitive_desc_create(&pd, &bd, NULL, d->engine, NULL));
    } else {
        dnnl_dims_t stride, kernel, dil, pl, pr;
        window(op, x, stride, kernel, dil, pl, pr);
        dnnl_memory_desc_t src = act_md(d, op->in[0], d->batch);
        dnnl_pooling_v2_desc_t pdsc;
        DN(dnnl_pooling_v2_forward_desc_init(&pdsc, dnnl_forward_training, dnnl_pooling_max, &src, &data, stride,
                                             kernel, dil, pl, pr));
        DN(dnnl_primitive_desc_create(&pd, &pdsc, NULL, d->engine, NULL));
    }
    *bytes = dnnl_memory_desc_get_size(dnnl_primitive_desc_query_md(pd, dnnl_query_workspace_md, 0));
    dnnl_primitive_desc_destroy(pd);
    return 0;
}

// Gradient memory: op o's gradient is alive from the backward of its last
// reader (which writes it first) to o's own backward (which reads it), so it
// occupies op indices [o, last reader] (nn/lifetimes.h).
static int plan_gradients(dn_net *d) {
    const fu_model *m = d->m;
    int n = m->n_ops;
    int *last = fu_malloc((size_t)n * sizeof *last), *first = fu_malloc((size_t)n * sizeof *first);
    size_t *size = fu_malloc((size_t)n * sizeof *size), *at = fu_malloc((size_t)n * sizeof *at);
    int rc = -1;
    if (last && first && size && at) {
        for (int i = 0; i < n; i++)
            first[i] = last[i] = i, size[i] = 0;
        for (int i = 0; i < n; i++) {
            const fu_op *op = &m->ops[i];
            if (d->op[i].owner == i)
                size[i] = is_image(m, i) ? 0 : align_up(fu_op_numel(m, i, d->batch) * sizeof(float));
            for (int k = 0; k < op->n_in; k++) {
                int o = d->op[op->in[k]].owner;
                if (i > last[o] && d->op[i].owner != o)
                    last[o] = i;
            }
        }
        rc = fu_place_lifetimes(n, size, first, last, DN_ALIGN, at, &d->dact_size);
        for (int i = 0; rc == 0 && i < n; i++)
            d->op[i].dact = at[i];
    }
    free(last), free(first), free(size), free(at);
    return rc < 0 ? fu_fail("cpu backend", "out of memory") : 0;
}

// Large arenas: 2 MiB aligned and marked for transparent huge pages (fewer
// page faults and TLB misses over gigabytes of activations).
static void *big_alloc(size_t bytes) {
    size_t huge = (size_t)2 << 20;
    bytes = (bytes + huge - 1) & ~(huge - 1);
    void *p = aligned_alloc(huge, bytes);
    if (p)
        madvise(p, bytes, MADV_HUGEPAGE);
    return p;
}

// A stage's inner input is a vector where the whole model's op it stands
// for is one: (C, 1, 1) read only by the head's kinds of op. (A 1x1 feature
// map, stage 4 of a 32x32 image, is read by convolutions, adds or pooling.)
static bool vector_input(const fu_model *m) {
    const fu_op *x = &m->ops[0];
    if (!m->inner_input || x->h != 1 || x->w != 1)
        return false;
    for (int j = 1; j < m->n_ops; j++)
        for (int k = 0; k < m->ops[j].n_in; k++) {
            fu_op_kind r = m->ops[j].kind;
            if (m->ops[j].in[k] == 0 && r != FU_OP_LINEAR && r != FU_OP_BN && r != FU_OP_RELU &&
                r != FU_OP_SIGMOID && r != FU_OP_DROPOUT && r != FU_OP_XENT)
                return false;
        }
    return true;
}

static bool is_vec(const fu_model *m, const dn_op *ops, int i) {
    const fu_op *op = &m->ops[i];
    switch (op->kind) {
    case FU_OP_INPUT:
        return vector_input(m);
    case FU_OP_GAP:
    case FU_OP_LINEAR:
    case FU_OP_SIGMOID:
    case FU_OP_DROPOUT:
    case FU_OP_XENT:
        return true;
    case FU_OP_BN:
    case FU_OP_RELU:
        return ops[op->in[0]].vec;
    default:
        return false;
    }
}

static int plan(dn_net *d) {
    const fu_model *m = d->m;
    int batch = d->batch;
    for (int i = 0; i < m->n_ops; i++) {
        const fu_op *op = &m->ops[i];
        d->op[i].owner = i;
        d->op[i].vec = is_vec(m, d->op, i);
        for (int k = 0; k < op->n_in; k++)
            d->op[op->in[k]].readers++;
        if (!d->op[i].vec && !is_image(m, i) && op->c % 16)
            return fu_fail("cpu backend", "op %d has %d channels, not a multiple of 16", i, op->c);
        // The head's vector ops run the reference ops on (n, C); dropout on
        // a feature map would need its mask in NCHW order over nChw16c.
        if (op->kind == FU_OP_DROPOUT && !d->op[op->in[0]].vec)
            return fu_fail("cpu backend", "op %d: dropout over a feature map is not supported (only on vectors)", i);
    }
    for (int i = 0; i < m->n_ops; i++) {
        const fu_op *op = &m->ops[i];
        if (op->kind == FU_OP_RELU && !d->op[i].vec && m->ops[op->in[0]].kind == FU_OP_BN &&
            d->op[op->in[0]].readers == 1) {
            d->op[op->in[0]].relu_fused = true;
            d->op[i].owner = op->in[0];
        }
        // add + ReLU in one pass; the add's output is the ReLU's
        if (op->kind == FU_OP_RELU && !d->op[i].vec && m->ops[op->in[0]].kind == FU_OP_ADD &&
            d->op[op->in[0]].readers == 1) {
            d->op[op->in[0]].relu_fused = true;
            d->op[i].owner = op->in[0];
        }
        // an SE scale read only by an add: the add computes x * s itself
        if (op->kind == FU_OP_ADD)
            for (int k = 0; k < 2; k++)
                if (m->ops[op->in[k]].kind == FU_OP_SCALE && d->op[op->in[k]].readers == 1)
                    d->op[op->in[k]].folded = true;
    }
    size_t act = 0, aux = 0, biggest = 0;
    for (int i = 0; i < m->n_ops; i++) {
        const fu_op *op = &m->ops[i];
        dn_op *o = &d->op[i];
        size_t bytes = fu_op_numel(m, i, batch) * sizeof(float);
        if (o->owner == i && !o->folded) {
            o->act = act;
            act += align_up(bytes);
        }
        if (!o->vec && bytes > biggest)
            biggest = bytes;
        o->aux = aux;
        size_t saved = 0;
        if (op->kind == FU_OP_BN)
            saved = align_up(2 * (size_t)op->c * sizeof(float)); // mean, var (or 1/std)
        else if (op->kind == FU_OP_DROPOUT)
            saved = align_up(bytes); // mask
        else if (op->kind == FU_OP_XENT)
            saved = align_up(fu_op_numel(m, op->in[0], batch) * sizeof(float)); // probabilities
        o->ws = aux + saved;
        size_t ws = 0;
        if (!o->vec && ((op->kind == FU_OP_BN && o->relu_fused) || op->kind == FU_OP_MAXPOOL) &&
            workspace_bytes(d, i, &ws) < 0)
            return -1;
        aux += saved + align_up(ws);
    }
    d->act_size = act;
    d->aux_size = aux;
    d->tmp_size = align_up(biggest);
    if (plan_gradients(d) < 0)
        return -1;
    d->act = big_alloc(act);
    d->dact = big_alloc(d->dact_size);
    d->aux = big_alloc(aux);
    d->tmp = big_alloc(d->tmp_size);
    d->written = calloc((size_t)m->n_ops, sizeof *d->written);
    d->labels = calloc((size_t)batch, sizeof *d->labels);
    d->class_w = calloc((size_t)m->classes, sizeof *d->class_w);
    if (!ends_in_loss(m) && !d->op[output_op(m)].vec)
        d->out = malloc(fu_op_numel(m, output_op(m), batch) * sizeof *d->out);
    if (m->inner_input && !d->op[0].vec)
        d->in_grad = malloc(fu_op_numel(m, 0, batch) * sizeof *d->in_grad);
    if (!d->act || !d->dact || !d->aux || !d->tmp || !d->written || !d->labels || !d->class_w ||
        (!ends_in_loss(m) && !d->op[output_op(m)].vec && !d->out) || (m->inner_input && !d->op[0].vec && !d->in_grad))
        return fu_fail("cpu backend", "out of memory for %.1f MiB of activations",
                       (double)(act + d->dact_size) / (1 << 20));
    memset(d->aux, 0, aux); // masks and statistics are always written before use; keeps valgrind quiet
    return 0;
}

// ---- sync-BN ---------------------------------------------------------------------
// Training-mode BatchNorm on the statistics of the global batch (data
// parallelism, ref_net.h): blocked_ops.h's loops over nChw16c rather than
// oneDNN's primitive, whose statistics are its own batch's. aux holds the
// global mean and variance.

static int sync_alloc(dn_net *d) {
    if (d->bn_part)
        return 0;
    int widest = 0;
    for (int i = 0; i < d->m->n_ops; i++)
        if (d->m->ops[i].kind == FU_OP_BN && d->m->ops[i].c > widest)
            widest = d->m->ops[i].c;
    d->bn_part = malloc((size_t)d->batch * 2 * widest * sizeof *d->bn_part);
    d->bn_sums = malloc((2 * (size_t)widest + 2) * sizeof *d->bn_sums);
    d->bn_coef = malloc(3 * (size_t)widest * sizeof *d->bn_coef);
    if (!d->bn_part || !d->bn_sums || !d->bn_coef) { // none kept: a later call tries again
        free(d->bn_part), free(d->bn_sums), free(d->bn_coef);
        d->bn_part = d->bn_sums = NULL, d->bn_coef = NULL;
        return fu_fail("cpu backend", "out of memory");
    }
    return 0;
}

// Sums v[0, len) over ranks in place.
static int sync_sum(const fu_dist_hooks *h, double *v, int len) {
    if (h->sum(h->ctx, v, len) < 0) {
        fu_error_prefix("sync-BN");
        return -1;
    }
    return 0;
}

// BN op i's training forward on the global batch: one sum over ranks of
// (sum x, sum x^2, count, W_r), then normalise and update the running stats.
static int sync_bn_fwd(dn_net *d, const fu_dist_hooks *h, int i, int n, const float *params, float *state,
                       const int *labels, const float *class_w) {
    const fu_op *op = &d->m->ops[i];
    const dn_op *o = &d->op[i];
    int c = op->c;
    size_t hw = (size_t)op->h * op->w;
    const float *x = act_of(d, op->in[0]), *gamma = params + op->weight, *beta = params + op->bias_off;
    float *y = act_of(d, i), *aux = (float *)(d->aux + o->aux);
    fu_bn_shape s = {.n = n, .c = c, .hw = (int)hw, .eps = FU_BN_EPS, .momentum = FU_BN_MOMENTUM};
    if (sync_alloc(d) < 0)
        return -1;
    double *v = d->bn_sums, w_rank = 0;
    for (int k = 0; k < n; k++)
        w_rank += class_w[labels[k]];
    if (o->vec)
        fu_ref_bn_sums_f32(&s, x, v);
    else
        fu_blk_bn_moments(n, c, hw, x, d->bn_part, v);
    v[2 * c] = (double)n * hw;
    v[2 * c + 1] = w_rank;
    if (sync_sum(h, v, 2 * c + 2) < 0)
        return -1;
    d->share = w_rank / v[2 * c + 1];
    double cnt = v[2 * c];
    float *rm = state + op->mean, *rv = state + op->var;
    if (o->vec) { // aux: mean, 1/std as the reference's
        fu_ref_bn_global_fwd_f32(&s, v, cnt, x, gamma, beta, y, aux, aux + c, rm, rv);
        return 0;
    }
    float *g = d->bn_coef, *b = g + c; // (C) each: y = x * g + b
    for (int k = 0; k < c; k++) { // aux: mean, biased variance; running stats as PyTorch's SyncBatchNorm
        double mu = v[k] / cnt, var = v[c + k] / cnt - mu * mu;
        if (var < 0) // rounding of a constant channel
            var = 0;
        aux[k] = (float)mu;
        aux[c + k] = (float)var;
        rm[k] = (float)((1 - FU_BN_MOMENTUM) * rm[k] + FU_BN_MOMENTUM * mu);
        rv[k] = (float)((1 - FU_BN_MOMENTUM) * rv[k] + FU_BN_MOMENTUM * (cnt > 1 ? var * cnt / (cnt - 1) : var));
        double gs = gamma[k] / sqrt((double)aux[c + k] + FU_BN_EPS);
        g[k] = (float)gs;
        b[k] = (float)(beta[k] - aux[k] * gs);
    }
    fu_blk_bn_affine(n, c, hw, x, g, b, o->relu_fused, y);
    return 0;
}

// ---- forward and backward ------------------------------------------------------

static int bind_params(dn_net *d, const float *params, float *state) {
    const fu_model *m = d->m;
    for (int i = 0; i < m->n_ops; i++) {
        const fu_op *op = &m->ops[i];
        dn_op *o = &d->op[i];
        if (o->vec)
            continue;
        if (op->kind == FU_OP_CONV) {
            if (set(o->m_w, params + op->weight) < 0)
                return -1;
            if (o->m_wb && set(o->m_wb, params + op->weight) < 0)
                return -1;
        } else if (op->kind == FU_OP_BN) {
            if (set(o->m_scale, params + op->weight) < 0 || set(o->m_shift, params + op->bias_off) < 0 ||
                set(o->m_rmean, state + op->mean) < 0 || set(o->m_rvar, state + op->var) < 0)
                return -1;
        }
    }
    return 0;
}

static int dn_forward(fu_backend *b, int n, const float *params, float *state, int64_t *counts, const float *x,
                      const int *labels, const float *class_w, const fu_pass *pass, float *loss) {
    dn_net *d = b->impl;
    const fu_model *m = d->m;
    d->ready = false;
    if (fu_backend_check_batch(b, n, labels, class_w, pass) < 0)
        return -1;
    omp_set_num_threads(d->threads);
    if (d->built != n && build(d, n) < 0)
        return -1;
    if (bind_params(d, params, state) < 0)
        return -1;
    for (int i = 0; i < m->n_ops; i++) {
        const fu_op *op = &m->ops[i];
        dn_op *o = &d->op[i];
        if (o->owner != i)
            continue; // a ReLU fused into its BN
        float *y = act_of(d, i);
        const float *in = op->n_in ? act_of(d, op->in[0]) : NULL;
        const float *w = op->weight >= 0 ? params + op->weight : NULL;
        const float *bias = op->bias_off >= 0 ? params + op->bias_off : NULL;
        float *aux = (float *)(d->aux + o->aux);
        size_t numel = fu_op_numel(m, i, n), hw = (size_t)op->h * op->w;
        switch (op->kind) {
        case FU_OP_INPUT: // the image, or a stage's input: a vector as is, a feature map blocked
            if (is_image(m, i) || o->vec)
                memcpy(y, x, numel * sizeof *y);
            else
                fu_blk_from_nchw(n, op->c, hw, x, y);
            break;
        case FU_OP_CONV:
            if (exec(d, &o->src_to_bf) < 0 || exec(d, &o->w_to_fwd) < 0 || exec(d, &o->fwd) < 0)
                return -1;
            break;
        case FU_OP_BN: {
            fu_bn_shape s = {.n = n, .c = op->c, .hw = (int)hw, .eps = FU_BN_EPS, .momentum = FU_BN_MOMENTUM};
            if (pass->train && b->dist && b->dist->sum) {
                if (sync_bn_fwd(d, b->dist, i, n, params, state, labels, class_w) < 0)
                    return -1;
            } else if (o->vec) {
                if (pass->train)
                    fu_ref_bn_train_fwd_f32(&s, in, w, bias, y, aux, aux + op->c, state + op->mean, state + op->var);
                else
                    fu_ref_bn_eval_fwd_f32(&s, in, w, bias, state + op->mean, state + op->var, y);
            } else if (!pass->train) {
                if (exec(d, &o->fwd_eval) < 0)
                    return -1;
            } else {
                if (exec(d, &o->fwd) < 0)
                    return -1;
                // running stats as PyTorch: the unbiased variance, momentum 0.1
                double cnt = (double)n * hw, mom = FU_BN_MOMENTUM;
                float *rm = state + op->mean, *rv = state + op->var;
                for (int c = 0; c < op->c; c++) {
                    double var = aux[op->c + c], unbiased = cnt > 1 ? var * cnt / (cnt - 1) : var;
                    rm[c] = (float)((1 - mom) * rm[c] + mom * aux[c]);
                    rv[c] = (float)((1 - mom) * rv[c] + mom * unbiased);
                }
            }
            if (pass->train)
                counts[op->count]++;
            break;
        }
        case FU_OP_RELU:
            if (o->vec)
                fu_ref_relu_fwd_f32(numel, in, y);
            else
                fu_blk_relu_fwd(numel, in, y);
            break;
        case FU_OP_MAXPOOL:
            if (exec(d, &o->fwd) < 0)
                return -1;
            break;
        case FU_OP_GAP: {
            const fu_op *src = &m->ops[op->in[0]];
            fu_blk_gap_fwd(n, src->c, (size_t)src->h * src->w, in, y);
            break;
        }
        case FU_OP_LINEAR:
            fu_ref_linear_fwd_f32(n, m->ops[op->in[0]].c, op->c, in, w, bias, y);
            break;
        case FU_OP_SIGMOID:
            fu_ref_sigmoid_fwd_f32(numel, in, y);
            break;
        case FU_OP_SCALE:
            if (!o->folded)
                fu_blk_scale_fwd(n, op->c, hw, in, act_of(d, op->in[1]), y);
            break;
        case FU_OP_ADD: {
            // y = [relu](x * s + b) when input k is a folded SE scale, else a + b
            int k = d->op[op->in[1]].folded ? 1 : 0;
            const fu_op *sc = &m->ops[op->in[k]];
            if (d->op[op->in[k]].folded)
                fu_blk_add_fwd(n, op->c, hw, act_of(d, sc->in[0]), act_of(d, sc->in[1]), act_of(d, op->in[1 - k]),
                        o->relu_fused, y);
            else
                fu_blk_add_fwd(n, op->c, hw, in, NULL, act_of(d, op->in[1]), o->relu_fused, y);
            break;
        }
        case FU_OP_CONCAT: {
            // nChw16c: each part is one contiguous run of (c_p/16, hw, 16) per image
            size_t at = 0, total = (size_t)op->c * hw;
            for (int p = 0; p < op->n_in; p++) {
                size_t run = (size_t)m->ops[op->in[p]].c * hw;
                const float *part = act_of(d, op->in[p]);
                for (int k = 0; k < n; k++)
                    memcpy(y + k * total + at, part + k * run, run * sizeof *y);
                at += run;
            }
            break;
        }
        case FU_OP_DROPOUT: {
            // the reference's masks: 0 or 1/(1-p), from (seed, step, op index)
            bool drop = pass->train && pass->dropout && op->p > 0;
            fu_rng rng = fu_dropout_rng(m, i, pass);
            float keep = (float)(1 / (1 - (double)op->p));
            for (size_t j = 0; j < numel; j++)
                aux[j] = !drop ? 1 : fu_rng_uniform(&rng) < op->p ? 0 : keep;
            fu_ref_dropout_fwd_f32(numel, in, aux, y);
            break;
        }
        case FU_OP_XENT:
            if (!labels)
                break;
            y[0] = fu_ref_xent_fwd_f32(n, m->ops[op->in[0]].c, in, labels, class_w, aux);
            if (loss)
                *loss = y[0];
            break;
        }
    }
    if (d->out) { // a stage ending at a feature map: its output in NCHW
        const fu_op *op = &m->ops[output_op(m)];
        fu_blk_to_nchw(n, op->c, (size_t)op->h * op->w, act_of(d, output_op(m)), d->out);
    }
    if (pass->train) {
        memcpy(d->labels, labels, (size_t)n * sizeof *labels);
        memcpy(d->class_w, class_w, (size_t)m->classes * sizeof *class_w);
        d->ready = true;
    }
    return 0;
}

static const float *dn_logits(fu_backend *b) {
    dn_net *d = b->impl;
    return d->out ? d->out : act_of(d, output_op(d->m));
}

static const float *dn_input_grad(fu_backend *b) {
    dn_net *d = b->impl;
    if (!d->m->inner_input)
        return NULL;
    return d->in_grad ? d->in_grad : dact_of(d, 0);
}

// The gradient of op t's output to write: in place the first time (acc
// false), afterwards accumulated.
static float *grad_to(dn_net *d, int t, bool *acc) {
    int o = d->op[t].owner;
    *acc = d->written[o];
    d->written[o] = true;
    return (float *)(d->dact + d->op[o].dact);
}

// For the reference ops, which always accumulate: zero it the first time.
static float *grad_acc(dn_net *d, int t, int n) {
    bool acc;
    float *g = grad_to(d, t, &acc);
    if (!acc)
        memset(g, 0, fu_op_numel(d->m, t, n) * sizeof *g);
    return g;
}

// Runs a oneDNN backward-data call into op t's gradient, adding through the
// scratch buffer when that gradient already holds a value.
static int bwd_into(dn_net *d, dn_op *o, int t, int n) {
    bool acc;
    float *g = grad_to(d, t, &acc);
    if (set(o->m_dsrc, acc ? (float *)d->tmp : g) < 0 || exec(d, &o->bwd_data) < 0)
        return -1;
    if (acc)
        fu_blk_pass_grad(fu_op_numel(d->m, t, n), (float *)d->tmp, g, true);
    return 0;
}

// BN op i's backward on the global batch: the local (sum dy, sum dy * xhat)
// are its gamma/beta gradients; summed over ranks weighed by this rank's
// loss share (ref_net.h) they give the input gradient's mean terms.
static int sync_bn_bwd(dn_net *d, const fu_dist_hooks *h, int i, int n, const float *params, float *grads) {
    const fu_op *op = &d->m->ops[i];
    const dn_op *o = &d->op[i];
    int c = op->c;
    size_t hw = (size_t)op->h * op->w;
    const float *x = act_of(d, op->in[0]), *y = act_of(d, i), *dy = dact_of(d, i), *gamma = params + op->weight;
    const float *aux = (const float *)(d->aux + o->aux);
    float *dgamma = grads + op->weight, *dbeta = grads + op->bias_off;
    fu_bn_shape s = {.n = n, .c = c, .hw = (int)hw, .eps = FU_BN_EPS, .momentum = FU_BN_MOMENTUM};
    if (sync_alloc(d) < 0)
        return -1;
    double *v = d->bn_sums;
    if (o->vec) { // the reference's, which accumulate into dgamma, dbeta (zeroed) and dx
        fu_ref_bn_bwd_sums_f32(&s, x, aux, aux + c, dy, v, dgamma, dbeta);
    } else {
        fu_blk_bn_grad_sums(n, c, hw, x, y, dy, aux, o->relu_fused, d->bn_part, v);
        for (int k = 0; k < c; k++) { // sum dy * (x - mean) -> sum dy * xhat
            v[c + k] /= sqrt((double)aux[c + k] + FU_BN_EPS);
            dgamma[k] = (float)v[c + k];
            dbeta[k] = (float)v[k];
        }
    }
    for (int k = 0; k < 2 * c; k++)
        v[k] *= d->share;
    v[2 * c] = (double)n * hw;
    if (sync_sum(h, v, 2 * c + 1) < 0)
        return -1;
    for (int k = 0; k < 2 * c; k++)
        v[k] /= d->share;
    double cnt = v[2 * c];
    if (o->vec) {
        fu_ref_bn_global_bwd_f32(&s, v, cnt, x, gamma, aux, aux + c, dy, grad_acc(d, op->in[0], n));
        return 0;
    }
    bool acc;
    float *dx = grad_to(d, op->in[0], &acc);
    // dx = gamma/std * (dy - sum dy / M - xhat * sum dy xhat / M)
    float *a = d->bn_coef, *k1 = a + c, *k2 = k1 + c; // (C) each
    for (int k = 0; k < c; k++) {
        double is = 1 / sqrt((double)aux[c + k] + FU_BN_EPS), g = gamma[k] * is;
        a[k] = (float)g;
        k1[k] = (float)(g * v[k] / cnt);
        k2[k] = (float)(g * is * v[c + k] / cnt);
    }
    fu_blk_bn_dx(n, c, hw, x, y, dy, o->relu_fused, aux, a, k1, k2, dx, acc);
    return 0;
}

// A stage ending before the loss: dy (n, C, H, W) NCHW, the gradient of its
// output, becomes its output op's (a fused ReLU's: its BN's or add's, which
// is where the ReLU's readers would have written it).
static void put_output_grad(dn_net *d, const float *dy, int n) {
    int y = output_op(d->m);
    const fu_op *op = &d->m->ops[y];
    bool acc;
    float *g = grad_to(d, y, &acc);
    if (d->op[y].vec)
        memcpy(g, dy, fu_op_numel(d->m, y, n) * sizeof *g);
    else
        fu_blk_from_nchw(n, op->c, (size_t)op->h * op->w, dy, g);
}

static int dn_backward(fu_backend *b, const float *params, const float *dy_out, float *grads) {
    dn_net *d = b->impl;
    const fu_model *m = d->m;
    int n = d->built;
    if (!d->ready)
        return fu_fail("model", "backward needs a training forward with labels first");
    if (ends_in_loss(m) != !dy_out)
        return fu_fail("model", ends_in_loss(m) ? "a model that ends in the loss takes no output gradient"
                                               : "a stage that ends before the loss needs its output's gradient");
    omp_set_num_threads(d->threads);
    memset(d->written, 0, (size_t)m->n_ops * sizeof *d->written);
    if (dy_out)
        put_output_grad(d, dy_out, n);
    // the reference ops accumulate into their parameter gradients
    for (int i = 0; i < m->n_ops; i++) {
        const fu_op *op = &m->ops[i];
        if (!d->op[i].vec || op->weight < 0)
            continue;
        size_t wn = op->kind == FU_OP_LINEAR ? (size_t)op->c * m->ops[op->in[0]].c : (size_t)op->c;
        memset(grads + op->weight, 0, wn * sizeof *grads);
        if (op->bias_off >= 0)
            memset(grads + op->bias_off, 0, (size_t)op->c * sizeof *grads);
    }
    for (int i = m->n_ops - 1; i > 0; i--) {
        const fu_op *op = &m->ops[i];
        dn_op *o = &d->op[i];
        if (o->owner != i)
            continue;                                 // a fused ReLU: its BN's backward covers it
        if (op->kind != FU_OP_XENT && !d->written[i]) // no gradient reached it: zero
            memset(dact_of(d, i), 0, fu_op_numel(m, i, n) * sizeof(float));
        const float *y = act_of(d, i), *dy = dact_of(d, i);
        const float *in = act_of(d, op->in[0]);
        bool need_din = !is_image(m, op->in[0]);
        const float *w = op->weight >= 0 ? params + op->weight : NULL;
        float *dw = op->weight >= 0 ? grads + op->weight : NULL;
        float *db = op->bias_off >= 0 ? grads + op->bias_off : NULL;
        const float *aux = (const float *)(d->aux + o->aux);
        size_t numel = fu_op_numel(m, i, n), hw = (size_t)op->h * op->w;
        bool acc;
        switch (op->kind) {
        case FU_OP_INPUT:
            break;
        case FU_OP_CONV:
            if (exec(d, &o->ddst_to_bf) < 0 || exec(d, &o->src_to_pad) < 0 || set(o->m_dw, dw) < 0 ||
                exec(d, &o->bwd_w) < 0 || exec(d, &o->dw_to_user) < 0)
                return -1;
            if (need_din && (exec(d, &o->w_to_bwd) < 0 || bwd_into(d, o, op->in[0], n) < 0))
                return -1;
            break;
        case FU_OP_BN:
            if (b->dist && b->dist->sum) {
                if (sync_bn_bwd(d, b->dist, i, n, params, grads) < 0)
                    return -1;
            } else if (o->vec) {
                fu_bn_shape s = {.n = n, .c = op->c, .hw = 1, .eps = FU_BN_EPS, .momentum = FU_BN_MOMENTUM};
                fu_ref_bn_bwd_f32(&s, in, w, aux, aux + op->c, dy, grad_acc(d, op->in[0], n), dw, db);
            } else {
                if (set(o->m_dscale, dw) < 0 || set(o->m_dshift, db) < 0 || bwd_into(d, o, op->in[0], n) < 0)
                    return -1;
            }
            break;
        case FU_OP_RELU:
            if (o->vec)
                fu_ref_relu_bwd_f32(numel, y, dy, grad_acc(d, op->in[0], n));
            else {
                float *dx = grad_to(d, op->in[0], &acc);
                fu_blk_relu_bwd(numel, y, dy, dx, acc);
            }
            break;
        case FU_OP_MAXPOOL:
            if (bwd_into(d, o, op->in[0], n) < 0)
                return -1;
            break;
        case FU_OP_GAP: {
            const fu_op *src = &m->ops[op->in[0]];
            float *dx = grad_to(d, op->in[0], &acc);
            fu_blk_gap_bwd(n, src->c, (size_t)src->h * src->w, dy, dx, acc);
            break;
        }
        case FU_OP_LINEAR:
            fu_ref_linear_bwd_f32(n, m->ops[op->in[0]].c, op->c, in, w, dy, grad_acc(d, op->in[0], n), dw, db);
            break;
        case FU_OP_SIGMOID:
            fu_ref_sigmoid_bwd_f32(numel, y, dy, grad_acc(d, op->in[0], n));
            break;
        case FU_OP_SCALE: {
            float *ds = grad_acc(d, op->in[1], n);
            float *dx = grad_to(d, op->in[0], &acc);
            fu_blk_scale_bwd(n, op->c, hw, in, act_of(d, op->in[1]), dy, dx, acc, ds);
            break;
        }
        case FU_OP_ADD:
            for (int k = 0; k < 2; k++) {
                float *dx = grad_to(d, op->in[k], &acc);
                if (o->relu_fused)
                    fu_blk_relu_bwd(numel, y, dy, dx, acc);
                else
                    fu_blk_pass_grad(numel, dy, dx, acc);
            }
            break;
        case FU_OP_CONCAT: {
            size_t at = 0, total = (size_t)op->c * hw;
            for (int p = 0; p < op->n_in; p++) {
                size_t run = (size_t)m->ops[op->in[p]].c * hw;
                float *dx = grad_to(d, op->in[p], &acc);
                for (int k = 0; k < n; k++)
                    fu_blk_pass_grad(run, dy + k * total + at, dx + k * run, acc);
                at += run;
            }
            break;
        }
        case FU_OP_DROPOUT:
            fu_ref_dropout_bwd_f32(numel, aux, dy, grad_acc(d, op->in[0], n));
            break;
        case FU_OP_XENT:
            fu_ref_xent_bwd_f32(n, m->ops[op->in[0]].c, aux, d->labels, d->class_w, 1.0f, grad_acc(d, op->in[0], n));
            break;
        }
        if (b->dist && b->dist->grads_ready)
            fu_params_ready(m, i, b->dist->grads_ready, b->dist->ctx);
    }
    if (m->inner_input) { // the input's gradient, to NCHW for the stage before
        const fu_op *x = &m->ops[0];
        if (!d->written[0])
            memset(dact_of(d, 0), 0, fu_op_numel(m, 0, n) * sizeof(float));
        if (d->in_grad)
            fu_blk_to_nchw(n, x->c, (size_t)x->h * x->w, dact_of(d, 0), d->in_grad);
    }
    d->ready = false;
    return 0;
}

static void dn_destroy(fu_backend *b) {
    if (!b)
        return;
    dn_net *d = b->impl;
    if (d) {
        if (d->op) {
            teardown(d);
            for (int i = 0; i < d->m->n_ops; i++) {
                free(d->op[i].w_fwd);
                free(d->op[i].w_bwd);
                free(d->op[i].dw);
                free(d->op[i].bf);
                free(d->op[i].padded);
            }
        }
        free(d->mems);
        free(d->pds);
        free(d->op);
        free(d->act);
        free(d->dact);
        free(d->aux);
        free(d->tmp);
        free(d->scratch);
        free(d->dbf);
        free(d->out);
        free(d->in_grad);
        free(d->written);
        free(d->labels);
        free(d->class_w);
        free(d->bn_part);
        free(d->bn_sums);
        free(d->bn_coef);
        if (d->stream)
            dnnl_stream_destroy(d->stream);
        if (d->engine)
            dnnl_engine_destroy(d->engine);
        free(d);
    }
    free(b);
}

// --amp bf16: which conv makes the bf16 copy of each conv input (the first
// to read it), and the buffer for one conv output gradient in bf16.
static int plan_bf16(dn_net *d) {
    const fu_model *m = d->m;
    for (int i = 0; i < m->n_ops; i++)
        if (m->ops[i].kind == FU_OP_CONV && !src_of(d, &m->ops[i], 0)->bf_by)
            src_of(d, &m->ops[i], 0)->bf_by = i;
    size_t bytes = d->tmp_size / 2; // the largest feature map, in bf16
    if (!(d->dbf = big_alloc(bytes)))
        return fu_fail("cpu backend", "out of memory for bf16 gradients");
    d->bf_size += bytes;
    return 0;
}

// --amp: bf16 needs AVX512-BF16 (oneDNN's bf16 convolutions; emulating
// them on older AVX-512 would be slower than fp32); fp16 is the GPU's.
static int check_amp(fu_amp amp) {
    if (amp == FU_AMP_FP16) {
        fu_fail("cpu backend", "--amp fp16 is for the cuda backend");
        fu_hint("on the CPU use --amp bf16 (CPUs with AVX512-BF16) or --amp off");
        return -1;
    }
    dnnl_cpu_isa_t isa = dnnl_get_effective_cpu_isa();
    if (amp == FU_AMP_BF16 && (isa & dnnl_cpu_isa_avx512_core_bf16) != dnnl_cpu_isa_avx512_core_bf16) {
        const char *name = dnnl_cpu_isa2str(isa); // "cpu_isa_avx2"
        fu_fail("cpu backend", "--amp bf16 needs a CPU with AVX512-BF16 (oneDNN finds %s here)",
                strncmp(name, "cpu_isa_", 8) ? name : name + 8);
        fu_hint("use --amp off");
        return -1;
    }
    return 0;
}

static int create(const fu_model *m, int batch, int threads, fu_backend *b, dn_net *d) {
    d->m = m;
    d->batch = batch;
    d->threads = threads;
    if (batch < 1)
        return fu_fail("cpu backend", "batch size %d must be at least 1", batch);
    if (threads < 1)
        return fu_fail("cpu backend", "thread count %d must be at least 1", threads);
    omp_set_num_threads(threads);
    DN(dnnl_engine_create(&d->engine, dnnl_cpu, 0));
    DN(dnnl_stream_create(&d->stream, d->engine, dnnl_stream_default_flags));
    if (!(d->op = calloc((size_t)m->n_ops, sizeof *d->op)))
        return fu_fail("cpu backend", "out of memory");
    if (plan(d) < 0 || (d->amp == FU_AMP_BF16 && plan_bf16(d) < 0) || build(d, batch) < 0)
        return -1;
    size_t weights = 0;
    for (int i = 0; i < m->n_ops; i++) {
        const dn_op *o = &d->op[i];
        const fu_op *op = &m->ops[i];
        size_t wbytes = d->amp == FU_AMP_BF16 ? 2 : sizeof(float); // the primitives' weights
        if (op->kind == FU_OP_CONV && (o->w_fwd || o->w_bwd || o->dw))
            weights += (size_t)op->c * m->ops[op->in[0]].c * op->k * op->k *
                       (wbytes * (!!o->w_fwd + !!o->w_bwd) + sizeof(float) * !!o->dw);
    }
    size_t io = (d->out ? fu_op_numel(m, output_op(m), batch) : 0) + (d->in_grad ? fu_op_numel(m, 0, batch) : 0);
    b->grad_bytes = d->dact_size;
    b->act_bytes = d->act_size + d->dact_size + d->aux_size + d->tmp_size + d->scratch_size + weights + d->bf_size +
                   d->pad_size + io * sizeof(float);
    return 0;
}

int fu_dnnl_backend_create(const fu_model *m, const fu_backend_opts *o, fu_backend **out) {
    *out = NULL;
    int batch = o->batch, threads = o->threads;
    if (check_amp(o->amp) < 0)
        return -1;
    fu_backend *b = calloc(1, sizeof *b);
    dn_net *d = calloc(1, sizeof *d);
    if (!b || !d) {
        free(b);
        free(d);
        return fu_fail("cpu backend", "out of memory");
    }
    *b = (fu_backend){.name = "cpu",
                      .m = m,
                      .batch = batch,
                      .amp = o->amp,
                      .impl = d,
                      .forward = dn_forward,
                      .logits = dn_logits,
                      .backward = dn_backward,
                      .input_grad = dn_input_grad,
                      .reports_grads = true,
                      .destroy = dn_destroy};
    d->amp = o->amp;
    if (create(m, batch, threads, b, d) < 0) {
        dn_destroy(b);
        return -1;
    }
    *out = b;
    return 0;
}
