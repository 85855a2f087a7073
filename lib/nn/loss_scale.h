// fp16's dynamic loss scaling, as PyTorch's GradScaler: the state, and its
// update after a step, shared by the host (the model-parallel pipe, whose
// stages' backends share one scale: nn/pipe.c) and the cuda backend's
// kernel (cuda/cuda_optim.cu), so that both follow one rule.
#ifndef FU_NN_LOSS_SCALE_H
#define FU_NN_LOSS_SCALE_H

#include <math.h>
#include <stdbool.h>
#include <stddef.h>

#ifndef FU_HD
#ifdef __CUDACC__
#define FU_HD __host__ __device__
#else
#define FU_HD
#endif
#endif

// The scale, and the clean passes since it last changed. A pass whose
// gradients overflow halves it (to FU_LEAST_LOSS_SCALE at the lowest) and
// its step is skipped; FU_LOSS_SCALE_GROWTH clean passes in a row double it.
typedef struct {
    float scale;
    int clean;
} fu_loss_scale;
enum { FU_LOSS_SCALE_GROWTH = 2000 }; // GradScaler's growth interval
// As GradScaler's, the scale may go below 1, where a gradient overflows
// half's range unscaled (BatchNorm over a batch of 2, say); one that still
// overflows at 2^-24 exceeds 65504 x 2^24 (about 1e12), or is NaN: the
// trainer stops there.
#define FU_LEAST_LOSS_SCALE 0x1p-24f

// A state a run can go on from: a scale from FU_LEAST_LOSS_SCALE up, finite,
// and fewer clean passes than make it grow.
static inline bool fu_loss_scale_valid(const fu_loss_scale *s) {
    return s->scale >= FU_LEAST_LOSS_SCALE && isfinite(s->scale) && s->clean >= 0 && s->clean < FU_LOSS_SCALE_GROWTH;
}

// s as text, "SCALE CLEAN", the scale in hex (exact): a checkpoint's.
void fu_loss_scale_format(const fu_loss_scale *s, char *out, size_t size);
// The state text holds into *out: one, or several (';' between: a
// model-parallel run's checkpoint from before its stages shared one scale,
// 2026-12-08, held one per stage and micro-batch), of which the least scale
// goes on. -1 where the text is not that, or a state not valid.
int fu_loss_scale_parse(const char *text, fu_loss_scale *out);

// GradScaler.update after one pass, with the floor `least` and the growth
// interval `growth` as parameters (the tests shorten it).
static inline FU_HD void fu_loss_scale_next(fu_loss_scale *s, bool overflowed, float least, int growth) {
    if (overflowed) {
        s->clean = 0;
        if (s->scale > least) s->scale *= 0.5f;
    } else if (++s->clean == growth) {
        s->scale *= 2;
        s->clean = 0;
    }
}

#endif
