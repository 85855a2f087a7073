// Convolution passes through cuDNN's graph API: conv_graph.h.
#include "cuda/conv_graph.h"

#include <cuda_runtime.h>

#include <stdlib.h>
#include <string.h>

typedef cudnnBackendDescriptor_t desc_t;

// The pass's three tensors in its graph and in every variant pack.
static const int64_t UID_X = 'x', UID_W = 'w', UID_Y = 'y';

// Returns the status of a failing call, naming it in *failed.
#define STEP(call, what)                                                                                    \
    do {                                                                                                    \
        cudnnStatus_t s_ = (call);                                                                          \
        if (s_ != CUDNN_STATUS_SUCCESS) {                                                                   \
            *failed = (what);                                                                               \
            return s_;                                                                                      \
        }                                                                                                   \
    } while (0)

static cudnnStatus_t create(cudnnBackendDescriptorType_t type, desc_t *d, const char **failed) {
    *d = NULL;
    STEP(cudnnBackendCreateDescriptor(type, d), "cudnnBackendCreateDescriptor");
    return CUDNN_STATUS_SUCCESS;
}

static cudnnStatus_t set(desc_t d, cudnnBackendAttributeName_t a, cudnnBackendAttributeType_t t, int64_t n,
                         const void *v) {
    return cudnnBackendSetAttribute(d, a, t, n, v);
}

// Tensor uid, (n, c, h, w) laid out NHWC (a filter: (k, c, r, r), KRSC).
static cudnnStatus_t tensor(desc_t *t, int64_t uid, cudnnDataType_t dt, int64_t n, int64_t c, int64_t h, int64_t w,
                            const char **failed) {
    int64_t dims[4] = {n, c, h, w}, strides[4] = {h * w * c, 1, w * c, c}, align = 16;
    STEP(create(CUDNN_BACKEND_TENSOR_DESCRIPTOR, t, failed), *failed);
    STEP(set(*t, CUDNN_ATTR_TENSOR_DATA_TYPE, CUDNN_TYPE_DATA_TYPE, 1, &dt), "tensor data type");
    STEP(set(*t, CUDNN_ATTR_TENSOR_DIMENSIONS, CUDNN_TYPE_INT64, 4, dims), "tensor dimensions");
    STEP(set(*t, CUDNN_ATTR_TENSOR_STRIDES, CUDNN_TYPE_INT64, 4, strides), "tensor strides");
    STEP(set(*t, CUDNN_ATTR_TENSOR_UNIQUE_ID, CUDNN_TYPE_INT64, 1, &uid), "tensor id");
    STEP(set(*t, CUDNN_ATTR_TENSOR_BYTE_ALIGNMENT, CUDNN_TYPE_INT64, 1, &align), "tensor alignment");
    STEP(cudnnBackendFinalize(*t), "finalizing a tensor");
    return CUDNN_STATUS_SUCCESS;
}

static cudnnStatus_t convolution(desc_t *c, const cu_conv_shape *s, const char **failed) {
    cudnnDataType_t acc = CUDNN_DATA_FLOAT;
    cudnnConvolutionMode_t mode = CUDNN_CROSS_CORRELATION;
    int64_t dims = 2, pad[2] = {s->pad, s->pad}, stride[2] = {s->stride, s->stride}, dil[2] = {s->dil, s->dil};
    STEP(create(CUDNN_BACKEND_CONVOLUTION_DESCRIPTOR, c, failed), *failed);
    STEP(set(*c, CUDNN_ATTR_CONVOLUTION_COMP_TYPE, CUDNN_TYPE_DATA_TYPE, 1, &acc), "convolution compute type");
    STEP(set(*c, CUDNN_ATTR_CONVOLUTION_CONV_MODE, CUDNN_TYPE_CONVOLUTION_MODE, 1, &mode), "convolution mode");
    STEP(set(*c, CUDNN_ATTR_CONVOLUTION_SPATIAL_DIMS, CUDNN_TYPE_INT64, 1, &dims), "convolution dimensions");
    STEP(set(*c, CUDNN_ATTR_CONVOLUTION_PRE_PADDINGS, CUDNN_TYPE_INT64, 2, pad), "convolution padding");
    STEP(set(*c, CUDNN_ATTR_CONVOLUTION_POST_PADDINGS, CUDNN_TYPE_INT64, 2, pad), "convolution padding");
    STEP(set(*c, CUDNN_ATTR_CONVOLUTION_FILTER_STRIDES, CUDNN_TYPE_INT64, 2, stride), "convolution stride");
    STEP(set(*c, CUDNN_ATTR_CONVOLUTION_DILATIONS, CUDNN_TYPE_INT64, 2, dil), "convolution dilation");
    STEP(cudnnBackendFinalize(*c), "finalizing the convolution");
    return CUDNN_STATUS_SUCCESS;
}

// The pass's operation on tensors t (x, w, y) and convolution c; alpha 1.
static cudnnStatus_t operation(desc_t *op, cu_conv_pass p, const desc_t t[3], desc_t c, float beta,
                               const char **failed) {
    static const cudnnBackendDescriptorType_t type[3] = {CUDNN_BACKEND_OPERATION_CONVOLUTION_FORWARD_DESCRIPTOR,
                                                         CUDNN_BACKEND_OPERATION_CONVOLUTION_BACKWARD_DATA_DESCRIPTOR,
                                                         CUDNN_BACKEND_OPERATION_CONVOLUTION_BACKWARD_FILTER_DESCRIPTOR};
    // Per pass: x, w, y, the convolution, alpha, beta.
    static const cudnnBackendAttributeName_t attr[3][6] = {
        {CUDNN_ATTR_OPERATION_CONVOLUTION_FORWARD_X, CUDNN_ATTR_OPERATION_CONVOLUTION_FORWARD_W,
         CUDNN_ATTR_OPERATION_CONVOLUTION_FORWARD_Y, CUDNN_ATTR_OPERATION_CONVOLUTION_FORWARD_CONV_DESC,
         CUDNN_ATTR_OPERATION_CONVOLUTION_FORWARD_ALPHA, CUDNN_ATTR_OPERATION_CONVOLUTION_FORWARD_BETA},
        {CUDNN_ATTR_OPERATION_CONVOLUTION_BWD_DATA_DX, CUDNN_ATTR_OPERATION_CONVOLUTION_BWD_DATA_W,
         CUDNN_ATTR_OPERATION_CONVOLUTION_BWD_DATA_DY, CUDNN_ATTR_OPERATION_CONVOLUTION_BWD_DATA_CONV_DESC,
         CUDNN_ATTR_OPERATION_CONVOLUTION_BWD_DATA_ALPHA, CUDNN_ATTR_OPERATION_CONVOLUTION_BWD_DATA_BETA},
        {CUDNN_ATTR_OPERATION_CONVOLUTION_BWD_FILTER_X, CUDNN_ATTR_OPERATION_CONVOLUTION_BWD_FILTER_DW,
         CUDNN_ATTR_OPERATION_CONVOLUTION_BWD_FILTER_DY, CUDNN_ATTR_OPERATION_CONVOLUTION_BWD_FILTER_CONV_DESC,
         CUDNN_ATTR_OPERATION_CONVOLUTION_BWD_FILTER_ALPHA, CUDNN_ATTR_OPERATION_CONVOLUTION_BWD_FILTER_BETA}};
    const cudnnBackendAttributeName_t *a = attr[p];
    float alpha = 1;
    STEP(create(type[p], op, failed), *failed);
    for (int k = 0; k < 3; k++) STEP(set(*op, a[k], CUDNN_TYPE_BACKEND_DESCRIPTOR, 1, &t[k]), "operation tensor");
    STEP(set(*op, a[3], CUDNN_TYPE_BACKEND_DESCRIPTOR, 1, &c), "operation convolution");
    STEP(set(*op, a[4], CUDNN_TYPE_FLOAT, 1, &alpha), "operation alpha");
    STEP(set(*op, a[5], CUDNN_TYPE_FLOAT, 1, &beta), "operation beta");
    STEP(cudnnBackendFinalize(*op), "finalizing the convolution operation");
    return CUDNN_STATUS_SUCCESS;
}

static cudnnStatus_t graph_of(desc_t *g, cudnnHandle_t h, desc_t op, const char **failed) {
    STEP(create(CUDNN_BACKEND_OPERATIONGRAPH_DESCRIPTOR, g, failed), *failed);
    STEP(set(*g, CUDNN_ATTR_OPERATIONGRAPH_OPS, CUDNN_TYPE_BACKEND_DESCRIPTOR, 1, &op), "operation graph ops");
    // Deprecated from cuDNN 9.8 (a DEVICEPROP descriptor may stand in), needed before it.
    STEP(set(*g, CUDNN_ATTR_OPERATIONGRAPH_HANDLE, CUDNN_TYPE_HANDLE, 1, &h), "operation graph handle");
    STEP(cudnnBackendFinalize(*g), "finalizing the operation graph");
    return CUDNN_STATUS_SUCCESS;
}

// The engine configurations cuDNN's heuristics in mode `mode` list for
// graph g, best first: *cfgs (*n of them, the caller destroys them and
// frees *cfgs).
static cudnnStatus_t heuristics(desc_t g, cudnnBackendHeurMode_t mode, desc_t **cfgs, int64_t *n,
                                const char **failed) {
    desc_t heur;
    int64_t count = 0;
    *cfgs = NULL, *n = 0;
    STEP(create(CUDNN_BACKEND_ENGINEHEUR_DESCRIPTOR, &heur, failed), *failed);
    cudnnStatus_t s = set(heur, CUDNN_ATTR_ENGINEHEUR_OPERATION_GRAPH, CUDNN_TYPE_BACKEND_DESCRIPTOR, 1, &g);
    if (s == CUDNN_STATUS_SUCCESS) s = set(heur, CUDNN_ATTR_ENGINEHEUR_MODE, CUDNN_TYPE_HEUR_MODE, 1, &mode);
    if (s == CUDNN_STATUS_SUCCESS) s = cudnnBackendFinalize(heur);
    if (s == CUDNN_STATUS_SUCCESS)
        s = cudnnBackendGetAttribute(heur, CUDNN_ATTR_ENGINEHEUR_RESULTS, CUDNN_TYPE_BACKEND_DESCRIPTOR, 0, &count,
                                     NULL);
    if (s == CUDNN_STATUS_SUCCESS && count > 0) {
        int64_t got = 0;
        *cfgs = (desc_t *)calloc((size_t)count, sizeof **cfgs);
        if (!*cfgs) s = CUDNN_STATUS_INTERNAL_ERROR_HOST_ALLOCATION_FAILED;
        while (s == CUDNN_STATUS_SUCCESS && *n < count) { // *n: created
            s = cudnnBackendCreateDescriptor(CUDNN_BACKEND_ENGINECFG_DESCRIPTOR, &(*cfgs)[*n]);
            if (s == CUDNN_STATUS_SUCCESS) ++*n;
        }
        if (s == CUDNN_STATUS_SUCCESS)
            s = cudnnBackendGetAttribute(heur, CUDNN_ATTR_ENGINEHEUR_RESULTS, CUDNN_TYPE_BACKEND_DESCRIPTOR, count,
                                         &got, *cfgs);
        if (s == CUDNN_STATUS_SUCCESS) // fewer filled than counted: the rest go
            for (; *n > got && *n > 0; --*n) cudnnBackendDestroyDescriptor((*cfgs)[*n - 1]);
    }
    if (s != CUDNN_STATUS_SUCCESS) *failed = mode == CUDNN_HEUR_MODE_A ? "cuDNN's heuristics (mode A)"
                                                                       : "cuDNN's fallback heuristics";
    cudnnBackendDestroyDescriptor(heur);
    return s;
}

// Destroys every configuration of a heuristics list but `keep` (NULL: all),
// and the list.
static void free_cfgs(desc_t *cfgs, int64_t n, desc_t keep) {
    for (int64_t k = 0; k < n; k++)
        if (cfgs[k] != keep) cudnnBackendDestroyDescriptor(cfgs[k]);
    free(cfgs);
}

// An engine configuration's engine: its numerical and behaviour notes as
// bit sets (bit k: note k), and its global index.
typedef struct {
    unsigned numerical, behavior;
    int64_t index;
} engine_notes;

static cudnnStatus_t notes_of(desc_t cfg, engine_notes *e) {
    desc_t engine;
    cudnnBackendNumericalNote_t num[CUDNN_NUMERICAL_NOTE_TYPE_COUNT];
    cudnnBackendBehaviorNote_t beh[CUDNN_BEHAVIOR_NOTE_TYPE_COUNT];
    int64_t got = 0, n_num = 0, n_beh = 0;
    memset(e, 0, sizeof *e);
    cudnnStatus_t s = cudnnBackendCreateDescriptor(CUDNN_BACKEND_ENGINE_DESCRIPTOR, &engine);
    if (s != CUDNN_STATUS_SUCCESS) return s;
    s = cudnnBackendGetAttribute(cfg, CUDNN_ATTR_ENGINECFG_ENGINE, CUDNN_TYPE_BACKEND_DESCRIPTOR, 1, &got, &engine);
    if (s == CUDNN_STATUS_SUCCESS)
        s = cudnnBackendGetAttribute(engine, CUDNN_ATTR_ENGINE_NUMERICAL_NOTE, CUDNN_TYPE_NUMERICAL_NOTE,
                                     CUDNN_NUMERICAL_NOTE_TYPE_COUNT, &n_num, num);
    if (s == CUDNN_STATUS_SUCCESS)
        s = cudnnBackendGetAttribute(engine, CUDNN_ATTR_ENGINE_BEHAVIOR_NOTE, CUDNN_TYPE_BEHAVIOR_NOTE,
                                     CUDNN_BEHAVIOR_NOTE_TYPE_COUNT, &n_beh, beh);
    if (s == CUDNN_STATUS_SUCCESS)
        s = cudnnBackendGetAttribute(engine, CUDNN_ATTR_ENGINE_GLOBAL_INDEX, CUDNN_TYPE_INT64, 1, &got, &e->index);
    for (int64_t k = 0; s == CUDNN_STATUS_SUCCESS && k < n_num && k < CUDNN_NUMERICAL_NOTE_TYPE_COUNT; k++)
        e->numerical |= 1u << num[k];
    for (int64_t k = 0; s == CUDNN_STATUS_SUCCESS && k < n_beh && k < CUDNN_BEHAVIOR_NOTE_TYPE_COUNT; k++)
        e->behavior |= 1u << beh[k];
    cudnnBackendDestroyDescriptor(engine);
    return s;
}

#define NOTE(k) (1u << (k))

// Whether an engine with notes e may run pass p on tensors of type dt at
// relaxation level `relax` (0: every preference; 3: only the hard rules).
static bool acceptable(const engine_notes *e, cu_conv_pass p, cudnnDataType_t dt, int relax) {
    bool fp32 = dt == CUDNN_DATA_FLOAT;
    unsigned tf32 = NOTE(CUDNN_NUMERICAL_NOTE_DOWN_CONVERT_INPUTS) | NOTE(CUDNN_NUMERICAL_NOTE_TENSOR_CORE);
    if ((fp32 && (e->numerical & tf32)) || (e->numerical & NOTE(CUDNN_NUMERICAL_NOTE_REDUCED_PRECISION_REDUCTION)))
        return false;
    if (relax < 1 && (e->behavior & NOTE(CUDNN_BEHAVIOR_NOTE_RUNTIME_COMPILATION))) return false;
    if (relax < 2 && !fp32 && !(e->numerical & NOTE(CUDNN_NUMERICAL_NOTE_TENSOR_CORE))) return false;
    if (relax < 3 && p != CU_CONV_FWD && (e->numerical & NOTE(CUDNN_NUMERICAL_NOTE_NONDETERMINISTIC))) return false;
    return true;
}

// An execution plan of cfg; its workspace in *ws.
static cudnnStatus_t plan_of(desc_t *plan, cudnnHandle_t h, desc_t cfg, size_t *ws) {
    int64_t bytes = 0, got = 0;
    cudnnStatus_t s = cudnnBackendCreateDescriptor(CUDNN_BACKEND_EXECUTION_PLAN_DESCRIPTOR, plan);
    if (s != CUDNN_STATUS_SUCCESS) return s;
    s = set(*plan, CUDNN_ATTR_EXECUTION_PLAN_HANDLE, CUDNN_TYPE_HANDLE, 1, &h); // as the graph's handle
    if (s == CUDNN_STATUS_SUCCESS) s = set(*plan, CUDNN_ATTR_EXECUTION_PLAN_ENGINE_CONFIG, CUDNN_TYPE_BACKEND_DESCRIPTOR, 1, &cfg);
    if (s == CUDNN_STATUS_SUCCESS) s = cudnnBackendFinalize(*plan);
    if (s == CUDNN_STATUS_SUCCESS)
        s = cudnnBackendGetAttribute(*plan, CUDNN_ATTR_EXECUTION_PLAN_WORKSPACE_SIZE, CUDNN_TYPE_INT64, 1, &got, &bytes);
    if (s == CUDNN_STATUS_SUCCESS && bytes < 0) s = CUDNN_STATUS_INTERNAL_ERROR;
    if (s != CUDNN_STATUS_SUCCESS) {
        cudnnBackendDestroyDescriptor(*plan);
        *plan = NULL;
    }
    *ws = (size_t)bytes;
    return s;
}

// An engine configuration that passed the filters and finalized within
// the cap: its plan, its place in the list, its engine, its workspace.
typedef struct {
    desc_t plan;
    int64_t k, engine;
    size_t ws;
} candidate;

// Up to `limit` of cfgs (in the heuristics' order) acceptable at the lowest
// relaxation level up to max_relax that has any, whose plans finalize
// within the cap: c[0 .. *count - 1].
static cudnnStatus_t candidates(cudnnHandle_t h, cu_conv_pass p, cudnnDataType_t dt, desc_t *cfgs, int64_t n,
                                int max_relax, size_t cap, int limit, candidate *c, int *count, const char **failed) {
    cudnnStatus_t first_error = CUDNN_STATUS_SUCCESS;
    bool *tried = (bool *)calloc((size_t)n + 1, sizeof(bool));
    *count = 0;
    if (!tried) return CUDNN_STATUS_INTERNAL_ERROR_HOST_ALLOCATION_FAILED;
    for (int relax = 0; relax <= max_relax && *count == 0; relax++)
        for (int64_t k = 0; k < n && *count < limit; k++) {
            engine_notes e;
            desc_t plan = NULL;
            size_t ws = 0;
            if (tried[k]) continue;
            cudnnStatus_t s = notes_of(cfgs[k], &e);
            if (s == CUDNN_STATUS_SUCCESS && !acceptable(&e, p, dt, relax)) continue;
            tried[k] = true;
            if (s == CUDNN_STATUS_SUCCESS) s = plan_of(&plan, h, cfgs[k], &ws);
            if (s == CUDNN_STATUS_SUCCESS && ws > cap) cudnnBackendDestroyDescriptor(plan);
            else if (s == CUDNN_STATUS_SUCCESS) c[(*count)++] = {plan, k, e.index, ws};
            else if (first_error == CUDNN_STATUS_SUCCESS)
                first_error = s; // an engine that does not support the shape says so at finalization
        }
    free(tried);
    if (*count) return CUDNN_STATUS_SUCCESS;
    if (first_error / 1000 == CUDNN_STATUS_BAD_PARAM / 1000) { // our mistake, not the engines' limits
        *failed = "building an execution plan";
        return first_error;
    }
    *failed = "no engine of cuDNN's heuristics within our filters and the workspace cap";
    return CUDNN_STATUS_NOT_SUPPORTED;
}

// ---- measuring -----------------------------------------------------------------------------

enum { TIMED_RUNS = 3 };

static size_t round_up(size_t bytes) { return (bytes + 255) & ~(size_t)255; }

// Plan `plan` run once to warm up (a first run may load its kernels), then
// TIMED_RUNS times, each between two events on the handle's stream: *ms,
// the fastest timed run (the least disturbed by anything else on the GPU).
// Where the warm-up alone took over `cutoff` ms (0: no cutoff), the timed
// runs are skipped and *ms is the warm-up's: an engine that slow cannot
// win, and at a large batch a slow engine's run is a good part of a second.
static cudnnStatus_t time_plan(cudnnHandle_t h, desc_t plan, void *const ptr[4], cudaStream_t stream,
                               cudaEvent_t ev[2], float cutoff, float *ms, const char **failed) {
    cu_conv_plan tmp;
    memset(&tmp, 0, sizeof tmp);
    tmp.plan = plan;
    cudnnStatus_t s = CUDNN_STATUS_SUCCESS;
    *ms = 0;
    for (int r = 0; r <= TIMED_RUNS && s == CUDNN_STATUS_SUCCESS; r++) {
        float t = 0;
        if (cudaEventRecord(ev[0], stream) != cudaSuccess) s = CUDNN_STATUS_EXECUTION_FAILED;
        if (s == CUDNN_STATUS_SUCCESS) // (the first run makes the variant pack the others reuse)
            s = cu_conv_plan_run(h, &tmp, ptr[0], ptr[1], ptr[2], ptr[3]);
        if (s == CUDNN_STATUS_SUCCESS &&
            (cudaEventRecord(ev[1], stream) != cudaSuccess || cudaEventSynchronize(ev[1]) != cudaSuccess ||
             cudaEventElapsedTime(&t, ev[0], ev[1]) != cudaSuccess))
            s = CUDNN_STATUS_EXECUTION_FAILED;
        if (s != CUDNN_STATUS_SUCCESS) break;
        if (r == 0 && cutoff > 0 && t > cutoff) {
            *ms = t;
            break;
        }
        if (r == 1 || (r > 1 && t < *ms)) *ms = t;
    }
    if (tmp.pack) cudnnBackendDestroyDescriptor(tmp.pack);
    if (s != CUDNN_STATUS_SUCCESS) *failed = "running an engine to time it";
    return s;
}

// The fastest of c[0 .. count - 1] on pass tensors of shape s (zeros, in
// device memory of their own): *best, the first of equally fast ones.
static cudnnStatus_t fastest(cudnnHandle_t h, const cu_conv_shape *s, const candidate *c, int count, int *best,
                             const char **failed) {
    size_t es = s->dt == CUDNN_DATA_FLOAT ? 4 : 2, ws = 0;
    size_t bytes[4] = {round_up((size_t)s->n * s->c * s->h * s->w * es),
                       round_up((size_t)s->k * s->c * s->r * s->r * es),
                       round_up((size_t)s->n * s->k * s->oh * s->ow * es), 0};
    for (int j = 0; j < count; j++)
        if (c[j].ws > ws) ws = c[j].ws;
    bytes[3] = round_up(ws);
    cudaStream_t stream = NULL;
    cudaEvent_t ev[2] = {NULL, NULL};
    char *mem = NULL;
    cudnnStatus_t st = cudnnGetStream(h, &stream);
    if (st != CUDNN_STATUS_SUCCESS) {
        *failed = "cudnnGetStream";
        return st;
    }
    if (cudaMalloc((void **)&mem, bytes[0] + bytes[1] + bytes[2] + bytes[3]) != cudaSuccess) {
        cudaGetLastError(); // not sticky: the caller goes on
        *failed = "device memory for the tensors to time engines on";
        return CUDNN_STATUS_INTERNAL_ERROR_DEVICE_ALLOCATION_FAILED;
    }
    void *ptr[4] = {mem, mem + bytes[0], mem + bytes[0] + bytes[1], mem + bytes[0] + bytes[1] + bytes[2]};
    if (cudaMemsetAsync(mem, 0, bytes[0] + bytes[1] + bytes[2], stream) != cudaSuccess ||
        cudaEventCreate(&ev[0]) != cudaSuccess || cudaEventCreate(&ev[1]) != cudaSuccess) {
        *failed = "setting up the timing of engines";
        st = CUDNN_STATUS_EXECUTION_FAILED;
    }
    float best_ms = 0;
    for (int j = 0; j < count && st == CUDNN_STATUS_SUCCESS; j++) {
        float ms;
        // (20 ms at least: a first run may pay for loading its kernels, CUDA's lazy loading)
        st = time_plan(h, c[j].plan, ptr, stream, ev, j ? (4 * best_ms > 20 ? 4 * best_ms : 20) : 0, &ms, failed);
        if (st == CUDNN_STATUS_SUCCESS && (j == 0 || ms < best_ms)) best_ms = ms, *best = j;
    }
    for (int k = 0; k < 2; k++)
        if (ev[k]) cudaEventDestroy(ev[k]);
    cudaFree(mem); // (which waits for the GPU: no run is left on it)
    return st;
}

// ---- making plans --------------------------------------------------------------------------

// The plan of a given choice: the configuration at its place in the
// heuristics' list, checked to be its engine and to keep the filters' hard
// rules (a record edited by hand cannot bring TF32 in). *cfg: the
// configuration (the caller keeps it with the plan).
static cudnnStatus_t given_plan(cudnnHandle_t h, cu_conv_pass p, cudnnDataType_t dt, desc_t graph,
                                const cu_conv_choice *g, size_t cap, cu_conv_plan *out, desc_t *cfg,
                                const char **failed) {
    desc_t *cfgs = NULL;
    int64_t n = 0, k = g->place >= 0 ? g->place : -1 - (int64_t)g->place;
    engine_notes e;
    size_t ws = 0;
    cudnnStatus_t st = heuristics(graph, g->place >= 0 ? CUDNN_HEUR_MODE_A : CUDNN_HEUR_MODE_FALLBACK, &cfgs, &n,
                                  failed);
    if (st == CUDNN_STATUS_SUCCESS && k >= n) {
        *failed = "the recorded engine configuration: cuDNN's heuristics list fewer";
        st = CUDNN_STATUS_NOT_SUPPORTED;
    }
    if (st == CUDNN_STATUS_SUCCESS && (st = notes_of(cfgs[k], &e)) != CUDNN_STATUS_SUCCESS)
        *failed = "reading an engine's notes";
    if (st == CUDNN_STATUS_SUCCESS && e.index != g->engine) {
        *failed = "the recorded engine configuration: cuDNN's heuristics list another engine in its place";
        st = CUDNN_STATUS_NOT_SUPPORTED;
    }
    if (st == CUDNN_STATUS_SUCCESS && !acceptable(&e, p, dt, 3)) {
        *failed = "the recorded engine configuration: its engine breaks our filters (TF32 or sums in half)";
        st = CUDNN_STATUS_NOT_SUPPORTED;
    }
    if (st == CUDNN_STATUS_SUCCESS && (st = plan_of(&out->plan, h, cfgs[k], &ws)) != CUDNN_STATUS_SUCCESS)
        *failed = "the recorded engine configuration: building its execution plan";
    if (st == CUDNN_STATUS_SUCCESS && ws > cap) {
        *failed = "the recorded engine configuration: its workspace is over the cap";
        st = CUDNN_STATUS_NOT_SUPPORTED;
    }
    if (st == CUDNN_STATUS_SUCCESS) {
        *cfg = cfgs[k];
        out->workspace = ws, out->choice = *g, out->fallback = g->place < 0;
    } else if (out->plan) {
        cudnnBackendDestroyDescriptor(out->plan);
        out->plan = NULL;
    }
    free_cfgs(cfgs, n, *cfg);
    return st;
}

// Picked from the heuristics' lists: mode A's first; where none of it will
// do, the fallback list (engines that support any graph they take, if
// slowly); a nondeterministic engine for a backward pass only where neither
// list has another (relaxation level 3: determinism goes last). Measured:
// the fastest of the candidates of the first list that has any.
static cudnnStatus_t picked_plan(cudnnHandle_t h, cu_conv_pass p, const cu_conv_shape *s, desc_t graph, size_t cap,
                                 bool measure, cu_conv_plan *out, desc_t *cfg, const char **failed) {
    static const cudnnBackendHeurMode_t modes[2] = {CUDNN_HEUR_MODE_A, CUDNN_HEUR_MODE_FALLBACK};
    cudnnStatus_t st = CUDNN_STATUS_NOT_SUPPORTED;
    for (int round = 0; round < 4 && st == CUDNN_STATUS_NOT_SUPPORTED; round++) {
        desc_t *cfgs = NULL;
        int64_t n = 0;
        candidate c[CU_CONV_CANDIDATES];
        int m = round % 2, count = 0, best = 0;
        st = heuristics(graph, modes[m], &cfgs, &n, failed);
        if (st == CUDNN_STATUS_SUCCESS)
            st = candidates(h, p, s->dt, cfgs, n, round < 2 ? 2 : 3, cap, measure ? CU_CONV_CANDIDATES : 1, c,
                            &count, failed);
        if (st == CUDNN_STATUS_SUCCESS && count > 1) st = fastest(h, s, c, count, &best, failed);
        if (st == CUDNN_STATUS_SUCCESS) {
            const candidate *b = &c[best];
            out->plan = b->plan, out->workspace = b->ws, out->fallback = m == 1;
            out->choice.place = m == 0 ? (int)b->k : -1 - (int)b->k, out->choice.engine = b->engine;
            *cfg = cfgs[b->k];
        }
        for (int j = 0; j < count; j++)
            if (c[j].plan != out->plan) cudnnBackendDestroyDescriptor(c[j].plan);
        free_cfgs(cfgs, n, *cfg);
    }
    return st;
}

cudnnStatus_t cu_conv_plan_make(cudnnHandle_t h, cu_conv_pass p, const cu_conv_shape *s, float beta, size_t ws_cap,
                                cu_conv_pick pick, const cu_conv_choice *given, cu_conv_plan *out,
                                const char **failed) {
    desc_t t[3] = {NULL, NULL, NULL}, conv = NULL, op = NULL, graph = NULL, cfg = NULL;
    memset(out, 0, sizeof *out);
    out->beta = beta;
    *failed = "";
    cudnnStatus_t st = tensor(&t[0], UID_X, s->dt, s->n, s->c, s->h, s->w, failed);
    if (st == CUDNN_STATUS_SUCCESS) st = tensor(&t[1], UID_W, s->dt, s->k, s->c, s->r, s->r, failed);
    if (st == CUDNN_STATUS_SUCCESS) st = tensor(&t[2], UID_Y, s->dt, s->n, s->k, s->oh, s->ow, failed);
    if (st == CUDNN_STATUS_SUCCESS) st = convolution(&conv, s, failed);
    if (st == CUDNN_STATUS_SUCCESS) st = operation(&op, p, t, conv, beta, failed);
    if (st == CUDNN_STATUS_SUCCESS) st = graph_of(&graph, h, op, failed);
    if (st == CUDNN_STATUS_SUCCESS)
        st = pick == CU_PICK_GIVEN ? given_plan(h, p, s->dt, graph, given, ws_cap, out, &cfg, failed)
                                   : picked_plan(h, p, s, graph, ws_cap, pick == CU_PICK_FASTEST, out, &cfg, failed);
    desc_t from[7] = {t[0], t[1], t[2], conv, op, graph, cfg};
    memcpy(out->from, from, sizeof from);
    if (st != CUDNN_STATUS_SUCCESS) cu_conv_plan_free(out);
    return st;
}

cudnnStatus_t cu_conv_plan_run(cudnnHandle_t h, cu_conv_plan *p, const void *x, const void *w, const void *y,
                               void *ws) {
    void *ptrs[4] = {(void *)x, (void *)w, (void *)y, ws};
    for (int k = 0; k < 3; k++)
        if ((uintptr_t)ptrs[k] % 16) return CUDNN_STATUS_BAD_PARAM; // the tensors promise 16-byte alignment
    // The variant pack of the last run, while the pointers are the same (an op's buffers rarely
    // move): a run is then one cudnnBackendExecute, no descriptor made or finalized.
    if (p->pack && memcmp(ptrs, p->pack_ptrs, sizeof ptrs) == 0) return cudnnBackendExecute(h, p->plan, p->pack);
    if (p->pack) cudnnBackendDestroyDescriptor(p->pack);
    p->pack = NULL;
    int64_t uids[3] = {UID_X, UID_W, UID_Y};
    desc_t pack;
    cudnnStatus_t s = cudnnBackendCreateDescriptor(CUDNN_BACKEND_VARIANT_PACK_DESCRIPTOR, &pack);
    if (s != CUDNN_STATUS_SUCCESS) return s;
    s = set(pack, CUDNN_ATTR_VARIANT_PACK_UNIQUE_IDS, CUDNN_TYPE_INT64, 3, uids);
    if (s == CUDNN_STATUS_SUCCESS) s = set(pack, CUDNN_ATTR_VARIANT_PACK_DATA_POINTERS, CUDNN_TYPE_VOID_PTR, 3, ptrs);
    if (s == CUDNN_STATUS_SUCCESS) s = set(pack, CUDNN_ATTR_VARIANT_PACK_WORKSPACE, CUDNN_TYPE_VOID_PTR, 1, &ws);
    if (s == CUDNN_STATUS_SUCCESS) s = cudnnBackendFinalize(pack);
    if (s != CUDNN_STATUS_SUCCESS) {
        cudnnBackendDestroyDescriptor(pack);
        return s;
    }
    p->pack = pack;
    memcpy(p->pack_ptrs, ptrs, sizeof ptrs);
    return cudnnBackendExecute(h, p->plan, p->pack);
}

void cu_conv_plan_free(cu_conv_plan *p) {
    if (p->pack) cudnnBackendDestroyDescriptor(p->pack);
    if (p->plan) cudnnBackendDestroyDescriptor(p->plan);
    for (int k = 0; k < 7; k++)
        if (p->from[k]) cudnnBackendDestroyDescriptor(p->from[k]);
    memset(p, 0, sizeof *p);
}
