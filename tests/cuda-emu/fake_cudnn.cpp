// A fake cuDNN on the host (real signatures, from cudnn.h): what
// lib/cuda uses. Descriptors keep what was set; convolutions
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
// same convolutions: fake_cudnn_graph.cpp.
// FAKE_CUDNN_FAIL=NAME[:K] makes the K-th run (default the first) of the
// convolution pass NAME (cudnnConvolutionForward, ...BackwardData,
// ...BackwardFilter; a graph API plan of that pass counts as a call) in
// the process fail with CUDNN_STATUS_EXECUTION_FAILED,
// as a GPU fault would, for the backend's error path.
#include <cudnn.h>
#include <cuda_bf16.h>
#include <cuda_fp16.h>
#include <dnnl.h>

#include "fake_conv.h"
#include "fake_gemm.h"

#include <atomic>
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

bool supported_type(cudnnDataType_t dt) {
    return dt == CUDNN_DATA_FLOAT || dt == CUDNN_DATA_HALF || dt == CUDNN_DATA_BFLOAT16;
}

int conv_out(int in, int pad, int k, int dil, int stride) { return (in + 2 * pad - ((k - 1) * dil + 1)) / stride + 1; }

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

// The backend never sets a stream: cuDNN's default, the legacy default stream.
cudnnStatus_t cudnnGetStream(cudnnHandle_t h, cudaStream_t *stream) {
    if (!h || !stream) return CUDNN_STATUS_BAD_PARAM;
    *stream = NULL;
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

// FAKE_CUDNN_FAIL counts a pass's runs by the legacy function's name,
// through either API.
const char *const PASS_CALL[3] = {"cudnnConvolutionForward", "cudnnConvolutionBackwardData",
                                         "cudnnConvolutionBackwardFilter"};
static std::atomic<int> pass_runs[3];

cudnnStatus_t run_pass(fake_pass p, const conv_shape &s, cudnnDataType_t dt, const void *alpha,
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
