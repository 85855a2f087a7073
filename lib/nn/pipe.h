// Model parallelism as a backend: the model cut into K stages (nn/stages.h),
// each on a backend of its own (on GPU s, or all on one with a shared
// device), run as one fu_backend, so the trainer, checkpoints and data
// parallelism do not change. A batch is split into M micro-batches that flow
// through the stages GPipe-style: every micro-batch forward, stage after
// stage, then every backward in reverse; each stage runs in a thread of its
// own, so while stage 1 computes micro-batch j, stage 0 computes j + 1.
//
// Between stages only the cut tensor moves (its output forward, its gradient
// backward): GPU to GPU where the backends offer it (backend.h's
// device_output), else through host memory. Where every stage's backend can
// (cuda), the pipe is resident itself (backend.h's fu_resident_api): the
// weights, gradients and AdamW moments stay with the stages.
//
// What M changes, and what it does not (docs/model-parallel.md): the loss
// and the gradients are the whole batch's (each micro-batch's weighted by its
// share of the class weights, as data parallelism weighs ranks); dropout
// masks are the whole batch's (fu_pass.image0); BatchNorm normalises each
// micro-batch with its own statistics and updates the running statistics
// once per micro-batch, as PyTorch's BatchNorm does under GPipe — or, with
// deferred_bn (torchgpipe's deferred batch norm), once per batch with the
// whole batch's statistics, pooled from the micro-batches', so that the
// running statistics (what evaluation uses) are the unsplit model's. With
// M = 1 the stages compute exactly what the unsplit model does.
#ifndef FU_NN_PIPE_H
#define FU_NN_PIPE_H

#include "nn/backend.h"
#include "nn/stages.h"

#include <stdbool.h>

typedef struct {
    const char *backend; // every stage's: "ref", "cpu", "cuda" ("auto" = cpu)
    int stages;          // K >= 1
    const char *cuts;    // fu_stages_parse's spec, or NULL: balanced by compute
    int micro_batches;   // M >= 1; the batch must hold 2 images per micro-batch
    bool shared_device;  // every stage on o->device; else stage s on GPU o->device * K + s
    bool deferred_bn;    // running statistics once per batch, of the whole batch (above)
} fu_pipe_opts;

// A backend of K stages x M micro-batches for o->batch images. o->threads
// CPU threads are divided among the stages.
int fu_pipe_create(const fu_model *m, const fu_pipe_opts *p, const fu_backend_opts *o, fu_backend **out);

// What one stage of a pipe backend is and did.
typedef struct {
    fu_stage stage;
    int device;          // the GPU it runs on (cuda); -1 on the CPU
    double busy_seconds; // forward + backward compute since create (its idle time is the bubble)
} fu_pipe_stage_info;

// The number of stages of b, 0 when b is not a pipe backend; info[s] for
// each (up to max).
int fu_pipe_info(const fu_backend *b, fu_pipe_stage_info *info, int max);

#endif
