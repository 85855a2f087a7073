// Backend dispatch and the "ref" adapter: the reference network in float
// (ref_net.h) behind the fu_backend interface.
#include "nn/backend.h"

#include "core/error.h"
#include "nn/dnnl_net.h"
#if FU_HAVE_CUDA
#include "cuda/cuda_backend.h"
#endif
#ifndef FU_CUDA_OFF_WHY
#define FU_CUDA_OFF_WHY "USE_CUDA=0" // the Makefile says why
#endif

#include <omp.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static fu_ref_net_f32 *ref_of(fu_backend *b) { return b->impl; }

// The reference network with the caller's data-parallel hooks (set after
// create, so copied in before each pass).
static fu_ref_net_f32 *ref_hooked(fu_backend *b) {
    fu_ref_net_f32 *net = ref_of(b);
    const fu_dist_hooks *h = b->dist;
    net->dist_ctx = h ? h->ctx : NULL;
    net->dist_sum = h ? h->sum : NULL;
    net->grads_ready = h ? h->grads_ready : NULL;
    return net;
}

static int ref_forward(fu_backend *b, int n, const float *params, float *state, int64_t *counts, const float *x,
                       const int *labels, const float *class_w, const fu_pass *pass, float *loss) {
    return fu_ref_forward_f32(ref_hooked(b), n, params, state, counts, x, labels, class_w, pass, loss);
}

static const float *ref_logits(fu_backend *b) { return fu_ref_logits_f32(ref_of(b)); }

static int ref_backward(fu_backend *b, const float *params, const float *dy, float *grads) {
    return fu_ref_backward_f32(ref_hooked(b), params, dy, grads);
}

static const float *ref_input_grad(fu_backend *b) { return fu_ref_input_grad_f32(ref_of(b)); }

static void ref_destroy(fu_backend *b) {
    fu_ref_net_free_f32(ref_of(b));
    free(b->impl);
    free(b);
}

static int ref_create(const fu_model *m, int batch, int threads, fu_amp amp, fu_backend **out) {
    if (amp != FU_AMP_OFF)
        return fu_fail("ref backend", "computes in fp32 only, not --amp %s", fu_amp_name(amp));
    fu_backend *b = fu_calloc(1, sizeof *b);
    fu_ref_net_f32 *net = fu_calloc(1, sizeof *net);
    if (!b || !net || fu_ref_net_init_f32(net, m, batch) < 0) {
        free(b), free(net);
        return -1;
    }
    // The reference ops use the calling thread's OpenMP team; their results do
    // not depend on its size.
    if (threads > 0) omp_set_num_threads(threads);
    *b = (fu_backend){.name = "ref", .m = m, .batch = batch, .impl = net, .forward = ref_forward,
                      .logits = ref_logits, .backward = ref_backward, .input_grad = ref_input_grad,
                      .destroy = ref_destroy, .reports_grads = true};
    b->act_bytes = (2 * net->plan.act_size + net->plan.aux_size) * sizeof(float);
    b->grad_bytes = net->plan.act_size * sizeof(float);
    *out = b;
    return 0;
}

// The GPU backend where this build has it (USE_CUDA=1, docs/gpu.md).
static int cuda_create(const fu_model *m, const fu_backend_opts *o, fu_backend **out) {
#if FU_HAVE_CUDA
    return fu_cuda_backend_create(m, o, out);
#else
    (void)m, (void)o, (void)out;
    fu_fail("cuda backend", "this build has no GPU backend (%s)", FU_CUDA_OFF_WHY);
    fu_hint("rebuild with `make USE_CUDA=1` where nvcc and cuDNN are installed (docs/gpu.md)");
    return -1;
#endif
}

int fu_backend_gpu_count(char *why, size_t size) {
#if FU_HAVE_CUDA
    return fu_cuda_device_count(why, size);
#else
    snprintf(why, size, "this build has no GPU backend (%s)", FU_CUDA_OFF_WHY);
    return 0;
#endif
}

static void cpu_model_name(char *out, size_t size) {
    snprintf(out, size, "unknown CPU");
    FILE *f = fopen("/proc/cpuinfo", "r");
    if (!f) return;
    char line[512];
    while (fgets(line, sizeof line, f))
        if (strncmp(line, "model name", 10) == 0 && strchr(line, ':')) {
            const char *v = strchr(line, ':') + 1;
            while (*v == ' ' || *v == '\t') v++;
            snprintf(out, size, "%.*s", (int)strcspn(v, "\n"), v);
            break;
        }
    fclose(f);
}

void fu_backend_device_name(const fu_backend *b, char *out, size_t size) {
#if FU_HAVE_CUDA
    if (strcmp(b->name, "cuda") == 0 && fu_cuda_device_name(out, size) == 0) return;
#endif
    cpu_model_name(out, size);
}

int fu_backend_check_batch(const fu_backend *b, int n, const int *labels, const float *class_w, const fu_pass *pass) {
    const fu_model *m = b->m;
    if (n < 1 || n > b->batch)
        return fu_fail(b->name, "a batch of %d images; the backend is planned for 1..%d", n, b->batch);
    if (pass->train && (!labels || !class_w)) return fu_fail("model", "training needs labels and class weights");
    if (pass->train && n < 2)
        return fu_fail("model", "training needs a batch of at least 2 (BatchNorm1d uses batch statistics)");
    if (labels)
        for (int i = 0; i < n; i++)
            if (labels[i] < 0 || labels[i] >= m->classes)
                return fu_fail("model", "label %d of image %d is outside 0..%d", labels[i], i, m->classes - 1);
    return 0;
}

const char *fu_amp_name(fu_amp amp) { return amp == FU_AMP_BF16 ? "bf16" : amp == FU_AMP_FP16 ? "fp16" : "off"; }

int fu_amp_parse(const char *s, fu_amp *out) {
    if (!strcmp(s, "off") || !strcmp(s, "fp32")) *out = FU_AMP_OFF;
    else if (!strcmp(s, "bf16")) *out = FU_AMP_BF16;
    else if (!strcmp(s, "fp16")) *out = FU_AMP_FP16;
    else return -1;
    return 0;
}

int fu_backend_create(const char *name, const fu_model *m, const fu_backend_opts *o, fu_backend **out) {
    *out = NULL;
    if (o->batch < 1) return fu_fail("backend", "batch must be at least 1, not %d", o->batch);
    if (strcmp(name, "ref") == 0) return ref_create(m, o->batch, o->threads, o->amp, out);
    // "auto": the fastest backend there is, oneDNN's.
    if (strcmp(name, "cpu") == 0 || strcmp(name, "auto") == 0) return fu_dnnl_backend_create(m, o, out);
    if (strcmp(name, "cuda") == 0) return cuda_create(m, o, out);
    fu_fail("backend", "unknown backend '%s'", name);
    fu_hint("the backends are ref, cpu, cuda and auto");
    return -1;
}

int fu_backend_start_loss_scale(fu_backend *b, float scale) {
    return b->set_loss_scaling ? b->set_loss_scaling(b, &(fu_loss_scale){scale, 0}) : 0;
}

void fu_backend_destroy(fu_backend *b) {
    if (b) b->destroy(b);
}
