// What the trainer, cnn-predict and the tests call to run the network: one
// interface over the backends (ref: plain C loops, the oracle; cpu: oneDNN;
// later cuda). Every backend takes the same flat buffers (model.h) and the
// same input, so checkpoints, optimizer and tests do not care which runs.
//
// Layouts at this interface are fixed, whatever a backend uses inside:
//   x       (n, 3, H, W) fp32, normalised pixels, NCHW
//   labels  (n) int, 0..classes-1;  class_w (classes) fp32
//   params, grads (n_params) fp32; state (n_state) fp32; counts (n_counts) int64
//   logits  (n, classes) fp32
#ifndef FU_NN_BACKEND_H
#define FU_NN_BACKEND_H

#include "nn/model.h"
#include "nn/ref_net.h" // fu_pass

#include <stddef.h>
#include <stdint.h>

typedef struct fu_backend fu_backend;

struct fu_backend {
    const char *name;   // "ref", "cpu"
    const fu_model *m;
    int batch;          // planned batch: forward accepts 1 <= n <= batch
    size_t act_bytes;   // activation memory it planned (for the start-up report)
    void *impl;
    // Forward pass on n images. In training (pass->train), BN uses batch
    // statistics and updates state and counts, the loss of (labels, class_w)
    // goes to *loss, and the pass is remembered for backward (n >= 2: BN1d
    // needs two values per channel). In eval, labels may be NULL (no loss).
    int (*forward)(fu_backend *b, int n, const float *params, float *state, int64_t *counts, const float *x,
                   const int *labels, const float *class_w, const fu_pass *pass, float *loss);
    const float *(*logits)(fu_backend *b); // of the last forward: (n, classes)
    // Gradient of the last training forward's loss; overwrites grads.
    int (*backward)(fu_backend *b, const float *params, float *grads);
    void (*destroy)(fu_backend *b);
};

// name: "ref" or "cpu" ("auto" = the fastest available). threads: OpenMP
// threads the backend may use (results do not depend on it).
int fu_backend_create(const char *name, const fu_model *m, int batch, int threads, fu_backend **out);
void fu_backend_destroy(fu_backend *b);

#endif
