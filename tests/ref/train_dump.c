// Test-only helper of train_parity.py (compiled by it against build/libfundus.a):
// STEPS optimizer steps of the trainer (fu_train_step: weighted loss, backward,
// clipping at norm 1, AdamW) on fixed batches, dropout off.
//   train_dump SEED N H W STEPS LR WD EPS INPUT.f32 LABELS WEIGHTS OUTDIR [FROM...]
// INPUT.f32: STEPS*N*3*H*W raw little-endian floats, batch s = images
// s*N..s*N+N-1; LABELS "0,1,.." (STEPS*N); WEIGHTS "w0,w1". Without FROM the
// steps start from the seeded init; with STEPS folders FROM, step s starts
// from the trainer state in FROM[s] (last.safetensors + state.safetensors:
// weights, AdamW moments and step, as fu_checkpoint_load reads them), each a
// single step. Writes OUTDIR/
//   init.safetensors   the initial state_dict
//   last.safetensors, state.safetensors   the trainer state after the steps
//                      (with FROM: OUTDIR/S/ for each step S)
//   losses.f64         the STEPS losses, then the STEPS gradient norms (before clipping)
#include "core/error.h"
#include "nn/checkpoint.h"
#include "nn/safetensors.h"
#include "nn/trainer.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

static int die(const char *what) {
    fprintf(stderr, "train_dump: %s%s%s\n", what, *fu_error() ? ": " : "", fu_error());
    return 1;
}

int main(int argc, char **argv) {
    if (argc < 13) return die("usage: train_dump SEED N H W STEPS LR WD EPS INPUT.f32 LABELS WEIGHTS OUTDIR [FROM...]");
    int n = atoi(argv[2]), h = atoi(argv[3]), w = atoi(argv[4]), steps = atoi(argv[5]);
    fu_model m;
    if (fu_medicalcnn(&m, h, w) < 0) return die("model");
    fu_train_opts o = fu_train_defaults();
    o.seed = strtoull(argv[1], NULL, 10);
    o.batch = n;
    o.lr = strtod(argv[6], NULL);
    o.weight_decay = strtod(argv[7], NULL);
    o.dropout = false;
    fu_trainer t;
    if (fu_trainer_init(&t, &m, &o, "ref", 0) < 0) return die("trainer");
    t.adamw.eps = strtod(argv[8], NULL);
    fu_run_state rs = {.best_epoch = -1};
    bool from = argc > 13;
    if (from && argc != 13 + steps) return die("give one FROM folder per step");
    size_t per = (size_t)n * 3 * h * w, pix = per * (size_t)steps;
    float *x = malloc(pix * sizeof *x);
    FILE *in = fopen(argv[9], "rb");
    if (!x || !in || fread(x, sizeof *x, pix, in) != pix) return die("cannot read the input");
    fclose(in);
    int *labels = calloc((size_t)n * steps, sizeof *labels);
    char *s = argv[10];
    for (int i = 0; i < n * steps; i++) labels[i] = (int)strtol(s, &s, 10), s += *s == ',';
    s = argv[11];
    for (int i = 0; i < 2; i++) t.class_w[i] = strtof(s, &s), s += *s == ',';

    char path[4096];
    snprintf(path, sizeof path, "%s/init.safetensors", argv[12]);
    if (fu_model_save(path, &m, t.params, t.state, t.counts, NULL) < 0) return die("save");
    double *out = calloc(2 * (size_t)steps, sizeof *out);
    for (int k = 0; k < steps; k++) {
        float loss;
        int hits, seen;
        if (from && fu_checkpoint_load(argv[13 + k], &t, &rs, NULL) < 0) return die("resume");
        if (fu_train_step(&t, n, x + (size_t)k * per, labels + (size_t)k * n, o.lr, &loss, &hits, &seen) < 0)
            return die("step");
        out[k] = loss;
        out[steps + k] = t.grad_norm;
        snprintf(path, sizeof path, "%s/%d", argv[12], k);
        if (from && (mkdir(path, 0777) < 0 || fu_checkpoint_save(path, &t, &rs, NULL) < 0)) return die(path);
    }
    if (!from && fu_checkpoint_save(argv[12], &t, &rs, NULL) < 0) return die("save");
    snprintf(path, sizeof path, "%s/losses.f64", argv[12]);
    FILE *f = fopen(path, "wb");
    if (!f || fwrite(out, sizeof *out, 2 * (size_t)steps, f) != 2 * (size_t)steps || fclose(f)) return die("write");
    free(rs.log);
    fu_trainer_free(&t);
    fu_model_free(&m);
    free(x), free(labels), free(out);
    return 0;
}
