// Model parallelism's cut: the op list of a fu_model split into K contiguous
// stages at tensors that alone cross between them (every op after the cut
// reads the cut tensor or later ones: a block's input also feeds its
// shortcut, so cuts fall between blocks, never inside one). Each stage is a
// model of its own (fu_model_stage, model.h's op_base and inner_input) that
// any backend runs; its parameters, BN state and counts are one contiguous
// range of the whole model's flat buffers, because those are laid out in
// forward order, so stages share the trainer's buffers without copies.
//
// Stages are named by the model's modules: stem, stage1, stage2, stage3_res,
// stage3_md, stage4_res, fc, or single blocks (stage3_res.2); an unnamed op
// (ReLU, add, pooling, the loss) belongs to the module of the named op before it.
#ifndef FU_NN_STAGES_H
#define FU_NN_STAGES_H

#include "nn/model.h"

#include <stdbool.h>
#include <stddef.h>

#define FU_MAX_STAGES 16

typedef struct {
    int first, last;           // ops [first, last] of the whole model; stage 0 starts at the input (op 0)
    size_t param0, n_params;   // its range of the params (and grads) buffer
    size_t state0, n_state;    // of the BN state buffer
    size_t count0, n_counts;   // of the counts buffer
    double macs;               // forward multiply-accumulates per image
    char name[64];             // its modules, "stem..stage2" or "stage3_res.3..fc"
} fu_stage;

// Whether the model can be cut after op b (b's output is the one tensor
// crossing into the next stage).
bool fu_model_can_cut(const fu_model *m, int b);

// K stages of compute as equal as the cut points allow (the largest stage's
// forward MACs is the smallest possible). Fails where the model has fewer
// than K - 1 cut points.
int fu_stages_balanced(const fu_model *m, int k, fu_stage *out);

// Stages by hand: modules separated by ',' within a stage and '|' between
// stages, in forward order, every module once: "stem,stage1|stage2,stage3_res|
// stage3_md,stage4_res,fc". *k gets the number of stages (at most max).
// Fails naming the module or stage at fault.
int fu_stages_parse(const fu_model *m, const char *spec, fu_stage *out, int max, int *k);

// Stage s (ops first..last of m) as a model: a stage after the first starts
// with an input op shaped as the tensor it receives; its tensors' offsets
// count from the stage's ranges (fu_stage param0, state0, count0).
int fu_model_stage(const fu_model *m, const fu_stage *s, fu_model *out);

#endif
