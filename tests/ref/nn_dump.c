// Test-only helper of model_parity.py (compiled by it against build/libfundus.a):
// one training step of the reference network, everything written out.
//   nn_dump f32|f64|both SEED N H W INPUT.f32 LABELS WEIGHTS OUTDIR
// INPUT.f32: N*3*H*W raw little-endian floats (N, 3, H, W); LABELS "0,1,..";
// WEIGHTS the class weights "w0,w1". The network runs in float, double or
// both (from the same seeded fp32 init). Writes OUTDIR/
//   init.safetensors  the initial state_dict
//   out-f32.safetensors, out-f64.safetensors
//                     in the run's precision: logits (N, 2), loss (), after the
//                     step eval_logits (N, 2), grad.NAME for every parameter,
//                     state.NAME for the BN running stats, count.NAME (I64)
// Dropout is off (the identity) so PyTorch can run the same computation.
#include "core/error.h"
#include "nn/model.h"
#include "nn/ref_net.h"
#include "nn/safetensors.h"

#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

static int die(const char *what) {
    fprintf(stderr, "nn_dump: %s%s%s\n", what, *fu_error() ? ": " : "", fu_error());
    return 1;
}

static double now(void) {
    struct timespec t;
    clock_gettime(CLOCK_MONOTONIC, &t);
    return (double)t.tv_sec + 1e-9 * (double)t.tv_nsec;
}

typedef struct {
    const fu_model *m;
    int n;
    const float *x;        // (N, 3, H, W)
    const int *labels;     // (N)
    const double *class_w; // (2)
    const float *params, *state; // the fp32 init
    const char *out;
} job;

// Writes out.safetensors from buffers of dtype `dt` (element size `es`).
static int dump(const job *j, fu_st_dtype dt, size_t es, const void *logits, const void *loss,
                const void *eval_logits, const void *grads, const void *state, const int64_t *counts) {
    const fu_model *m = j->m;
    fu_st_tensor *out = calloc((size_t)m->n_tensors + 3, sizeof *out);
    char (*names)[96] = calloc((size_t)m->n_tensors, sizeof *names);
    int k = 0;
    out[k++] = (fu_st_tensor){.name = "logits", .dtype = dt, .ndim = 2, .shape = {j->n, 2}, .data = logits};
    out[k++] = (fu_st_tensor){.name = "loss", .dtype = dt, .ndim = 0, .data = loss};
    out[k++] = (fu_st_tensor){.name = "eval_logits", .dtype = dt, .ndim = 2, .shape = {j->n, 2}, .data = eval_logits};
    for (int i = 0; i < m->n_tensors; i++) {
        const fu_tensor *t = &m->tensors[i];
        const char *prefix = t->buffer == FU_BUF_PARAMS ? "grad" : t->buffer == FU_BUF_STATE ? "state" : "count";
        const void *base = t->buffer == FU_BUF_PARAMS ? grads : t->buffer == FU_BUF_STATE ? state : (const void *)counts;
        snprintf(names[i], sizeof names[i], "%s.%s", prefix, t->name);
        out[k] = (fu_st_tensor){.name = names[i], .dtype = t->buffer == FU_BUF_COUNTS ? FU_ST_I64 : dt,
                                .ndim = t->ndim,
                                .data = (const char *)base + t->offset * (t->buffer == FU_BUF_COUNTS ? 8 : es)};
        memcpy(out[k++].shape, t->shape, sizeof t->shape);
    }
    char path[4096];
    snprintf(path, sizeof path, "%s/out-%s.safetensors", j->out, dt == FU_ST_F32 ? "f32" : "f64");
    int rc = fu_st_write(path, out, k, NULL);
    free(out);
    free(names);
    return rc;
}

// The step in precision T (suffix S), from the fp32 init.
#define DEFINE_RUN(T, S, DT)                                                                                    \
    static int run_##S(const job *j) {                                                                          \
        const fu_model *m = j->m;                                                                               \
        size_t pix = (size_t)j->n * 3 * m->height * m->width;                                                   \
        T *x = malloc(pix * sizeof *x), *params = malloc(m->n_params * sizeof *params);                         \
        T *grads = calloc(m->n_params, sizeof *grads), *state = malloc(m->n_state * sizeof *state);            \
        T class_w[2] = {(T)j->class_w[0], (T)j->class_w[1]}, loss = 0;                                                \
        T *logits = malloc((size_t)j->n * 2 * sizeof *logits), *eval_logits = malloc((size_t)j->n * 2 * sizeof *logits); \
        int64_t *counts = calloc(m->n_counts, sizeof *counts);                                                  \
        for (size_t i = 0; i < pix; i++) x[i] = j->x[i];                                                         \
        for (size_t i = 0; i < m->n_params; i++) params[i] = j->params[i];                                       \
        for (size_t i = 0; i < m->n_state; i++) state[i] = j->state[i];                                          \
        fu_ref_net_##S net;                                                                                     \
        if (fu_ref_net_init_##S(&net, m, j->n) < 0) return die("net");                                          \
        fu_pass train = {.train = true, .dropout = false}, eval = {.train = false};                             \
        double t0 = now();                                                                                      \
        if (fu_ref_forward_##S(&net, j->n, params, state, counts, x, j->labels, class_w, &train, &loss) < 0)   \
            return die("forward");                                                                              \
        memcpy(logits, fu_ref_logits_##S(&net), (size_t)j->n * 2 * sizeof *logits);                            \
        double t1 = now();                                                                                      \
        if (fu_ref_backward_##S(&net, params, NULL, grads) < 0) return die("backward");                               \
        double t2 = now();                                                                                      \
        if (fu_ref_forward_##S(&net, j->n, params, state, counts, x, NULL, NULL, &eval, NULL) < 0)              \
            return die("eval");                                                                                 \
        memcpy(eval_logits, fu_ref_logits_##S(&net), (size_t)j->n * 2 * sizeof *logits);                        \
        fprintf(stderr, "nn_dump: %s forward %.2f s, backward %.2f s\n", #S, t1 - t0, t2 - t1);                \
        if (dump(j, DT, sizeof(T), logits, &loss, eval_logits, grads, state, counts) < 0) return die("save");   \
        fu_ref_net_free_##S(&net);                                                                              \
        free(x), free(params), free(grads), free(state), free(logits), free(eval_logits), free(counts);         \
        return 0;                                                                                               \
    }
DEFINE_RUN(float, f32, FU_ST_F32)
DEFINE_RUN(double, f64, FU_ST_F64)

int main(int argc, char **argv) {
    if (argc != 10 || (strcmp(argv[1], "f32") && strcmp(argv[1], "f64") && strcmp(argv[1], "both")))
        return die("usage: nn_dump f32|f64|both SEED N H W INPUT.f32 LABELS WEIGHTS OUTDIR");
    uint64_t seed = strtoull(argv[2], NULL, 10);
    int n = atoi(argv[3]), h = atoi(argv[4]), w = atoi(argv[5]);
    fu_model m;
    if (fu_medicalcnn(&m, h, w) < 0) return die("model");
    size_t pix = (size_t)n * 3 * h * w;
    float *x = malloc(pix * sizeof *x);
    FILE *in = fopen(argv[6], "rb");
    if (!in || fread(x, sizeof *x, pix, in) != pix) return die("cannot read the input");
    fclose(in);
    int *labels = calloc((size_t)n, sizeof *labels);
    char *s = argv[7];
    for (int i = 0; i < n; i++) labels[i] = (int)strtol(s, &s, 10), s += *s == ',';
    double class_w[2];
    s = argv[8];
    for (int i = 0; i < 2; i++) class_w[i] = strtod(s, &s), s += *s == ',';

    float *params = calloc(m.n_params, 4), *state = calloc(m.n_state, 4);
    int64_t *counts = calloc(m.n_counts, 8);
    fu_model_init(&m, seed, params, state, counts);
    char path[4096];
    snprintf(path, sizeof path, "%s/init.safetensors", argv[9]);
    if (fu_model_save(path, &m, params, state, counts, NULL) < 0) return die("save");
    job j = {&m, n, x, labels, class_w, params, state, argv[9]};
    bool f32 = strcmp(argv[1], "f64") != 0, f64 = strcmp(argv[1], "f32") != 0;
    return (f32 && run_f32(&j)) || (f64 && run_f64(&j));
}
