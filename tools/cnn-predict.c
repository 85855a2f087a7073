// cnn-predict: p(glaucoma) for new photographs (or a shard) from a trained
// checkpoint: each image is preprocessed as the pipeline does
// (fundus-resize, fundus-clahe), normalised as the trainer does, and run
// through the network in eval mode (BN on running statistics, no dropout).
#include "image/codec.h"
#include "image/enhance.h"
#include "image/record_image.h"
#include "image/resize.h"
#include "nn/backend.h"
#include "nn/loader.h"
#include "nn/model.h"
#include "nn/safetensors.h"
#include "core/csv.h"
#include "toolkit.h"

#include <errno.h>
#include <math.h>
#include <omp.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static const char USAGE[] =
    "usage: cnn-predict --model M.safetensors [--backend ref|cpu|cuda|auto] [--size N] [--batch B]\n"
    "                   [--raw | --clip C --tiles N --gamma G --median K --no-clahe --no-gamma\n"
    "                   --no-median] [--no-shrink-on-load] [--logits] [-o OUT] [SHARD | IMAGE...]\n"
    "Predict glaucoma for each image with a MedicalCNN checkpoint (as cnn-train writes;\n"
    "loaded strictly: a checkpoint of another model is refused). Inputs are shards\n"
    "(stdin when none is named) or image files (PNG, JPEG, TIFF), told apart by their\n"
    "first bytes. Prints the CSV id,label,p_glaucoma,prediction, one row per image in\n"
    "input order: label as the shard has it (empty when unknown, and for image files,\n"
    "whose id is the file name without its extension), p_glaucoma = softmax(logits)[1],\n"
    "prediction = 1 when logit 1 > logit 0. metrics-report reads this directly.\n"
    "Preprocessing, as the pipeline (fundus-resize --size N | fundus-clahe):\n"
    "  encoded records and image files: decode (shrink-on-load), resize to N x N\n"
    "  (INTER_AREA), enhance (CLAHE on L*, gamma, median; the study's settings);\n"
    "  pixel records are taken as pipeline output, already enhanced: used as they\n"
    "  are when N x N, else only resized. Then pixels / 255, ImageNet mean and std,\n"
    "  NCHW float32.\n"
    "  -m, --model FILE    the checkpoint (safetensors; required)\n"
    "  --backend B         ref (plain C), cpu (oneDNN), cuda (the GPU) or auto (default: the fastest CPU one)\n"
    "  -s, --size N        image side, 32..4096 (default: the side of the first pixel\n"
    "                      record, else 224); the network takes any size\n"
    "  --batch B           images per forward pass, 1..1024 (default 8)\n"
    "  --raw               skip the enhancement (inputs already enhanced)\n"
    "  --clip C --tiles N --gamma G --median K, --no-clahe --no-gamma --no-median\n"
    "                      enhancement settings, as fundus-clahe (default 2, 8, 1.2, 3)\n"
    "  --no-shrink-on-load decode JPEGs at full size (as fundus-resize)\n"
    "  --logits            add the columns logit_0,logit_1\n"
    "  -o, --output FILE   write FILE (atomically) instead of stdout\n"
    "  --threads T         threads (default: all cores); output is identical\n"
    "  -q, --quiet         no progress;  -h, --help;  --version\n"
    "example: cnn-predict --model run/model.safetensors photos/*.jpg > pred.csv\n";

enum {
    OPT_BACKEND = TOOL_OPT_FIRST_FREE,
    OPT_BATCH,
    OPT_RAW,
    OPT_NO_SHRINK,
    OPT_LOGITS
};

typedef struct {
    fu_enhance_opts enhance;
    bool enhance_on, shrink_on_load, logits;
    int size;
} prep_opts;

// One input image waiting for its batch: a copy of the record (or the file's
// bytes as an encoded record), owned.
typedef struct {
    char *id;
    int label;
    fu_record rec;
    uint8_t *bytes;
    char err[512]; // the preprocessing error, if any
} item;

typedef struct {
    item *items;
    int n, cap;
    float *x; // (cap, 3, size, size)
} batch;

static void item_clear(item *it) {
    free(it->id);
    free(it->bytes);
    memset(it, 0, sizeof *it);
}

static void batch_push(batch *b, const char *id, size_t id_len, int label, const fu_record *rec) {
    item *it = &b->items[b->n++];
    it->id = fu_malloc(id_len + 1);
    it->bytes = fu_malloc(rec->payload_len ? rec->payload_len : 1);
    if (!it->id || !it->bytes) tool_fail();
    memcpy(it->id, id, id_len);
    it->id[id_len] = '\0';
    memcpy(it->bytes, rec->payload, rec->payload_len);
    it->label = label;
    it->rec = *rec;
    it->rec.payload = it->bytes;
    it->rec.id = it->id;
    it->rec.id_len = (uint32_t)id_len;
}

// Decode, resize, enhance and normalise one image into x: (3, size, size).
static int preprocess(const prep_opts *o, const item *it, float *x) {
    uint32_t n = (uint32_t)o->size;
    bool pixels = it->rec.kind == FU_KIND_PIXELS;
    fu_image img = {0}, small = {0};
    if (fu_record_to_image(&it->rec, o->shrink_on_load && !pixels ? n : 0, &img) < 0) return -1;
    if (img.w != n || img.h != n) {
        int rc = fu_resize(&img, n, n, &small);
        fu_image_free(&img);
        if (rc < 0) return -1;
        img = small;
    }
    if (!pixels && o->enhance_on && fu_enhance(&o->enhance, &img) < 0) {
        fu_image_free(&img);
        return -1;
    }
    // The trainer's own normalisation (no augmentation): /255, ImageNet mean and std.
    int rc = fu_image_to_input(&img, NULL, x);
    fu_image_free(&img);
    return rc;
}

typedef struct {
    const char *model_path, *backend_name;
    prep_opts prep;
    int batch;
    fu_model m;
    float *params, *state;
    int64_t *counts;
    fu_backend *be; // NULL until the first batch fixes the image size
    FILE *out;
    bool header_done; // written with the first rows, so an early failure leaves stdout empty
} predictor;

static void load_checkpoint(predictor *p, int size) {
    if (fu_medicalcnn(&p->m, size, size) < 0) tool_fail();
    p->params = fu_malloc(p->m.n_params * sizeof *p->params);
    p->state = fu_malloc(p->m.n_state * sizeof *p->state);
    p->counts = fu_malloc(p->m.n_counts * sizeof *p->counts);
    if (!p->params || !p->state || !p->counts) tool_fail();
    if (fu_model_load(p->model_path, &p->m, p->params, p->state, p->counts) < 0) tool_fail();
}

// The first batch fixes the image size; the checkpoint does not depend on it
// (global pooling), so only the op list is rebuilt.
static void start(predictor *p, const batch *b) {
    if (p->prep.size == 0) {
        const fu_record *r = &b->items[0].rec;
        p->prep.size = r->kind == FU_KIND_PIXELS && r->width == r->height && r->width >= FU_MODEL_MIN_SIZE
                           ? (int)r->width : 224;
        if (p->prep.size != p->m.height) {
            fu_model_free(&p->m);
            if (fu_medicalcnn(&p->m, p->prep.size, p->prep.size) < 0) tool_fail();
        }
    }
    fu_backend_opts bo = {.batch = p->batch, .threads = tool.threads};
    if (fu_backend_create(p->backend_name, &p->m, &bo, &p->be) < 0) tool_fail();
}

static void put_header(predictor *p) {
    if (p->header_done) return;
    fputs("id,label,p_glaucoma,prediction", p->out);
    if (p->prep.logits) fputs(",logit_0,logit_1", p->out);
    fputc('\n', p->out);
    p->header_done = true;
}

static void run_batch(predictor *p, batch *b) {
    if (b->n == 0) return;
    if (!p->be) start(p, b);
    size_t per = (size_t)3 * p->prep.size * p->prep.size;
    if (!b->x) {
        b->x = fu_malloc((size_t)b->cap * per * sizeof *b->x);
        if (!b->x) tool_fail();
    }
    // Images are independent: any thread count gives the same pixels.
#pragma omp parallel for schedule(dynamic) num_threads(tool.threads)
    for (int i = 0; i < b->n; i++) {
        item *it = &b->items[i];
        if (preprocess(&p->prep, it, b->x + (size_t)i * per) < 0)
            snprintf(it->err, sizeof it->err, "%s", fu_error());
    }
    for (int i = 0; i < b->n; i++)
        if (b->items[i].err[0]) tool_die("%s: %s", b->items[i].id, b->items[i].err);

    fu_pass pass = {.train = false, .dropout = false};
    if (p->be->forward(p->be, b->n, p->params, p->state, p->counts, b->x, NULL, NULL, &pass, NULL) < 0)
        tool_fail();
    const float *logits = p->be->logits(p->be); // (n, classes)
    int k = p->m.classes;
    put_header(p);
    for (int i = 0; i < b->n; i++) {
        const item *it = &b->items[i];
        double l0 = logits[i * k], l1 = logits[i * k + 1];
        if (!isfinite(l0) || !isfinite(l1)) tool_die("%s: the network gave a non-finite logit", it->id);
        double prob = 1 / (1 + exp(l0 - l1)); // softmax of two classes
        fu_csv_put(p->out, it->id, strlen(it->id));
        if (it->label != FU_LABEL_NONE) fprintf(p->out, ",%d", it->label);
        else fputc(',', p->out);
        fprintf(p->out, ",%.9g,%d", prob, l1 > l0);
        if (p->prep.logits) fprintf(p->out, ",%.9g,%.9g", l0, l1);
        fputc('\n', p->out);
    }
    fu_progress_add(&tool.progress, (uint64_t)b->n);
    for (int i = 0; i < b->n; i++) item_clear(&b->items[i]);
    b->n = 0;
}

static void add_shard(predictor *p, batch *b, const char *path) {
    fu_shard_reader *r = fu_shard_open(path);
    if (!r) tool_fail();
    fu_record rec;
    int rc;
    uint64_t index = 0;
    while ((rc = fu_shard_next(r, &rec, true)) == 1) {
        if (rec.kind != FU_KIND_ENCODED && rec.kind != FU_KIND_PIXELS)
            tool_die("%s: record %llu (%.*s): not an image record", fu_shard_name(r), (unsigned long long)index,
                     (int)rec.id_len, rec.id);
        batch_push(b, rec.id, rec.id_len, rec.label, &rec);
        if (b->n == b->cap) run_batch(p, b);
        index++;
    }
    if (rc < 0) tool_fail();
    fu_shard_close(r);
}

static const uint8_t SHARD_MAGIC[8] = {0x89, 'S', 'H', 'D', '\r', '\n', 0x1a, '\n'}; // docs/shard-format.md

// A shard (by its stream magic) or an image file (PNG, JPEG, TIFF magic).
static bool input_is_shard(const char *path) {
    if (strcmp(path, "-") == 0) return true;
    FILE *f = fopen(path, "rb");
    if (!f) tool_die("%s: cannot open: %s", path, strerror(errno));
    uint8_t head[16] = {0};
    size_t n = fread(head, 1, sizeof head, f);
    fclose(f);
    if (n >= sizeof SHARD_MAGIC && memcmp(head, SHARD_MAGIC, sizeof SHARD_MAGIC) == 0) return true;
    if (fu_sniff(head, n) == FU_FMT_UNKNOWN) tool_die("%s: neither a shard nor a PNG, JPEG or TIFF image", path);
    return false;
}

// The whole file in a malloc'd buffer.
static uint8_t *read_whole(const char *path, size_t *n) {
    FILE *f = fopen(path, "rb");
    if (!f) tool_die("%s: cannot open: %s", path, strerror(errno));
    size_t cap = 1 << 16, len = 0;
    uint8_t *data = fu_malloc(cap);
    if (!data) tool_fail();
    size_t got;
    while ((got = fread(data + len, 1, cap - len, f)) > 0) {
        len += got;
        if (len == cap) {
            data = fu_realloc(data, cap *= 2);
            if (!data) tool_fail();
        }
    }
    if (ferror(f)) tool_die("%s: read failed: %s", path, strerror(errno));
    fclose(f);
    *n = len;
    return data;
}

static void add_image_file(predictor *p, batch *b, const char *path) {
    size_t n;
    uint8_t *data = read_whole(path, &n);
    const char *base = strrchr(path, '/');
    base = base ? base + 1 : path;
    const char *dot = strrchr(base, '.');
    size_t id_len = dot && dot != base ? (size_t)(dot - base) : strlen(base);
    fu_record rec = {.kind = FU_KIND_ENCODED, .label = FU_LABEL_NONE, .payload = data, .payload_len = n};
    batch_push(b, base, id_len, FU_LABEL_NONE, &rec);
    free(data);
    if (b->n == b->cap) run_batch(p, b);
}

int main(int argc, char **argv) {
    tool_init("cnn-predict", USAGE);
    static const struct option opts[] = {TOOL_COMMON_LONGOPTS,
                                         {"model", required_argument, 0, 'm'},
                                         {"backend", required_argument, 0, OPT_BACKEND},
                                         {"size", required_argument, 0, 's'},
                                         {"batch", required_argument, 0, OPT_BATCH},
                                         {"raw", no_argument, 0, OPT_RAW},
                                         TOOL_ENHANCE_LONGOPTS,
                                         {"no-shrink-on-load", no_argument, 0, OPT_NO_SHRINK},
                                         {"logits", no_argument, 0, OPT_LOGITS},
                                         {0, 0, 0, 0}};
    predictor p = {.backend_name = "auto", .batch = 8};
    p.prep = (prep_opts){.enhance_on = true, .shrink_on_load = true};
    tool_enhance e = tool_enhance_init();
    int c;
    while ((c = tool_getopt(argc, argv, TOOL_COMMON_SHORTOPTS "m:s:", opts)) != -1) {
        if (tool_enhance_option(&e, c, optarg)) continue;
        switch (c) {
        case 'm': p.model_path = optarg; break;
        case OPT_BACKEND: p.backend_name = optarg; break;
        case 's': p.prep.size = (int)tool_parse_long("--size", optarg, FU_MODEL_MIN_SIZE, 4096); break;
        case OPT_BATCH: p.batch = (int)tool_parse_long("--batch", optarg, 1, 1024); break;
        case OPT_RAW: p.prep.enhance_on = false; break;
        case OPT_NO_SHRINK: p.prep.shrink_on_load = false; break;
        case OPT_LOGITS: p.prep.logits = true; break;
        default: tool_usage_error("unexpected option");
        }
    }
    if (!p.model_path) tool_usage_error("--model is required");
    if (strcmp(p.backend_name, "ref") != 0 && strcmp(p.backend_name, "cpu") != 0 &&
        strcmp(p.backend_name, "auto") != 0)
        tool_usage_error("--backend: '%s' is not ref, cpu or auto", p.backend_name);
    p.prep.enhance = tool_enhance_result(&e);

    // The checkpoint is checked before any input is read: a wrong file fails fast.
    load_checkpoint(&p, p.prep.size ? p.prep.size : 224);

    batch b = {.cap = p.batch};
    b.items = fu_calloc((size_t)b.cap, sizeof *b.items);
    if (!b.items) tool_fail();
    // Every input is told apart (and opened once) before any output.
    const char *const *inputs = (const char *const *)argv + optind;
    int n_inputs = argc - optind;
    bool *shard = fu_calloc((size_t)n_inputs + 1, sizeof *shard);
    if (!shard) tool_fail();
    for (int i = 0; i < n_inputs; i++) shard[i] = input_is_shard(inputs[i]);

    p.out = tool_open_output(false);
    fu_progress_start(&tool.progress, tool.name, tool.quiet);
    if (n_inputs == 0) add_shard(&p, &b, "-");
    for (int i = 0; i < n_inputs; i++) {
        if (shard[i]) add_shard(&p, &b, inputs[i]);
        else add_image_file(&p, &b, inputs[i]);
    }
    run_batch(&p, &b);
    put_header(&p); // no input records: the header alone
    tool_commit_output();
    fu_progress_end(&tool.progress);
    fu_backend_destroy(p.be);
    fu_model_free(&p.m);
    free(p.params), free(p.state), free(p.counts), free(b.x), free(b.items), free(shard);
    return 0;
}
