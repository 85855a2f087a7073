// fundus-synth: the embedded default dataset. Renders SYNTHETIC colour fundus
// photographs (lib/image/synth.c) into a shard of PNG/JPEG/pixel records, or
// into a folder of image files + labels.csv (the layout of data/acrima).
// Image i depends only on (seed, i, size): batches are rendered in parallel
// and written in index order, so the bytes do not depend on --threads.
#include "image/codec.h"
#include "image/synth.h"
#include "shard/shard.h"
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
    fu_image im;
    uint8_t *bytes; // encoded file, or im.px for pixels
    size_t n;
    int label;
    int failed;
    char msg[1024], hint[512];
} job;

static int render(const fu_synth_config *cfg, enum format fmt, uint64_t index, job *j) {
    fu_synth_truth truth;
    if (fu_synth_render(cfg, index, &j->im, &truth) < 0) return -1;
    j->label = truth.label;
    if (fmt == FORMAT_PIXELS) {
        j->bytes = j->im.px;
        j->n = fu_image_bytes(&j->im);
        return 0;
    }
    // zlib level 1: the sensor noise makes higher levels 2.5x slower for ~13% smaller files.
    int rc = fmt == FORMAT_PNG ? fu_encode_png(&j->im, 1, &j->bytes, &j->n) : fu_encode_jpeg(&j->im, 90, &j->bytes, &j->n);
    fu_image_free(&j->im);
    return rc;
}

static void release(job *j, enum format fmt) {
    if (fmt != FORMAT_PIXELS) free(j->bytes);
    fu_image_free(&j->im);
    j->bytes = NULL;
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

    FILE *csv = NULL;
    char *csv_buf = NULL;
    size_t csv_len = 0;
    fu_shard_writer w;
    if (dir) {
        make_dir(dir);
        char sub[4096];
        snprintf(sub, sizeof sub, "%s/images", dir);
        make_dir(sub);
        csv = open_memstream(&csv_buf, &csv_len);
        if (!csv) tool_die("out of memory");
        fprintf(csv, "path,label\n");
    } else {
        fu_shard_writer_init(&w, tool_open_output(true), tool_output_name());
    }

    int batch = 4 * tool.threads;
    job *jobs = calloc((size_t)batch, sizeof *jobs);
    if (!jobs) tool_die("out of memory");
    const char *ext = fmt == FORMAT_JPEG ? "jpg" : "png";
    fu_progress_start(&tool.progress, tool.name, tool.quiet);
    for (long first = 0; first < count; first += batch) {
        int n = count - first < batch ? (int)(count - first) : batch;
#pragma omp parallel for schedule(dynamic, 1) num_threads(tool.threads)
        for (int i = 0; i < n; i++) {
            job *j = &jobs[i];
            fu_clear_error();
            j->failed = render(&cfg, fmt, (uint64_t)(first + i), j) < 0;
            if (j->failed) {
                snprintf(j->msg, sizeof j->msg, "%s", fu_error());
                snprintf(j->hint, sizeof j->hint, "%s", fu_error_hint());
            }
        }
        for (int i = 0; i < n; i++) {
            job *j = &jobs[i];
            if (j->failed) {
                fu_set_error(j->msg, j->hint);
                tool_fail();
            }
            char id[64];
            snprintf(id, sizeof id, "synth-%06ld", first + i);
            if (dir) {
                char path[4096];
                snprintf(path, sizeof path, "%s/images/%s.%s", dir, id, ext);
                if (fu_write_file_atomic(path, j->bytes, j->n) < 0) tool_fail();
                fprintf(csv, "images/%s.%s,%d\n", id, ext, j->label);
            } else {
                fu_record rec = {.kind = fmt == FORMAT_PIXELS ? FU_KIND_PIXELS : FU_KIND_ENCODED,
                                 .label = j->label,
                                 .split = FU_SPLIT_NONE,
                                 .height = cfg.height,
                                 .width = cfg.width,
                                 .channels = 3,
                                 .id = id,
                                 .id_len = (uint32_t)strlen(id),
                                 .payload = j->bytes,
                                 .payload_len = j->n};
                if (fu_shard_write(&w, &rec) < 0) tool_fail();
            }
            release(j, fmt);
            fu_progress_add(&tool.progress, 1);
        }
    }
    fu_progress_end(&tool.progress);
    free(jobs);
    if (dir) {
        if (fclose(csv) != 0) tool_die("out of memory");
        char path[4096];
        snprintf(path, sizeof path, "%s/labels.csv", dir);
        if (fu_write_file_atomic(path, csv_buf, csv_len) < 0) tool_fail();
        free(csv_buf);
    } else {
        if (fu_shard_finish(&w) < 0) tool_fail();
        tool_commit_output();
    }
    return 0;
}
