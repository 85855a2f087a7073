// One pass of one convolution (forward, backward data or backward filter)
// through cuDNN's graph API (the backend descriptors of cudnn_graph.h), the
// API cuDNN 9 recommends: the legacy cudnnConvolution* calls and their
// algorithm getters are deprecated there. A plan is built once per shape:
// an operation graph of the one convolution, the engine configurations
// cuDNN's heuristics (mode A) list for it, and the first of them that
// passes our filters, finalized into an execution plan (where none of mode
// A's will do, the same with the fallback heuristics' list). Or, measured
// (cnn-train --conv-algos), the fastest of the first CU_CONV_CANDIDATES that
// pass them, each run on the GPU; or a choice such a measurement recorded.
//
// The filters keep the promises of the legacy path (docs/gpu.md):
//   never: for float tensors an engine that down-converts its inputs or uses
//          tensor cores (TF32: ~1e-3 relative errors in fp32 training); an
//          engine that reduces in reduced precision (half sums); a
//          workspace over the cap;
//   rather not, relaxed in this order where no engine is left: an engine
//          compiled at run time (NVRTC: seconds at set-up), for half
//          tensors one without tensor cores; and, only where neither
//          heuristics list has another engine, for backward passes a
//          nondeterministic one (same inputs, other bytes).
//
// Tensors are NHWC, the filter KRSC (OHWI), each pointer 16-byte aligned;
// accumulation in float whatever the tensors' type.
#ifndef FU_CUDA_CONV_GRAPH_H
#define FU_CUDA_CONV_GRAPH_H

#include <cudnn.h>

#include <limits.h>
#include <stddef.h>
#include <stdint.h>

typedef enum { CU_CONV_FWD, CU_CONV_BWD_DATA, CU_CONV_BWD_FILTER } cu_conv_pass;

typedef struct {
    int n, c, h, w;        // input x (or dx)
    int k, r;              // k filters of r x r
    int oh, ow;            // output y (or dy): (n, k, oh, ow)
    int stride, pad, dil;  // the same both ways
    cudnnDataType_t dt;    // every tensor's: float, half or bfloat16
} cu_conv_shape;

// The most engine configurations a measurement runs, per pass: the
// heuristics' first ones within the filters (a list may hold dozens, and at
// a large batch each run of a slow one takes a good part of a second).
#define CU_CONV_CANDIDATES 8

// How a plan's engine configuration is picked.
typedef enum {
    CU_PICK_FIRST,   // the heuristics' first within the filters
    CU_PICK_FASTEST, // the fastest of the first CU_CONV_CANDIDATES within them, timed on the handle's stream
    CU_PICK_GIVEN,   // a cu_conv_choice (one a measurement made): the filters' hard rules still hold
} cu_conv_pick;

// Which engine configuration a plan runs: its place in cuDNN's heuristics
// list for the graph, and its engine's global index. The lists are cuDNN's
// deterministic answer for one graph on one GPU (no timing in them), so the
// place finds the configuration again, knobs and all; the engine checks
// that it is the same one (another cuDNN may list others there).
typedef struct {
    int place;      // k: mode A's k-th; -1 - k: the fallback list's k-th; CU_CONV_NO_PLAN: none
    int64_t engine; // CUDNN_ATTR_ENGINE_GLOBAL_INDEX
} cu_conv_choice;

// A pass measured where the op needed none of it (the image's convolution
// has no input gradient) and no engine takes it: recorded as none.
#define CU_CONV_NO_PLAN INT_MIN

typedef struct {
    cudnnBackendDescriptor_t plan; // NULL: none
    // What it was built from (tensors, convolution, operation, graph, the
    // engine configuration): kept while the plan lives, as cuDNN's own
    // frontend keeps them.
    cudnnBackendDescriptor_t from[7];
    size_t workspace;              // bytes it needs
    bool fallback;                 // from the fallback heuristics' list, not mode A's
    cu_conv_choice choice;         // which configuration it runs
    cudnnBackendDescriptor_t pack; // the last run's variant pack (NULL: none yet), for pack_ptrs:
    void *pack_ptrs[4];            // x, w, y, workspace
    float beta;                    // the output = result + beta * output
} cu_conv_plan;

// Builds the plan for pass p of convolution s whose output is blended with
// beta (0 or 1), its workspace at most ws_cap bytes, its configuration
// picked as `pick` says (given: the choice for CU_PICK_GIVEN, else unused).
// CU_PICK_FASTEST runs each candidate on scratch tensors of its own
// (cudaMalloc'd and freed here) a few times, on the handle's stream, and
// waits for it. CUDNN_STATUS_SUCCESS; CUDNN_STATUS_NOT_SUPPORTED where no
// engine passes the filters (or none finalizes: an engine that cannot take
// a shape says so there) or the given choice is not cuDNN's; or the
// failing call's status. *failed says what failed.
cudnnStatus_t cu_conv_plan_make(cudnnHandle_t h, cu_conv_pass p, const cu_conv_shape *s, float beta, size_t ws_cap,
                                cu_conv_pick pick, const cu_conv_choice *given, cu_conv_plan *out,
                                const char **failed);

// Runs it on the handle's stream: x, w, y are the pass's tensors in the
// forward's roles (for backward data, x is dx and y is dy; for backward
// filter, w is dw and y is dy); ws holds plan->workspace bytes. The variant
// pack is kept for the next run with the same pointers.
cudnnStatus_t cu_conv_plan_run(cudnnHandle_t h, cu_conv_plan *p, const void *x, const void *w, const void *y,
                               void *ws);

void cu_conv_plan_free(cu_conv_plan *p);

#endif
