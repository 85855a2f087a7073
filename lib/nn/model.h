// The network as data: a flat list of ops built once by fu_medicalcnn(), with
// every op's output shape, its inputs (earlier ops, by index) and the offsets
// of its tensors in three flat buffers:
//   params  fp32, every trainable tensor in forward order (the gradient buffer
//           has the same layout, so finished gradients form contiguous runs);
//   state   fp32, BatchNorm running_mean and running_var;
//   counts  int64, one num_batches_tracked per BatchNorm.
// Each tensor carries its PyTorch state_dict name and shape (conv weights OIHW,
// linear weights (out, in)), which is what checkpoints are keyed by
// (docs/model.md). Backends (reference C, oneDNN) execute the same list.
#ifndef FU_NN_MODEL_H
#define FU_NN_MODEL_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#define FU_BN_EPS 1e-5
#define FU_BN_MOMENTUM 0.1
#define FU_MODEL_MIN_SIZE 32 // smallest image side the stride-32 network accepts

typedef enum {
    FU_OP_INPUT,    // the image batch (N, 3, H, W)
    FU_OP_CONV,     // no bias; stride, padding, dilation
    FU_OP_BN,       // BatchNorm2d, or BatchNorm1d on (N, C) when h = w = 1
    FU_OP_RELU,
    FU_OP_MAXPOOL,  // k x k window, stride, padding (pads count as -inf)
    FU_OP_GAP,      // global average pool (N, C, H, W) -> (N, C)
    FU_OP_LINEAR,   // y = x W^T (+ b)
    FU_OP_SIGMOID,
    FU_OP_SCALE,    // x (N, C, H, W) * s (N, C): in[0] = x, in[1] = s
    FU_OP_ADD,
    FU_OP_CONCAT,   // along channels, in order of in[]
    FU_OP_DROPOUT,
    FU_OP_XENT,     // softmax cross-entropy with class weights; output is the scalar loss
} fu_op_kind;

#define FU_OP_MAX_IN 4

typedef struct {
    fu_op_kind kind;
    int in[FU_OP_MAX_IN]; // indices of the ops whose outputs this op reads
    int n_in;
    int c, h, w;          // output shape per image; vectors have h = w = 1
    int k, stride, pad, dil; // conv and maxpool windows
    bool bias;            // linear
    float p;              // dropout probability
    int64_t weight;       // params offset: conv/linear weight, BN gamma; -1 if none
    int64_t bias_off;     // params offset: linear bias, BN beta; -1 if none
    int64_t mean, var;    // state offsets of BN running_mean/running_var; -1 if none
    int count;            // index in counts of this BN's num_batches_tracked; -1 if none
    char name[48];        // PyTorch module path, e.g. "stage1.0.conv1"; "" for unnamed ops
} fu_op;

typedef enum { FU_BUF_PARAMS, FU_BUF_STATE, FU_BUF_COUNTS } fu_buffer;

// One state_dict entry.
typedef struct {
    char name[80];     // "stage3_md.conv_fusion.bn.running_mean"
    fu_buffer buffer;  // which flat buffer holds it
    size_t offset;     // element offset in that buffer
    size_t numel;
    int ndim;          // 0 for num_batches_tracked (a scalar)
    int64_t shape[4];
} fu_tensor;

typedef struct {
    fu_op *ops;
    int n_ops;
    fu_tensor *tensors; // in forward order
    int n_tensors;
    size_t n_params, n_state, n_counts;
    int height, width, classes;
    // A stage of a model cut for model parallelism (nn/stages.h) is a model
    // too: op i here is op i + op_base of the whole model (op 0 is the tensor
    // it starts from: the image, or the previous stage's output, with
    // inner_input set, whose gradient backward then computes). It ends in the
    // loss (FU_OP_XENT) or before it, at a tensor the next stage reads. The
    // whole model: op_base 0, inner_input false.
    int op_base;
    bool inner_input;
} fu_model;

// Builds the study's MedicalCNN for images of height x width (both >= 32).
int fu_medicalcnn(fu_model *m, int height, int width);
void fu_model_free(fu_model *m);

// The tensor called `name`, or NULL.
const fu_tensor *fu_model_find(const fu_model *m, const char *name);

// Initial values as the study: convs Kaiming normal (fan_out, ReLU gain),
// linears N(0, 0.01) with zero bias, BN gamma 1 beta 0, running stats (0, 1),
// counts 0. Deterministic: each tensor draws from its own stream (seed, index).
void fu_model_init(const fu_model *m, uint64_t seed, float *params, float *state, int64_t *counts);

typedef struct {
    size_t params;    // trainable scalars (22,494,274)
    size_t state;     // running_mean + running_var scalars
    int tensors;      // state_dict entries (294)
    int convs, bns, linears; // module counts (41, 43, 35)
    int study_layers; // the study's own "129 layers" formula
    double macs;      // multiply-accumulates of one forward pass per image
} fu_model_summary;

fu_model_summary fu_model_summarize(const fu_model *m);

// Activation memory for a batch, planned once from the op list: each op's
// output (and its gradient in a second arena of the same layout) and the
// values an op saves for backward (BN batch mean and 1/std, dropout masks,
// softmax probabilities). Offsets and sizes count elements (float or double).
typedef struct {
    int batch;
    size_t *act;   // per op: offset of its output in the activation arena
    size_t *aux;   // per op: offset of its saved values in the aux arena
    size_t act_size, aux_size;
} fu_plan;

int fu_model_plan(const fu_model *m, int batch, fu_plan *plan);
void fu_plan_free(fu_plan *plan);
// Elements of op i's output for the plan's batch (1 for the loss).
size_t fu_op_numel(const fu_model *m, int i, int batch);
// Multiply-accumulates of op i's forward pass per image (convs and linears;
// 0 for the rest).
double fu_op_macs(const fu_model *m, int i);

#endif
