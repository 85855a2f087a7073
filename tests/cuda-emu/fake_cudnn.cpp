// A fake cuDNN on the host (real signatures, from cudnn.h): what
// lib/cuda/cuda_net.cu uses. Descriptors keep what was set; convolutions
// (cross-correlation, NHWC tensors, NHWC = OHWI "KRSC" filters, any pad,
// stride, dilation, one group) run as im2col / col2im around oneDNN's sgemm
// (fake_gemm.h), per image. FLOAT, HALF and BFLOAT16 data are converted to float, computed
// in float (sums in float, as cuDNN accumulates), and the result
// alpha * op + beta * old converted back. The heuristics (Get*_v7) offer
// one algorithm (0, deterministic, the descriptor's math type, no
// workspace); the measurements (Find*) three, as a real cuDNN offers
// several: 1, non-deterministic, always fastest, and 0 and 2, deterministic,
// which of them is faster alternating from one handle to the next, the
// first by the process id (as close timings vary from run to run). Backward-filter with algorithm 2 sums the images in reverse
// order, so that a run with another choice gives other bytes, as on a GPU.
// Anything else is CUDNN_STATUS_NOT_SUPPORTED, never a wrong answer.
// The graph API's descriptors (what lib/cuda/conv_graph.cu builds) run the
// same convolutions: see the section at the end.
// FAKE_CUDNN_FAIL=NAME[:K] makes the K-th run (default the first) of the
// convolution pass NAME (cudnnConvolutionForward, ...BackwardData,
// ...BackwardFilter; a graph API plan of that pass counts as a call) in
// the process fail with CUDNN_STATUS_EXECUTION_FAILED,
// as a GPU fault would, for the backend's error path.
#include <cudnn.h>
#include <cuda_bf16.h>
#include <cuda_fp16.h>
#include <dnnl.h>

#include "fake_gemm.h"

#include <atomic>
#include <map>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>
#include <vector>

// Whether this call of fn is the one FAKE_CUDNN_FAIL names (calls counted
// per function name, in a counter of the caller's).
static bool injected_failure(const char *fn, std::atomic<int> *calls) {
    const char *v = getenv("FAKE_CUDNN_FAIL");
    size_t len = strlen(fn);
    if (!v || strncmp(v, fn, len) != 0 || (v[len] != 0 && v[len] != ':')) return false;
    int k = v[len] == ':' ? atoi(v + len + 1) : 1;
    return ++*calls == k;
}

struct cudnnContext {
    int serial; // handles created before it: which of two algorithms its measurements rank first
};

struct cudnnTensorStruct {
    bool set;
    cudnnTensorFormat_t format;
    cudnnDataType_t dt;
    int n, c, h, w;
};

struct cudnnFilterStruct {
    bool set;
    cudnnDataType_t dt;
    cudnnTensorFormat_t format;
    int k, c, h, w;
};

struct cudnnConvolutionStruct {
    bool set;
    int pad_h, pad_w, u, v, dil_h, dil_w;
    cudnnConvolutionMode_t mode;
    cudnnDataType_t compute;
    cudnnMathType_t math;
};

template <class T> static cudnnStatus_t make(T **p) {
    if (!p) return CUDNN_STATUS_BAD_PARAM;
    *p = (T *)calloc(1, sizeof **p);
    return *p ? CUDNN_STATUS_SUCCESS : CUDNN_STATUS_ALLOC_FAILED;
}

static bool supported_type(cudnnDataType_t dt) {
    return dt == CUDNN_DATA_FLOAT || dt == CUDNN_DATA_HALF || dt == CUDNN_DATA_BFLOAT16;
}


// n elements of type dt at p, as floats.
static std::vector<float> to_float(cudnnDataType_t dt, const void *p, size_t n) {
    std::vector<float> v(n);
    if (dt == CUDNN_DATA_FLOAT) memcpy(v.data(), p, n * sizeof(float));
    else if (dt == CUDNN_DATA_HALF)
        for (size_t i = 0; i < n; i++) v[i] = __half2float(((const __half *)p)[i]);
    else
        for (size_t i = 0; i < n; i++) v[i] = __bfloat162float(((const __nv_bfloat16 *)p)[i]);
    return v;
}

// out = alpha * r + beta * out (out not read where beta is 0), in dt.
static void blend(cudnnDataType_t dt, const void *alpha, const std::vector<float> &r, const void *beta, void *out) {
    float a = *(const float *)alpha, b = *(const float *)beta;
    size_t n = r.size();
    std::vector<float> old = b != 0 ? to_float(dt, out, n) : std::vector<float>();
    for (size_t i = 0; i < n; i++) {
        float v = a * r[i] + (b != 0 ? b * old[i] : 0.0f);
        if (dt == CUDNN_DATA_FLOAT) ((float *)out)[i] = v;
        else if (dt == CUDNN_DATA_HALF) ((__half *)out)[i] = __float2half_rn(v);
        else ((__nv_bfloat16 *)out)[i] = __float2bfloat16_rn(v);
    }
}

extern "C" {

size_t cudnnGetVersion(void) { return CUDNN_VERSION; }

const char *cudnnGetErrorString(cudnnStatus_t s) {
    switch (s) {
    case CUDNN_STATUS_SUCCESS: return "CUDNN_STATUS_SUCCESS";
    case CUDNN_STATUS_BAD_PARAM: return "CUDNN_STATUS_BAD_PARAM";
    case CUDNN_STATUS_NOT_SUPPORTED: return "CUDNN_STATUS_NOT_SUPPORTED";
    case CUDNN_STATUS_ALLOC_FAILED: return "CUDNN_STATUS_ALLOC_FAILED";
    case CUDNN_STATUS_EXECUTION_FAILED: return "CUDNN_STATUS_EXECUTION_FAILED";
    default: return "CUDNN_STATUS_UNKNOWN (fake cuDNN)";
    }
}

// The handle and the descriptors: a Create that allocates one (make) and a
// Destroy that frees it, for each type.
#define HANDLE(type, create, destroy)                                                                      \
    cudnnStatus_t create(type *p) { return make(p); }                                                      \
    cudnnStatus_t destroy(type p) {                                                                        \
        free(p);                                                                                           \
        return CUDNN_STATUS_SUCCESS;                                                                       \
    }

cudnnStatus_t cudnnCreate(cudnnHandle_t *p) {
    static int handles = (int)getpid();
    cudnnStatus_t s = make(p);
    if (s == CUDNN_STATUS_SUCCESS) (*p)->serial = handles++;
    return s;
}

cudnnStatus_t cudnnDestroy(cudnnHandle_t p) {
    free(p);
    return CUDNN_STATUS_SUCCESS;
}

// ---- descriptors ------------------------------------------------------------------------

HANDLE(cudnnTensorDescriptor_t, cudnnCreateTensorDescriptor, cudnnDestroyTensorDescriptor)
HANDLE(cudnnFilterDescriptor_t, cudnnCreateFilterDescriptor, cudnnDestroyFilterDescriptor)
HANDLE(cudnnConvolutionDescriptor_t, cudnnCreateConvolutionDescriptor, cudnnDestroyConvolutionDescriptor)

cudnnStatus_t cudnnSetTensor4dDescriptor(cudnnTensorDescriptor_t t, cudnnTensorFormat_t format,
                                         cudnnDataType_t dt, int n, int c, int h, int w) {
    if (!t || n < 1 || c < 1 || h < 1 || w < 1) return CUDNN_STATUS_BAD_PARAM;
    if (format != CUDNN_TENSOR_NHWC || !supported_type(dt)) return CUDNN_STATUS_NOT_SUPPORTED;
    *t = {true, format, dt, n, c, h, w};
    return CUDNN_STATUS_SUCCESS;
}

cudnnStatus_t cudnnSetFilter4dDescriptor(cudnnFilterDescriptor_t f, cudnnDataType_t dt, cudnnTensorFormat_t format,
                                         int k, int c, int h, int w) {
    if (!f || k < 1 || c < 1 || h < 1 || w < 1) return CUDNN_STATUS_BAD_PARAM;
    if (format != CUDNN_TENSOR_NHWC || !supported_type(dt)) return CUDNN_STATUS_NOT_SUPPORTED;
    *f = {true, dt, format, k, c, h, w};
    return CUDNN_STATUS_SUCCESS;
}

cudnnStatus_t cudnnSetConvolution2dDescriptor(cudnnConvolutionDescriptor_t c, int pad_h, int pad_w, int u, int v,
                                              int dil_h, int dil_w, cudnnConvolutionMode_t mode,
                                              cudnnDataType_t compute) {
    if (!c || pad_h < 0 || pad_w < 0 || u < 1 || v < 1 || dil_h < 1 || dil_w < 1) return CUDNN_STATUS_BAD_PARAM;
    if (mode != CUDNN_CROSS_CORRELATION || compute != CUDNN_DATA_FLOAT) return CUDNN_STATUS_NOT_SUPPORTED;
    cudnnMathType_t math = c->math;
    *c = {true, pad_h, pad_w, u, v, dil_h, dil_w, mode, compute, math};
    return CUDNN_STATUS_SUCCESS;
}

cudnnStatus_t cudnnSetConvolutionMathType(cudnnConvolutionDescriptor_t c, cudnnMathType_t math) {
    if (!c) return CUDNN_STATUS_BAD_PARAM;
    c->math = math;
    return CUDNN_STATUS_SUCCESS;
}

static int conv_out(int in, int pad, int k, int dil, int stride) { return (in + 2 * pad - ((k - 1) * dil + 1)) / stride + 1; }

cudnnStatus_t cudnnGetConvolution2dForwardOutputDim(const cudnnConvolutionDescriptor_t c,
                                                    const cudnnTensorDescriptor_t x, const cudnnFilterDescriptor_t f,
                                                    int *n, int *k, int *h, int *w) {
    if (!c || !x || !f || !c->set || !x->set || !f->set || x->c != f->c) return CUDNN_STATUS_BAD_PARAM;
    *n = x->n, *k = f->k;
    *h = conv_out(x->h, c->pad_h, f->h, c->dil_h, c->u);
    *w = conv_out(x->w, c->pad_w, f->w, c->dil_w, c->v);
    return *h >= 1 && *w >= 1 ? CUDNN_STATUS_SUCCESS : CUDNN_STATUS_BAD_PARAM;
}

} // extern "C"

// ---- algorithm choice: one algorithm, no workspace ------------------------------------

template <class Perf, class Algo> static cudnnStatus_t one_algo(const cudnnConvolutionDescriptor_t c, int requested,
                                                                int *got, Perf *perf) {
    if (!c || !c->set || requested < 1 || !got || !perf) return CUDNN_STATUS_BAD_PARAM;
    memset(perf, 0, sizeof *perf);
    perf->algo = (Algo)0;
    perf->status = CUDNN_STATUS_SUCCESS;
    perf->memory = 0;
    perf->determinism = CUDNN_DETERMINISTIC;
    perf->mathType = c->math;
    *got = 1;
    return CUDNN_STATUS_SUCCESS;
}

template <class Perf, class Algo>
static cudnnStatus_t measured(cudnnHandle_t h, const cudnnConvolutionDescriptor_t c, int requested, int *got,
                              Perf *perf) {
    if (!h || !c || !c->set || requested < 1 || !got || !perf) return CUDNN_STATUS_BAD_PARAM;
    bool two_first = h->serial % 2;
    static const int order[2][3] = {{1, 0, 2}, {1, 2, 0}};
    *got = requested < 3 ? requested : 3;
    for (int k = 0; k < *got; k++) {
        memset(&perf[k], 0, sizeof perf[k]);
        perf[k].algo = (Algo)order[two_first][k];
        perf[k].status = CUDNN_STATUS_SUCCESS;
        perf[k].time = 1.0f + k;
        perf[k].determinism = perf[k].algo == 1 ? CUDNN_NON_DETERMINISTIC : CUDNN_DETERMINISTIC;
        perf[k].mathType = c->math;
    }
    return CUDNN_STATUS_SUCCESS;
}

extern "C" {

cudnnStatus_t cudnnFindConvolutionForwardAlgorithm(cudnnHandle_t h, const cudnnTensorDescriptor_t x,
                                                   const cudnnFilterDescriptor_t w,
                                                   const cudnnConvolutionDescriptor_t c,
                                                   const cudnnTensorDescriptor_t y, const int requested, int *got,
                                                   cudnnConvolutionFwdAlgoPerf_t *perf) {
    return measured<cudnnConvolutionFwdAlgoPerf_t, cudnnConvolutionFwdAlgo_t>(h, c, requested, got, perf);
}

cudnnStatus_t cudnnFindConvolutionBackwardDataAlgorithm(cudnnHandle_t h, const cudnnFilterDescriptor_t w,
                                                        const cudnnTensorDescriptor_t dy,
                                                        const cudnnConvolutionDescriptor_t c,
                                                        const cudnnTensorDescriptor_t dx, const int requested,
                                                        int *got, cudnnConvolutionBwdDataAlgoPerf_t *perf) {
    return measured<cudnnConvolutionBwdDataAlgoPerf_t, cudnnConvolutionBwdDataAlgo_t>(h, c, requested, got, perf);
}

cudnnStatus_t cudnnFindConvolutionBackwardFilterAlgorithm(cudnnHandle_t h, const cudnnTensorDescriptor_t x,
                                                          const cudnnTensorDescriptor_t dy,
                                                          const cudnnConvolutionDescriptor_t c,
                                                          const cudnnFilterDescriptor_t dw, const int requested,
                                                          int *got, cudnnConvolutionBwdFilterAlgoPerf_t *perf) {
    return measured<cudnnConvolutionBwdFilterAlgoPerf_t, cudnnConvolutionBwdFilterAlgo_t>(h, c, requested, got, perf);
}

cudnnStatus_t cudnnGetConvolutionForwardAlgorithm_v7(cudnnHandle_t h, const cudnnTensorDescriptor_t x,
                                                     const cudnnFilterDescriptor_t w,
                                                     const cudnnConvolutionDescriptor_t c,
                                                     const cudnnTensorDescriptor_t y, const int requested, int *got,
                                                     cudnnConvolutionFwdAlgoPerf_t *perf) {
    return one_algo<cudnnConvolutionFwdAlgoPerf_t, cudnnConvolutionFwdAlgo_t>(c, requested, got, perf);
}

cudnnStatus_t cudnnGetConvolutionBackwardDataAlgorithm_v7(cudnnHandle_t h, const cudnnFilterDescriptor_t w,
                                                          const cudnnTensorDescriptor_t dy,
                                                          const cudnnConvolutionDescriptor_t c,
                                                          const cudnnTensorDescriptor_t dx, const int requested,
                                                          int *got, cudnnConvolutionBwdDataAlgoPerf_t *perf) {
    return one_algo<cudnnConvolutionBwdDataAlgoPerf_t, cudnnConvolutionBwdDataAlgo_t>(c, requested, got, perf);
}

cudnnStatus_t cudnnGetConvolutionBackwardFilterAlgorithm_v7(cudnnHandle_t h, const cudnnTensorDescriptor_t x,
                                                            const cudnnTensorDescriptor_t dy,
                                                            const cudnnConvolutionDescriptor_t c,
                                                            const cudnnFilterDescriptor_t dw, const int requested,
                                                            int *got, cudnnConvolutionBwdFilterAlgoPerf_t *perf) {
    return one_algo<cudnnConvolutionBwdFilterAlgoPerf_t, cudnnConvolutionBwdFilterAlgo_t>(c, requested, got, perf);
}

cudnnStatus_t cudnnGetConvolutionForwardWorkspaceSize(cudnnHandle_t h, const cudnnTensorDescriptor_t x,
                                                      const cudnnFilterDescriptor_t w,
                                                      const cudnnConvolutionDescriptor_t c,
                                                      const cudnnTensorDescriptor_t y, cudnnConvolutionFwdAlgo_t algo,
                                                      size_t *bytes) {
    *bytes = 0;
    return CUDNN_STATUS_SUCCESS;
}

cudnnStatus_t cudnnGetConvolutionBackwardDataWorkspaceSize(cudnnHandle_t h, const cudnnFilterDescriptor_t w,
                                                           const cudnnTensorDescriptor_t dy,
                                                           const cudnnConvolutionDescriptor_t c,
                                                           const cudnnTensorDescriptor_t dx,
                                                           cudnnConvolutionBwdDataAlgo_t algo, size_t *bytes) {
    *bytes = 0;
    return CUDNN_STATUS_SUCCESS;
}

cudnnStatus_t cudnnGetConvolutionBackwardFilterWorkspaceSize(cudnnHandle_t h, const cudnnTensorDescriptor_t x,
                                                             const cudnnTensorDescriptor_t dy,
                                                             const cudnnConvolutionDescriptor_t c,
                                                             const cudnnFilterDescriptor_t dw,
                                                             cudnnConvolutionBwdFilterAlgo_t algo, size_t *bytes) {
    *bytes = 0;
    return CUDNN_STATUS_SUCCESS;
}

} // extern "C"

// ---- convolution ------------------------------------------------------------------------

// One convolution's shapes, checked against each other.
struct conv_shape {
    int n, c, h, w;     // input
    int k, r, s;        // filter: k outputs, r x s window
    int oh, ow;         // output
    int ph, pw, u, v, dh, dw;
    size_t rsc() const { return (size_t)r * s * c; }
    size_t pixels() const { return (size_t)oh * ow; }
};

static cudnnStatus_t shape_of(const cudnnTensorStruct *x, const cudnnFilterStruct *f, const cudnnConvolutionStruct *cv,
                              const cudnnTensorStruct *y, conv_shape *s) {
    if (!x || !f || !cv || !y || !x->set || !f->set || !cv->set || !y->set) return CUDNN_STATUS_BAD_PARAM;
    if (x->dt != f->dt || x->dt != y->dt) return CUDNN_STATUS_NOT_SUPPORTED;
    *s = {x->n, x->c, x->h, x->w, f->k, f->h, f->w, y->h, y->w, cv->pad_h, cv->pad_w, cv->u, cv->v, cv->dil_h, cv->dil_w};
    if (f->c != x->c || y->c != f->k || y->n != x->n || y->h != conv_out(x->h, s->ph, s->r, s->dh, s->u) ||
        y->w != conv_out(x->w, s->pw, s->s, s->dw, s->v))
        return CUDNN_STATUS_BAD_PARAM;
    return CUDNN_STATUS_SUCCESS;
}

// Image img of x (NHWC) as rows of (r, s, c) windows, one per output pixel:
// col (oh * ow, r * s * c), zeros where the window is in the padding.
static void im2col(const conv_shape &s, const float *x, float *col) {
#pragma omp parallel for schedule(static)
    for (int oy = 0; oy < s.oh; oy++)
        for (int ox = 0; ox < s.ow; ox++) {
            float *row = col + ((size_t)oy * s.ow + ox) * s.rsc();
            for (int ky = 0; ky < s.r; ky++)
                for (int kx = 0; kx < s.s; kx++) {
                    int iy = oy * s.u - s.ph + ky * s.dh, ix = ox * s.v - s.pw + kx * s.dw;
                    float *dst = row + ((size_t)ky * s.s + kx) * s.c;
                    if (iy < 0 || iy >= s.h || ix < 0 || ix >= s.w) memset(dst, 0, s.c * sizeof(float));
                    else memcpy(dst, x + ((size_t)iy * s.w + ix) * s.c, s.c * sizeof(float));
                }
        }
}

// The adjoint of im2col: every window element of col added back into dx
// (one image, NHWC, zeroed by the caller).
static void col2im(const conv_shape &s, const float *col, float *dx) {
    // Parallel over input rows: each thread adds only into its own rows.
#pragma omp parallel for schedule(static)
    for (int iy = 0; iy < s.h; iy++)
        for (int oy = 0; oy < s.oh; oy++)
            for (int ky = 0; ky < s.r; ky++) {
                if (oy * s.u - s.ph + ky * s.dh != iy) continue;
                for (int ox = 0; ox < s.ow; ox++)
                    for (int kx = 0; kx < s.s; kx++) {
                        int ix = ox * s.v - s.pw + kx * s.dw;
                        if (ix < 0 || ix >= s.w) continue;
                        const float *src = col + ((size_t)oy * s.ow + ox) * s.rsc() + ((size_t)ky * s.s + kx) * s.c;
                        float *dst = dx + ((size_t)iy * s.w + ix) * s.c;
                        for (int ch = 0; ch < s.c; ch++) dst[ch] += src[ch];
                    }
            }
}

static bool gemm(char ta, char tb, size_t m, size_t n, size_t k, const float *a, size_t lda, const float *b,
                 size_t ldb, float beta, float *c, size_t ldc) {
    return fake_sgemm(ta, tb, (dnnl_dim_t)m, (dnnl_dim_t)n, (dnnl_dim_t)k, 1.0f, a, (dnnl_dim_t)lda, b,
                      (dnnl_dim_t)ldb, beta, c, (dnnl_dim_t)ldc) == dnnl_success;
}

// The three passes, in the forward's roles: x (dx for backward data), w
// (dw for backward filter), y (dy for both backward passes).
enum fake_pass { PASS_FWD, PASS_BWD_DATA, PASS_BWD_FILTER };

// FAKE_CUDNN_FAIL counts a pass's runs by the legacy function's name,
// through either API.
static const char *const PASS_CALL[3] = {"cudnnConvolutionForward", "cudnnConvolutionBackwardData",
                                         "cudnnConvolutionBackwardFilter"};
static std::atomic<int> pass_runs[3];

// Pass p of convolution s on tensors of type dt; its output = alpha *
// result + beta * output. reverse: backward filter sums the images last
// to first (another algorithm's order).
static cudnnStatus_t run_pass(fake_pass p, const conv_shape &s, cudnnDataType_t dt, const void *alpha,
                              const void *beta, void *x, void *w, void *y, bool reverse) {
    if (injected_failure(PASS_CALL[p], &pass_runs[p])) return CUDNN_STATUS_EXECUTION_FAILED;
    size_t in_img = (size_t)s.h * s.w * s.c, out_img = s.pixels() * s.k;
    size_t nx = s.n * in_img, nw = s.k * s.rsc(), ny = s.n * out_img;
    std::vector<float> col(s.pixels() * s.rsc());
    if (p == PASS_FWD) { // y (n, oh, ow, k) = x windows (oh * ow, rsc) w^T, w (k, rsc), per image
        std::vector<float> xf = to_float(dt, x, nx), wf = to_float(dt, w, nw), out(ny);
        for (int i = 0; i < s.n; i++) {
            im2col(s, xf.data() + i * in_img, col.data());
            if (!gemm('N', 'T', s.pixels(), s.k, s.rsc(), col.data(), s.rsc(), wf.data(), s.rsc(), 0,
                      out.data() + i * out_img, s.k))
                return CUDNN_STATUS_EXECUTION_FAILED;
        }
        blend(dt, alpha, out, beta, y);
    } else if (p == PASS_BWD_DATA) { // dx windows (oh * ow, rsc) = dy (oh * ow, k) w (k, rsc), added back per image
        std::vector<float> dyf = to_float(dt, y, ny), wf = to_float(dt, w, nw), out(nx, 0.0f);
        for (int i = 0; i < s.n; i++) {
            if (!gemm('N', 'N', s.pixels(), s.rsc(), s.k, dyf.data() + i * out_img, s.k, wf.data(), s.rsc(), 0,
                      col.data(), s.rsc()))
                return CUDNN_STATUS_EXECUTION_FAILED;
            col2im(s, col.data(), out.data() + i * in_img);
        }
        blend(dt, alpha, out, beta, x);
    } else { // dw (k, rsc) = sum over images of dy^T (k, oh * ow) x windows (oh * ow, rsc)
        std::vector<float> xf = to_float(dt, x, nx), dyf = to_float(dt, y, ny), out(nw, 0.0f);
        for (int j = 0; j < s.n; j++) {
            int i = reverse ? s.n - 1 - j : j;
            im2col(s, xf.data() + i * in_img, col.data());
            if (!gemm('T', 'N', s.k, s.rsc(), s.pixels(), dyf.data() + i * out_img, s.k, col.data(), s.rsc(), 1,
                      out.data(), s.rsc()))
                return CUDNN_STATUS_EXECUTION_FAILED;
        }
        blend(dt, alpha, out, beta, w);
    }
    return CUDNN_STATUS_SUCCESS;
}

extern "C" {

cudnnStatus_t cudnnConvolutionForward(cudnnHandle_t h, const void *alpha, const cudnnTensorDescriptor_t xd,
                                      const void *x, const cudnnFilterDescriptor_t wd, const void *w,
                                      const cudnnConvolutionDescriptor_t cd, cudnnConvolutionFwdAlgo_t algo,
                                      void *ws, size_t ws_bytes, const void *beta, const cudnnTensorDescriptor_t yd,
                                      void *y) {
    conv_shape s;
    cudnnStatus_t st = shape_of(xd, wd, cd, yd, &s);
    if (st != CUDNN_STATUS_SUCCESS) return st;
    if ((int)algo > 2) return CUDNN_STATUS_NOT_SUPPORTED;
    return run_pass(PASS_FWD, s, xd->dt, alpha, beta, (void *)x, (void *)w, y, false);
}

cudnnStatus_t cudnnConvolutionBackwardData(cudnnHandle_t h, const void *alpha, const cudnnFilterDescriptor_t wd,
                                           const void *w, const cudnnTensorDescriptor_t dyd, const void *dy,
                                           const cudnnConvolutionDescriptor_t cd, cudnnConvolutionBwdDataAlgo_t algo,
                                           void *ws, size_t ws_bytes, const void *beta,
                                           const cudnnTensorDescriptor_t dxd, void *dx) {
    conv_shape s;
    cudnnStatus_t st = shape_of(dxd, wd, cd, dyd, &s);
    if (st != CUDNN_STATUS_SUCCESS) return st;
    if ((int)algo > 2) return CUDNN_STATUS_NOT_SUPPORTED;
    return run_pass(PASS_BWD_DATA, s, dxd->dt, alpha, beta, dx, (void *)w, (void *)dy, false);
}

cudnnStatus_t cudnnConvolutionBackwardFilter(cudnnHandle_t h, const void *alpha, const cudnnTensorDescriptor_t xd,
                                             const void *x, const cudnnTensorDescriptor_t dyd, const void *dy,
                                             const cudnnConvolutionDescriptor_t cd,
                                             cudnnConvolutionBwdFilterAlgo_t algo, void *ws, size_t ws_bytes,
                                             const void *beta, const cudnnFilterDescriptor_t dwd, void *dw) {
    conv_shape s;
    cudnnStatus_t st = shape_of(xd, dwd, cd, dyd, &s);
    if (st != CUDNN_STATUS_SUCCESS) return st;
    if ((int)algo > 2) return CUDNN_STATUS_NOT_SUPPORTED;
    return run_pass(PASS_BWD_FILTER, s, xd->dt, alpha, beta, (void *)x, dw, (void *)dy, algo == 2);
}

} // extern "C"

// ---- the graph API (cudnn_graph.h's backend descriptors) -------------------------------
//
// What lib/cuda/conv_graph.cu builds: tensors, a convolution, one
// convolution operation in an operation graph, cuDNN's heuristics, engine
// configurations, an execution plan, variant packs. Every attribute is
// checked against its type and count, every finalization against what it
// needs (shapes consistent, NHWC packed strides); anything else is
// CUDNN_STATUS_BAD_PARAM (a mistake) or CUDNN_STATUS_NOT_SUPPORTED (a
// layout the fake does not do).
//
// The heuristics list five engines, so that the caller's filters are put
// to work; each computes the same values:
//   9: 1 GiB of workspace (over any cap: its plan must be refused);
//   0: nondeterministic (fine for forward, never for a backward pass);
//   1: TF32 in fp32 (tensor cores, down-converted inputs), half sums in
//      half (reduced-precision reduction): never;
//   2: compiled at run time (deterministic; a last resort);
//   3: deterministic, 4 KiB of workspace (filled with junk at each run).
// Tensor cores (half) on all but 9. A backward pass run by engine 0 or
// any pass by engine 1 fails with CUDNN_STATUS_EXECUTION_FAILED and a
// line on stderr. FAKE_CUDNN_GRAPH=none: every plan is
// CUDNN_STATUS_NOT_SUPPORTED (as a cuDNN without an engine for the shape);
// FAKE_CUDNN_GRAPH=broken: CUDNN_STATUS_BAD_PARAM (as a cuDNN that takes
// what the caller built otherwise than the fake does); FAKE_CUDNN_GRAPH=
// fallback: heuristics other than the fallback mode list only the first
// three (nothing a backward pass may take).

struct fake_engine {
    int64_t index;
    unsigned numerical, behavior; // bit k: note k
    size_t workspace;
};

struct fake_attr {
    cudnnBackendAttributeType_t type;
    int64_t n;
    std::vector<char> bytes;
    template <class T> const T *as() const { return (const T *)bytes.data(); }
};

struct fake_desc {
    cudnnBackendDescriptorType_t type;
    bool finalized;
    std::map<int, fake_attr> attr;
    fake_engine engine;    // ENGINECFG, ENGINE: filled by the heuristics
    fake_desc *graph;      // ENGINECFG: the graph it runs
    std::vector<fake_engine> engines; // ENGINEHEUR: its results
    const fake_attr *get(cudnnBackendAttributeName_t a) const {
        auto it = attr.find(a);
        return it == attr.end() ? NULL : &it->second;
    }
    fake_desc *desc(cudnnBackendAttributeName_t a, int k = 0) const {
        const fake_attr *v = get(a);
        return v && v->type == CUDNN_TYPE_BACKEND_DESCRIPTOR && k < v->n ? v->as<fake_desc *>()[k] : NULL;
    }
    int64_t i64(cudnnBackendAttributeName_t a, int k = 0) const { return get(a)->as<int64_t>()[k]; }
};

static size_t elem_size(cudnnBackendAttributeType_t t) {
    switch (t) {
    case CUDNN_TYPE_HANDLE: return sizeof(cudnnHandle_t);
    case CUDNN_TYPE_DATA_TYPE: return sizeof(cudnnDataType_t);
    case CUDNN_TYPE_INT64: return sizeof(int64_t);
    case CUDNN_TYPE_FLOAT: return sizeof(float);
    case CUDNN_TYPE_VOID_PTR: return sizeof(void *);
    case CUDNN_TYPE_CONVOLUTION_MODE: return sizeof(cudnnConvolutionMode_t);
    case CUDNN_TYPE_HEUR_MODE: return sizeof(cudnnBackendHeurMode_t);
    case CUDNN_TYPE_NUMERICAL_NOTE: return sizeof(cudnnBackendNumericalNote_t);
    case CUDNN_TYPE_BEHAVIOR_NOTE: return sizeof(cudnnBackendBehaviorNote_t);
    case CUDNN_TYPE_BACKEND_DESCRIPTOR: return sizeof(void *);
    default: return 0;
    }
}

// The attributes the fake takes: on which descriptor, of which type, how many values.
struct attr_rule {
    cudnnBackendDescriptorType_t desc;
    cudnnBackendAttributeName_t name;
    cudnnBackendAttributeType_t type;
    int64_t lo, hi;
};

#define OP_RULES(D, X, W, Y, C, A, B)                                                                      \
    {D, X, CUDNN_TYPE_BACKEND_DESCRIPTOR, 1, 1}, {D, W, CUDNN_TYPE_BACKEND_DESCRIPTOR, 1, 1},              \
        {D, Y, CUDNN_TYPE_BACKEND_DESCRIPTOR, 1, 1}, {D, C, CUDNN_TYPE_BACKEND_DESCRIPTOR, 1, 1},          \
        {D, A, CUDNN_TYPE_FLOAT, 1, 1}, {D, B, CUDNN_TYPE_FLOAT, 1, 1}

static const attr_rule RULES[] = {
    {CUDNN_BACKEND_TENSOR_DESCRIPTOR, CUDNN_ATTR_TENSOR_DATA_TYPE, CUDNN_TYPE_DATA_TYPE, 1, 1},
    {CUDNN_BACKEND_TENSOR_DESCRIPTOR, CUDNN_ATTR_TENSOR_DIMENSIONS, CUDNN_TYPE_INT64, 1, 8},
    {CUDNN_BACKEND_TENSOR_DESCRIPTOR, CUDNN_ATTR_TENSOR_STRIDES, CUDNN_TYPE_INT64, 1, 8},
    {CUDNN_BACKEND_TENSOR_DESCRIPTOR, CUDNN_ATTR_TENSOR_UNIQUE_ID, CUDNN_TYPE_INT64, 1, 1},
    {CUDNN_BACKEND_TENSOR_DESCRIPTOR, CUDNN_ATTR_TENSOR_BYTE_ALIGNMENT, CUDNN_TYPE_INT64, 1, 1},
    {CUDNN_BACKEND_CONVOLUTION_DESCRIPTOR, CUDNN_ATTR_CONVOLUTION_COMP_TYPE, CUDNN_TYPE_DATA_TYPE, 1, 1},
    {CUDNN_BACKEND_CONVOLUTION_DESCRIPTOR, CUDNN_ATTR_CONVOLUTION_CONV_MODE, CUDNN_TYPE_CONVOLUTION_MODE, 1, 1},
    {CUDNN_BACKEND_CONVOLUTION_DESCRIPTOR, CUDNN_ATTR_CONVOLUTION_SPATIAL_DIMS, CUDNN_TYPE_INT64, 1, 1},
    {CUDNN_BACKEND_CONVOLUTION_DESCRIPTOR, CUDNN_ATTR_CONVOLUTION_PRE_PADDINGS, CUDNN_TYPE_INT64, 1, 3},
    {CUDNN_BACKEND_CONVOLUTION_DESCRIPTOR, CUDNN_ATTR_CONVOLUTION_POST_PADDINGS, CUDNN_TYPE_INT64, 1, 3},
    {CUDNN_BACKEND_CONVOLUTION_DESCRIPTOR, CUDNN_ATTR_CONVOLUTION_FILTER_STRIDES, CUDNN_TYPE_INT64, 1, 3},
    {CUDNN_BACKEND_CONVOLUTION_DESCRIPTOR, CUDNN_ATTR_CONVOLUTION_DILATIONS, CUDNN_TYPE_INT64, 1, 3},
    OP_RULES(CUDNN_BACKEND_OPERATION_CONVOLUTION_FORWARD_DESCRIPTOR, CUDNN_ATTR_OPERATION_CONVOLUTION_FORWARD_X,
             CUDNN_ATTR_OPERATION_CONVOLUTION_FORWARD_W, CUDNN_ATTR_OPERATION_CONVOLUTION_FORWARD_Y,
             CUDNN_ATTR_OPERATION_CONVOLUTION_FORWARD_CONV_DESC, CUDNN_ATTR_OPERATION_CONVOLUTION_FORWARD_ALPHA,
             CUDNN_ATTR_OPERATION_CONVOLUTION_FORWARD_BETA),
    OP_RULES(CUDNN_BACKEND_OPERATION_CONVOLUTION_BACKWARD_DATA_DESCRIPTOR,
             CUDNN_ATTR_OPERATION_CONVOLUTION_BWD_DATA_DX, CUDNN_ATTR_OPERATION_CONVOLUTION_BWD_DATA_W,
             CUDNN_ATTR_OPERATION_CONVOLUTION_BWD_DATA_DY, CUDNN_ATTR_OPERATION_CONVOLUTION_BWD_DATA_CONV_DESC,
             CUDNN_ATTR_OPERATION_CONVOLUTION_BWD_DATA_ALPHA, CUDNN_ATTR_OPERATION_CONVOLUTION_BWD_DATA_BETA),
    OP_RULES(CUDNN_BACKEND_OPERATION_CONVOLUTION_BACKWARD_FILTER_DESCRIPTOR,
             CUDNN_ATTR_OPERATION_CONVOLUTION_BWD_FILTER_X, CUDNN_ATTR_OPERATION_CONVOLUTION_BWD_FILTER_DW,
             CUDNN_ATTR_OPERATION_CONVOLUTION_BWD_FILTER_DY, CUDNN_ATTR_OPERATION_CONVOLUTION_BWD_FILTER_CONV_DESC,
             CUDNN_ATTR_OPERATION_CONVOLUTION_BWD_FILTER_ALPHA, CUDNN_ATTR_OPERATION_CONVOLUTION_BWD_FILTER_BETA),
    {CUDNN_BACKEND_OPERATIONGRAPH_DESCRIPTOR, CUDNN_ATTR_OPERATIONGRAPH_OPS, CUDNN_TYPE_BACKEND_DESCRIPTOR, 1, 64},
    {CUDNN_BACKEND_OPERATIONGRAPH_DESCRIPTOR, CUDNN_ATTR_OPERATIONGRAPH_HANDLE, CUDNN_TYPE_HANDLE, 1, 1},
    {CUDNN_BACKEND_ENGINEHEUR_DESCRIPTOR, CUDNN_ATTR_ENGINEHEUR_OPERATION_GRAPH, CUDNN_TYPE_BACKEND_DESCRIPTOR, 1, 1},
    {CUDNN_BACKEND_ENGINEHEUR_DESCRIPTOR, CUDNN_ATTR_ENGINEHEUR_MODE, CUDNN_TYPE_HEUR_MODE, 1, 1},
    {CUDNN_BACKEND_EXECUTION_PLAN_DESCRIPTOR, CUDNN_ATTR_EXECUTION_PLAN_HANDLE, CUDNN_TYPE_HANDLE, 1, 1},
    {CUDNN_BACKEND_EXECUTION_PLAN_DESCRIPTOR, CUDNN_ATTR_EXECUTION_PLAN_ENGINE_CONFIG, CUDNN_TYPE_BACKEND_DESCRIPTOR,
     1, 1},
    {CUDNN_BACKEND_VARIANT_PACK_DESCRIPTOR, CUDNN_ATTR_VARIANT_PACK_UNIQUE_IDS, CUDNN_TYPE_INT64, 1, 64},
    {CUDNN_BACKEND_VARIANT_PACK_DESCRIPTOR, CUDNN_ATTR_VARIANT_PACK_DATA_POINTERS, CUDNN_TYPE_VOID_PTR, 1, 64},
    {CUDNN_BACKEND_VARIANT_PACK_DESCRIPTOR, CUDNN_ATTR_VARIANT_PACK_WORKSPACE, CUDNN_TYPE_VOID_PTR, 1, 1},
};

// Whether every attribute the rules give descriptor d's type was set.
static bool complete(const fake_desc *d) {
    for (const attr_rule &r : RULES)
        if (r.desc == d->type && !d->get(r.name)) return false;
    return true;
}

static bool is_op(const fake_desc *d) {
    return d && (d->type == CUDNN_BACKEND_OPERATION_CONVOLUTION_FORWARD_DESCRIPTOR ||
                 d->type == CUDNN_BACKEND_OPERATION_CONVOLUTION_BACKWARD_DATA_DESCRIPTOR ||
                 d->type == CUDNN_BACKEND_OPERATION_CONVOLUTION_BACKWARD_FILTER_DESCRIPTOR);
}

static fake_pass pass_of(const fake_desc *op) {
    return op->type == CUDNN_BACKEND_OPERATION_CONVOLUTION_FORWARD_DESCRIPTOR         ? PASS_FWD
           : op->type == CUDNN_BACKEND_OPERATION_CONVOLUTION_BACKWARD_DATA_DESCRIPTOR ? PASS_BWD_DATA
                                                                                      : PASS_BWD_FILTER;
}

// An operation's tensors in the forward's roles (x, w, y), its convolution, its alpha and beta.
static void parts_of(const fake_desc *op, const fake_desc *t[3], const fake_desc **conv, float ab[2]) {
    // Its attributes in the order OP_RULES lists them: the rules' rows for its type.
    int k = 0;
    for (const attr_rule &r : RULES) {
        if (r.desc != op->type) continue;
        if (k < 3) t[k] = op->desc(r.name);
        else if (k == 3) *conv = op->desc(r.name);
        else ab[k - 4] = *op->get(r.name)->as<float>();
        k++;
    }
}

static bool finalized(const fake_desc *d, cudnnBackendDescriptorType_t type) {
    return d && d->finalized && d->type == type;
}

static cudnnDataType_t dtype_of(const fake_desc *t) { return *t->get(CUDNN_ATTR_TENSOR_DATA_TYPE)->as<cudnnDataType_t>(); }

// The shape of operation op's convolution, checked: BAD_PARAM where its tensors disagree.
static cudnnStatus_t graph_shape(const fake_desc *op, conv_shape *s, cudnnDataType_t *dt) {
    const fake_desc *t[3] = {NULL, NULL, NULL}, *cv = NULL;
    float ab[2];
    parts_of(op, t, &cv, ab);
    for (int k = 0; k < 3; k++)
        if (!finalized(t[k], CUDNN_BACKEND_TENSOR_DESCRIPTOR)) return CUDNN_STATUS_BAD_PARAM;
    if (!finalized(cv, CUDNN_BACKEND_CONVOLUTION_DESCRIPTOR)) return CUDNN_STATUS_BAD_PARAM;
    *dt = dtype_of(t[0]);
    if (dtype_of(t[1]) != *dt || dtype_of(t[2]) != *dt) return CUDNN_STATUS_NOT_SUPPORTED;
    if (t[0]->i64(CUDNN_ATTR_TENSOR_UNIQUE_ID) == t[1]->i64(CUDNN_ATTR_TENSOR_UNIQUE_ID) ||
        t[0]->i64(CUDNN_ATTR_TENSOR_UNIQUE_ID) == t[2]->i64(CUDNN_ATTR_TENSOR_UNIQUE_ID) ||
        t[1]->i64(CUDNN_ATTR_TENSOR_UNIQUE_ID) == t[2]->i64(CUDNN_ATTR_TENSOR_UNIQUE_ID))
        return CUDNN_STATUS_BAD_PARAM;
    auto dim = [](const fake_desc *d, int k) { return (int)d->i64(CUDNN_ATTR_TENSOR_DIMENSIONS, k); };
    auto cvv = [&](cudnnBackendAttributeName_t a, int k) { return (int)cv->i64(a, k); };
    *s = {dim(t[0], 0), dim(t[0], 1), dim(t[0], 2), dim(t[0], 3), dim(t[1], 0), dim(t[1], 2), dim(t[1], 3),
          dim(t[2], 2), dim(t[2], 3), cvv(CUDNN_ATTR_CONVOLUTION_PRE_PADDINGS, 0),
          cvv(CUDNN_ATTR_CONVOLUTION_PRE_PADDINGS, 1), cvv(CUDNN_ATTR_CONVOLUTION_FILTER_STRIDES, 0),
          cvv(CUDNN_ATTR_CONVOLUTION_FILTER_STRIDES, 1), cvv(CUDNN_ATTR_CONVOLUTION_DILATIONS, 0),
          cvv(CUDNN_ATTR_CONVOLUTION_DILATIONS, 1)};
    if (dim(t[1], 1) != s->c || dim(t[2], 0) != s->n || dim(t[2], 1) != s->k ||
        s->oh != conv_out(s->h, s->ph, s->r, s->dh, s->u) || s->ow != conv_out(s->w, s->pw, s->s, s->dw, s->v))
        return CUDNN_STATUS_BAD_PARAM;
    return CUDNN_STATUS_SUCCESS;
}

static cudnnStatus_t finalize_tensor(const fake_desc *d) {
    const fake_attr *dims = d->get(CUDNN_ATTR_TENSOR_DIMENSIONS), *strides = d->get(CUDNN_ATTR_TENSOR_STRIDES);
    int64_t align = d->i64(CUDNN_ATTR_TENSOR_BYTE_ALIGNMENT);
    if (dims->n != strides->n || align < 1 || (align & (align - 1))) return CUDNN_STATUS_BAD_PARAM;
    if (dims->n != 4 || !supported_type(dtype_of(d))) return CUDNN_STATUS_NOT_SUPPORTED;
    const int64_t *v = dims->as<int64_t>(), *st = strides->as<int64_t>();
    for (int k = 0; k < 4; k++)
        if (v[k] < 1) return CUDNN_STATUS_BAD_PARAM;
    int64_t nhwc[4] = {v[2] * v[3] * v[1], 1, v[3] * v[1], v[1]}; // (n, c, h, w) laid out NHWC, packed
    return memcmp(st, nhwc, sizeof nhwc) == 0 ? CUDNN_STATUS_SUCCESS : CUDNN_STATUS_NOT_SUPPORTED;
}

static cudnnStatus_t finalize_conv(const fake_desc *d) {
    if (d->i64(CUDNN_ATTR_CONVOLUTION_SPATIAL_DIMS) != 2) return CUDNN_STATUS_NOT_SUPPORTED;
    const cudnnBackendAttributeName_t lists[4] = {CUDNN_ATTR_CONVOLUTION_PRE_PADDINGS,
                                                  CUDNN_ATTR_CONVOLUTION_POST_PADDINGS,
                                                  CUDNN_ATTR_CONVOLUTION_FILTER_STRIDES,
                                                  CUDNN_ATTR_CONVOLUTION_DILATIONS};
    for (int k = 0; k < 4; k++) {
        if (d->get(lists[k])->n != 2) return CUDNN_STATUS_BAD_PARAM;
        for (int j = 0; j < 2; j++)
            if (d->i64(lists[k], j) < (k < 2 ? 0 : 1)) return CUDNN_STATUS_BAD_PARAM;
    }
    for (int j = 0; j < 2; j++) // asymmetric padding: not the fake's
        if (d->i64(lists[0], j) != d->i64(lists[1], j)) return CUDNN_STATUS_NOT_SUPPORTED;
    if (*d->get(CUDNN_ATTR_CONVOLUTION_COMP_TYPE)->as<cudnnDataType_t>() != CUDNN_DATA_FLOAT ||
        *d->get(CUDNN_ATTR_CONVOLUTION_CONV_MODE)->as<cudnnConvolutionMode_t>() != CUDNN_CROSS_CORRELATION)
        return CUDNN_STATUS_NOT_SUPPORTED;
    return CUDNN_STATUS_SUCCESS;
}

#define NOTE(k) (1u << (k))

static std::vector<fake_engine> fake_engines(cudnnDataType_t dt) {
    unsigned tc = dt == CUDNN_DATA_FLOAT ? 0 : NOTE(CUDNN_NUMERICAL_NOTE_TENSOR_CORE);
    unsigned lossy = NOTE(CUDNN_NUMERICAL_NOTE_TENSOR_CORE) |
                     (dt == CUDNN_DATA_FLOAT ? NOTE(CUDNN_NUMERICAL_NOTE_DOWN_CONVERT_INPUTS)
                                             : NOTE(CUDNN_NUMERICAL_NOTE_REDUCED_PRECISION_REDUCTION));
    return {{9, 0, 0, (size_t)1 << 30},
            {0, tc | NOTE(CUDNN_NUMERICAL_NOTE_NONDETERMINISTIC), 0, 0},
            {1, lossy, 0, 0},
            {2, tc, NOTE(CUDNN_BEHAVIOR_NOTE_RUNTIME_COMPILATION), 0},
            {3, tc, 0, 4096}};
}

extern "C" {

cudnnStatus_t cudnnBackendCreateDescriptor(cudnnBackendDescriptorType_t type, cudnnBackendDescriptor_t *d) {
    if (!d) return CUDNN_STATUS_BAD_PARAM;
    switch (type) {
    case CUDNN_BACKEND_TENSOR_DESCRIPTOR: case CUDNN_BACKEND_CONVOLUTION_DESCRIPTOR:
    case CUDNN_BACKEND_OPERATION_CONVOLUTION_FORWARD_DESCRIPTOR:
    case CUDNN_BACKEND_OPERATION_CONVOLUTION_BACKWARD_DATA_DESCRIPTOR:
    case CUDNN_BACKEND_OPERATION_CONVOLUTION_BACKWARD_FILTER_DESCRIPTOR:
    case CUDNN_BACKEND_OPERATIONGRAPH_DESCRIPTOR: case CUDNN_BACKEND_ENGINEHEUR_DESCRIPTOR:
    case CUDNN_BACKEND_ENGINECFG_DESCRIPTOR: case CUDNN_BACKEND_ENGINE_DESCRIPTOR:
    case CUDNN_BACKEND_EXECUTION_PLAN_DESCRIPTOR: case CUDNN_BACKEND_VARIANT_PACK_DESCRIPTOR: break;
    default: return CUDNN_STATUS_NOT_SUPPORTED;
    }
    fake_desc *f = new fake_desc();
    f->type = type;
    *d = f;
    return CUDNN_STATUS_SUCCESS;
}

cudnnStatus_t cudnnBackendDestroyDescriptor(cudnnBackendDescriptor_t d) {
    delete (fake_desc *)d;
    return CUDNN_STATUS_SUCCESS;
}

cudnnStatus_t cudnnBackendSetAttribute(cudnnBackendDescriptor_t desc, cudnnBackendAttributeName_t name,
                                       cudnnBackendAttributeType_t type, int64_t n, const void *values) {
    fake_desc *d = (fake_desc *)desc;
    if (!d || d->finalized || !values) return CUDNN_STATUS_BAD_PARAM;
    for (const attr_rule &r : RULES) {
        if (r.desc != d->type || r.name != name) continue;
        if (r.type != type || n < r.lo || n > r.hi) return CUDNN_STATUS_BAD_PARAM;
        fake_attr &a = d->attr[name];
        a.type = type, a.n = n;
        a.bytes.assign((const char *)values, (const char *)values + n * elem_size(type));
        return CUDNN_STATUS_SUCCESS;
    }
    return CUDNN_STATUS_BAD_PARAM; // not an attribute of that descriptor (or not one the fake knows)
}

cudnnStatus_t cudnnBackendFinalize(cudnnBackendDescriptor_t desc) {
    fake_desc *d = (fake_desc *)desc;
    if (!d || d->finalized || !complete(d)) return CUDNN_STATUS_BAD_PARAM;
    cudnnStatus_t s = CUDNN_STATUS_SUCCESS;
    conv_shape shape;
    cudnnDataType_t dt;
    switch (d->type) {
    case CUDNN_BACKEND_TENSOR_DESCRIPTOR: s = finalize_tensor(d); break;
    case CUDNN_BACKEND_CONVOLUTION_DESCRIPTOR: s = finalize_conv(d); break;
    case CUDNN_BACKEND_OPERATION_CONVOLUTION_FORWARD_DESCRIPTOR:
    case CUDNN_BACKEND_OPERATION_CONVOLUTION_BACKWARD_DATA_DESCRIPTOR:
    case CUDNN_BACKEND_OPERATION_CONVOLUTION_BACKWARD_FILTER_DESCRIPTOR: s = graph_shape(d, &shape, &dt); break;
    case CUDNN_BACKEND_OPERATIONGRAPH_DESCRIPTOR:
        if (!*d->get(CUDNN_ATTR_OPERATIONGRAPH_HANDLE)->as<cudnnHandle_t>()) s = CUDNN_STATUS_BAD_PARAM;
        for (int k = 0; s == CUDNN_STATUS_SUCCESS && k < d->get(CUDNN_ATTR_OPERATIONGRAPH_OPS)->n; k++)
            if (!is_op(d->desc(CUDNN_ATTR_OPERATIONGRAPH_OPS, k)) || !d->desc(CUDNN_ATTR_OPERATIONGRAPH_OPS, k)->finalized)
                s = CUDNN_STATUS_BAD_PARAM;
        if (s == CUDNN_STATUS_SUCCESS && d->get(CUDNN_ATTR_OPERATIONGRAPH_OPS)->n != 1) s = CUDNN_STATUS_NOT_SUPPORTED;
        break;
    case CUDNN_BACKEND_ENGINEHEUR_DESCRIPTOR: {
        fake_desc *g = d->desc(CUDNN_ATTR_ENGINEHEUR_OPERATION_GRAPH);
        if (!finalized(g, CUDNN_BACKEND_OPERATIONGRAPH_DESCRIPTOR)) return CUDNN_STATUS_BAD_PARAM;
        graph_shape(g->desc(CUDNN_ATTR_OPERATIONGRAPH_OPS), &shape, &dt);
        d->engines = fake_engines(dt);
        const char *only = getenv("FAKE_CUDNN_GRAPH");
        if (only && strcmp(only, "fallback") == 0 &&
            *d->get(CUDNN_ATTR_ENGINEHEUR_MODE)->as<cudnnBackendHeurMode_t>() != CUDNN_HEUR_MODE_FALLBACK)
            d->engines.resize(3); // the 1 GiB, nondeterministic and lossy ones: nothing for backward
        break;
    }
    case CUDNN_BACKEND_EXECUTION_PLAN_DESCRIPTOR: {
        fake_desc *cfg = d->desc(CUDNN_ATTR_EXECUTION_PLAN_ENGINE_CONFIG);
        const char *none = getenv("FAKE_CUDNN_GRAPH");
        if (!finalized(cfg, CUDNN_BACKEND_ENGINECFG_DESCRIPTOR) ||
            !*d->get(CUDNN_ATTR_EXECUTION_PLAN_HANDLE)->as<cudnnHandle_t>())
            s = CUDNN_STATUS_BAD_PARAM;
        else if (none && strcmp(none, "none") == 0)
            s = CUDNN_STATUS_NOT_SUPPORTED;
        else if (none && strcmp(none, "broken") == 0)
            s = CUDNN_STATUS_BAD_PARAM;
        else
            d->engine = cfg->engine, d->graph = cfg->graph;
        break;
    }
    case CUDNN_BACKEND_VARIANT_PACK_DESCRIPTOR:
        if (d->get(CUDNN_ATTR_VARIANT_PACK_UNIQUE_IDS)->n != d->get(CUDNN_ATTR_VARIANT_PACK_DATA_POINTERS)->n)
            s = CUDNN_STATUS_BAD_PARAM;
        break;
    default: s = CUDNN_STATUS_BAD_PARAM; // engine configurations and engines come from the heuristics, finalized
    }
    d->finalized = s == CUDNN_STATUS_SUCCESS;
    return s;
}

cudnnStatus_t cudnnBackendGetAttribute(cudnnBackendDescriptor_t const desc, cudnnBackendAttributeName_t name,
                                       cudnnBackendAttributeType_t type, int64_t requested, int64_t *n,
                                       void *values) {
    const fake_desc *d = (const fake_desc *)desc;
    if (!d || !d->finalized || !n || requested < 0 || (requested > 0 && !values)) return CUDNN_STATUS_BAD_PARAM;
    auto int64_out = [&](int64_t v) {
        if (type != CUDNN_TYPE_INT64 || requested < 1) return CUDNN_STATUS_BAD_PARAM;
        *(int64_t *)values = v, *n = 1;
        return CUDNN_STATUS_SUCCESS;
    };
    auto notes_out = [&](unsigned bits, int count) {
        *n = 0;
        for (int k = 0; k < count; k++)
            if (bits & NOTE(k)) {
                if (*n < requested) ((int *)values)[*n] = k; // both note enums are int-sized
                ++*n;
            }
        if (*n > requested) *n = requested;
        return CUDNN_STATUS_SUCCESS;
    };
    switch (name) {
    case CUDNN_ATTR_ENGINEHEUR_RESULTS: {
        if (d->type != CUDNN_BACKEND_ENGINEHEUR_DESCRIPTOR || type != CUDNN_TYPE_BACKEND_DESCRIPTOR)
            return CUDNN_STATUS_BAD_PARAM;
        int64_t count = (int64_t)d->engines.size();
        *n = requested < count ? requested : count;
        if (requested == 0) *n = count; // how many there are
        for (int64_t k = 0; k < requested && k < count; k++) {
            fake_desc *cfg = ((fake_desc **)values)[k];
            if (!cfg || cfg->type != CUDNN_BACKEND_ENGINECFG_DESCRIPTOR || cfg->finalized) return CUDNN_STATUS_BAD_PARAM;
            cfg->engine = d->engines[k];
            cfg->graph = d->desc(CUDNN_ATTR_ENGINEHEUR_OPERATION_GRAPH);
            cfg->finalized = true;
        }
        return CUDNN_STATUS_SUCCESS;
    }
    case CUDNN_ATTR_ENGINECFG_ENGINE: {
        fake_desc *e = requested == 1 ? ((fake_desc **)values)[0] : NULL;
        if (d->type != CUDNN_BACKEND_ENGINECFG_DESCRIPTOR || type != CUDNN_TYPE_BACKEND_DESCRIPTOR || !e ||
            e->type != CUDNN_BACKEND_ENGINE_DESCRIPTOR || e->finalized)
            return CUDNN_STATUS_BAD_PARAM;
        e->engine = d->engine, e->graph = d->graph, e->finalized = true, *n = 1;
        return CUDNN_STATUS_SUCCESS;
    }
    case CUDNN_ATTR_ENGINE_GLOBAL_INDEX:
        return d->type == CUDNN_BACKEND_ENGINE_DESCRIPTOR ? int64_out(d->engine.index) : CUDNN_STATUS_BAD_PARAM;
    case CUDNN_ATTR_ENGINE_NUMERICAL_NOTE:
        if (d->type != CUDNN_BACKEND_ENGINE_DESCRIPTOR || type != CUDNN_TYPE_NUMERICAL_NOTE) return CUDNN_STATUS_BAD_PARAM;
        return notes_out(d->engine.numerical, CUDNN_NUMERICAL_NOTE_TYPE_COUNT);
    case CUDNN_ATTR_ENGINE_BEHAVIOR_NOTE:
        if (d->type != CUDNN_BACKEND_ENGINE_DESCRIPTOR || type != CUDNN_TYPE_BEHAVIOR_NOTE) return CUDNN_STATUS_BAD_PARAM;
        return notes_out(d->engine.behavior, CUDNN_BEHAVIOR_NOTE_TYPE_COUNT);
    case CUDNN_ATTR_EXECUTION_PLAN_WORKSPACE_SIZE:
        return d->type == CUDNN_BACKEND_EXECUTION_PLAN_DESCRIPTOR ? int64_out((int64_t)d->engine.workspace)
                                                                  : CUDNN_STATUS_BAD_PARAM;
    default: return CUDNN_STATUS_NOT_SUPPORTED;
    }
}

cudnnStatus_t cudnnBackendExecute(cudnnHandle_t h, cudnnBackendDescriptor_t plan_desc, cudnnBackendDescriptor_t pack_desc) {
    const fake_desc *plan = (const fake_desc *)plan_desc, *pack = (const fake_desc *)pack_desc;
    if (!h || !finalized(plan, CUDNN_BACKEND_EXECUTION_PLAN_DESCRIPTOR) ||
        !finalized(pack, CUDNN_BACKEND_VARIANT_PACK_DESCRIPTOR))
        return CUDNN_STATUS_BAD_PARAM;
    const fake_desc *op = plan->graph->desc(CUDNN_ATTR_OPERATIONGRAPH_OPS), *t[3] = {NULL, NULL, NULL}, *cv = NULL;
    float ab[2];
    parts_of(op, t, &cv, ab);
    conv_shape s;
    cudnnDataType_t dt;
    cudnnStatus_t st = graph_shape(op, &s, &dt);
    if (st != CUDNN_STATUS_SUCCESS) return st;
    fake_pass p = pass_of(op);
    const fake_engine &e = plan->engine;
    if ((p != PASS_FWD && (e.numerical & NOTE(CUDNN_NUMERICAL_NOTE_NONDETERMINISTIC))) ||
        (dt == CUDNN_DATA_FLOAT && (e.numerical & NOTE(CUDNN_NUMERICAL_NOTE_DOWN_CONVERT_INPUTS))) ||
        (e.numerical & NOTE(CUDNN_NUMERICAL_NOTE_REDUCED_PRECISION_REDUCTION))) {
        fprintf(stderr, "fake cuDNN: engine %lld (nondeterministic, TF32 or half sums) ran a %s pass: "
                        "conv_graph.h's filters should have kept it out\n", (long long)e.index, PASS_CALL[p]);
        return CUDNN_STATUS_EXECUTION_FAILED;
    }
    // Each tensor's pointer by its id, aligned as the tensor promised.
    const fake_attr *uids = pack->get(CUDNN_ATTR_VARIANT_PACK_UNIQUE_IDS);
    void *ptr[3] = {NULL, NULL, NULL};
    for (int k = 0; k < 3; k++) {
        for (int64_t j = 0; j < uids->n; j++)
            if (uids->as<int64_t>()[j] == t[k]->i64(CUDNN_ATTR_TENSOR_UNIQUE_ID))
                ptr[k] = pack->get(CUDNN_ATTR_VARIANT_PACK_DATA_POINTERS)->as<void *>()[j];
        if (!ptr[k] || (uintptr_t)ptr[k] % t[k]->i64(CUDNN_ATTR_TENSOR_BYTE_ALIGNMENT)) return CUDNN_STATUS_BAD_PARAM;
    }
    void *ws = *pack->get(CUDNN_ATTR_VARIANT_PACK_WORKSPACE)->as<void *>();
    if (e.workspace) {
        if (!ws) return CUDNN_STATUS_BAD_PARAM;
        memset(ws, 0xa5, e.workspace); // a workspace shorter than the plan asked for: ASan's to find
    }
    return run_pass(p, s, dt, &ab[0], &ab[1], ptr[0], ptr[1], ptr[2], false);
}

} // extern "C"
