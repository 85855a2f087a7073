// safetensors reader and writer, and the model's state_dict in it.
#include "nn/safetensors.h"

#include "core/error.h"
#include "core/outfile.h"

#include <errno.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define MAX_HEADER (100u << 20) // the reference implementation's limit

const char *fu_st_dtype_name(fu_st_dtype d) { return d == FU_ST_F32 ? "F32" : d == FU_ST_F64 ? "F64" : "I64"; }
static size_t dtype_size(fu_st_dtype d) { return d == FU_ST_F32 ? 4 : 8; }

size_t fu_st_numel(const fu_st_tensor *t) {
    size_t n = 1;
    for (int i = 0; i < t->ndim; i++) n *= (size_t)t->shape[i];
    return n;
}

// ---- writing ------------------------------------------------------------------

typedef struct {
    char *s;
    size_t len, cap;
    bool oom;
} text;

static __attribute__((format(printf, 2, 3))) void put(text *t, const char *fmt, ...) {
    va_list ap;
    for (;;) {
        va_start(ap, fmt);
        int n = vsnprintf(t->s ? t->s + t->len : NULL, t->s ? t->cap - t->len : 0, fmt, ap);
        va_end(ap);
        if (t->s && t->len + (size_t)n < t->cap) {
            t->len += (size_t)n;
            return;
        }
        size_t cap = (t->cap + (size_t)n + 1) * 2;
        char *s = fu_realloc(t->s, cap);
        if (!s) {
            t->oom = true;
            return;
        }
        t->s = s, t->cap = cap;
    }
}

static void put_string(text *t, const char *s) {
    put(t, "\"");
    for (; *s; s++) {
        unsigned char c = (unsigned char)*s;
        if (c == '"' || c == '\\') put(t, "\\%c", c);
        else if (c < 0x20) put(t, "\\u%04x", c);
        else put(t, "%c", c);
    }
    put(t, "\"");
}

static void le64(unsigned char *b, uint64_t v) {
    for (int i = 0; i < 8; i++) b[i] = (unsigned char)(v >> (8 * i));
}

int fu_st_write(const char *path, const fu_st_tensor *tensors, int n, const char *const *meta) {
    text h = {0};
    put(&h, "{");
    if (meta && meta[0]) {
        put(&h, "\"__metadata__\":{");
        for (int i = 0; meta[i] && meta[i + 1]; i += 2) {
            if (i) put(&h, ",");
            put_string(&h, meta[i]);
            put(&h, ":");
            put_string(&h, meta[i + 1]);
        }
        put(&h, "}%s", n ? "," : "");
    }
    uint64_t offset = 0;
    for (int i = 0; i < n; i++) {
        const fu_st_tensor *t = &tensors[i];
        uint64_t bytes = fu_st_numel(t) * dtype_size(t->dtype);
        put_string(&h, t->name);
        put(&h, ":{\"dtype\":\"%s\",\"shape\":[", fu_st_dtype_name(t->dtype));
        for (int d = 0; d < t->ndim; d++) put(&h, "%s%lld", d ? "," : "", (long long)t->shape[d]);
        put(&h, "],\"data_offsets\":[%llu,%llu]}%s", (unsigned long long)offset,
            (unsigned long long)(offset + bytes), i + 1 < n ? "," : "");
        offset += bytes;
    }
    put(&h, "}");
    while (!h.oom && h.len % 8) put(&h, " "); // pad so the data starts 8-byte aligned
    if (h.oom) {
        free(h.s);
        return -1;
    }
    fu_outfile o;
    if (fu_out_open(&o, path, true) < 0) {
        free(h.s);
        return -1;
    }
    unsigned char len[8];
    le64(len, h.len);
    bool ok = fwrite(len, 1, 8, o.f) == 8 && fwrite(h.s, 1, h.len, o.f) == h.len;
    free(h.s);
    // The data is written in the host's byte order, which is little-endian on
    // every machine this project targets (x86-64, aarch64).
    for (int i = 0; ok && i < n; i++) {
        size_t bytes = fu_st_numel(&tensors[i]) * dtype_size(tensors[i].dtype);
        ok = fwrite(tensors[i].data, 1, bytes, o.f) == bytes;
    }
    if (!ok) {
        fu_fail(path, "write failed: %s", strerror(errno));
        fu_out_abort(&o);
        return -1;
    }
    return fu_out_commit(&o);
}

// ---- reading ------------------------------------------------------------------

struct fu_st_file {
    unsigned char *bytes; // the whole file
    size_t size;
    fu_st_tensor *tensors;
    int n;
    char **meta; // key, value pairs
    int n_meta;
};

// A JSON cursor over the header; errors name the header byte offset.
typedef struct {
    const char *s, *end;
    const char *path;
    const char *begin;
} cursor;

static int bad(cursor *c, const char *what) {
    return fu_fail(c->path, "bad safetensors header at byte %td: %s", c->s - c->begin + 8, what);
}

static void skip_space(cursor *c) {
    while (c->s < c->end && (*c->s == ' ' || *c->s == '\t' || *c->s == '\n' || *c->s == '\r')) c->s++;
}

static int expect(cursor *c, char ch) {
    skip_space(c);
    if (c->s >= c->end || *c->s != ch) {
        char what[32];
        snprintf(what, sizeof what, "expected '%c'", ch);
        return bad(c, what);
    }
    c->s++;
    return 0;
}

// A hex digit's value, or -1.
static int hex_digit(char ch) {
    if (ch >= '0' && ch <= '9') return ch - '0';
    if (ch >= 'a' && ch <= 'f') return ch - 'a' + 10;
    if (ch >= 'A' && ch <= 'F') return ch - 'A' + 10;
    return -1;
}

// Parses a string into a new allocation (escapes decoded; \u to UTF-8).
static char *parse_string(cursor *c) {
    if (expect(c, '"') < 0) return NULL;
    const char *start = c->s;
    size_t cap = 1;
    while (c->s < c->end && *c->s != '"') {
        if (*c->s == '\\') c->s++;
        c->s++;
        cap += 3;
    }
    if (c->s >= c->end) {
        bad(c, "unterminated string");
        return NULL;
    }
    char *out = fu_malloc(cap), *o = out;
    if (!out) return NULL;
    for (const char *p = start; p < c->s; p++) {
        if (*p != '\\') {
            *o++ = *p;
            continue;
        }
        p++;
        switch (*p) {
        case 'n': *o++ = '\n'; break;
        case 't': *o++ = '\t'; break;
        case 'r': *o++ = '\r'; break;
        case 'b': *o++ = '\b'; break;
        case 'f': *o++ = '\f'; break;
        case 'u': { // four hex digits, read here: the header is not NUL-terminated (no sscanf)
            unsigned v = 0;
            int k = 1, digit;
            for (; k <= 4 && p + k < c->s && (digit = hex_digit(p[k])) >= 0; k++) v = v << 4 | (unsigned)digit;
            if (k <= 4) {
                free(out);
                bad(c, "bad \\u escape");
                return NULL;
            }
            p += 4;
            if (v < 0x80) *o++ = (char)v;
            else if (v < 0x800) *o++ = (char)(0xC0 | v >> 6), *o++ = (char)(0x80 | (v & 0x3F));
            else *o++ = (char)(0xE0 | v >> 12), *o++ = (char)(0x80 | ((v >> 6) & 0x3F)), *o++ = (char)(0x80 | (v & 0x3F));
            break;
        }
        default: *o++ = *p; break; // \" \\ \/
        }
    }
    *o = 0;
    c->s++;
    return out;
}

static int parse_uint(cursor *c, uint64_t *v) {
    skip_space(c);
    if (c->s >= c->end || *c->s < '0' || *c->s > '9') return bad(c, "expected a non-negative integer");
    *v = 0;
    while (c->s < c->end && *c->s >= '0' && *c->s <= '9') {
        if (*v > (UINT64_MAX - 9) / 10) return bad(c, "integer too large");
        *v = *v * 10 + (uint64_t)(*c->s++ - '0');
    }
    return 0;
}

// [a, b, ...] of at most `max` integers into v; *n gets the count.
static int parse_uint_array(cursor *c, uint64_t *v, int max, int *n) {
    if (expect(c, '[') < 0) return -1;
    *n = 0;
    skip_space(c);
    if (c->s < c->end && *c->s == ']') {
        c->s++;
        return 0;
    }
    for (;;) {
        if (*n == max) return bad(c, "too many elements");
        if (parse_uint(c, &v[(*n)++]) < 0) return -1;
        skip_space(c);
        if (c->s < c->end && *c->s == ',') {
            c->s++;
            continue;
        }
        return expect(c, ']');
    }
}

// Calls item(key) for each member of an object; the callback parses the value.
static int parse_object(cursor *c, int (*item)(cursor *, char *key, void *ctx), void *ctx) {
    if (expect(c, '{') < 0) return -1;
    skip_space(c);
    if (c->s < c->end && *c->s == '}') {
        c->s++;
        return 0;
    }
    for (;;) {
        char *key = parse_string(c);
        if (!key) return -1;
        if (expect(c, ':') < 0) {
            free(key);
            return -1;
        }
        if (item(c, key, ctx) < 0) return -1; // item owns key
        skip_space(c);
        if (c->s < c->end && *c->s == ',') {
            c->s++;
            continue;
        }
        return expect(c, '}');
    }
}

static int meta_item(cursor *c, char *key, void *ctx) {
    fu_st_file *f = ctx;
    skip_space(c);
    if (c->s >= c->end || *c->s != '"') {
        free(key);
        return bad(c, "__metadata__ values must be strings");
    }
    char *value = parse_string(c);
    char **meta = value ? fu_realloc(f->meta, (size_t)(f->n_meta + 2) * sizeof *meta) : NULL;
    if (!meta) {
        free(key);
        free(value);
        return -1;
    }
    f->meta = meta;
    f->meta[f->n_meta++] = key;
    f->meta[f->n_meta++] = value;
    return 0;
}

typedef struct {
    fu_st_tensor *t;
    uint64_t begin, end;
    bool dtype, shape, offsets;
} entry;

static int field_item(cursor *c, char *key, void *ctx) {
    entry *e = ctx;
    int rc = 0;
    if (strcmp(key, "dtype") == 0) {
        char *d = parse_string(c);
        if (!d) rc = -1;
        else if (strcmp(d, "F32") == 0) e->t->dtype = FU_ST_F32;
        else if (strcmp(d, "F64") == 0) e->t->dtype = FU_ST_F64;
        else if (strcmp(d, "I64") == 0) e->t->dtype = FU_ST_I64;
        else rc = fu_fail(c->path, "tensor %s: dtype %s is not supported (only F32, F64 and I64)", e->t->name, d);
        free(d);
        e->dtype = true;
    } else if (strcmp(key, "shape") == 0) {
        uint64_t v[5];
        int n;
        rc = parse_uint_array(c, v, 5, &n);
        if (rc == 0 && n > 4) rc = fu_fail(c->path, "tensor %s has %d dimensions (at most 4)", e->t->name, n);
        for (int i = 0; rc == 0 && i < n; i++) {
            if (v[i] > (UINT64_C(1) << 40)) rc = bad(c, "dimension too large");
            e->t->shape[i] = (int64_t)v[i];
        }
        e->t->ndim = n;
        e->shape = true;
    } else if (strcmp(key, "data_offsets") == 0) {
        uint64_t v[2];
        int n;
        rc = parse_uint_array(c, v, 2, &n);
        if (rc == 0 && (n != 2 || v[1] < v[0])) rc = bad(c, "data_offsets must be [begin, end] with begin <= end");
        e->begin = v[0], e->end = v[1];
        e->offsets = true;
    } else {
        rc = fu_fail(c->path, "tensor %s: unknown field \"%s\"", e->t->name, key);
    }
    free(key);
    return rc;
}

typedef struct {
    fu_st_file *f;
    entry *entries;
    int cap;
} header;

static int top_item(cursor *c, char *key, void *ctx) {
    header *h = ctx;
    fu_st_file *f = h->f;
    if (strcmp(key, "__metadata__") == 0) {
        free(key);
        return parse_object(c, meta_item, f);
    }
    for (int i = 0; i < f->n; i++)
        if (strcmp(f->tensors[i].name, key) == 0) {
            fu_fail(c->path, "tensor %s appears twice", key);
            free(key);
            return -1;
        }
    if (f->n == h->cap) {
        int cap = h->cap ? 2 * h->cap : 64;
        fu_st_tensor *t = fu_realloc(f->tensors, (size_t)cap * sizeof *t);
        if (t) f->tensors = t;
        entry *e = fu_realloc(h->entries, (size_t)cap * sizeof *e);
        if (e) h->entries = e;
        if (!t || !e) {
            free(key);
            return -1;
        }
        h->cap = cap;
    }
    fu_st_tensor *t = &f->tensors[f->n];
    memset(t, 0, sizeof *t);
    t->name = key;
    entry *e = &h->entries[f->n++];
    memset(e, 0, sizeof *e);
    e->t = t;
    if (parse_object(c, field_item, e) < 0) return -1;
    if (!e->dtype || !e->shape || !e->offsets)
        return fu_fail(c->path, "tensor %s lacks %s", key, !e->dtype ? "dtype" : !e->shape ? "shape" : "data_offsets");
    return 0;
}

static int by_begin(const void *a, const void *b) {
    const entry *x = *(entry *const *)a, *y = *(entry *const *)b;
    return x->begin < y->begin ? -1 : x->begin > y->begin;
}

// Offsets agree with dtype and shape, and the tensors tile the data exactly.
static int check_layout(const char *path, header *h, uint64_t data_len) {
    fu_st_file *f = h->f;
    entry **order = fu_malloc((size_t)(f->n ? f->n : 1) * sizeof *order);
    if (!order) return -1;
    for (int i = 0; i < f->n; i++) {
        entry *e = &h->entries[i];
        e->t = &f->tensors[i]; // tensors may have moved while growing
        order[i] = e;
        uint64_t want = fu_st_numel(e->t) * dtype_size(e->t->dtype);
        if (e->end - e->begin != want) {
            free(order);
            return fu_fail(path, "tensor %s: data_offsets span %llu bytes, its dtype and shape need %llu",
                           e->t->name, (unsigned long long)(e->end - e->begin), (unsigned long long)want);
        }
    }
    qsort(order, (size_t)f->n, sizeof *order, by_begin);
    uint64_t at = 0;
    for (int i = 0; i < f->n; i++) {
        if (order[i]->begin != at) {
            int rc = fu_fail(path, "tensor %s starts at data byte %llu, expected %llu (gap or overlap)",
                             order[i]->t->name, (unsigned long long)order[i]->begin, (unsigned long long)at);
            free(order);
            return rc;
        }
        at = order[i]->end;
    }
    free(order);
    if (at != data_len)
        return fu_fail(path, "the tensors cover %llu data bytes but the file holds %llu (truncated or padded?)",
                       (unsigned long long)at, (unsigned long long)data_len);
    return 0;
}

static unsigned char *read_whole(const char *path, size_t *size) {
    FILE *in = fopen(path, "rb");
    if (!in) {
        fu_fail(path, "cannot open: %s", strerror(errno));
        return NULL;
    }
    unsigned char *buf = NULL;
    size_t len = 0, cap = 0;
    bool ok = true;
    for (;;) {
        if (len == cap) {
            cap = cap ? 2 * cap : 1 << 20;
            unsigned char *b = fu_realloc(buf, cap);
            if (!(ok = b != NULL)) break;
            buf = b;
        }
        size_t got = fread(buf + len, 1, cap - len, in);
        len += got;
        if (got == 0) break;
    }
    if (ok && ferror(in)) ok = fu_fail(path, "read failed: %s", strerror(errno)) == 0;
    fclose(in);
    if (!ok) {
        free(buf);
        return NULL;
    }
    *size = len;
    return buf;
}

fu_st_file *fu_st_open(const char *path) {
    fu_st_file *f = fu_calloc(1, sizeof *f);
    if (!f) return NULL;
    header h = {f, NULL, 0};
    f->bytes = read_whole(path, &f->size);
    if (!f->bytes) goto fail;
    if (f->size < 8) {
        fu_fail(path, "not a safetensors file: %zu bytes, shorter than the 8-byte header length", f->size);
        goto fail;
    }
    uint64_t hlen = 0;
    for (int i = 7; i >= 0; i--) hlen = hlen << 8 | f->bytes[i];
    if (hlen > MAX_HEADER || hlen > f->size - 8) {
        fu_fail(path, "not a safetensors file: header length %llu exceeds the file (%zu bytes)",
                (unsigned long long)hlen, f->size);
        goto fail;
    }
    cursor c = {(const char *)f->bytes + 8, (const char *)f->bytes + 8 + hlen, path, (const char *)f->bytes + 8};
    skip_space(&c);
    if (c.s >= c.end || *c.s != '{') {
        fu_fail(path, "not a safetensors file: the header is not a JSON object");
        goto fail;
    }
    if (parse_object(&c, top_item, &h) < 0) goto fail;
    skip_space(&c);
    if (c.s != c.end) {
        bad(&c, "trailing bytes after the header object");
        goto fail;
    }
    if (check_layout(path, &h, f->size - 8 - hlen) < 0) goto fail;
    for (int i = 0; i < f->n; i++) f->tensors[i].data = f->bytes + 8 + hlen + h.entries[i].begin;
    free(h.entries);
    return f;
fail:
    free(h.entries);
    fu_st_close(f);
    return NULL;
}

void fu_st_close(fu_st_file *f) {
    if (!f) return;
    for (int i = 0; i < f->n; i++) free((char *)f->tensors[i].name);
    for (int i = 0; i < f->n_meta; i++) free(f->meta[i]);
    free(f->tensors);
    free(f->meta);
    free(f->bytes);
    free(f);
}

int fu_st_count(const fu_st_file *f) { return f->n; }
const fu_st_tensor *fu_st_get(const fu_st_file *f, int i) { return &f->tensors[i]; }

const fu_st_tensor *fu_st_find(const fu_st_file *f, const char *name) {
    for (int i = 0; i < f->n; i++)
        if (strcmp(f->tensors[i].name, name) == 0) return &f->tensors[i];
    return NULL;
}

const char *fu_st_meta(const fu_st_file *f, const char *key) {
    for (int i = 0; i + 1 < f->n_meta; i += 2)
        if (strcmp(f->meta[i], key) == 0) return f->meta[i + 1];
    return NULL;
}

// ---- the model's state_dict ---------------------------------------------------

static void *tensor_data(const fu_tensor *t, const float *params, const float *state, const int64_t *counts) {
    if (t->buffer == FU_BUF_PARAMS) return (void *)(params + t->offset);
    if (t->buffer == FU_BUF_STATE) return (void *)(state + t->offset);
    return (void *)(counts + t->offset);
}

int fu_model_save(const char *path, const fu_model *m, const float *params, const float *state,
                  const int64_t *counts, const char *const *meta) {
    fu_st_tensor *st = fu_calloc((size_t)m->n_tensors, sizeof *st);
    if (!st) return -1;
    for (int i = 0; i < m->n_tensors; i++) {
        const fu_tensor *t = &m->tensors[i];
        st[i] = (fu_st_tensor){.name = t->name, .dtype = t->buffer == FU_BUF_COUNTS ? FU_ST_I64 : FU_ST_F32,
                               .ndim = t->ndim, .data = tensor_data(t, params, state, counts)};
        memcpy(st[i].shape, t->shape, sizeof t->shape);
    }
    int rc = fu_st_write(path, st, m->n_tensors, meta);
    free(st);
    return rc;
}

static void shape_text(char *out, size_t cap, int ndim, const int64_t *shape) {
    int n = snprintf(out, cap, "[");
    for (int i = 0; i < ndim && (size_t)n < cap; i++) n += snprintf(out + n, cap - (size_t)n, "%s%lld", i ? ", " : "", (long long)shape[i]);
    if ((size_t)n < cap) snprintf(out + n, cap - (size_t)n, "]");
}

int fu_model_load(const char *path, const fu_model *m, float *params, float *state, int64_t *counts) {
    fu_st_file *f = fu_st_open(path);
    if (!f) return -1;
    int rc = -1, missing = 0;
    const char *first_missing = NULL;
    for (int i = 0; i < m->n_tensors; i++)
        if (!fu_st_find(f, m->tensors[i].name) && !missing++) first_missing = m->tensors[i].name;
    if (missing > m->n_tensors / 2) {
        fu_fail(path, "not a MedicalCNN checkpoint: %d of its %d tensors are missing (the first: %s)", missing,
                m->n_tensors, first_missing);
        fu_hint("checkpoints hold the state_dict of the study's MedicalCNN (docs/model.md)");
        goto done;
    }
    if (missing) {
        fu_fail(path, "tensor %s is missing%s", first_missing, missing > 1 ? " (and others)" : "");
        goto done;
    }
    for (int i = 0; i < f->n; i++)
        if (!fu_model_find(m, f->tensors[i].name)) {
            fu_fail(path, "unexpected tensor %s: not part of MedicalCNN", f->tensors[i].name);
            goto done;
        }
    for (int i = 0; i < m->n_tensors; i++) {
        const fu_tensor *t = &m->tensors[i];
        const fu_st_tensor *s = fu_st_find(f, t->name);
        fu_st_dtype want = t->buffer == FU_BUF_COUNTS ? FU_ST_I64 : FU_ST_F32;
        if (s->dtype != want) {
            fu_fail(path, "tensor %s is %s, expected %s", t->name, fu_st_dtype_name(s->dtype), fu_st_dtype_name(want));
            goto done;
        }
        if (s->ndim != t->ndim || memcmp(s->shape, t->shape, (size_t)t->ndim * sizeof *t->shape) != 0) {
            char got[96], exp[96];
            shape_text(got, sizeof got, s->ndim, s->shape);
            shape_text(exp, sizeof exp, t->ndim, t->shape);
            fu_fail(path, "tensor %s has shape %s, the model expects %s", t->name, got, exp);
            goto done;
        }
    }
    for (int i = 0; i < m->n_tensors; i++) {
        const fu_tensor *t = &m->tensors[i];
        const fu_st_tensor *s = fu_st_find(f, t->name);
        memcpy(tensor_data(t, params, state, counts), s->data, t->numel * (t->buffer == FU_BUF_COUNTS ? 8 : 4));
    }
    rc = 0;
done:
    fu_st_close(f);
    return rc;
}
