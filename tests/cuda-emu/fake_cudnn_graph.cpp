// The fake cuDNN's graph API (cudnn_graph.h's backend descriptors), beside
// its legacy API (fake_cudnn.cpp), whose arithmetic it shares (fake_conv.h).
//
// What lib/cuda/conv_graph.cu builds: tensors, a convolution, one
// convolution operation in an operation graph, cuDNN's heuristics, engine
// configurations, an execution plan, variant packs. Every attribute is
// checked against its type and count, every finalization against what it
// needs (shapes consistent, NHWC packed strides); anything else is
// CUDNN_STATUS_BAD_PARAM (a mistake) or CUDNN_STATUS_NOT_SUPPORTED (a
// layout the fake does not do).
//
// The heuristics list seven engines, so that the caller's filters and its
// measurements are put to work; each computes the same values, but for
// engine 4's backward filter:
//   9: 1 GiB of workspace (over any cap: its plan must be refused);
//   0: nondeterministic (fine for forward, never for a backward pass);
//   1: TF32 in fp32 (tensor cores, down-converted inputs), half sums in
//      half (reduced-precision reduction): never;
//   2: compiled at run time (deterministic; a last resort);
//   3: deterministic, 4 KiB of workspace (filled with junk at each run);
//   4: deterministic, sums backward filter's images last to first (other
//      bytes, as another engine's order gives on a GPU);
//   5: as 3.
// Tensor cores (half) on all but 9. Engines 4 and 5 are "faster than the
// emulation": a run takes 2 s (the faster of the two for this handle, by
// its serial's parity) or 1 s off the event clock, so that measuring picks
// one of them, which one alternating from one handle to the next. The
// heuristics' first choices (0 forward, 3 backward) are never among them:
// runs without measuring keep the host's clock. A backward pass run by
// engine 0 or any pass by engine 1 fails with CUDNN_STATUS_EXECUTION_FAILED
// and a line on stderr. FAKE_CUDNN_GRAPH=none: every plan is
// CUDNN_STATUS_NOT_SUPPORTED (as a cuDNN without an engine for the shape);
// FAKE_CUDNN_GRAPH=broken: CUDNN_STATUS_BAD_PARAM (as a cuDNN that takes
// what the caller built otherwise than the fake does); FAKE_CUDNN_GRAPH=
// fallback: heuristics other than the fallback mode list only the first
// three (nothing a backward pass may take); FAKE_CUDNN_GRAPH=no-dgrad: no
// engine for backward data.

#include <cudnn.h>

#include "fake_conv.h"

#include <map>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <vector>

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
            {3, tc, 0, 4096},
            {4, tc, 0, 0},
            {5, tc, 0, 4096}};
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
        if (only && strcmp(only, "no-dgrad") == 0 && pass_of(g->desc(CUDNN_ATTR_OPERATIONGRAPH_OPS)) == PASS_BWD_DATA)
            d->engines.clear();
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
    case CUDNN_ATTR_ENGINE_NUMERICAL_NOTE:
        if (d->type != CUDNN_BACKEND_ENGINE_DESCRIPTOR || type != CUDNN_TYPE_NUMERICAL_NOTE) return CUDNN_STATUS_BAD_PARAM;
        return notes_out(d->engine.numerical, CUDNN_NUMERICAL_NOTE_TYPE_COUNT);
    case CUDNN_ATTR_ENGINE_BEHAVIOR_NOTE:
        if (d->type != CUDNN_BACKEND_ENGINE_DESCRIPTOR || type != CUDNN_TYPE_BEHAVIOR_NOTE) return CUDNN_STATUS_BAD_PARAM;
        return notes_out(d->engine.behavior, CUDNN_BEHAVIOR_NOTE_TYPE_COUNT);
    case CUDNN_ATTR_ENGINE_GLOBAL_INDEX:
        return d->type == CUDNN_BACKEND_ENGINE_DESCRIPTOR ? int64_out(d->engine.index) : CUDNN_STATUS_BAD_PARAM;
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
    if (e.index == 4 || e.index == 5) fake_event_clock_credit((e.index == 4) == (h->serial % 2 == 0) ? 2.0 : 1.0);
    return run_pass(p, s, dt, &ab[0], &ab[1], ptr[0], ptr[1], ptr[2], e.index == 4);
}

} // extern "C"
