// Trainer state for --resume, beside the run's model.safetensors:
//   DIR/last.safetensors   the live weights (a state_dict, like model.safetensors)
//   DIR/state.safetensors  AdamW's moments (adamw.exp_avg, adamw.exp_avg_sq,
//                          flat, forward order) and, as metadata, the step,
//                          the epoch and where it stands, the best epoch so
//                          far, the log rows so far, the run's settings and
//                          under fp16 the loss scaling (fu_backend.loss_scaling)
//                          and the steps it skipped.
// Both carry the step, so a pair torn by a crash between the two writes is
// recognised. Numbers that must survive bit for bit are written as C99 hex
// floats ("%a").
#ifndef FU_NN_CHECKPOINT_H
#define FU_NN_CHECKPOINT_H

#include "nn/trainer.h"

typedef struct {
    fu_epoch_stats st; // the epoch in progress (next_batch 0: not started)
    int best_epoch;    // -1 before the first validation
    double best_score;
    double train_seconds, wait_seconds; // over the finished epochs
    int64_t images;                     // trained on in the finished epochs
    char *log;         // log.csv data rows so far, malloc'd ("" when none)
} fu_run_state;

// settings: NULL-terminated key, value, ... list describing the run (batch,
// seed, image size, ...); a resumed run must present the same values.
// Brings the live weights to the host first (fu_trainer_pull).
int fu_checkpoint_save(const char *dir, fu_trainer *t, const fu_run_state *s, const char *const *settings);
// Restores the live weights, moments, step and the run state, and the best
// weights from DIR/model.safetensors when an epoch was selected. Fails with a
// message naming the difference when the settings differ.
int fu_checkpoint_load(const char *dir, fu_trainer *t, fu_run_state *s, const char *const *settings);

#endif
