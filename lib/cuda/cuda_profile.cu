// Event marks between sections of the backend's GPU work (cuda_profile.h).
#include "cuda/cuda_profile.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

enum { MAX_LABELS = 64, MAX_MARKS = 4096 };

struct cu_profile {
    cudaEvent_t ev[MAX_MARKS];  // created once, reused after each flush
    const char *at[MAX_MARKS];  // the label each mark starts
    int marks, created;
    const char *label[MAX_LABELS];
    double ms[MAX_LABELS];
    int labels, steps;
};

cu_profile *cu_profile_create(void) {
    const char *on = getenv("FU_CUDA_PROFILE");
    if (!on || !*on || strcmp(on, "0") == 0) return NULL;
    return (cu_profile *)calloc(1, sizeof(cu_profile));
}

void cu_profile_destroy(cu_profile *p) {
    if (!p) return;
    for (int i = 0; i < p->created; i++) cudaEventDestroy(p->ev[i]);
    free(p);
}

void cu_profile_mark(cu_profile *p, const char *label, cudaStream_t s) {
    if (!p) return;
    if (p->marks == MAX_MARKS - 1) cu_profile_flush(p); // a long pass: book what is closed so far (the flush's own mark fits)
    int i = p->marks;
    if (i == p->created) {
        if (cudaEventCreate(&p->ev[i]) != cudaSuccess) return; // unprofiled, not failed
        p->created++;
    }
    if (cudaEventRecord(p->ev[i], s) != cudaSuccess) return;
    p->at[i] = label;
    p->marks++;
}

static int slot(cu_profile *p, const char *label) {
    for (int k = 0; k < p->labels; k++)
        if (p->label[k] == label || strcmp(p->label[k], label) == 0) return k;
    if (p->labels == MAX_LABELS) return -1;
    p->label[p->labels] = label;
    p->ms[p->labels] = 0;
    return p->labels++;
}

void cu_profile_flush(cu_profile *p) {
    if (!p || p->marks == 0) return;
    // The running section ends now.
    cu_profile_mark(p, "(end)", 0);
    int rc = cudaEventSynchronize(p->ev[p->marks - 1]) == cudaSuccess ? 0 : -1;
    for (int i = 0; rc == 0 && i + 1 < p->marks; i++) {
        float ms = 0;
        if (cudaEventElapsedTime(&ms, p->ev[i], p->ev[i + 1]) != cudaSuccess) rc = -1;
        int k = slot(p, p->at[i]);
        if (rc == 0 && k >= 0) p->ms[k] += ms;
    }
    p->marks = 0;
    if (rc < 0) cu_profile_reset(p);
}

void cu_profile_step(cu_profile *p) {
    if (p) p->steps++;
}

void cu_profile_reset(cu_profile *p) {
    if (!p) return;
    p->labels = p->steps = p->marks = 0;
}

void cu_profile_report(const cu_profile *p, char *out, size_t size) {
    if (size) out[0] = 0;
    if (!p || p->steps == 0 || size == 0) return;
    int order[MAX_LABELS];
    double total = 0;
    for (int k = 0; k < p->labels; k++) order[k] = k, total += p->ms[k];
    for (int a = 1; a < p->labels; a++) // insertion sort, largest first
        for (int b = a; b > 0 && p->ms[order[b]] > p->ms[order[b - 1]]; b--) {
            int t = order[b];
            order[b] = order[b - 1], order[b - 1] = t;
        }
    size_t used = 0;
    for (int a = 0; a < p->labels && used < size; a++) {
        int k = order[a];
        int w = snprintf(out + used, size - used, "%-44s %8.2f ms per step %5.1f%%\n", p->label[k],
                         p->ms[k] / p->steps, total > 0 ? 100 * p->ms[k] / total : 0);
        if (w < 0) break;
        used += (size_t)w;
    }
    if (used < size)
        snprintf(out + used, size - used, "%-44s %8.2f ms per step (of %d steps)\n", "sum of the sections",
                 total / p->steps, p->steps);
}
