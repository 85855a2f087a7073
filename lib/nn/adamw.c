// AdamW and gradient clipping (adamw.h).
#include "nn/adamw.h"
#include "nn/adamw_math.h"

#include "core/error.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

fu_adamw_opts fu_adamw_defaults(void) {
    return (fu_adamw_opts){.beta1 = 0.9, .beta2 = 0.999, .eps = 1e-8, .weight_decay = 1e-4};
}

static bool ends_with(const char *s, const char *suffix) {
    size_t n = strlen(s), k = strlen(suffix);
    return n >= k && strcmp(s + n - k, suffix) == 0;
}

// Does parameter tensor t belong to a BatchNorm? Its module has a running_mean.
static bool is_bn(const fu_model *m, const fu_tensor *t) {
    char name[96];
    size_t stem = strlen(t->name) - (ends_with(t->name, ".weight") ? strlen("weight") : strlen("bias"));
    snprintf(name, sizeof name, "%.*srunning_mean", (int)stem, t->name);
    return fu_model_find(m, name) != NULL;
}

int fu_param_groups(const fu_model *m, bool no_decay_bn_bias, fu_param_group **groups) {
    fu_param_group *g = fu_calloc((size_t)m->n_tensors, sizeof *g);
    if (!g) return -1;
    int n = 0;
    for (int i = 0; i < m->n_tensors; i++) {
        const fu_tensor *t = &m->tensors[i];
        if (t->buffer != FU_BUF_PARAMS) continue;
        bool exempt = no_decay_bn_bias && (ends_with(t->name, ".bias") || is_bn(m, t));
        g[n++] = (fu_param_group){.offset = t->offset, .count = t->numel, .decay = !exempt};
    }
    *groups = g;
    return n;
}

void fu_adamw_step(const fu_adamw_opts *o, double lr, int64_t t, const fu_param_group *groups, int n_groups,
                   float *p, const float *g, float *m1, float *m2) {
    fu_adamw_coef k = fu_adamw_coef_of(o->beta1, o->beta2, o->eps, o->weight_decay, lr, t);
    for (int j = 0; j < n_groups; j++) {
        const fu_param_group *gr = &groups[j];
        float *pk = p + gr->offset, *mk = m1 + gr->offset, *vk = m2 + gr->offset;
        const float *gk = g + gr->offset;
        int decay = gr->decay;
#pragma omp parallel for schedule(static) if (gr->count > 65536)
        for (size_t i = 0; i < gr->count; i++) fu_adamw_elem(&k, decay, gk[i], &pk[i], &mk[i], &vk[i]);
    }
}

double fu_clip_grad_norm(float *g, size_t n, double max_norm) {
    enum { CHUNK = 1 << 16 };
    size_t chunks = (n + CHUNK - 1) / CHUNK;
    double *part = malloc((chunks ? chunks : 1) * sizeof *part);
    double sum = 0;
    if (part) {
#pragma omp parallel for schedule(static)
        for (size_t c = 0; c < chunks; c++) {
            size_t end = c * CHUNK + CHUNK < n ? c * CHUNK + CHUNK : n;
            double s = 0;
            for (size_t i = c * CHUNK; i < end; i++) s += (double)g[i] * g[i];
            part[c] = s;
        }
        for (size_t c = 0; c < chunks; c++) sum += part[c];
        free(part);
    } else {
        for (size_t i = 0; i < n; i++) sum += (double)g[i] * g[i];
    }
    double norm = sqrt(sum);
    if (norm > max_norm) {
        float coef = fu_clip_coef(norm, max_norm);
#pragma omp parallel for schedule(static)
        for (size_t i = 0; i < n; i++) g[i] *= coef;
    }
    return norm;
}
