// One MedicalCNN training step on the cpu (oneDNN) backend, timed: forward,
// backward, gradient clipping and the AdamW update, as the trainer runs them,
// on random normalised pixels. bench/train_cpu.py builds and runs it beside
// PyTorch. Prints one line of key=value pairs (img/s over all timed steps and
// of the best step, per-part seconds, peak RSS).
//   train_step [--batch 32] [--size 224] [--threads 2] [--steps 3] [--warmup 1] [--amp off|bf16] [--dump FILE]
//              [--stages K] [--micro M]
// --dump writes the loss and gradients of the first step (raw floats), to
// compare runs with different thread counts byte for byte. --stages and
// --micro run the model as K pipelined stages (nn/pipe.h, the threads shared
// among them) with M micro-batches, and print each stage's busy seconds.
#include "core/error.h"
#include "core/rng.h"
#include "nn/adamw.h"
#include "nn/dnnl_net.h"
#include "nn/model.h"
#include "nn/pipe.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <time.h>

static double now(void) {
    struct timespec t;
    clock_gettime(CLOCK_MONOTONIC, &t);
    return t.tv_sec + t.tv_nsec * 1e-9;
}

int main(int argc, char **argv) {
    int batch = 32, size = 224, threads = 2, steps = 3, warmup = 1, stages = 1, micro = 1;
    const char *dump = NULL;
    fu_amp amp = FU_AMP_OFF;
    for (int i = 1; i + 1 < argc; i += 2) {
        int v = atoi(argv[i + 1]);
        if (!strcmp(argv[i], "--dump"))
            dump = argv[i + 1];
        else if (!strcmp(argv[i], "--amp")) {
            if (fu_amp_parse(argv[i + 1], &amp) < 0) {
                fprintf(stderr, "train_step: --amp %s: not off, bf16 or fp16\n", argv[i + 1]);
                return 2;
            }
        } else if (!strcmp(argv[i], "--batch"))
            batch = v;
        else if (!strcmp(argv[i], "--size"))
            size = v;
        else if (!strcmp(argv[i], "--threads"))
            threads = v;
        else if (!strcmp(argv[i], "--steps"))
            steps = v;
        else if (!strcmp(argv[i], "--warmup"))
            warmup = v;
        else if (!strcmp(argv[i], "--stages"))
            stages = v;
        else if (!strcmp(argv[i], "--micro"))
            micro = v;
        else {
            fprintf(stderr, "train_step: unknown option %s\n", argv[i]);
            return 2;
        }
    }
    fu_model m;
    fu_backend *b;
    fu_backend_opts bo = {.batch = batch, .threads = threads, .amp = amp};
    fu_pipe_opts po = {.backend = "cpu", .stages = stages, .micro_batches = micro};
    bool pipe = stages > 1 || micro > 1;
    if (fu_medicalcnn(&m, size, size) < 0 ||
        (pipe ? fu_pipe_create(&m, &po, &bo, &b) : fu_dnnl_backend_create(&m, &bo, &b)) < 0) {
        fprintf(stderr, "train_step: %s\n", fu_error());
        return 1;
    }
    size_t nx = (size_t)batch * 3 * size * size;
    float *params = malloc(m.n_params * sizeof(float)), *grads = malloc(m.n_params * sizeof(float));
    float *m1 = calloc(m.n_params, sizeof(float)), *m2 = calloc(m.n_params, sizeof(float));
    float *state = malloc(m.n_state * sizeof(float)), *x = malloc(nx * sizeof(float));
    int64_t *counts = malloc(m.n_counts * sizeof(int64_t));
    int *labels = malloc((size_t)batch * sizeof(int));
    fu_model_init(&m, 42, params, state, counts);
    fu_rng r = fu_rng_make(42, 0, 0);
    for (size_t i = 0; i < nx; i++)
        x[i] = (float)fu_rng_normal(&r);
    for (int i = 0; i < batch; i++)
        labels[i] = i % 2;
    float class_w[2] = {0.5f, 0.5f};
    fu_param_group *groups;
    int n_groups = fu_param_groups(&m, false, &groups);
    fu_adamw_opts opts = fu_adamw_defaults();
    double t_fwd = 0, t_bwd = 0, t_opt = 0, best = 1e30;
    fu_pipe_stage_info warm[FU_MAX_STAGES]; // each stage's busy time after the warm-up
    int k = 0;
    float loss = 0;
    for (int s = 0; s < warmup + steps; s++) {
        if (s == warmup)
            k = fu_pipe_info(b, warm, FU_MAX_STAGES);
        fu_pass pass = {.train = true, .dropout = true, .seed = 42, .step = (uint64_t)s};
        double t0 = now();
        if (b->forward(b, batch, params, state, counts, x, labels, class_w, &pass, &loss) < 0)
            break;
        double t1 = now();
        if (b->backward(b, params, NULL, grads) < 0)
            break;
        double t2 = now();
        if (dump && s == 0) {
            FILE *f = fopen(dump, "wb");
            if (!f || fwrite(&loss, sizeof loss, 1, f) != 1 ||
                fwrite(grads, sizeof *grads, m.n_params, f) != m.n_params || fclose(f) != 0) {
                fprintf(stderr, "train_step: cannot write %s\n", dump);
                return 1;
            }
        }
        fu_clip_grad_norm(grads, m.n_params, 1.0);
        fu_adamw_step(&opts, 1e-3, s + 1, groups, n_groups, params, grads, m1, m2);
        double t3 = now();
        if (s < warmup)
            continue;
        t_fwd += t1 - t0, t_bwd += t2 - t1, t_opt += t3 - t2;
        if (t3 - t0 < best)
            best = t3 - t0;
    }
    const char *err = fu_error();
    if (err && *err) {
        fprintf(stderr, "train_step: %s\n", err);
        return 1;
    }
    struct rusage ru;
    getrusage(RUSAGE_SELF, &ru);
    double total = t_fwd + t_bwd + t_opt;
    printf("img_per_s=%.3f best_img_per_s=%.3f step_s=%.3f forward_s=%.3f backward_s=%.3f adamw_s=%.3f loss=%.5f "
           "act_mib=%.0f "
           "peak_rss_mib=%.0f\n",
           steps * batch / total, batch / best, total / steps, t_fwd / steps, t_bwd / steps, t_opt / steps, loss,
           b->act_bytes / 1048576.0, ru.ru_maxrss / 1024.0);
    fu_pipe_stage_info info[FU_MAX_STAGES];
    fu_pipe_info(b, info, FU_MAX_STAGES);
    for (int i = 0; i < k; i++) // busy over the timed steps (their forward and backward)
        printf("stage=%d name=%s busy_s_per_step=%.3f\n", i, info[i].stage.name,
               (info[i].busy_seconds - warm[i].busy_seconds) / steps);
    b->destroy(b);
    free(groups);
    fu_model_free(&m);
    free(params), free(grads), free(m1), free(m2), free(state), free(x), free(counts), free(labels);
    return 0;
}
