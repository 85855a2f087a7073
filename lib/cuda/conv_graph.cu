// Convolution passes through cuDNN's graph API: conv_graph.h.
#include "cuda/conv_graph.h"

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

// An engine configuration's engine's numerical and behaviour notes as bit
// sets (bit k: note k).
typedef struct {
    unsigned numerical, behavior;
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

// The first of cfgs (heuristics' order) acceptable at the lowest
// relaxation level up to max_relax that has one, whose plan finalizes
// within the cap.
static cudnnStatus_t choose(cudnnHandle_t h, cu_conv_pass p, cudnnDataType_t dt, desc_t *cfgs, int64_t n,
                            int max_relax, size_t cap, cu_conv_plan *out, int *chosen, const char **failed) {
    cudnnStatus_t first_error = CUDNN_STATUS_SUCCESS;
    bool *tried = (bool *)calloc((size_t)n + 1, sizeof(bool));
    if (!tried) return CUDNN_STATUS_INTERNAL_ERROR_HOST_ALLOCATION_FAILED;
    for (int relax = 0; relax <= max_relax && !out->plan; relax++)
        for (int64_t k = 0; k < n && !out->plan; k++) {
            engine_notes e;
            size_t ws = 0;
            if (tried[k]) continue;
            cudnnStatus_t s = notes_of(cfgs[k], &e);
            if (s == CUDNN_STATUS_SUCCESS && !acceptable(&e, p, dt, relax)) continue;
            tried[k] = true;
            if (s == CUDNN_STATUS_SUCCESS) s = plan_of(&out->plan, h, cfgs[k], &ws);
            if (s == CUDNN_STATUS_SUCCESS && ws > cap) {
                cudnnBackendDestroyDescriptor(out->plan);
                out->plan = NULL;
            } else if (s == CUDNN_STATUS_SUCCESS) {
                out->workspace = ws, *chosen = (int)k;
            } else if (first_error == CUDNN_STATUS_SUCCESS) {
                first_error = s; // an engine that does not support the shape says so at finalization
            }
        }
    free(tried);
    if (out->plan) return CUDNN_STATUS_SUCCESS;
    if (first_error / 1000 == CUDNN_STATUS_BAD_PARAM / 1000) { // our mistake, not the engines' limits
        *failed = "building an execution plan";
        return first_error;
    }
    *failed = "no engine of cuDNN's heuristics within our filters and the workspace cap";
    return CUDNN_STATUS_NOT_SUPPORTED;
}

cudnnStatus_t cu_conv_plan_make(cudnnHandle_t h, cu_conv_pass p, const cu_conv_shape *s, float beta, size_t ws_cap,
                                cu_conv_plan *out, const char **failed) {
    desc_t t[3] = {NULL, NULL, NULL}, conv = NULL, op = NULL, graph = NULL, *cfgs = NULL;
    int64_t n_cfg = 0;
    memset(out, 0, sizeof *out);
    out->beta = beta;
    *failed = "";
    cudnnStatus_t st = tensor(&t[0], UID_X, s->dt, s->n, s->c, s->h, s->w, failed);
    if (st == CUDNN_STATUS_SUCCESS) st = tensor(&t[1], UID_W, s->dt, s->k, s->c, s->r, s->r, failed);
    if (st == CUDNN_STATUS_SUCCESS) st = tensor(&t[2], UID_Y, s->dt, s->n, s->k, s->oh, s->ow, failed);
    if (st == CUDNN_STATUS_SUCCESS) st = convolution(&conv, s, failed);
    if (st == CUDNN_STATUS_SUCCESS) st = operation(&op, p, t, conv, beta, failed);
    if (st == CUDNN_STATUS_SUCCESS) st = graph_of(&graph, h, op, failed);
    // Mode A's list first; where none of it will do, the fallback list (engines that support any
    // graph they take, if slowly); a nondeterministic engine for a backward pass only where neither
    // list has another (relaxation level 3: determinism goes last).
    static const cudnnBackendHeurMode_t modes[2] = {CUDNN_HEUR_MODE_A, CUDNN_HEUR_MODE_FALLBACK};
    desc_t cfg = NULL;
    for (int round = 0; round < 4 && st == CUDNN_STATUS_SUCCESS && !out->plan; round++) {
        int chosen = -1, m = round % 2;
        cudnnStatus_t found = heuristics(graph, modes[m], &cfgs, &n_cfg, failed);
        if (found == CUDNN_STATUS_SUCCESS)
            found = choose(h, p, s->dt, cfgs, n_cfg, round < 2 ? 2 : 3, ws_cap, out, &chosen, failed);
        for (int64_t k = 0; k < n_cfg; k++)
            if (k != chosen) cudnnBackendDestroyDescriptor(cfgs[k]);
        if (chosen >= 0) cfg = cfgs[chosen], out->fallback = m == 1;
        free(cfgs);
        cfgs = NULL, n_cfg = 0;
        if (round == 3 || found != CUDNN_STATUS_NOT_SUPPORTED) st = found;
    }
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
