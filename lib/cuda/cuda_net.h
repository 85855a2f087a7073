// The cuda backend's state (cu_net, cu_op) and what its files share:
// cuda_net.cu (the op list: forward, backward, create and destroy),
// cuda_resident.cu (the training state on the device: load, store, the
// optimizer step, fp16's loss scale, the NCCL hooks), cuda_plan.cu (its
// memory, planned once per batch: fusion, outputs, gradients) and
// cuda_conv.cu (the convolutions: cuDNN's descriptors, the choice of plans
// or algorithms, forward and backward). Internal to lib/cuda.
#ifndef FU_CUDA_NET_H
#define FU_CUDA_NET_H

#include "cuda/conv_algos.h"
#include "cuda/conv_graph.h"
#include "cuda/cuda_backend.h"
#include "cuda/cuda_ops.h"
#include "cuda/cuda_profile.h"
#include "cuda/nccl_sync.h"

extern "C" {
#include "core/error.h"
}

#include <cublas_v2.h>
#include <cuda_runtime.h>
#include <cudnn.h>

#include <pthread.h>
#include <stdio.h>

// Workspace cap for one convolution's algorithm: cuDNN's choices for the
// largest MedicalCNN layers at batch 32 need far less.
static const size_t WORKSPACE_CAP = (size_t)512 << 20;

// A convolution's graph API plans (conv_graph.h) for one batch size n (0:
// none): forward, backward data (adding into dx where backward adds, in
// fp32: beta is the plan's) and backward filter, or none where cuDNN could
// not plan them (legacy: the legacy API's, not tried again); used: when it
// was last set up (the least recent goes first when a new batch size needs
// a place).
typedef struct {
    int n;
    bool legacy;
    unsigned long used;
    cu_conv_plan fwd, dx, dw;
} cu_conv_set;

// Batch sizes whose plans a convolution keeps: a training run meets up to
// four (the batch, an epoch's last, and the same two in evaluation), and
// plans cost cuDNN's heuristics and a finalization each to make.
#define CU_CONV_SETS 4

typedef struct {
    cudnnTensorDescriptor_t x, y;    // conv input and output, NHWC
    cudnnFilterDescriptor_t w;       // conv weight, OHWI
    cudnnConvolutionDescriptor_t conv;
    cudnnConvolutionFwdAlgo_t fwd;
    cudnnConvolutionBwdDataAlgo_t bwd_data;
    cudnnConvolutionBwdFilterAlgo_t bwd_filter;
    cudnnMathType_t fwd_math, bwd_data_math, bwd_filter_math; // each algorithm's own
    // Through cuDNN's graph API instead of the legacy calls above (graph): with sets[set], the
    // plans for the images set up now.
    bool graph;
    cu_conv_set sets[CU_CONV_SETS];
    int set;
    size_t wt; // conv: element offset of its OHWI weight in wt and dwt
    size_t arg; // maxpool: byte offset in argmax of its maxima's places (cu_maxpool_fwd)
    int relu;   // BatchNorm, add: the ReLU it computes too (fusion, plan_fusion), else -1
    int scale;  // add: the SE scale it computes too, else -1
    bool fused; // ReLU, SE scale: computed by another op (a BatchNorm, an add)
    // Under amp, its output kept in half, and that output's gradient (plan_fusion): both for a
    // conv's, or a fused BatchNorm + ReLU's ReLU's; the output alone for a BatchNorm's, a
    // residual block's end or a max pooling's whose readers all take half.
    bool half_out, half_grad;
    size_t coef; // BatchNorm: offset in coef of the affine map its training forward applied
    size_t grad, grad_len; // its output's gradient: offset in dact (shared with gradients not alive with it), elements
    int first_writer; // the op whose backward writes that gradient first (n_ops: the output's, uploaded)
    bool cleared;     // zeroed before it, which adds into it as the others do (plan_gradients)
} cu_op;

// Which of cuDNN's APIs runs the convolutions: the graph API, the legacy one
// where the graph API has no engine for a shape (the default), the graph API
// alone (FU_CUDNN_API=graph), or the legacy API alone (FU_CUDNN_API=legacy).
typedef enum { CU_API_AUTO, CU_API_GRAPH, CU_API_LEGACY } cu_api;

// An input batch prefetched (backend.h's prefetch) on the copy stream: from
// which host buffer, how many images, whether a forward may still take it,
// its device copy (NCHW, the planned batch's size), and events for "copied"
// (the forward waits for it) and "read" (the next copy into it waits for it).
typedef struct {
    const float *host;
    int n;
    bool ready;
    float *dev;
    cudaEvent_t copied, read;
} cu_prefetch_slot;

// What a forward sends the device besides its images: the dropout masks, the
// labels and the class weights, from page-locked memory by asynchronous
// copies, so that the host does not wait for the GPU (a cudaMemcpy would).
// Two, used in turn: one is refilled once the copies made from it two
// forwards ago are done, which a host at most a step ahead never waits for.
typedef struct {
    float *mask;      // the forward's dropout masks, NCHW, one after another (send_mask_size)
    int *labels;      // (batch)
    float *class_w;   // (classes)
    cudaEvent_t sent; // recorded after the last copy made from it
    bool pending;     // sent is recorded and may not have happened yet
} cu_sendbuf;

typedef struct {
    const fu_model *m;
    fu_backend *b; // its owner, whose device_bytes it keeps current
    fu_plan plan;  // output and saved-value offsets per op (elements), as the reference
    int batch;     // planned
    int device;    // the GPU it runs on
    int n;         // images the descriptors and algorithms are set up for (0: none yet)
    cudnnHandle_t dnn;
    cublasHandle_t blas;
    cu_op *op;
    // device buffers
    float *params, *grads, *state; // copies of the caller's flat buffers, or the resident ones
    bool borrowed;                 // params and state are another backend's (weights_of): not freed here
    float *m1, *m2;                // AdamW's moments (n_params each), for the resident step (NULL: borrowed)
    double *norm_part, *norm;      // the gradient norm's partial sums, and the norm (one double)
    fu_param_group *groups;        // the resident step's groups: non-empty, sorted by offset (n_dev_groups)
    void *wt, *dwt;                // conv weights OHWI and their gradients: fp32, or half with amp
    float *act, *dact, *aux;       // op outputs (plan offsets), their gradients (cu_op.grad), saved values
    size_t dact_size;              // elements
    float *stage;                  // NCHW data on its way in or out: the input, a dropout mask, an output
    double *part;                  // partial sums: BatchNorm's, and over positions (cu_pos_part_size)
    double *bnv;                   // one BatchNorm's per-channel sums, their count, W_r (2 x the widest BN + 2)
    float *coef;                   // BatchNorm's per-channel coefficients: scratch, then each BN's forward map
    unsigned char *argmax;         // max pooling: where each window's maximum was (argmax_size bytes)
    size_t argmax_size;
    void *ws;                      // cuDNN workspace
    void *hx, *hy;                 // amp: a conv's input and output (or their gradients) in half
    int *nonfinite;                // amp fp16: a gradient of the last backward overflowed
    fu_loss_scale *scaler;         // amp fp16: the loss scale and its clean passes (dynamic, on the device)
    bool scale_by_caller;          // amp fp16: backward leaves *scaler to the caller (loss_scale_by_caller)
    int *refused;                  // steps refused (non-finite norm) since the host last read the figures
    // the loss (cu_xent_fwd/bwd): the last training forward's labels and class weights, softmax
    // (batch, classes), scratch terms (batch) and weight sum; the steps' figures (FU_FIGURE_SLOTS,
    // then one for a forward whose loss goes straight back)
    int *labels;
    float *class_w, *prob;
    double *terms, *wsum;
    fu_step_figures *figs;
    size_t wt_size, stage_size, part_size, coef_size, bnv_size, ws_size, hx_size, hy_size; // elements (ws: bytes)
    size_t norm_part_size, groups_bytes; // doubles; bytes
    int n_dev_groups;
    fu_amp amp;
    bool bf16;              // amp's half type: bfloat16, else fp16
    cudnnDataType_t dt;     // conv tensors: float, half or bfloat16
    size_t es;              // bytes per conv tensor element
    int fig_slot, fig_next; // the last training forward's figures slot; the next free one
    // host
    fu_param_group *host_groups; // the step's groups as the caller gave them (n_groups), to notice a change
    int n_groups;
    float *logits;            // the model's output, NCHW: (batch, classes), or a stage's last op's
    cu_sendbuf send[2];       // used in turn, from send_next
    int send_next;
    cu_sendbuf *sending;      // the running forward's, and the mask floats it has filled
    size_t send_used;
    size_t send_mask_size;    // floats: every dropout mask of a forward at the planned batch
    float *dinput;            // inner input: its gradient, NCHW (else NULL)
    // sync-BN (ref_net.h): the hooks of the last training forward where it ran
    // sync-BN (NULL: BN on this batch alone), this rank's W_r, W_r / W (on
    // the host; with NCCL in share_dev, bnv's last double), and the vector
    // the hook sums (2 x the widest BN + 2)
    const fu_dist_hooks *dist;
    double w_rank, share, *share_dev;
    double *dist_v;
    fu_nccl_sync *nccl; // gradients summed over ranks on the device in backward (NULL: not)
    fu_nccl_sync *nccl_after; // or by the caller, after backward (fu_nccl_api.sum_start)
    // Prefetched input batches: one slot per host buffer the trainer
    // alternates between; the copy stream; the lock between the loading
    // thread (prefetch) and the forward that takes a slot.
    cu_prefetch_slot pre[2];
    int pre_last; // the slot the last forward took
    cudaStream_t copy;
    pthread_mutex_t pre_lock;
    bool ready; // a training forward ran since the last backward
    bool sync;  // FU_CUDA_SYNC: synchronise after every op
    cu_profile *prof; // FU_CUDA_PROFILE: where the time goes (NULL: off)
    // --conv-algos FILE: the graph API's engine configurations (or the
    // legacy API's algorithms) measured and recorded there (conv_algos.h);
    // algos.path NULL: cuDNN's heuristics
    fu_algo_file algos;
    cu_api api;
    unsigned long setups; // convolution set-ups so far (cu_conv_set.used)
    char conv_note[384];  // fu_backend.conv_note, of the last set-up
    char graph_why[192];  // why the graph API could not plan a convolution, the last time it could not
    char algo_key[96]; // the records' key prefix: GPU, compute capability, cuDNN version, data type
    char what[192]; // the op running, for error messages
} cu_net;

#define CU(call)                                                                                            \
    do {                                                                                                    \
        cudaError_t e_ = (call);                                                                            \
        if (e_ != cudaSuccess) return fu_fail("cuda backend", "%s: %s", d->what, cudaGetErrorString(e_));    \
    } while (0)

// Whether NCCL's watchdog gave up on this backend's gradient sums
// (nccl_sync.h): then -1 with its error. Work after an aborted sum computes
// garbage, and the host learns of the abort only late, so every entry point
// asks (use_device) and every copy to the host (DOWNLOAD).
static inline int cu_sums_ok(const cu_net *d) {
    return fu_nccl_sync_check(d->nccl) < 0 || fu_nccl_sync_check(d->nccl_after) < 0 ? -1 : 0;
}

// A copy to the host, which waits for the device: CU, then cu_sums_ok.
#define DOWNLOAD(dst, src, bytes)                                                                           \
    do {                                                                                                    \
        CU(cudaMemcpy(dst, src, bytes, cudaMemcpyDeviceToHost));                                           \
        if (cu_sums_ok(d) < 0) return -1;                                                                   \
    } while (0)

#define DNN(call)                                                                                           \
    do {                                                                                                    \
        cudnnStatus_t s_ = (call);                                                                          \
        if (s_ != CUDNN_STATUS_SUCCESS)                                                                     \
            return fu_fail("cuda backend", "%s: cuDNN: %s", d->what, cudnnGetErrorString(s_));               \
    } while (0)

#define BLAS(call)                                                                                          \
    do {                                                                                                    \
        cublasStatus_t s_ = (call);                                                                         \
        if (s_ != CUBLAS_STATUS_SUCCESS)                                                                    \
            return fu_fail("cuda backend", "%s: cuBLAS: %s", d->what, cublasGetStatusString(s_));            \
    } while (0)

static const float ONE = 1, ZERO = 0;

// The profile's section of op kind k's forward or backward (cuda_profile.h).
static inline const char *section(fu_op_kind k, bool backward) {
    static const char *fwd[] = {"forward input", "forward conv (cuDNN)", "forward batchnorm", "forward relu",
                                "forward maxpool", "forward global pool", "forward linear", "forward sigmoid",
                                "forward scale", "forward add", "forward concat", "forward dropout", "forward loss"};
    static const char *bwd[] = {"backward input", "backward conv data (cuDNN)", "backward batchnorm",
                                "backward relu", "backward maxpool", "backward global pool", "backward linear",
                                "backward sigmoid", "backward scale", "backward add", "backward concat",
                                "backward dropout", "backward loss"};
    int n = (int)(sizeof fwd / sizeof *fwd);
    return k >= 0 && k < n ? (backward ? bwd : fwd)[k] : backward ? "backward other" : "forward other";
}

static inline void mark(cu_net *d, const char *label) { cu_profile_mark(d->prof, label, 0); }

// Profile sections besides the ops' own.
static const char *const FWD_CONVERT = "forward conv: weight layout, half conversions";
static const char *const BWD_CONVERT = "backward conv: weight layout, half conversions";

static inline float *act(cu_net *d, int i) { return d->act + d->plan.act[i]; }
static inline float *dact(cu_net *d, int i) { return d->dact + d->op[i].grad; }

// The element type of op i's output in act, and of its gradient in dact.
static inline cu_type half_or_fp32(const cu_net *d, bool in_half) { return !in_half ? CU_FP32 : d->bf16 ? CU_BF16 : CU_FP16; }
static inline cu_type out_type(const cu_net *d, int i) { return half_or_fp32(d, d->op[i].half_out); }
static inline cu_type grad_type(const cu_net *d, int i) { return half_or_fp32(d, d->op[i].half_grad); }

// The gradient of op j's output where backward needs it: the image needs
// none, a stage's inner input does (input_grad); NULL otherwise.
static inline float *grad_of(cu_net *d, int j) { return j > 0 || d->m->inner_input ? dact(d, j) : NULL; }

// Whether op w's backward adds into op o's gradient, rather than writing it
// as its first writer (plan_gradients).
static inline bool adds(const cu_net *d, int w, int o) { return d->op[o].cleared || d->op[o].first_writer != w; }

static inline bool ends_in_loss(const fu_model *m) { return m->ops[m->n_ops - 1].kind == FU_OP_XENT; }

// The op whose output is the model's: the logits before the loss, or a
// stage's last op.
static inline int output_op(const fu_model *m) {
    int last = m->n_ops - 1;
    return ends_in_loss(m) ? m->ops[last].in[0] : last;
}

// The widest BN: sync-BN's sums are 2 x its channels (+ 2).
static inline int widest_bn(const fu_model *m) {
    int c = 0;
    for (int i = 0; i < m->n_ops; i++)
        if (m->ops[i].kind == FU_OP_BN && m->ops[i].c > c) c = m->ops[i].c;
    return c;
}

// ---- cuda_net.cu --------------------------------------------------------------------

// Makes d's GPU the calling thread's (a backend created in one thread may
// run in another: a rank's, a pipeline stage's) and checks its NCCL sums.
int use_device(cu_net *d);
// After each op: a launch error now, an asynchronous one too with FU_CUDA_SYNC.
int op_done(cu_net *d);
// fu_backend.destroy; also how a cuda backend is told from the others.
void cu_destroy(fu_backend *b);
// cudaMalloc of bytes into *(void **)p, counted in the backend's device_bytes.
int dev_alloc(cu_net *d, void *p, size_t bytes);

// ---- cuda_resident.cu ---------------------------------------------------------------

extern const fu_resident_api CU_RESIDENT_API;
extern const fu_nccl_api CU_NCCL_API;
// fp16's loss scaling state (fu_backend.loss_scaling, set_loss_scaling).
int cu_loss_scaling(const fu_backend *b, fu_loss_scale *out);
int cu_set_loss_scaling(fu_backend *b, const fu_loss_scale *in);

// ---- cuda_plan.cu -------------------------------------------------------------------

// Fusion, and which outputs and gradients stay in half (FU_CUDA_FUSE,
// FU_CUDA_HALF_ACT).
void plan_fusion(cu_net *d);
// Sizes of the scratch buffers at the planned batch.
void plan_scratch(cu_net *d);
// Where outputs go (d->plan.act, act_size).
void plan_outputs(cu_net *d);
// Where gradients go and who writes each first (FU_CUDA_REUSE).
int plan_gradients(cu_net *d);
// Every op's output within the kernels' 32-bit indexing.
int check_sizes(const cu_net *d);
// Device bytes for the planned batch (without the convolution workspace),
// *fixed: the part that does not grow with the batch.
size_t planned_bytes(const cu_net *d, size_t *fixed);
// Out of GPU memory at this batch: the error, with the largest batch that fits.
int fail_oom(const cu_net *d, size_t need, size_t fixed, size_t free_bytes);

// ---- cuda_conv.cu -------------------------------------------------------------------

// Convolution i's descriptors, plans or algorithms for n images; ws grows to
// the workspace they need.
int conv_setup(cu_net *d, int i, int n, size_t *ws);
// fu_backend.conv_note: how the last set-up chose (d->conv_note).
void conv_note(cu_net *d);
// Convolution i on n images: y from x; in backward, dx (NULL: not asked
// for) written or, add, added to, and the weight gradient written.
int conv_fwd(cu_net *d, int i, int n, const float *x, float *y);
int conv_bwd(cu_net *d, int i, int n, const float *x, const float *dy, float *dx, bool add);
int conv_create_descriptors(cu_net *d);
void conv_free(cu_op *o); // its descriptors and plans
// --conv-algos FILE: its records, and this backend's key prefix.
int conv_load_algos(cu_net *d, const char *path);

#endif
