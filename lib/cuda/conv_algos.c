// Records of measured convolution algorithms: conv_algos.h.
#include "cuda/conv_algos.h"

#include "core/error.h"
#include "core/outfile.h"

#include <ctype.h>
#include <errno.h>
#include <limits.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static bool has_blank(const char *s) {
    for (; *s; s++)
        if (isspace((unsigned char)*s)) return true;
    return false;
}

static int append(fu_algo_file *f, const char *key, const int v[6]) {
    if (f->n == f->cap) {
        int cap = f->cap ? 2 * f->cap : 64;
        fu_algo_rec *r = fu_realloc(f->rec, (size_t)cap * sizeof *r);
        if (!r) return -1;
        f->rec = r, f->cap = cap;
    }
    fu_algo_rec *r = &f->rec[f->n++];
    snprintf(r->key, sizeof r->key, "%s", key);
    memcpy(r->v, v, sizeof r->v);
    return 0;
}

const fu_algo_rec *fu_algo_find(const fu_algo_file *f, const char *key) {
    for (int i = 0; i < f->n; i++)
        if (!strcmp(f->rec[i].key, key)) return &f->rec[i];
    return NULL;
}

// One record line ("KEY a b c d e f") into key and v; NULL, or what is wrong.
static const char *parse(char *line, char key[FU_ALGO_KEY], int v[6]) {
    char *s = line;
    while (isspace((unsigned char)*s)) s++;
    char *end = s;
    while (*end && !isspace((unsigned char)*end)) end++;
    if ((size_t)(end - s) >= FU_ALGO_KEY) return "the key is too long";
    memcpy(key, s, (size_t)(end - s));
    key[end - s] = '\0';
    s = end;
    for (int k = 0; k < 6; k++) {
        char *num_end;
        errno = 0;
        long x = strtol(s, &num_end, 10);
        if (num_end == s || errno || x < INT_MIN || x > INT_MAX) return "expected a key and six numbers";
        v[k] = (int)x;
        s = num_end;
    }
    while (isspace((unsigned char)*s)) s++;
    return *s ? "expected a key and six numbers" : NULL;
}

// path's records into f (f->path set, nothing recorded yet); a missing file
// has none.
static int read_records(fu_algo_file *f) {
    FILE *in = fopen(f->path, "r");
    if (!in) return errno == ENOENT ? 0 : fu_fail(f->path, "cannot read: %s", strerror(errno));
    char *line = NULL, key[FU_ALGO_KEY];
    size_t size = 0;
    int rc = 0, v[6];
    for (long no = 1; rc == 0 && getline(&line, &size, in) >= 0; no++) {
        char *s = line;
        while (isspace((unsigned char)*s)) s++;
        if (!*s || *s == '#') continue;
        const char *bad = parse(s, key, v);
        if (!bad && fu_algo_find(f, key)) bad = "the key is recorded twice";
        if (bad) {
            char where[FU_ALGO_KEY + 32];
            snprintf(where, sizeof where, "%.255s:%ld", f->path, no);
            rc = fu_fail(where, "%s", bad);
        } else {
            rc = append(f, key, v);
        }
    }
    if (rc == 0 && ferror(in)) rc = fu_fail(f->path, "cannot read: %s", strerror(errno));
    free(line);
    fclose(in);
    return rc;
}

int fu_algo_load(fu_algo_file *f, const char *path) {
    memset(f, 0, sizeof *f);
    f->path = strdup(path);
    if (!f->path) return fu_fail("conv algorithms", "out of memory");
    if (read_records(f) == 0) return 0;
    fu_algo_free(f);
    return -1;
}

int fu_algo_add(fu_algo_file *f, const char *key, const int v[6]) {
    if (!*key || strlen(key) >= FU_ALGO_KEY || has_blank(key) || fu_algo_find(f, key))
        return fu_fail("conv algorithms", "cannot record '%s': a key must be new, without blanks, under %d characters",
                       key, FU_ALGO_KEY);
    if (append(f, key, v) < 0) return -1;
    f->added++;
    return 0;
}

static int write_records(const fu_algo_file *f) {
    fu_outfile o;
    if (fu_out_open(&o, f->path, false) < 0) return -1;
    fprintf(o.f, "# cuDNN convolution engines measured and recorded by the cuda backend (docs/gpu.md):\n"
                 "# key, then a pair for each of forward, backward data and backward filter: for the graph API\n"
                 "# the engine configuration's place in cuDNN's heuristics list and its engine, for the legacy\n"
                 "# API the algorithm and its math type\n");
    for (int i = 0; i < f->n; i++) {
        const int *v = f->rec[i].v;
        fprintf(o.f, "%s %d %d %d %d %d %d\n", f->rec[i].key, v[0], v[1], v[2], v[3], v[4], v[5]);
    }
    if (ferror(o.f)) {
        fu_fail(f->path, "write failed");
        fu_out_abort(&o);
        return -1;
    }
    return fu_out_commit(&o);
}

int fu_algo_save(fu_algo_file *f) {
    if (!f->added) return 0;
    fu_algo_file now = {.path = f->path};
    if (read_records(&now) < 0) {
        free(now.rec);
        return -1;
    }
    int rc = 0;
    for (int i = 0; rc == 0 && i < f->n; i++)
        if (!fu_algo_find(&now, f->rec[i].key)) rc = append(&now, f->rec[i].key, f->rec[i].v);
    if (rc == 0) rc = write_records(&now);
    if (rc < 0) {
        free(now.rec);
        return -1;
    }
    free(f->rec);
    f->rec = now.rec, f->n = now.n, f->cap = now.cap, f->added = 0;
    return 0;
}

void fu_algo_free(fu_algo_file *f) {
    free(f->path);
    free(f->rec);
    memset(f, 0, sizeof *f);
}
