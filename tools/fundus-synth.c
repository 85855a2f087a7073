// fundus-synth: the embedded default dataset. Renders SYNTHETIC colour fundus
// photographs (lib/image/synth.c) into a shard of PNG/JPEG/pixel records, or
// into a folder of image files + labels.csv (the layout of data/acrima).
// Image i depends only on (seed, i, size): fu_map_run renders batches in
// parallel and writes them in index order, so the bytes do not depend on --threads.
#include "image/codec.h"
#include "image/synth.h"
#include "toolkit.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

static const char USAGE[] =
    "usage: fundus-synth [--count N] [--size S | --width W --height H] [--seed S]\n"
    "                    [--glaucoma-fraction F] [--format png|jpeg|pixels] [-o OUT | --dir DIR]\n"
    "Render SYNTHETIC colour fundus photographs: no patient, no real data. Each image has a\n"
    "circular field of view, an orange-red retina with uneven illumination, a vessel tree\n"
    "from the optic disc, a darker macula and a bright disc with a brighter cup. Label 1\n"
    "(\"glaucoma\") images have a large cup-to-disc ratio, U(0.55,0.85); label 0 a small one,\n"
    "U(0.25,0.60). What this models and what it does not: docs/synthetic-data.md.\n"
    "Writes a shard of records synth-000000, synth-000001, ... (labels set, split none).\n"
    "  --count N              images (default 200)\n"
    "  --size S               square images of S x S pixels (default 224)\n"
    "  --width W, --height H  other shapes (the field of view fits the shorter side)\n"
    "  --seed S               image i depends only on (S, i, size) (default 1)\n"
    "  --glaucoma-fraction F  share of label 1, spread evenly over the indices (default 0.5)\n"
    "  --format F             png (default), jpeg (quality 90) or pixels (u8 RGB records)\n"
    "  --dir DIR              write DIR/images/synth-*.png|jpg and DIR/labels.csv (path,label)\n"
    "                         instead of a shard; shard-pack --labels DIR/labels.csv reads it\n"
    "  -o FILE                write the shard to FILE (atomically) instead of stdout\n"
    "  --threads N            render on N threads (default: all cores; same bytes for any N)\n"
    "  -q, --quiet            no progress;  -h, --help;  --version\n"
    "example: fundus-synth --count 200 --size 224 --seed 7 | shard-info\n";

enum { OPT_COUNT = TOOL_OPT_FIRST_FREE, OPT_SIZE, OPT_WIDTH, OPT_HEIGHT, OPT_SEED, OPT_FRACTION, OPT_FORMAT, OPT_DIR };
enum format { FORMAT_PNG, FORMAT_JPEG, FORMAT_PIXELS };

typedef struct {
    fu_synth_config cfg;
    enum format fmt;
} synth_job;

// Worker thread: image `index` as a record (the payload is copied by fu_emit).
static int render(void *ctx, const fu_record *in, uint64_t index, fu_emitter *out) {
    const synth_job *job = ctx;
    fu_image im;
    fu_synth_truth truth;
    if (fu_synth_render(&job->cfg, index, &im, &truth) < 0) return -1;
    char id[32];
    snprintf(id, sizeof id, "synth-%06llu", (unsigned long long)index);
    fu_record rec = {.kind = FU_KIND_PIXELS, .label = truth.label, .height = im.h, .width = im.w, .channels = 3,
                     .id = id, .id_len = (uint32_t)strlen(id), .payload = im.px, .payload_len = fu_image_bytes(&im)};
    uint8_t *bytes = NULL;
    size_t n = 0;
    int rc = 0;
    if (job->fmt != FORMAT_PIXELS) {
        // zlib level 1: the sensor noise makes higher levels 2.5x slower for ~13% smaller files.
        rc = job->fmt == FORMAT_PNG ? fu_encode_png(&im, 1, &bytes, &n) : fu_encode_jpeg(&im, 90, &bytes, &n);
        rec.kind = FU_KIND_ENCODED;
        rec.payload = bytes;
        rec.payload_len = n;
    }
    if (rc == 0) rc = fu_emit(out, &rec);
    free(bytes);
    fu_image_free(&im);
    return rc;
}

// Main thread, index order (--dir): the image file and its labels.csv line.
typedef struct {
    const char *dir, *ext;
    FILE *csv;
} dir_sink;

static int write_file(void *ctx, const fu_record *rec) {
    const dir_sink *d = ctx;
    char path[4096];
    snprintf(path, sizeof path, "%s/images/%.*s.%s", d->dir, (int)rec->id_len, rec->id, d->ext);
    if (fu_write_file_atomic(path, rec->payload, rec->payload_len) < 0) return -1;
    fprintf(d->csv, "images/%.*s.%s,%d\n", (int)rec->id_len, rec->id, d->ext, rec->label);
    return 0;
}

static void make_dir(const char *path) {
    if (mkdir(path, 0777) != 0 && errno != EEXIST) tool_die("%s: cannot create folder: %s", path, strerror(errno));
    struct stat st;
    if (stat(path, &st) != 0 || !S_ISDIR(st.st_mode)) tool_die("%s: exists and is not a folder", path);
}

int main(int argc, char **argv) {
    tool_init("fundus-synth", USAGE);
    static const struct option opts[] = {TOOL_COMMON_LONGOPTS,
                                         {"count", required_argument, 0, OPT_COUNT},
                                         {"size", required_argument, 0, OPT_SIZE},
                                         {"width", required_argument, 0, OPT_WIDTH},
                                         {"height", required_argument, 0, OPT_HEIGHT},
                                         {"seed", required_argument, 0, OPT_SEED},
                                         {"glaucoma-fraction", required_argument, 0, OPT_FRACTION},
                                         {"format", required_argument, 0, OPT_FORMAT},
                                         {"dir", required_argument, 0, OPT_DIR},
                                         {0, 0, 0, 0}};
    long count = 200, size = 224, width = 0, height = 0;
    fu_synth_config cfg = {.seed = 1, .glaucoma_fraction = 0.5};
    enum format fmt = FORMAT_PNG;
    const char *dir = NULL;
    int c;
    while ((c = tool_getopt(argc, argv, TOOL_COMMON_SHORTOPTS, opts)) != -1) {
        switch (c) {
        case OPT_COUNT: count = tool_parse_long("--count", optarg, 1, 100000000); break;
        case OPT_SIZE: size = tool_parse_long("--size", optarg, 16, 65535); break;
        case OPT_WIDTH: width = tool_parse_long("--width", optarg, 16, 65535); break;
        case OPT_HEIGHT: height = tool_parse_long("--height", optarg, 16, 65535); break;
        case OPT_SEED: cfg.seed = (uint64_t)tool_parse_long("--seed", optarg, 0, 0x7fffffffffffffffL); break;
        case OPT_FRACTION: cfg.glaucoma_fraction = tool_parse_double("--glaucoma-fraction", optarg, 0, 1); break;
        case OPT_FORMAT:
            if (strcmp(optarg, "png") == 0) fmt = FORMAT_PNG;
            else if (strcmp(optarg, "jpeg") == 0 || strcmp(optarg, "jpg") == 0) fmt = FORMAT_JPEG;
            else if (strcmp(optarg, "pixels") == 0) fmt = FORMAT_PIXELS;
            else tool_usage_error("--format: '%s' is not png, jpeg or pixels", optarg);
            break;
        case OPT_DIR: dir = optarg; break;
        default: tool_usage_error("unexpected option");
        }
    }
    if (optind < argc) tool_usage_error("%s: unexpected argument (fundus-synth reads no input)", argv[optind]);
    if (dir && tool.out_path) tool_usage_error("--dir and -o: choose one (a folder of images or a shard)");
    if (dir && fmt == FORMAT_PIXELS) tool_usage_error("--dir needs --format png or jpeg (pixels live only in shards)");
    cfg.width = (uint32_t)(width ? width : size);
    cfg.height = (uint32_t)(height ? height : size);
    synth_job job = {cfg, fmt};
    fu_map_opts mo = {.generate = (uint64_t)count, .fn = render, .ctx = &job};
    if (!dir) {
        tool_map_to_output(mo);
        return 0;
    }

    make_dir(dir);
    char path[4096];
    snprintf(path, sizeof path, "%s/images", dir);
    make_dir(path);
    char *csv_buf = NULL;
    size_t csv_len = 0;
    dir_sink sink = {dir, fmt == FORMAT_JPEG ? "jpg" : "png", open_memstream(&csv_buf, &csv_len)};
    if (!sink.csv) tool_die("out of memory");
    fprintf(sink.csv, "path,label\n");
    mo.sink = write_file;
    mo.sink_ctx = &sink;
    mo.threads = tool.threads;
    mo.progress = &tool.progress;
    fu_progress_start(&tool.progress, tool.name, tool.quiet);
    if (fu_map_run(&mo) < 0) tool_fail();
    fu_progress_end(&tool.progress);
    if (fclose(sink.csv) != 0) tool_die("out of memory");
    snprintf(path, sizeof path, "%s/labels.csv", dir);
    if (fu_write_file_atomic(path, csv_buf, csv_len) < 0) tool_fail();
    free(csv_buf);
    return 0;
}
