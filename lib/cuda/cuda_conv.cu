// The cuda backend's convolutions (cuda_net.h): cuDNN's descriptors; per
// batch size the graph API's plans (conv_graph.h) or, where the graph API
// cannot plan one (or FU_CUDNN_API=legacy), the legacy API's algorithms,
// either picked by cuDNN's heuristics or (--conv-algos) measured and
// recorded (conv_algos.h); and the forward and backward passes around them
// (the weight layout and, under amp, the half conversions).
#include "cuda/cuda_net.h"

#include <ctype.h>
#include <stdlib.h>
#include <string.h>

// The first algorithm (in cuDNN's order: the heuristics', or the measured
// times') that works within the workspace cap, preferring, in this order,
// for backward a deterministic one (same inputs, same bytes), and the math
// we want: FMA for fp32 (TF32 tensor cores would give fp32 training ~1e-3
// relative errors), tensor cores for half. Relaxed only where cuDNN offers
// nothing better for the shape. -1: none.
template <typename Perf> static int choose(const Perf *perf, int got, bool deterministic, cudnnMathType_t want) {
    for (int relax = 0; relax < 4; relax++) {
        bool need_det = deterministic && relax < 2, need_math = relax % 2 == 0;
        for (int k = 0; k < got; k++) {
            const Perf *p = &perf[k];
            if (p->status != CUDNN_STATUS_SUCCESS || p->memory > WORKSPACE_CAP) continue;
            if (need_det && p->determinism != CUDNN_DETERMINISTIC) continue;
            // fp32 (want FMA) never relaxes to tensor-op math: for float tensors that is TF32,
            // and run_math only turns DEFAULT into FMA.
            bool lossy = p->mathType == CUDNN_TENSOR_OP_MATH_ALLOW_CONVERSION ||
                         (want == CUDNN_FMA_MATH && p->mathType == CUDNN_TENSOR_OP_MATH);
            if (need_math ? p->mathType != want : lossy) continue;
            return k;
        }
    }
    return -1;
}

// The math type to run an algorithm with: in fp32, cuDNN's "default" would
// allow TF32 on Ampere and later, so it runs as FMA.
static cudnnMathType_t run_math(const cu_net *d, cudnnMathType_t m) {
    return d->amp == FU_AMP_OFF && m == CUDNN_DEFAULT_MATH ? CUDNN_FMA_MATH : m;
}

// cuDNN's candidates for the three passes of convolution o, in its order
// (measured: fastest first, each run on the GPU; else the heuristics'),
// and the choice among them; need: the workspace each choice asked for.
static int query_algorithms(cu_net *d, cu_op *o, bool measure, size_t need[3]) {
    cudnnConvolutionFwdAlgoPerf_t pf[CUDNN_CONVOLUTION_FWD_ALGO_COUNT];
    cudnnConvolutionBwdDataAlgoPerf_t pd[CUDNN_CONVOLUTION_BWD_DATA_ALGO_COUNT];
    cudnnConvolutionBwdFilterAlgoPerf_t pw[CUDNN_CONVOLUTION_BWD_FILTER_ALGO_COUNT];
    int nf = 0, nd = 0, nw = 0;
    cudnnMathType_t want = d->amp == FU_AMP_OFF ? CUDNN_FMA_MATH : CUDNN_TENSOR_OP_MATH;
    DNN(cudnnSetConvolutionMathType(o->conv, want));
    if (measure) {
        DNN(cudnnFindConvolutionForwardAlgorithm(d->dnn, o->x, o->w, o->conv, o->y, CUDNN_CONVOLUTION_FWD_ALGO_COUNT,
                                                 &nf, pf));
        DNN(cudnnFindConvolutionBackwardDataAlgorithm(d->dnn, o->w, o->y, o->conv, o->x,
                                                      CUDNN_CONVOLUTION_BWD_DATA_ALGO_COUNT, &nd, pd));
        DNN(cudnnFindConvolutionBackwardFilterAlgorithm(d->dnn, o->x, o->y, o->conv, o->w,
                                                        CUDNN_CONVOLUTION_BWD_FILTER_ALGO_COUNT, &nw, pw));
    } else {
        DNN(cudnnGetConvolutionForwardAlgorithm_v7(d->dnn, o->x, o->w, o->conv, o->y,
                                                   CUDNN_CONVOLUTION_FWD_ALGO_COUNT, &nf, pf));
        DNN(cudnnGetConvolutionBackwardDataAlgorithm_v7(d->dnn, o->w, o->y, o->conv, o->x,
                                                        CUDNN_CONVOLUTION_BWD_DATA_ALGO_COUNT, &nd, pd));
        DNN(cudnnGetConvolutionBackwardFilterAlgorithm_v7(d->dnn, o->x, o->y, o->conv, o->w,
                                                          CUDNN_CONVOLUTION_BWD_FILTER_ALGO_COUNT, &nw, pw));
    }
    int f = choose(pf, nf, false, want), b = choose(pd, nd, true, want), w = choose(pw, nw, true, want);
    if (f < 0 || b < 0 || w < 0)
        return fu_fail("cuda backend", "%s: cuDNN offers no %s algorithm within %zu MiB of workspace", d->what,
                       f < 0 ? "forward" : b < 0 ? "backward-data" : "backward-filter", WORKSPACE_CAP >> 20);
    o->fwd = pf[f].algo, o->fwd_math = run_math(d, pf[f].mathType);
    o->bwd_data = pd[b].algo, o->bwd_data_math = run_math(d, pd[b].mathType);
    o->bwd_filter = pw[w].algo, o->bwd_filter_math = run_math(d, pw[w].mathType);
    need[0] = pf[f].memory, need[1] = pd[b].memory, need[2] = pw[w].memory;
    return 0;
}

// A recorded choice (conv_algos.h) into o, checked to be cuDNN's values.
static int recorded_algorithms(cu_net *d, cu_op *o, const fu_algo_rec *r) {
    const int *v = r->v;
    bool math_ok = true;
    for (int k = 1; k < 6; k += 2)
        math_ok = math_ok && (v[k] == CUDNN_DEFAULT_MATH || v[k] == CUDNN_TENSOR_OP_MATH ||
                              v[k] == CUDNN_TENSOR_OP_MATH_ALLOW_CONVERSION || v[k] == CUDNN_FMA_MATH);
    if (!math_ok || v[0] < 0 || v[0] >= CUDNN_CONVOLUTION_FWD_ALGO_COUNT || v[2] < 0 ||
        v[2] >= CUDNN_CONVOLUTION_BWD_DATA_ALGO_COUNT || v[4] < 0 || v[4] >= CUDNN_CONVOLUTION_BWD_FILTER_ALGO_COUNT)
        return fu_fail("cuda backend", "%s: %s records '%s' with values that are not cuDNN's algorithms", d->what,
                       d->algos.path, r->key);
    o->fwd = (cudnnConvolutionFwdAlgo_t)v[0], o->fwd_math = (cudnnMathType_t)v[1];
    o->bwd_data = (cudnnConvolutionBwdDataAlgo_t)v[2], o->bwd_data_math = (cudnnMathType_t)v[3];
    o->bwd_filter = (cudnnConvolutionBwdFilterAlgo_t)v[4], o->bwd_filter_math = (cudnnMathType_t)v[5];
    return 0;
}

// Convolution o's algorithms: from the record under key where --conv-algos
// has one; else measured and recorded (--conv-algos) or the heuristics'.
// ws grows to the largest workspace any of them needs.
static int pick_algorithms(cu_net *d, cu_op *o, const char *key, size_t *ws) {
    size_t need[3] = {0, 0, 0}, got[3] = {0, 0, 0};
    const fu_algo_rec *r = d->algos.path ? fu_algo_find(&d->algos, key) : NULL;
    if (r) {
        if (recorded_algorithms(d, o, r) < 0) return -1;
    } else {
        if (query_algorithms(d, o, d->algos.path != NULL, need) < 0) return -1;
        int v[6] = {o->fwd, o->fwd_math, o->bwd_data, o->bwd_data_math, o->bwd_filter, o->bwd_filter_math};
        if (d->algos.path && fu_algo_add(&d->algos, key, v) < 0) return -1;
    }
    // The workspace each algorithm asks for with the math it runs with (the
    // query's figure was for the query's math type), at least the query's.
    DNN(cudnnSetConvolutionMathType(o->conv, o->fwd_math));
    DNN(cudnnGetConvolutionForwardWorkspaceSize(d->dnn, o->x, o->w, o->conv, o->y, o->fwd, &got[0]));
    DNN(cudnnSetConvolutionMathType(o->conv, o->bwd_data_math));
    DNN(cudnnGetConvolutionBackwardDataWorkspaceSize(d->dnn, o->w, o->y, o->conv, o->x, o->bwd_data, &got[1]));
    DNN(cudnnSetConvolutionMathType(o->conv, o->bwd_filter_math));
    DNN(cudnnGetConvolutionBackwardFilterWorkspaceSize(d->dnn, o->x, o->y, o->conv, o->w, o->bwd_filter, &got[2]));
    for (int k = 0; k < 3; k++) {
        size_t bytes = got[k] > need[k] ? got[k] : need[k];
        if (bytes > *ws) *ws = bytes;
    }
    return 0;
}

static int set_nhwc(cu_net *d, cudnnTensorDescriptor_t t, int n, const fu_op *op, cudnnDataType_t dt) {
    DNN(cudnnSetTensor4dDescriptor(t, CUDNN_TENSOR_NHWC, dt, n, op->c, op->h, op->w));
    return 0;
}

// The output shape cuDNN computes must be the op list's.
static int check_out(cu_net *d, const fu_op *op, int n, const int got[4]) {
    if (got[0] != n || got[1] != op->c || got[2] != op->h || got[3] != op->w)
        return fu_fail("cuda backend", "%s: cuDNN computes an output of (%d, %d, %d, %d)", d->what, got[0], got[1],
                       got[2], got[3]);
    return 0;
}

// The key of convolution i's record for n images (conv_algos.h): the
// backend's prefix, the API ("graph": engine configurations; "legacy":
// algorithms), then input (n x c x h x w), filter (o x k x k), stride,
// padding, dilation.
static void algo_key(const cu_net *d, int i, int n, const char *api, char *key, size_t size) {
    const fu_op *op = &d->m->ops[i], *x = &d->m->ops[op->in[0]];
    snprintf(key, size, "%s:%s:%dx%dx%dx%d:%dx%dx%d:s%dp%dd%d", d->algo_key, api, n, x->c, x->h, x->w, op->c, op->k,
             op->k, op->stride, op->pad, op->dil);
}

static void free_set(cu_conv_set *p) {
    cu_conv_plan_free(&p->fwd), cu_conv_plan_free(&p->dx), cu_conv_plan_free(&p->dw);
    p->n = 0, p->legacy = false;
}

void conv_free(cu_op *o) {
    if (o->x) cudnnDestroyTensorDescriptor(o->x);
    if (o->y) cudnnDestroyTensorDescriptor(o->y);
    if (o->w) cudnnDestroyFilterDescriptor(o->w);
    if (o->conv) cudnnDestroyConvolutionDescriptor(o->conv);
    for (int k = 0; k < CU_CONV_SETS; k++) free_set(&o->sets[k]);
}

// The set for n images: the one made for n before, else an empty one or
// the least recently used, emptied.
static cu_conv_set *set_for(cu_op *o, int n, unsigned long now) {
    int pick = 0;
    for (int k = 0; k < CU_CONV_SETS; k++) {
        if (o->sets[k].n == n) {
            pick = k;
            break;
        }
        if (o->sets[k].used < o->sets[pick].used) pick = k; // an empty one has used 0
    }
    cu_conv_set *p = &o->sets[pick];
    if (p->n != n) free_set(p);
    p->used = now;
    o->set = pick;
    return p;
}

// A record's three choices (conv_algos.h's six numbers: place and engine
// for forward, backward data, backward filter), and back.
static void choices_of(const fu_algo_rec *r, cu_conv_choice c[3]) {
    for (int k = 0; k < 3; k++) c[k].place = r->v[2 * k], c[k].engine = r->v[2 * k + 1];
}

static int record_choices(cu_net *d, const char *key, const cu_conv_set *set) {
    const cu_conv_plan *p[3] = {&set->fwd, &set->dx, &set->dw};
    int v[6];
    for (int k = 0; k < 3; k++) {
        if (p[k]->choice.engine < 0 || p[k]->choice.engine > INT32_MAX)
            return fu_fail("cuda backend", "%s: cuDNN's engine %lld does not fit a record", d->what,
                           (long long)p[k]->choice.engine);
        v[2 * k] = p[k]->choice.place, v[2 * k + 1] = (int)p[k]->choice.engine;
    }
    return fu_algo_add(&d->algos, key, v);
}

// Convolution i's plans through the graph API for n images; ws grows to
// their largest workspace. Their engine configurations: the heuristics'
// first within our filters; with --conv-algos, the record's under key, or
// where there is none the fastest (measured), then recorded (a measurement
// plans all three passes, so that the record serves every use of the
// shape). 0, or 1: cuDNN could not plan one of them (no engine within our
// filters, conv_graph.h, or another failure, said in d->graph_why), and the
// legacy API takes the convolution for n images instead; with
// FU_CUDNN_API=graph, or where a record cannot be followed or a
// measurement failed, that is an error (-1).
static int graph_plans(cu_net *d, int i, int n, const char *key, size_t *ws) {
    const fu_op *op = &d->m->ops[i], *x = &d->m->ops[op->in[0]];
    cu_op *o = &d->op[i];
    cu_conv_set *set = set_for(o, n, ++d->setups);
    cu_conv_shape s = {n, x->c, x->h, x->w, op->c, op->k, op->h, op->w, op->stride, op->pad, op->dil, d->dt};
    const fu_algo_rec *r = d->algos.path ? fu_algo_find(&d->algos, key) : NULL;
    cu_conv_pick pick = !d->algos.path ? CU_PICK_FIRST : r ? CU_PICK_GIVEN : CU_PICK_FASTEST;
    cu_conv_choice given[3] = {{0, 0}, {0, 0}, {0, 0}};
    if (r) choices_of(r, given);
    // dx: none for the image (a stage's inner input has one); added into where backward adds
    // (plan_gradients), in fp32 (under amp cuDNN writes it in half, and a kernel adds).
    bool dx = grad_of(d, op->in[0]) != NULL, dx_adds = d->amp == FU_AMP_OFF && adds(d, i, op->in[0]);
    struct {
        cu_conv_pass pass;
        float beta;
        cu_conv_plan *plan;
        bool want;
        const char *name;
    } want[3] = {{CU_CONV_FWD, 0, &set->fwd, true, "forward"},
                 {CU_CONV_BWD_DATA, dx_adds ? 1.0f : 0.0f, &set->dx, dx || pick == CU_PICK_FASTEST, "backward-data"},
                 {CU_CONV_BWD_FILTER, 0, &set->dw, true, "backward-filter"}};
    bool made = set->n == n;
    o->graph = false;
    if (made && set->legacy) return 1;
    for (int k = 0; k < 3; k++) {
        if (!want[k].want) continue;
        const char *failed = "the record has no plan for it (it was measured where none was needed)";
        bool none = pick == CU_PICK_GIVEN && given[k].place == CU_CONV_NO_PLAN;
        cudnnStatus_t st = made ? CUDNN_STATUS_SUCCESS
                           : none ? CUDNN_STATUS_NOT_SUPPORTED
                                  : cu_conv_plan_make(d->dnn, want[k].pass, &s, want[k].beta, WORKSPACE_CAP, pick,
                                                      &given[k], want[k].plan, &failed);
        if (st == CUDNN_STATUS_NOT_SUPPORTED && k == 1 && !dx && pick == CU_PICK_FASTEST) {
            want[k].plan->choice.place = CU_CONV_NO_PLAN; // measured for the record alone: none will do
            continue;
        }
        if (st != CUDNN_STATUS_SUCCESS) {
            free_set(set);
            set->n = n, set->legacy = true; // not tried again for n
            snprintf(d->graph_why, sizeof d->graph_why, "%s plan: %s: %s", want[k].name, failed,
                     cudnnGetErrorString(st));
            bool hard = pick == CU_PICK_GIVEN || (pick == CU_PICK_FASTEST && st != CUDNN_STATUS_NOT_SUPPORTED);
            if (d->api != CU_API_GRAPH && !hard) return 1;
            fu_fail("cuda backend", "%s: cuDNN's graph API, %s", d->what, d->graph_why);
            if (pick == CU_PICK_GIVEN)
                fu_hint("%s records it under %s: made by another build of this cuDNN? remove the line to measure "
                        "it again", d->algos.path, key);
            else if (d->api == CU_API_GRAPH)
                fu_hint("without FU_CUDNN_API=graph, cuDNN's legacy API takes such a convolution");
            return -1;
        }
        if (want[k].plan->workspace > *ws) *ws = want[k].plan->workspace;
    }
    if (pick == CU_PICK_FASTEST && !made && record_choices(d, key, set) < 0) return -1;
    set->n = n;
    o->graph = true;
    return 0;
}

int conv_setup(cu_net *d, int i, int n, size_t *ws) {
    const fu_op *op = &d->m->ops[i], *x = &d->m->ops[op->in[0]];
    cu_op *o = &d->op[i];
    int got[4];
    if (set_nhwc(d, o->x, n, x, d->dt) < 0 || set_nhwc(d, o->y, n, op, d->dt) < 0) return -1;
    DNN(cudnnSetFilter4dDescriptor(o->w, d->dt, CUDNN_TENSOR_NHWC, op->c, x->c, op->k, op->k));
    // fp32 accumulation, also for half tensors
    DNN(cudnnSetConvolution2dDescriptor(o->conv, op->pad, op->pad, op->stride, op->stride, op->dil, op->dil,
                                        CUDNN_CROSS_CORRELATION, CUDNN_DATA_FLOAT));
    DNN(cudnnGetConvolution2dForwardOutputDim(o->conv, o->x, o->w, &got[0], &got[1], &got[2], &got[3]));
    if (check_out(d, op, n, got) < 0) return -1;
    char key[FU_ALGO_KEY];
    algo_key(d, i, n, "graph", key, sizeof key);
    int rc = d->api == CU_API_LEGACY ? 1 : graph_plans(d, i, n, key, ws);
    if (rc <= 0) return rc;
    algo_key(d, i, n, "legacy", key, sizeof key);
    return pick_algorithms(d, o, key, ws);
}

// How the convolutions were chosen, for the start-up report (cnn-train
// adds " in FILE" after a note on --conv-algos).
void conv_note(cu_net *d) {
    int convs = 0, graph = 0, fallback = 0;
    for (int i = 0; i < d->m->n_ops; i++) {
        const cu_op *o = &d->op[i];
        if (d->m->ops[i].kind != FU_OP_CONV) continue;
        const cu_conv_set *p = &o->sets[o->set];
        convs++, graph += o->graph;
        fallback += o->graph && (p->fwd.fallback || p->dx.fallback || p->dw.fallback);
    }
    // how the graph API's engines and the legacy API's algorithms were picked
    char how[96] = "heuristics mode A";
    const char *legacy = d->algos.path ? "algorithms measured (cudnnFind*) and recorded" : "heuristics";
    if (d->algos.path)
        snprintf(how, sizeof how, "engine configurations measured (%d shapes now) and recorded", d->algos.added);
    else if (fallback)
        snprintf(how, sizeof how, "heuristics mode A (fallback heuristics for %d)", fallback);
    if (graph == convs)
        snprintf(d->conv_note, sizeof d->conv_note, "cuDNN's graph API, %s, for all %d", how, convs);
    else if (graph)
        snprintf(d->conv_note, sizeof d->conv_note, "cuDNN's graph API, %s, for %d of %d; its legacy API's %s for %d "
                 "(graph API: %s)", how, graph, convs, legacy, convs - graph, d->graph_why);
    else
        snprintf(d->conv_note, sizeof d->conv_note, "cuDNN's legacy API and its %s for all %d (%s%s)", legacy, convs,
                 d->api == CU_API_LEGACY ? "FU_CUDNN_API=legacy" : "graph API: ",
                 d->api == CU_API_LEGACY ? "" : d->graph_why);
}

// This conv's OHWI weight, and its gradient, in the wt/dwt arenas.
static void *wt_of(cu_net *d, const cu_op *o) { return (char *)d->wt + o->wt * d->es; }
static void *dwt_of(cu_net *d, const cu_op *o) { return (char *)d->dwt + o->wt * d->es; }

int conv_fwd(cu_net *d, int i, int n, const float *x, float *y) {
    const fu_op *op = &d->m->ops[i];
    const fu_op *src = &d->m->ops[op->in[0]];
    cu_op *o = &d->op[i];
    const void *in = x;
    void *out = y;
    int kk = op->k * op->k;
    mark(d, FWD_CONVERT);
    if (d->amp == FU_AMP_OFF) {
        cu_nchw_to_nhwc((size_t)op->c, src->c, kk, d->params + op->weight, CU_FP32, wt_of(d, o));
    } else {
        cu_weight_to_half(d->bf16, op->c, src->c, kk, d->params + op->weight, wt_of(d, o));
        if (out_type(d, op->in[0]) == CU_FP32) { // else half already (plan_fusion)
            cu_to_half(d->bf16, fu_op_numel(d->m, op->in[0], n), x, d->hx);
            in = d->hx;
        }
        out = o->half_out ? (void *)y : d->hy;
    }
    mark(d, section(FU_OP_CONV, false));
    if (o->graph) {
        DNN(cu_conv_plan_run(d->dnn, &o->sets[o->set].fwd, in, wt_of(d, o), out, d->ws));
    } else {
        DNN(cudnnSetConvolutionMathType(o->conv, o->fwd_math));
        DNN(cudnnConvolutionForward(d->dnn, &ONE, o->x, in, o->w, wt_of(d, o), o->conv, o->fwd, d->ws, d->ws_size,
                                    &ZERO, o->y, out));
    }
    mark(d, FWD_CONVERT);
    if (d->amp != FU_AMP_OFF && !o->half_out) cu_from_half(d->bf16, fu_op_numel(d->m, i, n), d->hy, y, false);
    return 0;
}

// fp32: dx accumulates in place (beta = 1), or is written (beta = 0) by its
// first writer (add false). amp: dy goes to half in hy (or is half already:
// o->half_grad); a half dx (a fused BN + ReLU's gradient, this conv its one
// writer) is written directly, an fp32 one goes through hx and is added
// to or written; then, unless x is half already (a fused BN + ReLU's, a
// BatchNorm's or a block's end, plan_fusion), hx is reused for x in half.
int conv_bwd(cu_net *d, int i, int n, const float *x, const float *dy, float *dx, bool add) {
    const fu_op *op = &d->m->ops[i];
    const fu_op *src = &d->m->ops[op->in[0]];
    cu_op *o = &d->op[i];
    bool amp = d->amp != FU_AMP_OFF;
    bool convert_x = amp && out_type(d, op->in[0]) == CU_FP32, convert_dx = amp && grad_type(d, op->in[0]) == CU_FP32;
    size_t in_len = fu_op_numel(d->m, op->in[0], n);
    const void *in = x, *g = dy;
    if (amp && !o->half_grad) {
        mark(d, BWD_CONVERT);
        cu_to_half(d->bf16, fu_op_numel(d->m, i, n), dy, d->hy);
        g = d->hy;
    }
    if (dx) {
        mark(d, section(FU_OP_CONV, true));
        bool beta = !amp && add; // under amp dx is written in half (scratch, or its own half buffer)
        void *out = convert_dx ? d->hx : (void *)dx;
        if (o->graph) {
            cu_conv_plan *p = &o->sets[o->set].dx;
            if (p->beta != (beta ? 1 : 0)) // planned from the same adds() as `add`
                return fu_fail("cuda backend", "%s: its backward-data plan %s dx, the pass %s", d->what,
                               p->beta ? "adds into" : "writes", beta ? "adds" : "writes");
            DNN(cu_conv_plan_run(d->dnn, p, out, wt_of(d, o), g, d->ws));
        } else {
            DNN(cudnnSetConvolutionMathType(o->conv, o->bwd_data_math));
            DNN(cudnnConvolutionBackwardData(d->dnn, &ONE, o->w, wt_of(d, o), o->y, g, o->conv, o->bwd_data, d->ws,
                                             d->ws_size, beta ? &ONE : &ZERO, o->x, out));
        }
        mark(d, BWD_CONVERT);
        if (convert_dx) cu_from_half(d->bf16, in_len, d->hx, dx, add);
    }
    if (convert_x) {
        cu_to_half(d->bf16, in_len, x, d->hx);
        in = d->hx;
    }
    mark(d, "backward conv filter (cuDNN)");
    if (o->graph) {
        DNN(cu_conv_plan_run(d->dnn, &o->sets[o->set].dw, in, dwt_of(d, o), g, d->ws));
    } else {
        DNN(cudnnSetConvolutionMathType(o->conv, o->bwd_filter_math));
        DNN(cudnnConvolutionBackwardFilter(d->dnn, &ONE, o->x, in, o->y, g, o->conv, o->bwd_filter, d->ws,
                                           d->ws_size, &ZERO, o->w, dwt_of(d, o)));
    }
    // Each weight is used once, so its gradient is written, not added.
    mark(d, BWD_CONVERT);
    int kk = op->k * op->k;
    if (amp) cu_weight_from_half(d->bf16, op->c, src->c, kk, dwt_of(d, o), d->grads + op->weight);
    else cu_nhwc_to_nchw((size_t)op->c, src->c, kk, CU_FP32, dwt_of(d, o), d->grads + op->weight);
    return 0;
}

int conv_create_descriptors(cu_net *d) {
    snprintf(d->what, sizeof d->what, "creating cuDNN descriptors");
    for (int i = 0; i < d->m->n_ops; i++) {
        fu_op_kind k = d->m->ops[i].kind;
        cu_op *o = &d->op[i];
        if (k != FU_OP_CONV) continue;
        DNN(cudnnCreateTensorDescriptor(&o->x));
        DNN(cudnnCreateTensorDescriptor(&o->y));
        DNN(cudnnCreateFilterDescriptor(&o->w));
        DNN(cudnnCreateConvolutionDescriptor(&o->conv));
    }
    return 0;
}

// --conv-algos FILE: its records, and the prefix of this backend's keys:
// "NVIDIA_H200:sm_90:cudnn91900:fp16" (the GPU's name without blanks).
int conv_load_algos(cu_net *d, const char *path) {
    cudaDeviceProp p;
    if (cudaGetDeviceProperties(&p, d->device) != cudaSuccess)
        return fu_fail("cuda backend", "cannot read GPU %d's properties", d->device);
    for (char *c = p.name; *c; c++)
        if (isspace((unsigned char)*c) || *c == ':') *c = '_';
    snprintf(d->algo_key, sizeof d->algo_key, "%.48s:sm_%d%d:cudnn%zu:%s", p.name, p.major, p.minor,
             cudnnGetVersion(), d->amp == FU_AMP_OFF ? "fp32" : fu_amp_name(d->amp));
    return fu_algo_load(&d->algos, path);
}
