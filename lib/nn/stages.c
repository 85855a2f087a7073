// Cutting a model into stages (stages.h).
#include "nn/stages.h"

#include "core/error.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

bool fu_model_can_cut(const fu_model *m, int b) {
    if (b < 1 || b >= m->n_ops - 1) return false; // a stage of the input alone, or after the loss
    for (int j = b + 1; j < m->n_ops; j++)
        for (int k = 0; k < m->ops[j].n_in; k++)
            if (m->ops[j].in[k] < b) return false;
    return true;
}

// The name of the module op i belongs to: its own, or that of the nearest
// named op before it (the input: the first named op after it).
static const char *owner(const fu_model *m, int i) {
    for (int j = i; j >= 0; j--)
        if (m->ops[j].name[0]) return m->ops[j].name;
    for (int j = i; j < m->n_ops; j++)
        if (m->ops[j].name[0]) return m->ops[j].name;
    return "";
}

// A module's short label: its group ("stem", "fc", "stage3_md"), or for a
// residual stage's op its block ("stage3_res.2").
static void label_of(const char *name, bool block, char *out, size_t size) {
    const char *dot = strchr(name, '.');
    size_t len = dot ? (size_t)(dot - name) : strlen(name);
    if (block && dot && dot[1] >= '0' && dot[1] <= '9') {
        const char *end = strchr(dot + 1, '.');
        len = end ? (size_t)(end - name) : strlen(name);
    }
    snprintf(out, size, "%.*s", (int)len, name);
}

static bool same_group(const fu_model *m, int i, int j) {
    char a[64], b[64];
    label_of(owner(m, i), false, a, sizeof a);
    label_of(owner(m, j), false, b, sizeof b);
    return strcmp(a, b) == 0;
}

// The params (state, counts) offset of the first op at or after i that has
// any; the buffer's size when none does.
static size_t param_at(const fu_model *m, int i) {
    for (; i < m->n_ops; i++)
        if (m->ops[i].weight >= 0) return (size_t)m->ops[i].weight;
    return m->n_params;
}

static size_t state_at(const fu_model *m, int i) {
    for (; i < m->n_ops; i++)
        if (m->ops[i].mean >= 0) return (size_t)m->ops[i].mean;
    return m->n_state;
}

static size_t count_at(const fu_model *m, int i) {
    for (; i < m->n_ops; i++)
        if (m->ops[i].count >= 0) return (size_t)m->ops[i].count;
    return m->n_counts;
}

static void fill_stage(const fu_model *m, int first, int last, fu_stage *s) {
    memset(s, 0, sizeof *s);
    s->first = first, s->last = last;
    s->param0 = param_at(m, first), s->n_params = param_at(m, last + 1) - s->param0;
    s->state0 = state_at(m, first), s->n_state = state_at(m, last + 1) - s->state0;
    s->count0 = count_at(m, first), s->n_counts = count_at(m, last + 1) - s->count0;
    for (int i = first; i <= last; i++) s->macs += fu_op_macs(m, i);
    // Whole groups by their group's name, partial ones by block.
    char a[64], b[64];
    label_of(owner(m, first), first > 0 && same_group(m, first - 1, first), a, sizeof a);
    label_of(owner(m, last), last < m->n_ops - 1 && same_group(m, last, last + 1), b, sizeof b);
    if (strcmp(a, b) == 0) snprintf(s->name, sizeof s->name, "%s", a);
    else snprintf(s->name, sizeof s->name, "%.30s..%.30s", a, b);
}

int fu_stages_balanced(const fu_model *m, int k, fu_stage *out) {
    if (k < 1 || k > FU_MAX_STAGES) return fu_fail("stages", "%d stages: 1..%d can be made", k, FU_MAX_STAGES);
    int n = m->n_ops;
    // cut[c]: the c-th op after which the model can be cut; prefix MACs.
    int *cut = fu_calloc((size_t)n, sizeof *cut);
    double *pre = fu_calloc((size_t)n + 1, sizeof *pre);
    // best[j * n + c]: the smallest largest-stage cost of ops 0..cut[c] in j
    // stages; from[...]: the cut before that j-th stage (-1: none).
    double *best = fu_calloc((size_t)(k + 1) * n, sizeof *best);
    int *from = fu_calloc((size_t)(k + 1) * n, sizeof *from);
    if (!cut || !pre || !best || !from) {
        free(cut), free(pre), free(best), free(from);
        return -1;
    }
    for (int i = 0; i < n; i++) pre[i + 1] = pre[i] + fu_op_macs(m, i);
    int cuts = 0;
    for (int b = 0; b < n; b++)
        if (fu_model_can_cut(m, b)) cut[cuts++] = b;
    cut[cuts++] = n - 1; // the end of the last stage
    int rc = 0;
    if (cuts < k) {
        rc = fu_fail("stages", "the model can be cut into at most %d stages, not %d", cuts, k);
        goto done;
    }
    for (int j = 1; j <= k; j++)
        for (int c = 0; c < cuts; c++) {
            double *b = &best[j * n + c];
            *b = -1;
            from[j * n + c] = -1;
            if (j == 1) {
                *b = pre[cut[c] + 1];
                continue;
            }
            for (int p = j - 2; p < c; p++) { // stages 1..j-1 end at cut[p], stage j is cut[p]+1..cut[c]
                if (best[(j - 1) * n + p] < 0) continue;
                double cost = pre[cut[c] + 1] - pre[cut[p] + 1];
                double worst = cost > best[(j - 1) * n + p] ? cost : best[(j - 1) * n + p];
                if (*b < 0 || worst <= *b) *b = worst, from[j * n + c] = p; // ties: the later cut
            }
        }
    // Walk back from the end: stage j ends at cut[c].
    for (int j = k, c = cuts - 1; j >= 1; j--) {
        int p = from[j * n + c];
        fill_stage(m, p < 0 ? 0 : cut[p] + 1, cut[c], &out[j - 1]);
        c = p;
    }
done:
    free(cut), free(pre), free(best), free(from);
    return rc;
}

// Copies the next ',' or '|' separated item of *s into out (spaces dropped);
// *sep gets the separator after it ('\0' at the end).
static void next_item(const char **s, char *out, size_t size, char *sep) {
    size_t len = 0;
    while (**s && **s != ',' && **s != '|') {
        if (**s != ' ' && len + 1 < size) out[len++] = **s;
        (*s)++;
    }
    out[len] = '\0';
    *sep = **s;
    if (**s) (*s)++;
}

static bool in_module(const char *name, const char *module) {
    size_t k = strlen(module);
    return strncmp(name, module, k) == 0 && (name[k] == '\0' || name[k] == '.');
}

int fu_stages_parse(const fu_model *m, const char *spec, fu_stage *out, int max, int *k) {
    int n = m->n_ops;
    int *stage_of = fu_calloc((size_t)n, sizeof *stage_of);
    if (!stage_of) return -1;
    for (int i = 0; i < n; i++) stage_of[i] = -1;
    int rc = 0, stage = 0;
    char item[64], sep = ',';
    const char *s = spec;
    while (sep) {
        next_item(&s, item, sizeof item, &sep);
        if (!item[0]) {
            rc = fu_fail("stages", "'%s': an empty module name", spec);
            goto done;
        }
        int hits = 0;
        for (int i = 0; i < n; i++)
            if (in_module(owner(m, i), item)) {
                if (stage_of[i] >= 0) {
                    rc = fu_fail("stages", "'%s' is listed twice", item);
                    goto done;
                }
                stage_of[i] = stage, hits++;
            }
        if (!hits) {
            rc = fu_fail("stages", "'%s' names no module (the modules: stem, stage1, stage2, stage3_res, "
                                   "stage3_md, stage4_res, fc, or a block such as stage3_res.2)", item);
            goto done;
        }
        if (sep == '|' && ++stage == max) {
            rc = fu_fail("stages", "more than %d stages", max);
            goto done;
        }
    }
    *k = stage + 1;
    int first = 0;
    for (int i = 0; i < n; i++) {
        char label[64];
        label_of(owner(m, i), true, label, sizeof label);
        if (stage_of[i] < 0) {
            rc = fu_fail("stages", "'%s' is in no stage (every module must be in one)", label);
            goto done;
        }
        if (i > 0 && stage_of[i] < stage_of[i - 1]) {
            rc = fu_fail("stages", "'%s' is listed after modules that follow it: stages go in forward order", label);
            goto done;
        }
        if (i > 0 && stage_of[i] > stage_of[i - 1] + 1) {
            rc = fu_fail("stages", "stage %d is empty", stage_of[i - 1] + 2);
            goto done;
        }
        if (i == n - 1 || stage_of[i + 1] != stage_of[i]) {
            if (i < n - 1 && !fu_model_can_cut(m, i)) {
                rc = fu_fail("stages", "the model cannot be cut after '%s': more than one tensor crosses there",
                             label);
                goto done;
            }
            fill_stage(m, first, i, &out[stage_of[i]]);
            first = i + 1;
        }
    }
done:
    free(stage_of);
    return rc;
}

int fu_model_stage(const fu_model *m, const fu_stage *s, fu_model *out) {
    memset(out, 0, sizeof *out);
    bool inner = s->first > 0;
    int base = inner ? s->first - 1 : 0; // op i of the stage is op i + base of m
    int n_ops = s->last - base + 1;
    out->ops = fu_calloc((size_t)n_ops, sizeof *out->ops);
    out->tensors = fu_calloc((size_t)m->n_tensors, sizeof *out->tensors);
    if (!out->ops || !out->tensors) {
        fu_model_free(out);
        return -1;
    }
    for (int i = 0; i < n_ops; i++) {
        fu_op *op = &out->ops[i];
        *op = m->ops[i + base];
        if (i == 0 && inner) { // the received tensor: an input of its shape
            op->kind = FU_OP_INPUT;
            op->n_in = 0;
            op->in[0] = -1;
            op->weight = op->bias_off = op->mean = op->var = -1;
            op->count = -1;
            op->name[0] = '\0';
            continue;
        }
        for (int k = 0; k < op->n_in; k++) op->in[k] -= base;
        if (op->weight >= 0) op->weight -= (int64_t)s->param0;
        if (op->bias_off >= 0) op->bias_off -= (int64_t)s->param0;
        if (op->mean >= 0) op->mean -= (int64_t)s->state0, op->var -= (int64_t)s->state0;
        if (op->count >= 0) op->count -= (int)s->count0;
    }
    for (int t = 0; t < m->n_tensors; t++) {
        const fu_tensor *src = &m->tensors[t];
        size_t lo = src->buffer == FU_BUF_PARAMS ? s->param0 : src->buffer == FU_BUF_STATE ? s->state0 : s->count0;
        size_t len = src->buffer == FU_BUF_PARAMS ? s->n_params : src->buffer == FU_BUF_STATE ? s->n_state : s->n_counts;
        if (src->offset < lo || src->offset >= lo + len) continue;
        fu_tensor *dst = &out->tensors[out->n_tensors++];
        *dst = *src;
        dst->offset -= lo;
    }
    out->n_ops = n_ops;
    out->n_params = s->n_params, out->n_state = s->n_state, out->n_counts = s->n_counts;
    out->height = m->height, out->width = m->width, out->classes = m->classes;
    out->op_base = base;
    out->inner_input = inner;
    return 0;
}
