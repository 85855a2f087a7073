// MedicalCNN as data (counts, names, shapes, order, init), the activation
// plan, safetensors checkpoints (round trip and every kind of bad file), and
// the reference network's forward/backward (determinism, thread count,
// training-mode bookkeeping). Agreement with PyTorch is tests/ref/model_parity.py.
#include "check.h"

#include "core/error.h"
#include "core/rng.h"
#include "nn/model.h"
#include "nn/ref_net.h"
#include "nn/safetensors.h"

#include <math.h>
#include <omp.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

static char tmpdir[] = "/tmp/fu-test-model-XXXXXX";

static const char *tmp(const char *name) {
    static char path[4][256];
    static int next;
    char *p = path[next++ % 4];
    snprintf(p, 256, "%s/%s", tmpdir, name);
    return p;
}

static bool shape_is(const fu_model *m, const char *name, int ndim, int64_t a, int64_t b, int64_t c, int64_t d) {
    const fu_tensor *t = fu_model_find(m, name);
    int64_t want[4] = {a, b, c, d};
    if (!t || t->ndim != ndim) return false;
    for (int i = 0; i < ndim; i++)
        if (t->shape[i] != want[i]) return false;
    return true;
}

static void check_description(void) {
    fu_model m;
    if (!CHECK(fu_medicalcnn(&m, 224, 224) == 0, "build MedicalCNN 224x224", "%s", fu_error())) return;
    fu_model_summary s = fu_model_summarize(&m);
    CHECK(s.params == 22494274, "22,494,274 parameters", "got %zu", s.params);
    CHECK(s.tensors == 294, "294 state_dict tensors", "got %d", s.tensors);
    CHECK(s.convs == 41 && s.bns == 43 && s.linears == 35, "41 conv, 43 BN, 35 linear modules", "got %d, %d, %d",
          s.convs, s.bns, s.linears);
    CHECK(s.study_layers == 129, "the study's 129 layers", "got %d", s.study_layers);
    // 3,792,250,880 MACs per 224x224 image (PyTorch forward hooks on tests/ref/medicalcnn.py).
    CHECK(s.macs == 3792250880.0, "3.79 GMAC per 224x224 image", "got %.0f", s.macs);
    CHECK(shape_is(&m, "stem.0.weight", 4, 64, 3, 7, 7) && shape_is(&m, "stem.1.running_var", 1, 64, 0, 0, 0) &&
              shape_is(&m, "stem.1.num_batches_tracked", 0, 0, 0, 0, 0) &&
              shape_is(&m, "stage1.0.se.fc.0.weight", 2, 4, 64, 0, 0) &&
              shape_is(&m, "stage1.0.se.fc.2.weight", 2, 64, 4, 0, 0) &&
              shape_is(&m, "stage2.0.downsample.0.weight", 4, 128, 64, 1, 1) &&
              shape_is(&m, "stage2.0.downsample.1.bias", 1, 128, 0, 0, 0) &&
              shape_is(&m, "stage3_res.5.conv2.weight", 4, 256, 256, 3, 3) &&
              shape_is(&m, "stage3_md.conv4.conv.weight", 4, 64, 256, 3, 3) &&
              shape_is(&m, "stage3_md.conv_fusion.conv.weight", 4, 256, 256, 1, 1) &&
              shape_is(&m, "stage3_md.conv_fusion.bn.running_mean", 1, 256, 0, 0, 0) &&
              shape_is(&m, "stage4_res.2.se.fc.0.weight", 2, 32, 512, 0, 0) &&
              shape_is(&m, "fc.0.weight", 2, 512, 512, 0, 0) && shape_is(&m, "fc.1.weight", 1, 512, 0, 0, 0) &&
              shape_is(&m, "fc.5.running_var", 1, 256, 0, 0, 0) && shape_is(&m, "fc.8.weight", 2, 2, 256, 0, 0) &&
              shape_is(&m, "fc.8.bias", 1, 2, 0, 0, 0),
          "state_dict names and PyTorch shapes", "a tensor is missing or mis-shaped");
    CHECK(!fu_model_find(&m, "stage1.0.downsample.0.weight") && !fu_model_find(&m, "stage2.1.downsample.0.weight"),
          "downsample only on the first block of stages 2-4", "found an extra shortcut");
    // Parameters in forward order, packed: each op's tensors follow the previous op's.
    bool packed = true, unique = true;
    size_t next[3] = {0, 0, 0};
    for (int i = 0; i < m.n_tensors; i++) {
        const fu_tensor *t = &m.tensors[i];
        packed &= t->offset == next[t->buffer];
        next[t->buffer] += t->numel;
        for (int j = 0; j < i; j++) unique &= strcmp(t->name, m.tensors[j].name) != 0;
    }
    int64_t last = -1;
    for (int i = 0; i < m.n_ops; i++)
        if (m.ops[i].weight >= 0) {
            packed &= m.ops[i].weight > last;
            last = m.ops[i].weight;
        }
    CHECK(packed && next[0] == m.n_params && next[1] == m.n_state && next[2] == 43,
          "parameters packed in forward order; 43 counters", "layout broken");
    CHECK(unique, "tensor names are unique", "duplicate name");
    const fu_op *logits = &m.ops[m.ops[m.n_ops - 1].in[0]];
    CHECK(m.ops[m.n_ops - 1].kind == FU_OP_XENT && logits->c == 2, "ends in 2 logits and the loss", "got %d", logits->c);
    fu_model_free(&m);

    // Global pooling: any size from 32 up, not only squares.
    CHECK(fu_medicalcnn(&m, 31, 64) < 0 && strstr(fu_error(), "below the minimum"), "31 pixels refused",
          "%s", fu_error());
    bool ok = fu_medicalcnn(&m, 32, 32) == 0 && fu_model_summarize(&m).params == 22494274;
    int last_spatial = -1;
    for (int i = 0; ok && i < m.n_ops; i++)
        if (m.ops[i].kind == FU_OP_GAP) last_spatial = m.ops[m.ops[i].in[0]].h;
    CHECK(ok && last_spatial == 1, "32x32 builds, 1x1 before the head", "spatial %d", last_spatial);
    fu_model_free(&m);
    ok = fu_medicalcnn(&m, 40, 57) == 0;
    CHECK(ok && fu_model_summarize(&m).params == 22494274, "non-square 57x40 builds", "%s", fu_error());
    fu_model_free(&m);
}

static double stddev_of(const float *v, size_t n, double *mean) {
    double s = 0, q = 0;
    for (size_t i = 0; i < n; i++) s += v[i];
    *mean = s / (double)n;
    for (size_t i = 0; i < n; i++) q += (v[i] - *mean) * (v[i] - *mean);
    return sqrt(q / (double)n);
}

static void check_init(const fu_model *m, const float *p, const float *state, const int64_t *counts) {
    double mean, sd;
    const fu_tensor *t = fu_model_find(m, "stage4_res.1.conv1.weight"); // fan_out 512 * 9
    sd = stddev_of(p + t->offset, t->numel, &mean);
    CHECK(fabs(sd / sqrt(2.0 / 4608) - 1) < 0.01 && fabs(mean) < 1e-3, "conv init: Kaiming normal, fan_out",
          "std %.5f mean %.5f", sd, mean);
    t = fu_model_find(m, "fc.0.weight");
    sd = stddev_of(p + t->offset, t->numel, &mean);
    CHECK(fabs(sd / 0.01 - 1) < 0.01 && fabs(mean) < 1e-4, "linear init: N(0, 0.01)", "std %.5f", sd);
    bool fills = true;
    const char *ones[] = {"stem.1.weight", "fc.5.weight", "fc.1.running_var"}, *zeros[] = {"fc.0.bias", "fc.8.bias",
                                                                                           "stem.1.bias", "fc.5.running_mean"};
    for (int i = 0; i < 3; i++) {
        t = fu_model_find(m, ones[i]);
        const float *v = (t->buffer == FU_BUF_PARAMS ? p : state) + t->offset;
        for (size_t j = 0; j < t->numel; j++) fills &= v[j] == 1;
    }
    for (int i = 0; i < 4; i++) {
        t = fu_model_find(m, zeros[i]);
        const float *v = (t->buffer == FU_BUF_PARAMS ? p : state) + t->offset;
        for (size_t j = 0; j < t->numel; j++) fills &= v[j] == 0;
    }
    for (int i = 0; i < 43; i++) fills &= counts[i] == 0;
    CHECK(fills, "BN init: weight 1, bias 0, running (0, 1); linear bias 0; counts 0", "a fill is wrong");
}

typedef struct {
    float *params, *state, *grads;
    int64_t *counts;
} buffers;

static int alloc_buffers(const fu_model *m, buffers *b) {
    b->params = calloc(m->n_params, sizeof(float));
    b->grads = calloc(m->n_params, sizeof(float));
    b->state = calloc(m->n_state, sizeof(float));
    b->counts = calloc(m->n_counts, sizeof(int64_t));
    return b->params && b->grads && b->state && b->counts ? 0 : -1;
}

static void free_buffers(buffers *b) {
    free(b->params);
    free(b->state);
    free(b->grads);
    free(b->counts);
}

static bool same(const fu_model *m, const buffers *a, const buffers *b) {
    return memcmp(a->params, b->params, m->n_params * 4) == 0 && memcmp(a->state, b->state, m->n_state * 4) == 0 &&
           memcmp(a->counts, b->counts, m->n_counts * 8) == 0;
}

// A file written by fu_st_write with the model's tensors, one of them changed.
typedef enum { DROP, EXTRA, RESHAPE, RETYPE } damage;

static int write_damaged(const char *path, const fu_model *m, const buffers *b, const char *victim, damage how) {
    fu_st_tensor *st = calloc((size_t)m->n_tensors + 1, sizeof *st);
    int n = 0;
    for (int i = 0; i < m->n_tensors; i++) {
        const fu_tensor *t = &m->tensors[i];
        fu_st_tensor s = {.name = t->name, .dtype = t->buffer == FU_BUF_COUNTS ? FU_ST_I64 : FU_ST_F32, .ndim = t->ndim};
        memcpy(s.shape, t->shape, sizeof s.shape);
        s.data = t->buffer == FU_BUF_PARAMS ? (void *)(b->params + t->offset)
               : t->buffer == FU_BUF_STATE  ? (void *)(b->state + t->offset)
                                            : (void *)(b->counts + t->offset);
        if (strcmp(t->name, victim) == 0) {
            if (how == DROP) continue;
            if (how == RESHAPE) s.shape[0] /= 2, s.shape[1] *= 2; // same bytes, other shape
            if (how == RETYPE) s.dtype = FU_ST_I64, s.shape[0] /= 2;
        }
        st[n++] = s;
    }
    if (how == EXTRA) st[n++] = (fu_st_tensor){.name = "stage5.0.conv1.weight", .dtype = FU_ST_F32, .ndim = 1,
                                               .shape = {4}, .data = b->params};
    int rc = fu_st_write(path, st, n, NULL);
    free(st);
    return rc;
}

// A safetensors file of this JSON header and 4 data bytes.
static const char *with_header(const char *json) {
    const char *p = tmp("header.safetensors");
    FILE *out = fopen(p, "wb");
    uint64_t n = strlen(json);
    for (int i = 0; i < 8; i++) fputc((int)(n >> (8 * i) & 0xFF), out);
    fputs(json, out);
    fwrite("\0\0\200?", 1, 4, out); // 1.0f
    fclose(out);
    return p;
}

// The header's strings: \u escapes to UTF-8 (four hex digits, read by hand:
// sscanf's %4x took "\u00g9" for U+0000, and may read past the header,
// which has no terminating NUL), and a member without its ':' refused (it
// leaked its name until tests/fuzz/fuzz_safetensors.c found it).
static void check_header_strings(void) {
    fu_st_file *f = fu_st_open(with_header("{\"__metadata__\":{\"n\":\"caf\\u00e9 \\u4E2D\\u0041\"},"
                                           "\"t\":{\"dtype\":\"F32\",\"shape\":[1],\"data_offsets\":[0,4]}}"));
    CHECK(f && strcmp(fu_st_meta(f, "n"), "caf\xC3\xA9 \xE4\xB8\xAD" "A") == 0, "\\u escapes decoded to UTF-8", "%s",
          f ? fu_st_meta(f, "n") : fu_error());
    fu_st_close(f);
    const char *bad[][3] = { // header, error, test
        {"{\"__metadata__\":{\"n\":\"\\u00g9\"}}", "bad \\u escape", "\\u escape with a non-hex digit refused"},
        {"{\"__metadata__\":{\"n\":\"\\u00\"}}", "bad \\u escape", "\\u escape cut short by the string's end refused"},
        {"{\"t\" {\"dtype\":\"F32\",\"shape\":[1],\"data_offsets\":[0,4]}}", "expected ':'",
         "a member without its ':' refused"},
        {"{\"__metadata__\":{\"n\":5}}", "__metadata__ values must be strings", "a metadata value not a string refused"},
    };
    for (size_t i = 0; i < sizeof bad / sizeof *bad; i++)
        CHECK(!fu_st_open(with_header(bad[i][0])) && strstr(fu_error(), bad[i][1]), bad[i][2], "%s: %s", bad[i][0],
              fu_error());
}

static void check_checkpoints(const fu_model *m, const buffers *b) {
    const char *meta[] = {"format", "pt", "note", "quote \" and \\ backslash", NULL};
    const char *path = tmp("a.safetensors");
    if (!CHECK(fu_model_save(path, m, b->params, b->state, b->counts, meta) == 0, "save checkpoint", "%s",
               fu_error()))
        return;
    buffers c;
    alloc_buffers(m, &c);
    CHECK(fu_model_load(path, m, c.params, c.state, c.counts) == 0 && same(m, b, &c), "checkpoint round trip",
          "%s", fu_error());
    fu_st_file *f = fu_st_open(path);
    CHECK(f && fu_st_count(f) == 294 && fu_st_meta(f, "note") &&
              strcmp(fu_st_meta(f, "note"), "quote \" and \\ backslash") == 0 &&
              fu_st_find(f, "fc.1.num_batches_tracked")->dtype == FU_ST_I64,
          "294 tensors, metadata, I64 counters", "%s", fu_error());
    fu_st_close(f);

    // Bad checkpoints: the error names the tensor and nothing is loaded.
    struct {
        const char *victim;
        damage how;
        const char *want, *name;
    } bad[] = {
        {"stage2.3.bn2.running_var", DROP, "stage2.3.bn2.running_var is missing", "missing tensor named"},
        {"", EXTRA, "unexpected tensor stage5.0.conv1.weight", "extra tensor named"},
        {"stage3_md.conv2.conv.weight", RESHAPE, "stage3_md.conv2.conv.weight has shape [32, 512, 3, 3]",
         "mis-shaped tensor named"},
        {"fc.4.bias", RETYPE, "fc.4.bias is I64", "wrong dtype named"},
    };
    buffers z;
    alloc_buffers(m, &z);
    for (size_t i = 0; i < sizeof bad / sizeof *bad; i++) {
        const char *p = tmp("bad.safetensors");
        write_damaged(p, m, b, bad[i].victim, bad[i].how);
        int rc = fu_model_load(p, m, z.params, z.state, z.counts);
        bool untouched = true;
        for (size_t j = 0; j < m->n_params; j++) untouched &= z.params[j] == 0;
        CHECK(rc < 0 && strstr(fu_error(), bad[i].want) && untouched, bad[i].name, "rc %d: %s", rc, fu_error());
    }
    // A checkpoint of another model.
    float w[6] = {1, 2, 3, 4, 5, 6};
    fu_st_tensor other[2] = {{.name = "conv1.weight", .dtype = FU_ST_F32, .ndim = 2, .shape = {2, 2}, .data = w},
                             {.name = "fc.bias", .dtype = FU_ST_F32, .ndim = 1, .shape = {2}, .data = w + 4}};
    fu_st_write(tmp("other.safetensors"), other, 2, NULL);
    CHECK(fu_model_load(tmp("other.safetensors"), m, z.params, z.state, z.counts) < 0 &&
              strstr(fu_error(), "not a MedicalCNN checkpoint"),
          "another model's checkpoint refused", "%s", fu_error());

    // Damaged files: truncated, garbage header, lying offsets.
    FILE *in = fopen(path, "rb");
    fseek(in, 0, SEEK_END);
    long size = ftell(in);
    rewind(in);
    unsigned char *bytes = malloc((size_t)size);
    fread(bytes, 1, (size_t)size, in);
    fclose(in);
    const char *p = tmp("cut.safetensors");
    FILE *out = fopen(p, "wb");
    fwrite(bytes, 1, (size_t)size - 4, out);
    fclose(out);
    CHECK(!fu_st_open(p) && strstr(fu_error(), "truncated"), "truncated file refused", "%s", fu_error());
    out = fopen(p, "wb");
    fwrite(bytes, 1, 8, out);
    fputs("not json at all", out);
    fclose(out);
    CHECK(!fu_st_open(p) && strstr(fu_error(), "not a safetensors file"), "garbage header refused", "%s", fu_error());
    check_header_strings();
    uint64_t hlen = 0;
    for (int i = 7; i >= 0; i--) hlen = hlen << 8 | bytes[i];
    char *hdr = (char *)bytes + 8, *at = strstr(hdr, "\"data_offsets\":[0,");
    if (at && (size_t)(at - hdr) < hlen) {
        at[16] = '4'; // the first tensor now starts at byte 4: a gap, and a size mismatch
        out = fopen(p, "wb");
        fwrite(bytes, 1, (size_t)size, out);
        fclose(out);
        CHECK(!fu_st_open(p) && strstr(fu_error(), "stem.0.weight"), "inconsistent data_offsets refused", "%s",
              fu_error());
    }
    free(bytes);
    CHECK(fu_model_load(tmp("absent.safetensors"), m, z.params, z.state, z.counts) < 0 &&
              strstr(fu_error(), "cannot open"),
          "absent file refused", "%s", fu_error());
    free_buffers(&z);
    free_buffers(&c);
}

// One training step's loss and gradients at 32x32, N = 2.
static int train_step(const fu_model *m, buffers *b, const float *x, int threads, float *loss) {
    fu_ref_net_f32 net;
    if (fu_ref_net_init_f32(&net, m, 2) < 0) return -1;
    int labels[2] = {0, 1};
    float class_w[2] = {0.3f, 0.7f};
    fu_pass pass = {.train = true, .dropout = true, .seed = 7, .step = 0};
    omp_set_num_threads(threads);
    int rc = fu_ref_forward_f32(&net, 2, b->params, b->state, b->counts, x, labels, class_w, &pass, loss);
    if (rc == 0) rc = fu_ref_backward_f32(&net, b->params, NULL, b->grads);
    fu_ref_net_free_f32(&net);
    return rc;
}

static void check_reference_net(const fu_model *m, const buffers *init) {
    enum { N = 2, PIX = N * 3 * 32 * 32 };
    static float x[PIX];
    fu_rng rng = fu_rng_make(1, 2, 3);
    for (int i = 0; i < PIX; i++) x[i] = (float)fu_rng_normal(&rng);
    buffers a, b;
    alloc_buffers(m, &a);
    alloc_buffers(m, &b);
    memcpy(a.params, init->params, m->n_params * 4), memcpy(a.state, init->state, m->n_state * 4);
    memcpy(b.params, init->params, m->n_params * 4), memcpy(b.state, init->state, m->n_state * 4);
    float la = 0, lb = 0;
    int rc = train_step(m, &a, x, 1, &la);
    if (!CHECK(rc == 0, "reference forward + backward at 32x32", "%s", fu_error())) return;
    train_step(m, &b, x, 2, &lb);
    CHECK(la == lb && memcmp(a.grads, b.grads, m->n_params * 4) == 0 && same(m, &a, &b),
          "same bits with 1 and 2 threads", "loss %.9g vs %.9g", la, lb);
    double norm = 0;
    bool finite = isfinite(la);
    for (size_t i = 0; i < m->n_params; i++) {
        finite &= isfinite(a.grads[i]);
        norm += (double)a.grads[i] * a.grads[i];
    }
    CHECK(finite && norm > 0 && la > 0.5 && la < 1, "finite loss near ln 2 and a nonzero gradient",
          "loss %g, |grad| %g", la, sqrt(norm));
    bool counted = true;
    for (size_t i = 0; i < m->n_counts; i++) counted &= a.counts[i] == 1;
    const fu_tensor *rv = fu_model_find(m, "stem.1.running_var");
    CHECK(counted && a.state[rv->offset] != 1, "training updates running stats and num_batches_tracked",
          "counts or stats unchanged");

    // The double instantiation runs the same network: the same logits to float
    // rounding. In eval mode: with 1x1 maps and 2 images, batch statistics
    // would amplify rounding by up to 1/sqrt(eps).
    double *p64 = malloc(m->n_params * sizeof *p64), *s64 = malloc(m->n_state * sizeof *s64);
    double *x64 = malloc(PIX * sizeof *x64);
    for (size_t i = 0; i < m->n_params; i++) p64[i] = init->params[i];
    for (size_t i = 0; i < m->n_state; i++) s64[i] = init->state[i];
    for (int i = 0; i < PIX; i++) x64[i] = x[i];
    fu_pass eval = {.train = false};
    fu_ref_net_f64 n64;
    fu_ref_net_f32 n32;
    bool ran = fu_ref_net_init_f64(&n64, m, 2) == 0 && fu_ref_net_init_f32(&n32, m, 2) == 0 &&
               fu_ref_forward_f64(&n64, 2, p64, s64, NULL, x64, NULL, NULL, &eval, NULL) == 0 &&
               fu_ref_forward_f32(&n32, 2, init->params, init->state, NULL, x, NULL, NULL, &eval, NULL) == 0;
    double num = 0, den = 0;
    for (int i = 0; ran && i < 4; i++) {
        num += pow(fu_ref_logits_f64(&n64)[i] - fu_ref_logits_f32(&n32)[i], 2);
        den += pow(fu_ref_logits_f64(&n64)[i], 2);
    }
    CHECK(ran && sqrt(num / den) < 1e-5, "double network: the float logits to rounding", "relative error %.3g",
          sqrt(num / den));
    fu_ref_net_free_f64(&n64);
    fu_ref_net_free_f32(&n32);
    free(p64), free(s64), free(x64);

    fu_ref_net_f32 net;
    fu_ref_net_init_f32(&net, m, 1);
    float before = a.state[rv->offset];
    CHECK(fu_ref_forward_f32(&net, 1, a.params, a.state, a.counts, x, NULL, NULL, &eval, NULL) == 0 &&
              a.state[rv->offset] == before && a.counts[0] == 1 && isfinite(fu_ref_logits_f32(&net)[0]),
          "eval forward of one image leaves the state alone", "%s", fu_error());
    fu_pass train = {.train = true};
    int labels[1] = {0};
    float w[2] = {1, 1};
    CHECK(fu_ref_forward_f32(&net, 1, a.params, a.state, a.counts, x, labels, w, &train, NULL) < 0 &&
              strstr(fu_error(), "at least 2"),
          "training on a batch of one refused", "%s", fu_error());
    CHECK(fu_ref_backward_f32(&net, a.params, NULL, a.grads) < 0, "backward without a training forward refused", "no error");
    fu_ref_net_free_f32(&net);
    free_buffers(&a);
    free_buffers(&b);
}

int main(void) {
    setvbuf(stdout, NULL, _IOLBF, 0);
    if (!mkdtemp(tmpdir)) return 1;
    check_description();

    fu_model m;
    fu_medicalcnn(&m, 32, 32);
    buffers b, c;
    alloc_buffers(&m, &b);
    alloc_buffers(&m, &c);
    fu_model_init(&m, 42, b.params, b.state, b.counts);
    fu_model_init(&m, 42, c.params, c.state, c.counts);
    CHECK(same(&m, &b, &c), "init is deterministic", "differs");
    fu_model_init(&m, 43, c.params, c.state, c.counts);
    CHECK(memcmp(b.params, c.params, m.n_params * 4) != 0, "another seed, other weights", "same");
    check_init(&m, b.params, b.state, b.counts);

    fu_plan plan;
    fu_model_plan(&m, 4, &plan);
    bool plan_ok = plan.batch == 4;
    for (int i = 1; i < m.n_ops; i++) plan_ok &= plan.act[i] >= plan.act[i - 1] + fu_op_numel(&m, i - 1, 4);
    CHECK(plan_ok && plan.act_size >= plan.act[m.n_ops - 1] + 1, "activation plan holds every output",
          "overlap");
    fu_plan_free(&plan);

    check_checkpoints(&m, &b);
    check_reference_net(&m, &b);
    free_buffers(&b);
    free_buffers(&c);
    fu_model_free(&m);
    const char *made[] = {"a.safetensors", "bad.safetensors", "other.safetensors", "cut.safetensors"};
    for (int i = 0; i < 4; i++) unlink(tmp(made[i]));
    rmdir(tmpdir);
    return check_done();
}
