// fundus-augment: class-aware offline augmentation of the training split.
// Each training record is kept (first, pixels unchanged) and followed by
// randomly rotated/flipped/brightened copies (lib/image/augment.c); records
// of the val and test splits pass through untouched.
#include "image/augment.h"
#include "image/record_image.h"
#include "shard/mapper.h"
#include "toolkit.h"

#include <inttypes.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static const char USAGE[] =
    "usage: fundus-augment [--seed S] [--per-class L=K,... | --factor K] [-o OUT] [SHARD...]\n"
    "Grow the training split with augmented copies. Each train record (split train, or none)\n"
    "is written first unchanged, then its copies NAME#a1, NAME#a2, ...; each copy is rotated\n"
    "by U(-20,20) degrees about the centre (bilinear, black outside the image), flipped\n"
    "left-right and top-bottom each with p=0.5, then v' = (v - mean) * U(0.8,1.2) + mean\n"
    "+ 255 * U(-0.2,0.2) (mean over the whole image). Copy c of record i is drawn from\n"
    "rng(seed, i, c). Records of the val and test splits pass through unchanged; records\n"
    "without a label get no copies. Output records are pixels (encoded input is decoded).\n"
    "  --seed S          (default 0)\n"
    "  --per-class L=K   each label-L record ends up as K records (original + K-1 copies);\n"
    "                    default 0=2,1=4 (the study: normal x2, glaucoma x4); labels not\n"
    "                    named get no copies\n"
    "  --factor K        grow every class to round(K x the largest class's count): a class of\n"
    "                    n records needing E copies gives its j-th record (stream order)\n"
    "                    floor((j+1)E/n) - floor(jE/n) of them, so totals are exact. Needs\n"
    "                    shard files (it counts the classes first), not a pipe\n"
    "  -o FILE           write to FILE (atomically) instead of stdout\n"
    "  --threads N       worker threads (default: all cores; same bytes for any N)\n"
    "  -q, --quiet       no progress;  -h, --help;  --version\n"
    "example: fundus-augment --seed 1 --per-class 0=2,1=4 -o train-aug.shard train.shard\n";

enum { OPT_SEED = TOOL_OPT_FIRST_FREE, OPT_PER_CLASS, OPT_FACTOR };
enum { MAX_LABEL = 127, MAX_MULTIPLE = 1000 };

typedef struct {
    uint64_t seed;
    uint32_t per_class[MAX_LABEL + 1]; // records per original, --per-class
    const uint32_t *copies;            // --factor: copies of record i (NULL otherwise)
} augment_ctx;

static bool is_train(const fu_record *r) { return r->split == FU_SPLIT_TRAIN || r->split == FU_SPLIT_NONE; }

static int augment_record(void *vctx, const fu_record *in, uint64_t index, fu_emitter *out) {
    const augment_ctx *ctx = vctx;
    if (!is_train(in)) return fu_emit(out, in);
    uint32_t copies = ctx->copies ? ctx->copies[index] : in->label >= 0 ? ctx->per_class[in->label] - 1 : 0;
    if (in->kind == FU_KIND_PIXELS && copies == 0) return fu_emit(out, in);
    fu_image im;
    if (fu_record_to_image(in, 0, &im) < 0) return -1;
    fu_record orig = fu_image_record(in, &im);
    int rc = fu_emit(out, &orig);
    char id[FU_SHARD_ID_MAX + 1];
    for (uint32_t c = 1; c <= copies && rc == 0; c++) {
        int n = snprintf(id, sizeof id, "%.*s#a%u", (int)in->id_len, in->id, c);
        if (n < 0 || n > FU_SHARD_ID_MAX) {
            rc = fu_fail("id", "too long for a copy's suffix #a%u (limit %d bytes)", c, FU_SHARD_ID_MAX);
            break;
        }
        fu_augment_params p = fu_augment_draw(ctx->seed, index, c);
        fu_image aug;
        if (fu_augment_apply(&im, &p, &aug) < 0) {
            rc = -1;
            break;
        }
        fu_record rec = fu_image_record(in, &aug);
        rec.id = id;
        rec.id_len = (uint32_t)n;
        rc = fu_emit(out, &rec);
        fu_image_free(&aug);
    }
    fu_image_free(&im);
    return rc;
}

static void parse_per_class(const char *arg, uint32_t *per_class) {
    for (int l = 0; l <= MAX_LABEL; l++) per_class[l] = 1;
    const char *p = arg;
    while (*p) {
        char *end;
        long label = strtol(p, &end, 10);
        if (end == p || *end != '=' || label < 0 || label > MAX_LABEL)
            tool_usage_error("--per-class: '%s' is not a list of LABEL=K (labels 0..%d)", arg, MAX_LABEL);
        p = end + 1;
        long k = strtol(p, &end, 10);
        if (end == p || (*end && *end != ',') || k < 1 || k > MAX_MULTIPLE)
            tool_usage_error("--per-class: in '%s', K must be a whole number 1..%d", arg, MAX_MULTIPLE);
        per_class[label] = (uint32_t)k;
        p = *end ? end + 1 : end;
    }
}

// --factor: one pass over the headers of every input (regular files only)
// to count each class's train records, then each record's share of copies.
static uint32_t *plan_factor(const char *const *inputs, int n_inputs, double factor) {
    static const char *const stdin_only[] = {"-"};
    if (n_inputs == 0) {
        inputs = stdin_only;
        n_inputs = 1;
    }
    size_t n = 0, cap = 0;
    int8_t *label = NULL; // (records): class of a train record, -1 otherwise
    uint64_t count[MAX_LABEL + 1] = {0};
    for (int f = 0; f < n_inputs; f++) {
        fu_shard_reader *r = fu_shard_open(inputs[f]);
        if (!r) tool_fail();
        if (!fu_shard_is_mapped(r))
            tool_usage_error("--factor counts the classes before writing: give shard files, not a pipe");
        fu_record rec;
        int got;
        while ((got = fu_shard_next(r, &rec, false)) == 1) {
            if (n == cap) {
                cap = cap ? 2 * cap : 1024;
                label = realloc(label, cap);
                if (!label) tool_die("out of memory");
            }
            bool counted = is_train(&rec) && rec.label >= 0;
            label[n++] = (int8_t)(counted ? rec.label : -1);
            if (counted) count[rec.label]++;
        }
        if (got < 0) tool_fail();
        fu_shard_close(r);
    }
    uint64_t largest = 0;
    for (int l = 0; l <= MAX_LABEL; l++)
        if (count[l] > largest) largest = count[l];
    uint64_t target = (uint64_t)llround(factor * (double)largest);
    uint64_t rank[MAX_LABEL + 1] = {0};
    uint32_t *copies = calloc(n ? n : 1, sizeof *copies);
    if (!copies) tool_die("out of memory");
    for (size_t i = 0; i < n; i++) {
        int l = label[i];
        if (l < 0) continue;
        uint64_t extra = target > count[l] ? target - count[l] : 0;
        uint64_t share = fu_augment_share(extra, count[l], rank[l]++);
        if (share > UINT32_MAX) tool_usage_error("--factor: %g asks for too many copies", factor);
        copies[i] = (uint32_t)share;
    }
    free(label);
    return copies;
}

int main(int argc, char **argv) {
    tool_init("fundus-augment", USAGE);
    static const struct option opts[] = {TOOL_COMMON_LONGOPTS,
                                         {"seed", required_argument, 0, OPT_SEED},
                                         {"per-class", required_argument, 0, OPT_PER_CLASS},
                                         {"factor", required_argument, 0, OPT_FACTOR},
                                         {0, 0, 0, 0}};
    static augment_ctx ctx;
    parse_per_class("0=2,1=4", ctx.per_class);
    bool per_class_given = false;
    double factor = 0;
    int c;
    while ((c = tool_getopt(argc, argv, TOOL_COMMON_SHORTOPTS, opts)) != -1) {
        switch (c) {
        case OPT_SEED: ctx.seed = (uint64_t)tool_parse_long("--seed", optarg, 0, 0x7fffffffffffffffL); break;
        case OPT_PER_CLASS:
            parse_per_class(optarg, ctx.per_class);
            per_class_given = true;
            break;
        case OPT_FACTOR: factor = tool_parse_double("--factor", optarg, 1, MAX_MULTIPLE); break;
        default: tool_usage_error("unexpected option");
        }
    }
    if (factor > 0 && per_class_given) tool_usage_error("--factor and --per-class: choose one");
    const char *const *inputs = (const char *const *)argv + optind;
    int n_inputs = argc - optind;
    uint32_t *copies = factor > 0 ? plan_factor(inputs, n_inputs, factor) : NULL;
    ctx.copies = copies;

    tool_map_to_output((fu_map_opts){
        .inputs = inputs, .n_inputs = n_inputs, .fn = augment_record, .ctx = &ctx, .verify = true});
    free(copies);
    return 0;
}
