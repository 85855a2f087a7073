// The "cuda" backend (cuda_backend.h): the op list of a fu_model on one GPU.
//
// Layouts inside: every activation NHWC fp32, (n, h, w, c); the input (the
// image, or a stage's inner input) arrives NCHW and is transposed on the
// device, as a stage's output and input gradient are on their way out and
// its output gradient on its way in; vectors (n, c) after global pooling are
// the same in both layouts. Conv weights stay OIHW in the flat parameter
// buffer and are transposed to OHWI (cuDNN's NHWC filter layout) each forward;
// their gradients come back OHWI -> OIHW.
//
// Who does what: cuDNN runs convolutions (cuda_conv.cu), as execution plans
// of its graph API (conv_graph.h) made once per shape and batch size from
// engines its heuristics list, filtered by their notes (no TF32: fp32
// stays fp32; deterministic backward engines), the first or, with
// --conv-algos, the fastest measured and recorded; or through its legacy
// API where the graph API cannot plan one (cudnnGet*Algorithm_v7 or, with
// --conv-algos, cudnnFind*; the same filters); one shared workspace, each
// plan's or algorithm's need capped at WORKSPACE_CAP. cuBLAS runs the
// linears; cuda_ops.cu the rest: max pooling (it records where each
// maximum was, so that backward reads a byte per output, not the input and
// output again), BatchNorm (batch statistics in
// double, running stats as PyTorch), with BatchNorm + ReLU and SE scale +
// add + ReLU fused where the op list allows (plan_fusion). The loss (n x
// classes numbers) runs on the host with the reference op, which is also
// where the logits must go.
// Dropout masks are drawn on the host exactly as ref_net.inc draws them, from
// (seed, step, op index), and uploaded: the same masks as every backend.
//
// Stages (model parallelism, model.h's op_base and inner_input): a model that
// ends before the loss hands out its last op's output (logits()) and takes
// that output's gradient in backward; one with an inner input also computes
// the gradient of op 0, handed out by input_grad().
//
// Data parallelism (backend.h's fu_dist_hooks): sync-BN downloads each
// training BN's per-channel sums (a few KB), has the hook add them over ranks
// and uploads the global ones, weighed as ref_net.h documents (with an NCCL
// sync attached, NCCL adds them on the device instead, and the weighing's
// arithmetic runs there too: no host wait); grads_ready is
// called for every parameter, in backward op order, once the gradients are
// on the host (at the end of backward: they are downloaded in one copy), so
// only by a backward given host grads (one given grads NULL keeps them on the
// device, where host hooks cannot reach them).
// With an NCCL sync attached (fu_backend.nccl, nccl_sync.h) the gradients are
// summed on the device instead: each op's parameter ranges are reported to
// it as soon as the op is enqueued, its buckets all-reduce on their own
// stream while backward goes on, and the compute stream waits for them
// before the download (or the resident step); grads_ready is then never
// called. The host learns of NCCL's failures late (nccl_sync.h's
// watchdog): every entry point and every download asks (cu_sums_ok).
//
// As the reference, a tensor read by two ops gets the sum of their
// gradients: the first op whose backward reaches it writes its gradient,
// and the others add (cuDNN and cuBLAS with beta = 1; plan_gradients).
//
// Resident mode (backend.h's fu_resident_api, which the trainer uses): the
// weights, BN state and AdamW moments live on the device; load and store
// copy them in and out (for checkpoints, evaluation with other weights, the
// ranks' checks), forward and backward given NULL params, state and grads
// use and keep the device's, and step runs clipping and AdamW there
// (cuda_optim.h) on the gradients backward left in d->grads (summed over
// ranks by NCCL, unscaled in fp16). A step then moves only the input batch
// (from the trainer's pinned buffers: host_alloc), the dropout masks, the
// labels and class weights (asynchronous copies from pinned memory: the
// send buffers), sync-BN's sums, and back the logits, loss and norm, or,
// for the trainer's epochs, nothing: those steps keep their loss, hits and
// norm on the device until figures() reads a batch of them, so that no step
// waits for the GPU (fp16's loss scale included, below). Given host pointers
// the interface still works as the other backends': each forward uploads
// the parameters and the BN state (90 MB for MedicalCNN), replacing the
// held ones, and downloads the state after training; each backward given
// grads downloads them (90 MB). Backward always uses the parameters its
// forward used: the gradient of that forward's loss.
// A backend created with fu_backend_opts.weights_of borrows another's
// device weights and BN state instead of holding its own (the pipe's
// micro-batch backends of one stage: one copy of the stage's weights); it
// keeps its own activations and gradients, and has no moments or step. For
// the pipe's resident step over stages, grad_norm, step_with_norm and
// add_grads split the step: norms first (the whole model's from the
// stages'), then AdamW clipped with it; the micro-batches' gradients summed
// on the device.
//
// Mixed precision (--amp bf16 / fp16): convolutions run on half copies of
// their inputs and weights (converted per op into two scratch buffers) with
// fp32 accumulation on tensor cores. A conv's output that only a BatchNorm
// reads (every conv of MedicalCNN) stays in half, as does its gradient,
// which that BatchNorm reads and writes in half (plan_fusion): the values
// the conversions would give, without them. Other convs' outputs and
// gradients come back to fp32. BatchNorm outputs, residual block ends and
// max pooling's output whose readers all take half are kept in half too, as
// autocast keeps them, with fp32 gradients, and the stem's ReLU output that
// the pooling reads, with its gradient (plan_fusion); everything else (BatchNorm's
// arithmetic, linears, loss, master weights, gradients) is fp32. fp16 scales the loss
// gradient by a power of two (dynamic, as PyTorch's GradScaler: 2^16 to
// start, halved when a gradient overflows, doubled after 2000 clean steps)
// and divides the gradients by it before they leave backward, so callers
// see true gradients, or non-finite ones where they overflowed: the step
// then refuses them (skipped, as GradScaler skips optimizer.step). The
// scale lives on the device and kernels read and update it, so that no step
// waits to learn it. A stage that ends before the loss scales its output's
// gradient instead, and unscales its input's gradient too. With NCCL the
// gradients are summed while still scaled (every rank has the same scale),
// unscaled after, and the ranks agree on an overflow over NCCL; with the
// gradients summed on the host, through the hooks' `any` (a wait), so that
// their scales stay equal. A model-parallel pipe's stages leave the scale
// to the pipe, which updates the one they share after each step
// (loss_scale_by_caller; nn/pipe.c).
//
// FU_CUDA_SYNC=1 in the environment synchronises after every op, so that an
// asynchronous CUDA error is reported with the op that caused it.
#include "cuda/cuda_net.h"
#include "cuda/cuda_optim.h"

extern "C" {
#include "core/rng.h"
#include "nn/lifetimes.h"
#include "nn/ref_ops.h"
}

#include <stdlib.h>
#include <string.h>

static const char *kind_name(fu_op_kind k) {
    static const char *names[] = {"input", "conv", "batchnorm", "relu", "maxpool", "global pool", "linear",
                                  "sigmoid", "scale", "add", "concat", "dropout", "loss"};
    return k >= 0 && k < (int)(sizeof names / sizeof *names) ? names[k] : "op";
}

// "conv op 12 'stage1.0.conv1', (4, 64, 56, 56) -> (4, 64, 56, 56)" into d->what.
static void describe(cu_net *d, int i, int n, const char *phase) {
    const fu_op *op = &d->m->ops[i];
    const fu_op *x = op->n_in ? &d->m->ops[op->in[0]] : op;
    snprintf(d->what, sizeof d->what, "%s of %s op %d '%s', (%d, %d, %d, %d) -> (%d, %d, %d, %d)", phase,
             kind_name(op->kind), i, op->name, n, x->c, x->h, x->w, n, op->c, op->h, op->w);
}

// (n, C, H, W) shaped as op i's output into dst (NHWC, on the device, of
// type t), through d->stage where the layouts or types differ. src is host
// memory, or another backend's device_output / device_input_grad on any GPU
// (cudaMemcpyDefault tells them apart by address: one address space; a copy
// between GPUs goes peer to peer where enable_peers could turn that on, else
// through the host).
static int upload_nhwc(cu_net *d, int i, int n, const float *src, cu_type t, void *dst) {
    const fu_op *op = &d->m->ops[i];
    int hw = op->h * op->w;
    size_t len = fu_op_numel(d->m, i, n);
    bool direct = hw == 1 && t == CU_FP32;
    CU(cudaMemcpy(direct ? dst : d->stage, src, len * sizeof(float), cudaMemcpyDefault));
    if (!direct) cu_nchw_to_nhwc((size_t)n, op->c, hw, d->stage, t, dst);
    return 0;
}

// src, shaped as op i's output (NHWC, on the device) and of type st, into
// host (n, C, H, W) fp32; a half one is a feature map (plan_fusion).
static int download_nchw(cu_net *d, int i, int n, cu_type st, const float *src, float *host) {
    const fu_op *op = &d->m->ops[i];
    int hw = op->h * op->w;
    size_t len = fu_op_numel(d->m, i, n);
    if (hw > 1) {
        cu_nhwc_to_nchw((size_t)n, op->c, hw, st, src, d->stage);
        src = d->stage;
    }
    DOWNLOAD(host, src, len * sizeof(float));
    return 0;
}

// ---- set-up per batch size ------------------------------------------------------

static cu_pool pool_of(const cu_net *d, int i, int n) {
    const fu_op *op = &d->m->ops[i], *x = &d->m->ops[op->in[0]];
    cu_pool p = {n, x->h, x->w, x->c, op->k, op->stride, op->pad, op->dil, op->h, op->w};
    return p;
}

// A window the kernels take (its place fits a byte), giving the op list's output size.
static int check_pool(cu_net *d, int i) {
    cu_pool p = pool_of(d, i, 1);
    if (p.k < 1 || p.k > CU_POOL_MAX_K)
        return fu_fail("cuda backend", "%s: a %dx%d window: max pooling takes at most %dx%d", d->what, p.k, p.k,
                       CU_POOL_MAX_K, CU_POOL_MAX_K);
    fu_window s = {1, p.c, p.h, p.w, p.c, p.k, p.stride, p.pad, p.dil, 0, 0};
    if (p.stride < 1) return fu_fail("cuda backend", "%s: a stride of %d", d->what, p.stride);
    fu_window_out(&s);
    if (s.p != p.oh || s.q != p.ow)
        return fu_fail("cuda backend", "%s: the window gives %dx%d, not the op list's %dx%d", d->what, s.q, s.p,
                       p.ow, p.oh);
    return 0;
}

// Descriptors and algorithms for n images (again when n changes: the last
// batch of an epoch), and a workspace that fits them all.
static int setup(cu_net *d, int n) {
    size_t ws = 0;
    d->n = 0; // until every descriptor describes n images: a failure halfway must not leave d->n trusted
    for (int i = 0; i < d->m->n_ops; i++) {
        fu_op_kind k = d->m->ops[i].kind;
        describe(d, i, n, "set-up");
        if (k == FU_OP_CONV && conv_setup(d, i, n, &ws) < 0) return -1;
        if (k == FU_OP_MAXPOOL && check_pool(d, i) < 0) return -1;
    }
    conv_note(d); // before the save, which starts the count of records added again
    if (d->algos.path && fu_algo_save(&d->algos) < 0) return -1;
    snprintf(d->what, sizeof d->what, "workspace of %zu bytes", ws);
    if (ws > d->ws_size) {
        CU(cudaFree(d->ws));
        d->b->device_bytes -= d->ws_size;
        d->ws = NULL, d->ws_size = 0;
        CU(cudaMalloc(&d->ws, ws));
        d->ws_size = ws;
        d->b->device_bytes += ws;
    }
    d->n = n;
    return 0;
}

// ---- forward ---------------------------------------------------------------------

// A forward's send buffer (cu_sendbuf), once the copies last made from it are done.
static int send_begin(cu_net *d) {
    cu_sendbuf *sb = &d->send[d->send_next];
    snprintf(d->what, sizeof d->what, "waiting for the copies of the forward before last");
    if (sb->pending) CU(cudaEventSynchronize(sb->sent));
    sb->pending = false;
    d->sending = sb, d->send_used = 0;
    return 0;
}

// After the forward's last copy from it.
static int send_end(cu_net *d) {
    CU(cudaEventRecord(d->sending->sent, 0));
    d->sending->pending = true;
    d->send_next ^= 1;
    return 0;
}

// The reference's mask (ref_net.inc): 0 or 1/(1-p) per element in NCHW order,
// all ones when dropout is off; sent and put into aux in NHWC.
static int dropout_mask(cu_net *d, int i, int n, const fu_pass *pass, float *mask) {
    const fu_op *op = &d->m->ops[i];
    size_t len = fu_op_numel(d->m, i, n);
    bool drop = pass->train && pass->dropout && op->p > 0;
    fu_rng rng = fu_dropout_rng(d->m, i, pass);
    float keep = (float)(1 / (1 - (double)op->p)), *h = d->sending->mask + d->send_used; // (n, C, H, W)
    for (size_t j = 0; j < len; j++) h[j] = !drop ? 1 : fu_rng_uniform(&rng) < op->p ? 0 : keep;
    d->send_used += len;
    CU(cudaMemcpyAsync(d->stage, h, len * sizeof(float), cudaMemcpyHostToDevice, 0));
    cu_nchw_to_nhwc((size_t)n, op->c, op->h * op->w, d->stage, CU_FP32, mask);
    return 0;
}

static int linear_fwd(cu_net *d, const fu_op *op, int n, const float *x, float *y) {
    int in = d->m->ops[op->in[0]].c;
    // Row-major y (n, out) = x (n, in) W^T is column-major y^T = W x^T, with
    // W (out, in) row-major being column-major W^T: transpose it.
    BLAS(cublasSgemm(d->blas, CUBLAS_OP_T, CUBLAS_OP_N, op->c, n, in, &ONE, d->params + op->weight, in, x, in, &ZERO,
                     y, op->c));
    if (op->bias_off >= 0) cu_bias_fwd(n, op->c, d->params + op->bias_off, y);
    return 0;
}

// Sync-BN's training forward (ref_net.h's sync_bn_fwd): this batch's (sum x,
// sum x^2, count) in d->bnv (cu_bn_sums), with W_r after them, summed over
// ranks: the global sums and count in their place, and this rank's share
// W_r / W kept for backward. With NCCL attached, on the device, and no
// host wait; else through the hooks' sum on the host.
static int sync_bn_fwd(cu_net *d, int c) {
    if (d->nccl) {
        cu_set_double(d->bnv + 2 * c + 1, d->w_rank);
        if (fu_nccl_sync_sum(d->nccl, d->bnv, 2 * (size_t)c + 2) < 0) return -1;
        cu_share_of(d->share_dev, d->w_rank, d->bnv + 2 * c + 1);
        return 0; // (launch errors: the op's op_done)
    }
    double *v = d->dist_v; // (2c + 2)
    DOWNLOAD(v, d->bnv, (2 * (size_t)c + 1) * sizeof(double));
    v[2 * c + 1] = d->w_rank;
    if (d->dist->sum(d->dist->ctx, v, 2 * c + 2) < 0) {
        fu_error_prefix("sync-BN");
        return -1;
    }
    d->share = d->w_rank / v[2 * c + 1];
    CU(cudaMemcpy(d->bnv, v, (2 * (size_t)c + 1) * sizeof(double), cudaMemcpyHostToDevice));
    return 0;
}

// ---- prefetched inputs (backend.h's prefetch) ---------------------------------------

// The forward's side: where x (n images) was prefetched and not yet taken,
// the input op's output y comes from that slot's device copy, after the
// default stream waited for the copy (*took); the slot's "read" event then
// tells the next copy into it when it may start. Under the lock, so that
// the loading thread never refills a slot between the check and the read.
static cudaError_t take_slot(cu_net *d, int n, const float *x, float *y, bool *took) {
    cudaError_t e = cudaSuccess;
    for (int k = 0; k < 2 && !*took; k++) {
        cu_prefetch_slot *s = &d->pre[k];
        if (!s->ready || s->host != x || s->n != n) continue;
        const fu_op *in = &d->m->ops[0];
        s->ready = false;
        d->pre_last = k;
        *took = true;
        if ((e = cudaStreamWaitEvent(0, s->copied, 0)) != cudaSuccess) return e;
        cu_nchw_to_nhwc((size_t)n, in->c, in->h * in->w, s->dev, out_type(d, 0), y);
        if ((e = cudaGetLastError()) != cudaSuccess) return e;
        e = cudaEventRecord(s->read, 0);
    }
    return e;
}

// The caller may refill x once the forward returns, which need not wait for
// the GPU (a step that keeps its figures there never does): so the host
// waits here for the copy from x, on the copy stream, usually done long
// before, and never for the computing one.
static int take_prefetched(cu_net *d, int n, const float *x, float *y, bool *took) {
    *took = false;
    pthread_mutex_lock(&d->pre_lock);
    cudaError_t e = d->copy ? take_slot(d, n, x, y, took) : cudaSuccess; // no copy stream: nothing prefetched
    cudaEvent_t copied = *took ? d->pre[d->pre_last].copied : NULL;
    pthread_mutex_unlock(&d->pre_lock);
    CU(e);
    if (copied) CU(cudaEventSynchronize(copied));
    return 0;
}

// The loading thread's side (fu_backend.prefetch): x (n images, pinned host
// memory from host_alloc) copied on the copy stream into its slot (see
// pick_slot).
// Errors are this thread's own (fu_fail is per thread); d->what belongs to
// the forward that may be running meanwhile.
static int prefetch_fail(cudaError_t e, const char *what) {
    return fu_fail("cuda backend", "prefetching an input batch: %s: %s", what, cudaGetErrorString(e));
}

#define PRE(call, what)                                                                                     \
    do {                                                                                                    \
        cudaError_t e_ = (call);                                                                            \
        if (e_ != cudaSuccess) return prefetch_fail(e_, what);                                              \
    } while (0)

// The slot for host buffer x: the one that held it before (the trainer
// alternates between two buffers), else one no forward still has to take,
// else the one the last forward did not take.
static int pick_slot(const cu_net *d, const float *x) {
    for (int k = 0; k < 2; k++)
        if (d->pre[k].host == x) return k;
    for (int k = 0; k < 2; k++)
        if (!d->pre[k].ready) return k;
    return !d->pre_last;
}

static int prefetch_locked(cu_net *d, const float *x, int n) {
    size_t planned = fu_op_numel(d->m, 0, d->batch) * sizeof(float), bytes = fu_op_numel(d->m, 0, n) * sizeof(float);
    PRE(cudaSetDevice(d->device), "selecting the GPU");
    if (!d->copy) {
        PRE(cudaStreamCreateWithFlags(&d->copy, cudaStreamNonBlocking), "creating the copy stream");
        for (int k = 0; k < 2; k++) {
            PRE(cudaEventCreateWithFlags(&d->pre[k].copied, cudaEventDisableTiming), "creating an event");
            PRE(cudaEventCreateWithFlags(&d->pre[k].read, cudaEventDisableTiming), "creating an event");
        }
    }
    cu_prefetch_slot *s = &d->pre[pick_slot(d, x)];
    if (!s->dev) {
        PRE(cudaMalloc((void **)&s->dev, planned), "allocating its device buffer");
        d->b->device_bytes += planned;
    }
    s->ready = false;
    // Not before the forward that took this slot last has read it.
    PRE(cudaStreamWaitEvent(d->copy, s->read, 0), "ordering the copy after the last read");
    PRE(cudaMemcpyAsync(s->dev, x, bytes, cudaMemcpyHostToDevice, d->copy), "copying it to the GPU");
    PRE(cudaEventRecord(s->copied, d->copy), "recording its copy");
    s->host = x, s->n = n, s->ready = true;
    return 0;
}

static int cu_prefetch(fu_backend *b, const float *x, int n) {
    cu_net *d = (cu_net *)b->impl;
    // A stage's inner input comes from the stage before, not from a loader.
    if (d->m->inner_input || n < 1 || n > d->batch) return 0;
    pthread_mutex_lock(&d->pre_lock);
    int rc = prefetch_locked(d, x, n);
    pthread_mutex_unlock(&d->pre_lock);
    return rc;
}

// Training BN: statistics of this batch, or of all ranks' with sync-BN; its
// affine map kept (coef) for a fused ReLU's backward. (relu: y, of type yt,
// is the fused ReLU's output.)
static int bn_train_fwd(cu_net *d, const fu_op *op, size_t rows, cu_type xt, const void *x, cu_type yt, void *y,
                        float *aux, float *coef, bool relu) {
    const float *gamma = d->params + op->weight, *beta = d->params + op->bias_off;
    cu_bn_sums(rows, op->c, xt, x, d->part, d->bnv);
    if (d->dist && sync_bn_fwd(d, op->c) < 0) return -1;
    cu_bn_global_fwd(rows, op->c, d->bnv, xt, x, gamma, beta, yt, y, aux, aux + op->c, d->state + op->mean,
                     d->state + op->var, FU_BN_EPS, FU_BN_MOMENTUM, coef, relu);
    return 0;
}

static int op_fwd(cu_net *d, int i, int n, int64_t *counts, const float *x, const fu_pass *pass) {
    const fu_model *m = d->m;
    const fu_op *op = &m->ops[i];
    float *y = act(d, i);
    const float *in = op->n_in ? act(d, op->in[0]) : NULL;
    const float *w = op->weight >= 0 ? d->params + op->weight : NULL;
    const float *b = op->bias_off >= 0 ? d->params + op->bias_off : NULL;
    float *aux = d->aux + d->plan.aux[i];
    size_t len = fu_op_numel(m, i, n), rows = (size_t)n * op->h * op->w;
    switch (op->kind) {
    case FU_OP_INPUT: {
        bool took = false;
        if (take_prefetched(d, n, x, y, &took) < 0) return -1;
        return took ? 0 : upload_nhwc(d, i, n, x, out_type(d, i), y);
    }
    case FU_OP_CONV: return conv_fwd(d, i, n, in, y);
    case FU_OP_BN: {
        int relu = d->op[i].relu, out = relu >= 0 ? relu : i; // fused: the ReLU's output instead of the BN's
        cu_type xt = out_type(d, op->in[0]), yt = out_type(d, out);
        if (pass->train) {
            if (bn_train_fwd(d, op, rows, xt, in, yt, act(d, out), aux, d->coef + d->op[i].coef, relu >= 0) < 0)
                return -1;
            counts[op->count]++;
        } else {
            cu_bn_eval_fwd(rows, op->c, xt, in, w, b, d->state + op->mean, d->state + op->var, yt, act(d, out),
                           FU_BN_EPS, d->coef, relu >= 0);
        }
        break;
    }
    case FU_OP_RELU:
        if (!d->op[i].fused) cu_relu_fwd(len, in, y);
        break;
    case FU_OP_MAXPOOL: {
        cu_pool p = pool_of(d, i, n);
        // where the maxima were: only backward needs it
        unsigned char *arg = pass->train ? d->argmax + d->op[i].arg : NULL;
        cu_maxpool_fwd(&p, out_type(d, op->in[0]), in, out_type(d, i), y, arg);
        break;
    }
    case FU_OP_GAP: {
        const fu_op *src = &m->ops[op->in[0]];
        cu_gap_fwd(n, src->h * src->w, src->c, out_type(d, op->in[0]), in, y, d->part);
        break;
    }
    case FU_OP_LINEAR: return linear_fwd(d, op, n, in, y);
    case FU_OP_SIGMOID: cu_sigmoid_fwd(len, in, y); break;
    case FU_OP_SCALE:
        if (!d->op[i].fused) cu_scale_fwd(n, op->h * op->w, op->c, in, act(d, op->in[1]), y);
        break;
    case FU_OP_ADD: {
        const fu_op *sc = d->op[i].scale >= 0 ? &m->ops[d->op[i].scale] : NULL; // fused: scale, add, ReLU
        int relu = d->op[i].relu;
        if (!sc) cu_add_fwd(len, in, act(d, op->in[1]), y);
        else cu_scale_add_relu_fwd(n, op->h * op->w, op->c, out_type(d, sc->in[0]), act(d, sc->in[0]),
                                   act(d, sc->in[1]), out_type(d, op->in[1]), act(d, op->in[1]), out_type(d, relu),
                                   act(d, relu));
        break;
    }
    case FU_OP_CONCAT:
        for (int p = 0, off = 0; p < op->n_in; off += m->ops[op->in[p]].c, p++)
            cu_concat_fwd(rows, m->ops[op->in[p]].c, op->c, off, act(d, op->in[p]), y);
        break;
    case FU_OP_DROPOUT:
        if (dropout_mask(d, i, n, pass, aux) < 0) return -1;
        cu_mul_fwd(len, in, aux, y);
        break;
    case FU_OP_XENT: break; // after the ops, where there are labels (cu_forward)
    }
    return 0;
}

// The current device is per host thread: a backend created in one thread may
// run in another (a rank's thread, a pipeline stage's).
int use_device(cu_net *d) {
    snprintf(d->what, sizeof d->what, "selecting GPU %d", d->device);
    CU(cudaSetDevice(d->device));
    return cu_sums_ok(d);
}

// After each op: a launch error now, an asynchronous one too with FU_CUDA_SYNC.
int op_done(cu_net *d) {
    CU(cudaGetLastError());
    if (d->sync) CU(cudaDeviceSynchronize());
    return 0;
}

static int cu_forward(fu_backend *b, int n, const float *params, float *state, int64_t *counts, const float *x,
                      const int *labels, const float *class_w, const fu_pass *pass, float *loss) {
    cu_net *d = (cu_net *)b->impl;
    const fu_model *m = d->m;
    d->ready = false;
    if (fu_backend_check_batch(b, n, labels, class_w, pass) < 0 || use_device(d) < 0) return -1;
    if (n != d->n && setup(d, n) < 0) return -1;
    // sync-BN in training: this rank's loss normaliser W_r (ref_net.h)
    d->dist = pass->train && b->dist && b->dist->sum ? b->dist : NULL;
    d->w_rank = 0;
    for (int i = 0; d->dist && i < n; i++) d->w_rank += class_w[labels[i]];
    // NULL: the held ones (resident); given ones replace them.
    if (pass->train) cu_profile_step(d->prof);
    mark(d, "forward: uploads (host buffers given)");
    snprintf(d->what, sizeof d->what, "uploading parameters and BatchNorm state");
    if (params) CU(cudaMemcpy(d->params, params, m->n_params * sizeof(float), cudaMemcpyHostToDevice));
    if (state) CU(cudaMemcpy(d->state, state, m->n_state * sizeof(float), cudaMemcpyHostToDevice));
    int k = m->classes, out = output_op(m);
    bool xent = labels && ends_in_loss(m);
    // On the held weights, with no loss asked for, the loss stays with the step's figures
    // (backend.h) and nothing waits for the GPU.
    bool keep = xent && pass->train && !params && !loss;
    if (keep && d->fig_next == FU_FIGURE_SLOTS)
        return fu_fail("cuda backend", "the figures of %d steps are waiting to be read (fu_resident_api.figures)",
                       FU_FIGURE_SLOTS);
    if (send_begin(d) < 0) return -1;
    if (xent) {
        snprintf(d->what, sizeof d->what, "sending the labels and class weights");
        memcpy(d->sending->labels, labels, (size_t)n * sizeof *labels);
        memcpy(d->sending->class_w, class_w, (size_t)k * sizeof *class_w);
        CU(cudaMemcpyAsync(d->labels, d->sending->labels, (size_t)n * sizeof *labels, cudaMemcpyHostToDevice, 0));
        CU(cudaMemcpyAsync(d->class_w, d->sending->class_w, (size_t)k * sizeof *class_w, cudaMemcpyHostToDevice, 0));
    }
    for (int i = 0; i < m->n_ops; i++) {
        describe(d, i, n, "forward");
        mark(d, section(m->ops[i].kind, false));
        if (op_fwd(d, i, n, counts, x, pass) < 0 || op_done(d) < 0) return -1;
    }
    if (send_end(d) < 0) return -1;
    d->fig_slot = keep ? d->fig_next : FU_FIGURE_SLOTS;
    fu_step_figures *fig = d->figs + d->fig_slot;
    if (xent) {
        snprintf(d->what, sizeof d->what, "forward (the loss)");
        mark(d, section(FU_OP_XENT, false));
        cu_xent_fwd(n, k, act(d, out), d->labels, d->class_w, d->prob, d->terms, d->wsum, &fig->loss, &fig->hits);
        if (op_done(d) < 0) return -1;
    }
    if (!keep) {
        snprintf(d->what, sizeof d->what, "forward (downloading the output of op %d)", out);
        mark(d, "forward: output download (a wait)");
        if (download_nchw(d, out, n, out_type(d, out), act(d, out), d->logits) < 0) return -1;
        if (xent && loss) DOWNLOAD(loss, &fig->loss, sizeof *loss);
    }
    if (pass->train && state) DOWNLOAD(state, d->state, m->n_state * sizeof(float));
    cu_profile_flush(d->prof);
    d->ready = pass->train;
    return 0;
}

static const float *cu_logits(fu_backend *b) { return ((cu_net *)b->impl)->logits; }

// Where download_nchw left op i's (n, C, H, W) on the device on its way to
// the host: d->stage, or the op's own output where NHWC is NCHW (vectors).
static const float *left_on_device(cu_net *d, int i, const float *src) {
    return d->m->ops[i].h * d->m->ops[i].w > 1 ? d->stage : src;
}

// fu_backend.device_output: the last forward's output as download_nchw left
// it on the device (forward downloads it too, for logits(), and ends
// synchronised, so a stage on another GPU may copy it at once).
static const float *cu_device_output(fu_backend *b) {
    cu_net *d = (cu_net *)b->impl;
    int out = output_op(d->m);
    return left_on_device(d, out, act(d, out));
}

// ---- backward ----------------------------------------------------------------------

static int linear_bwd(cu_net *d, const fu_op *op, int n, const float *x, const float *dy, float *dx, bool add) {
    int in = d->m->ops[op->in[0]].c, out = op->c;
    // dW (out, in) += dy^T x: column-major dW^T (in, out) = x^T (in, n) dy (n, out).
    BLAS(cublasSgemm(d->blas, CUBLAS_OP_N, CUBLAS_OP_T, in, out, n, &ONE, x, in, dy, out, &ONE, d->grads + op->weight,
                     in));
    if (op->bias_off >= 0) cu_bias_bwd(n, out, dy, d->grads + op->bias_off);
    // dx (n, in) (+)= dy W: column-major dx^T (in, n) = W^T (in, out) dy^T (out, n).
    if (dx)
        BLAS(cublasSgemm(d->blas, CUBLAS_OP_N, CUBLAS_OP_N, in, n, out, &ONE, d->params + op->weight, in, dy, out,
                         add ? &ONE : &ZERO, dx, in));
    return 0;
}

// Sync-BN's backward (ref_net.h's sync_bn_bwd): this batch's (sum dy, sum dy
// xhat, count) in d->bnv, the sums weighed by this rank's share as the full
// loss's, summed over ranks with the count, and divided by the share again:
// the global sums and count in their place. On the device with NCCL, as
// the forward's.
static int sync_bn_bwd(cu_net *d, int c) {
    if (d->nccl) {
        cu_scale_by(2 * (size_t)c, d->bnv, d->share_dev, false);
        if (fu_nccl_sync_sum(d->nccl, d->bnv, 2 * (size_t)c + 1) < 0) return -1;
        cu_scale_by(2 * (size_t)c, d->bnv, d->share_dev, true);
        return 0;
    }
    double *v = d->dist_v; // (2c + 1)
    DOWNLOAD(v, d->bnv, (2 * (size_t)c + 1) * sizeof(double));
    for (int k = 0; k < 2 * c; k++) v[k] *= d->share;
    if (d->dist->sum(d->dist->ctx, v, 2 * c + 1) < 0) {
        fu_error_prefix("sync-BN");
        return -1;
    }
    for (int k = 0; k < 2 * c; k++) v[k] /= d->share;
    CU(cudaMemcpy(d->bnv, v, (2 * (size_t)c + 1) * sizeof(double), cudaMemcpyHostToDevice));
    return 0;
}

// BN op i's backward: gamma and beta gradients from this batch (local, also
// with sync-BN), the input's from this batch's sums or all ranks'. Fused
// with the ReLU after it, dy is the ReLU's output gradient, masked where the
// forward's affine map gave no positive value.
static int bn_bwd(cu_net *d, int i, size_t rows) {
    const fu_op *op = &d->m->ops[i];
    const float *aux = d->aux + d->plan.aux[i];
    int relu = d->op[i].relu, out = relu >= 0 ? relu : i;
    const float *relu_coef = relu >= 0 ? d->coef + d->op[i].coef : NULL;
    cu_type xt = out_type(d, op->in[0]), dyt = grad_type(d, out); // dx: of x's type (plan_fusion)
    const void *x = act(d, op->in[0]), *dy = dact(d, out);
    cu_bn_bwd_sums(rows, op->c, xt, x, aux, aux + op->c, dyt, dy, relu_coef, d->part, d->bnv, d->grads + op->weight,
                   d->grads + op->bias_off);
    if (d->dist && sync_bn_bwd(d, op->c) < 0) return -1;
    cu_bn_global_bwd(rows, op->c, d->bnv, xt, x, d->params + op->weight, aux, aux + op->c, dyt, dy, relu_coef,
                     grad_of(d, op->in[0]), adds(d, i, op->in[0]), d->coef);
    return 0;
}

static int op_bwd(cu_net *d, int i, int n) {
    const fu_model *m = d->m;
    const fu_op *op = &m->ops[i];
    const float *y = act(d, i), *dy = dact(d, i), *in = act(d, op->in[0]);
    float *din = grad_of(d, op->in[0]);
    bool add = adds(d, i, op->in[0]);
    const float *aux = d->aux + d->plan.aux[i];
    size_t len = fu_op_numel(m, i, n), rows = (size_t)n * op->h * op->w;
    switch (op->kind) {
    case FU_OP_INPUT: case FU_OP_XENT: break; // the loss's gradient came from the host
    case FU_OP_CONV: return conv_bwd(d, i, n, in, dy, din, add);
    case FU_OP_BN: return bn_bwd(d, i, rows);
    case FU_OP_RELU:
        if (!d->op[i].fused) cu_relu_bwd(len, y, dy, din, add);
        break;
    case FU_OP_MAXPOOL: {
        cu_pool p = pool_of(d, i, n);
        cu_maxpool_bwd(&p, d->argmax + d->op[i].arg, dy, grad_type(d, op->in[0]), din, add);
        break;
    }
    case FU_OP_GAP: {
        const fu_op *src = &m->ops[op->in[0]];
        cu_gap_bwd(n, src->h * src->w, src->c, dy, din, add);
        break;
    }
    case FU_OP_LINEAR: return linear_bwd(d, op, n, in, dy, din, add);
    case FU_OP_SIGMOID: cu_sigmoid_bwd(len, y, dy, din, add); break;
    case FU_OP_SCALE:
        if (!d->op[i].fused)
            cu_scale_bwd(n, op->h * op->w, op->c, in, act(d, op->in[1]), dy, din, add, grad_of(d, op->in[1]),
                         adds(d, i, op->in[1]), d->part);
        break;
    case FU_OP_ADD: {
        int relu = d->op[i].relu;
        const fu_op *sc = d->op[i].scale >= 0 ? &m->ops[d->op[i].scale] : NULL;
        if (!sc) cu_add_bwd(len, dy, din, add, grad_of(d, op->in[1]), adds(d, i, op->in[1]));
        else cu_scale_add_relu_bwd(n, op->h * op->w, op->c, out_type(d, sc->in[0]), act(d, sc->in[0]),
                                   act(d, sc->in[1]), out_type(d, op->in[1]), act(d, op->in[1]), out_type(d, relu),
                                   act(d, relu), dact(d, relu), grad_of(d, sc->in[0]), adds(d, i, sc->in[0]),
                                   grad_of(d, sc->in[1]), adds(d, i, sc->in[1]), grad_of(d, op->in[1]),
                                   adds(d, i, op->in[1]), d->part);
        break;
    }
    case FU_OP_CONCAT:
        for (int p = 0, off = 0; p < op->n_in; off += m->ops[op->in[p]].c, p++)
            cu_concat_bwd(rows, m->ops[op->in[p]].c, op->c, off, dy, grad_of(d, op->in[p]), adds(d, i, op->in[p]));
        break;
    case FU_OP_DROPOUT: cu_mul_bwd(len, aux, dy, din, add); break;
    }
    return 0;
}

// Zeroes the gradients to be cleared (cu_op.cleared) that op i's backward
// writes first.
static int clear_gradients(cu_net *d, int i) {
    for (int o = 0; o < d->m->n_ops; o++) {
        if (d->op[o].first_writer != i || !d->op[o].cleared || !d->op[o].grad_len) continue;
        mark(d, "backward: clearing gradients");
        CU(cudaMemsetAsync(dact(d, o), 0, d->op[o].grad_len * sizeof(float)));
    }
    return 0;
}

static void nccl_ready(void *sync, size_t off, size_t len) { fu_nccl_sync_ready((fu_nccl_sync *)sync, off, len); }

// One backward pass into d->grads from the loss gradient, or for a stage that
// ends before the loss from its output's gradient dy (n, C, H, W), times
// *scale (device memory; NULL: 1).
static int backward_pass(cu_net *d, const float *dy, const float *scale) {
    const fu_model *m = d->m;
    int n = d->n, k = m->classes, out = output_op(m);
    snprintf(d->what, sizeof d->what, "backward (uploading the output's gradient)");
    mark(d, "backward: the loss gradient");
    CU(cudaMemset(d->grads, 0, m->n_params * sizeof(float)));
    if (d->nccl) fu_nccl_sync_begin(d->nccl);
    if (ends_in_loss(m)) {
        cu_xent_bwd(n, k, d->prob, d->labels, d->class_w, d->wsum, scale, dact(d, out));
    } else {
        if (upload_nhwc(d, out, n, dy, grad_type(d, out), dact(d, out)) < 0) return -1;
        if (scale) cu_mul_scalar(fu_op_numel(m, out, n), scale, dact(d, out));
    }
    for (int i = m->n_ops - 1; i > 0; i--) {
        describe(d, i, n, "backward");
        if (clear_gradients(d, i) < 0) return -1;
        mark(d, section(m->ops[i].kind, true));
        if (op_bwd(d, i, n) < 0 || op_done(d) < 0) return -1;
        // Op i wrote its parameters' gradients for the last time.
        if (d->nccl) fu_params_ready(m, i, nccl_ready, d->nccl);
    }
    return 0;
}

// fp16 loss scaling: the gradients (and an inner input's) divided by the
// scale, d->nonfinite set where one of them is inf or NaN, and the scale
// updated from it, all on the device. With NCCL the gradients are the
// ranks' sum, and the flag is agreed over NCCL too (an inner input's
// gradient is the rank's own); summed on the host, through the hooks' `any`
// (a wait): so every rank updates its scale alike. A backend whose caller
// updates the scale (a pipe's stage) unscales only.
static int unscale(cu_net *d) {
    snprintf(d->what, sizeof d->what, "backward (unscaling fp16 gradients)");
    mark(d, "backward: fp16 unscaling");
    CU(cudaMemsetAsync(d->nonfinite, 0, sizeof(int), 0));
    cu_unscale(d->m->n_params, d->grads, &d->scaler->scale, d->nonfinite);
    if (d->m->inner_input) cu_unscale(fu_op_numel(d->m, 0, d->n), dact(d, 0), &d->scaler->scale, d->nonfinite);
    if (d->scale_by_caller) return op_done(d);
    if (d->nccl && fu_nccl_sync_max(d->nccl, d->nonfinite) < 0) return -1;
    const fu_dist_hooks *h = d->b->dist;
    if (h && h->any && !d->nccl) {
        int flag = 0;
        DOWNLOAD(&flag, d->nonfinite, sizeof flag);
        if (h->any(h->ctx, &flag) < 0) {
            fu_error_prefix("fp16 loss scaling across ranks");
            return -1;
        }
        CU(cudaMemcpy(d->nonfinite, &flag, sizeof flag, cudaMemcpyHostToDevice));
    }
    cu_loss_scale_update(d->scaler, d->nonfinite, FU_LEAST_LOSS_SCALE, FU_LOSS_SCALE_GROWTH);
    return op_done(d);
}

static int cu_backward(fu_backend *b, const float *params, const float *dy_out, float *grads) {
    cu_net *d = (cu_net *)b->impl;
    const fu_model *m = d->m;
    if (!d->ready) return fu_fail("model", "backward needs a training forward with labels first");
    if (use_device(d) < 0) return -1;
    if (ends_in_loss(m) != !dy_out)
        return fu_fail("model", ends_in_loss(m) ? "a model that ends in the loss takes no output gradient"
                                                : "a stage that ends before the loss needs its output's gradient");
    if (backward_pass(d, dy_out, d->scaler ? &d->scaler->scale : NULL) < 0) return -1;
    // Summed over ranks still scaled: every rank has the same loss scale.
    if (d->nccl && fu_nccl_sync_end(d->nccl) < 0) return -1;
    if (d->scaler && unscale(d) < 0) return -1;
    // grads NULL: they stay in d->grads for the resident step.
    snprintf(d->what, sizeof d->what, "backward (downloading the gradients)");
    mark(d, "backward: downloads (host buffers given)");
    if (grads) DOWNLOAD(grads, d->grads, m->n_params * sizeof(float));
    if (m->inner_input && download_nchw(d, 0, d->n, grad_type(d, 0), dact(d, 0), d->dinput) < 0) return -1;
    d->ready = false;
    cu_profile_flush(d->prof);
    // Every range of the host's grads is final now; announced in backward op
    // order, as the other backends do (not with NCCL: the sum is done; nor
    // without host grads: the hooks sum host memory).
    if (grads && b->dist && b->dist->grads_ready && !d->nccl)
        for (int i = m->n_ops - 1; i > 0; i--) fu_params_ready(m, i, b->dist->grads_ready, b->dist->ctx);
    return 0;
}

static const float *cu_input_grad(fu_backend *b) { return ((cu_net *)b->impl)->dinput; }

// fu_backend.device_input_grad: likewise for the last backward's input gradient.
static const float *cu_device_input_grad(fu_backend *b) {
    cu_net *d = (cu_net *)b->impl;
    return d->m->inner_input ? left_on_device(d, 0, dact(d, 0)) : NULL;
}

// ---- create and destroy -----------------------------------------------------------

// Page-locked host memory (fu_backend.host_alloc) for the input batches:
// copies from it run at full bus speed, where pageable memory is staged by
// the driver. Portable: pinned for every device of the process. NULL on
// failure (whose error is cleared, so that the next op does not report it).
static void *cu_host_alloc(size_t bytes) {
    void *p = NULL;
    if (cudaHostAlloc(&p, bytes ? bytes : 1, cudaHostAllocPortable) == cudaSuccess) return p;
    cudaGetLastError();
    return NULL;
}

static void cu_host_free(void *p) {
    if (p) cudaFreeHost(p);
}

void cu_destroy(fu_backend *b) {
    cu_net *d = (cu_net *)b->impl;
    if (d) {
        cudaSetDevice(d->device); // where its handles and buffers live
        fu_nccl_sync_free(d->nccl); // before the buffer it sums
        fu_nccl_sync_free(d->nccl_after);
        cu_profile_destroy(d->prof);
        fu_algo_free(&d->algos);
        for (int i = 0; d->op && i < d->m->n_ops; i++) conv_free(&d->op[i]);
        if (d->borrowed) d->params = d->state = NULL; // the lender's
        void *dev[] = {d->params, d->grads, d->state, d->m1, d->m2, d->norm_part, d->norm, d->groups, d->wt,
                       d->dwt, d->act, d->dact, d->aux, d->stage, d->part, d->bnv, d->coef, d->argmax, d->ws, d->hx,
                       d->hy, d->nonfinite, d->scaler, d->refused, d->pre[0].dev, d->pre[1].dev, d->labels,
                       d->class_w, d->prob, d->terms, d->wsum, d->figs};
        for (size_t j = 0; j < sizeof dev / sizeof *dev; j++) cudaFree(dev[j]);
        if (d->copy) {
            for (int k = 0; k < 2; k++) cudaEventDestroy(d->pre[k].copied), cudaEventDestroy(d->pre[k].read);
            cudaStreamDestroy(d->copy);
        }
        pthread_mutex_destroy(&d->pre_lock);
        for (int k = 0; k < 2; k++) {
            if (d->send[k].sent) cudaEventDestroy(d->send[k].sent);
            cu_host_free(d->send[k].mask);
        }
        cu_host_free(d->logits), cu_host_free(d->dinput);
        if (d->dnn) cudnnDestroy(d->dnn);
        if (d->blas) cublasDestroy(d->blas);
        fu_plan_free(&d->plan);
        free(d->op), free(d->dist_v), free(d->host_groups);
        free(d);
    }
    free(b);
}

// cudaMalloc, counted in the backend's device_bytes.
int dev_alloc(cu_net *d, void *p, size_t bytes) {
    if (!bytes) bytes = 1;
    CU(cudaMalloc((void **)p, bytes));
    d->b->device_bytes += bytes;
    return 0;
}

// The send buffers (cu_sendbuf): each one pinned block of the forward's
// dropout masks at the planned batch, its labels and class weights.
static int alloc_send(cu_net *d) {
    const fu_model *m = d->m;
    for (int i = 0; i < m->n_ops; i++)
        if (m->ops[i].kind == FU_OP_DROPOUT) d->send_mask_size += fu_op_numel(m, i, d->batch);
    size_t masks = (d->send_mask_size + 3) & ~(size_t)3; // the labels 16-byte aligned
    for (int k = 0; k < 2; k++) {
        cu_sendbuf *sb = &d->send[k];
        sb->mask = (float *)cu_host_alloc((masks + (size_t)d->batch + (size_t)m->classes) * sizeof(float));
        if (!sb->mask) return fu_fail("cuda backend", "cannot allocate pinned host memory for dropout masks and labels");
        sb->labels = (int *)(sb->mask + masks);
        sb->class_w = (float *)(sb->labels + d->batch);
        snprintf(d->what, sizeof d->what, "creating an event");
        CU(cudaEventCreateWithFlags(&sb->sent, cudaEventDisableTiming));
    }
    return 0;
}

static int create(cu_net *d, fu_backend *b) {
    const fu_model *m = d->m;
    size_t k = (size_t)m->classes, nb = (size_t)d->batch;
    if (check_sizes(d) < 0 || fu_model_plan(m, d->batch, &d->plan) < 0) return -1;
    d->op = (cu_op *)fu_calloc((size_t)m->n_ops, sizeof *d->op);
    // Pinned: the output, a stage's input gradient and the dropout masks
    // cross the bus every step.
    d->logits = (float *)cu_host_alloc(fu_op_numel(m, output_op(m), d->batch) * sizeof(float));
    d->dist_v = (double *)fu_malloc((2 * (size_t)widest_bn(m) + 2) * sizeof(double));
    if (!d->op || !d->dist_v) return -1;
    if (!d->logits) return fu_fail("cuda backend", "cannot allocate pinned host memory for the model's output");
    if (m->inner_input && !(d->dinput = (float *)cu_host_alloc(fu_op_numel(m, 0, d->batch) * sizeof(float))))
        return fu_fail("cuda backend", "cannot allocate pinned host memory for a stage's input gradient");
    plan_fusion(d);
    plan_scratch(d);
    plan_outputs(d);
    if (plan_gradients(d) < 0) return -1;
    if (alloc_send(d) < 0) return -1;
    d->fig_slot = FU_FIGURE_SLOTS; // no step's yet
    snprintf(d->what, sizeof d->what, "creating the cuDNN and cuBLAS handles");
    DNN(cudnnCreate(&d->dnn));
    BLAS(cublasCreate(&d->blas));
    // fp32 GEMMs stay fp32 (no TF32), as the convolutions.
    BLAS(cublasSetMathMode(d->blas, CUBLAS_PEDANTIC_MATH));
    size_t f = sizeof(float), act = d->plan.act_size, es = d->es;
    bool amp = d->amp != FU_AMP_OFF;
    if (!amp) d->hx_size = d->hy_size = 0;
    snprintf(d->what, sizeof d->what, "allocating device memory for a batch of %d", d->batch);
    size_t fixed, need = planned_bytes(d, &fixed), free_bytes = 0, total_bytes = 0;
    if (cudaMemGetInfo(&free_bytes, &total_bytes) == cudaSuccess && need > free_bytes)
        return fail_oom(d, need, fixed, free_bytes);
    if (!d->borrowed && (dev_alloc(d, &d->params, m->n_params * f) < 0 || dev_alloc(d, &d->state, m->n_state * f) < 0 ||
                         dev_alloc(d, &d->m1, m->n_params * f) < 0 || dev_alloc(d, &d->m2, m->n_params * f) < 0))
        return -1;
    if (dev_alloc(d, &d->grads, m->n_params * f) < 0 || dev_alloc(d, &d->wt, d->wt_size * es) < 0 ||
        dev_alloc(d, &d->dwt, d->wt_size * es) < 0 || dev_alloc(d, &d->act, act * f) < 0 ||
        dev_alloc(d, &d->dact, d->dact_size * f) < 0 || dev_alloc(d, &d->aux, d->plan.aux_size * f) < 0 ||
        dev_alloc(d, &d->stage, d->stage_size * f) < 0 || dev_alloc(d, &d->part, d->part_size * sizeof(double)) < 0 ||
        dev_alloc(d, &d->bnv, d->bnv_size * sizeof(double)) < 0 ||
        dev_alloc(d, &d->coef, d->coef_size * f) < 0 || dev_alloc(d, &d->argmax, d->argmax_size) < 0 ||
        dev_alloc(d, &d->hx, d->hx_size * es) < 0 ||
        dev_alloc(d, &d->hy, d->hy_size * es) < 0 || dev_alloc(d, &d->nonfinite, sizeof(int)) < 0 ||
        dev_alloc(d, &d->refused, sizeof(int)) < 0 ||
        (d->amp == FU_AMP_FP16 && dev_alloc(d, &d->scaler, sizeof *d->scaler) < 0) ||
        dev_alloc(d, &d->norm_part, d->norm_part_size * sizeof(double)) < 0 ||
        dev_alloc(d, &d->norm, sizeof(double)) < 0 || dev_alloc(d, &d->labels, nb * sizeof(int)) < 0 ||
        dev_alloc(d, &d->class_w, k * f) < 0 || dev_alloc(d, &d->prob, nb * k * f) < 0 ||
        dev_alloc(d, &d->terms, nb * sizeof(double)) < 0 || dev_alloc(d, &d->wsum, sizeof(double)) < 0 ||
        dev_alloc(d, &d->figs, (FU_FIGURE_SLOTS + 1) * sizeof(fu_step_figures)) < 0)
        return -1;
    if (!d->borrowed) {
        CU(cudaMemset(d->m1, 0, m->n_params * f)); // AdamW's moments start at zero
        CU(cudaMemset(d->m2, 0, m->n_params * f));
    }
    CU(cudaMemset(d->refused, 0, sizeof(int)));
    d->share_dev = d->bnv + d->bnv_size - 1;
    if (d->scaler) {
        fu_loss_scale start = {65536, 0}; // 2^16, GradScaler's start
        CU(cudaMemcpy(d->scaler, &start, sizeof start, cudaMemcpyHostToDevice));
    }
    if (conv_create_descriptors(d) < 0 || setup(d, d->batch) < 0) return -1;
    b->grad_bytes = d->dact_size * f;
    b->act_bytes = (act + d->dact_size + d->plan.aux_size + d->stage_size + d->coef_size) * f +
                   (2 * d->wt_size + d->hx_size + d->hy_size) * es + (d->part_size + d->bnv_size) * sizeof(double) +
                   d->argmax_size + d->ws_size;
    return 0;
}

int fu_cuda_device_count(char *why, size_t why_size) {
    int count = 0;
    cudaError_t e = cudaGetDeviceCount(&count);
    if (e != cudaSuccess) count = 0;
    if (!count && why) snprintf(why, why_size, "%s", e != cudaSuccess ? cudaGetErrorString(e) : "0 devices");
    return count;
}

int fu_cuda_device_name(char *out, size_t size) {
    int dev = 0, rt = 0;
    cudaDeviceProp p;
    if (cudaGetDevice(&dev) != cudaSuccess || cudaGetDeviceProperties(&p, dev) != cudaSuccess ||
        cudaRuntimeGetVersion(&rt) != cudaSuccess)
        return -1;
    size_t v = cudnnGetVersion(); // major * 10000 + minor * 100 + patch since cuDNN 9
    snprintf(out, size, "%s (sm_%d%d, %d SMs, %.0f GiB; CUDA runtime %d.%d, cuDNN %zu.%zu.%zu)", p.name, p.major,
             p.minor, p.multiProcessorCount, p.totalGlobalMem / 1073741824.0, rt / 1000, rt % 1000 / 10, v / 10000,
             v / 100 % 100, v % 100);
    return 0;
}

void fu_cuda_profile_report(fu_backend *b, char *out, size_t size, bool reset) {
    if (size) out[0] = 0;
    if (!b || strcmp(b->name, "cuda") != 0) return;
    cu_net *d = (cu_net *)b->impl;
    cu_profile_report(d->prof, out, size);
    if (reset) cu_profile_reset(d->prof);
}

// Lets this GPU read the others' memory directly (model-parallel stages
// hand tensors over with cudaMemcpyDefault), where the hardware allows. Not
// an error where it does not, or where it is on already (another stage's
// backend on the same GPU turned it on): such copies go through the host.
static void enable_peers(int device, int count) {
    for (int peer = 0; peer < count; peer++) {
        int can = 0;
        if (peer == device || cudaDeviceCanAccessPeer(&can, device, peer) != cudaSuccess || !can) continue;
        cudaDeviceEnablePeerAccess(peer, 0);
    }
    cudaGetLastError(); // cudaErrorPeerAccessAlreadyEnabled, or any refusal: not this backend's error
}

// fu_backend_opts.weights_of: d computes with the lender's device weights
// and BN state (a lender that holds its own, of a model of the same sizes,
// on the same GPU).
static int borrow(cu_net *d, const fu_backend *lender) {
    const cu_net *l = (const cu_net *)lender->impl;
    if (lender->destroy != cu_destroy || l->borrowed || l->m->n_params != d->m->n_params ||
        l->m->n_state != d->m->n_state || l->device != d->device)
        return fu_fail("cuda backend", "weights_of: not a cuda backend holding the weights of the same model on "
                                       "GPU %d", d->device);
    d->params = l->params, d->state = l->state, d->borrowed = true;
    return 0;
}

int fu_cuda_backend_create(const fu_model *m, const fu_backend_opts *o, fu_backend **out) {
    *out = NULL;
    const char *api = getenv("FU_CUDNN_API");
    if (api && *api && strcmp(api, "graph") != 0 && strcmp(api, "legacy") != 0)
        return fu_fail("cuda backend", "FU_CUDNN_API=%s: graph (the default) or legacy", api);
    char why[160];
    int count = fu_cuda_device_count(why, sizeof why);
    if (!count) return fu_fail("cuda backend", "no CUDA device: %s", why);
    if (o->device < 0 || o->device >= count)
        return fu_fail("cuda backend", "GPU %d asked for; this process sees %d", o->device, count);
    if (cudaSetDevice(o->device) != cudaSuccess)
        return fu_fail("cuda backend", "cannot use GPU %d", o->device);
    fu_backend *b = (fu_backend *)fu_calloc(1, sizeof *b);
    cu_net *d = (cu_net *)fu_calloc(1, sizeof *d);
    if (!b || !d) {
        free(b), free(d);
        return -1;
    }
    pthread_mutex_init(&d->pre_lock, NULL); // before anything cu_destroy may undo
    d->m = m;
    d->b = b;
    d->batch = o->batch;
    d->device = o->device;
    d->amp = o->amp;
    d->scale_by_caller = o->loss_scale_by_caller;
    d->bf16 = o->amp == FU_AMP_BF16;
    d->dt = o->amp == FU_AMP_OFF ? CUDNN_DATA_FLOAT : d->bf16 ? CUDNN_DATA_BFLOAT16 : CUDNN_DATA_HALF;
    d->es = o->amp == FU_AMP_OFF ? sizeof(float) : 2;
    d->api = api && strcmp(api, "legacy") == 0  ? CU_API_LEGACY
             : api && strcmp(api, "graph") == 0 ? CU_API_GRAPH
                                                : CU_API_AUTO;
    const char *sync = getenv("FU_CUDA_SYNC");
    d->sync = sync && *sync && strcmp(sync, "0") != 0;
    d->prof = cu_profile_create();
    b->name = "cuda", b->m = m, b->batch = o->batch, b->amp = o->amp, b->impl = d;
    b->forward = cu_forward, b->logits = cu_logits, b->backward = cu_backward, b->input_grad = cu_input_grad;
    b->destroy = cu_destroy, b->reports_grads = true, b->nccl = &CU_NCCL_API, b->resident = &CU_RESIDENT_API;
    b->host_alloc = cu_host_alloc, b->host_free = cu_host_free, b->prefetch = cu_prefetch;
    b->device_output = cu_device_output, b->device_input_grad = cu_device_input_grad;
    b->conv_note = d->conv_note;
    if (d->amp == FU_AMP_FP16) b->loss_scaling = cu_loss_scaling, b->set_loss_scaling = cu_set_loss_scaling;
    enable_peers(o->device, count);
    if ((o->weights_of && borrow(d, o->weights_of) < 0) || (o->conv_algos && conv_load_algos(d, o->conv_algos) < 0) ||
        create(d, b) < 0) {
        cu_destroy(b);
        return -1;
    }
    *out = b;
    return 0;
}
