// fundus-resize: every record (encoded image or pixels) becomes an N x N RGB
// pixel record, resized exactly as cv2.resize(img, (N, N), INTER_AREA) does.
// Large JPEGs are decoded at a reduced DCT scale first (shrink-on-load),
// never below N per side; --no-shrink-on-load decodes at full size. Payload
// CRCs are always checked.
#include "image/record_image.h"
#include "image/resize.h"
#include "shard/mapper.h"
#include "toolkit.h"

#include <stdlib.h>

static const char USAGE[] =
    "usage: fundus-resize --size N [--no-shrink-on-load] [-o OUT] [SHARD...]\n"
    "Decode each record and resize it to N x N RGB pixels with OpenCV's INTER_AREA\n"
    "rule (area average when shrinking, bilinear when enlarging). Reads stdin when no\n"
    "shard is named; writes pixel records with the same ids, labels and splits.\n"
    "  -s, --size N           output side in pixels, 1..65535 (required)\n"
    "  --no-shrink-on-load    decode JPEGs at full size (bit-exact with cv2.imread +\n"
    "                         cv2.resize; slower). By default a JPEG is decoded at\n"
    "                         1/2, 1/4 or 1/8 scale when both sides stay >= N\n"
    "  -o, --output FILE      write FILE (atomically) instead of stdout\n"
    "  --threads T            worker threads (default: all cores); output is identical\n"
    "  -q, --quiet            no progress;  -h, --help;  --version\n"
    "example: shard-pack --labels data/acrima/labels.csv | fundus-resize --size 224 > resized.shard\n";

enum { OPT_NO_SHRINK = TOOL_OPT_FIRST_FREE };

typedef struct {
    uint32_t size;
    uint32_t min_side; // for the decoder: 0 = full size
} resize_job;

static int resize_record(void *ctx, const fu_record *in, uint64_t index, fu_emitter *out) {
    const resize_job *job = ctx;
    fu_image img = {0}, small = {0};
    if (fu_record_to_image(in, job->min_side, &img) < 0) return -1;
    int rc = fu_resize(&img, job->size, job->size, &small);
    fu_image_free(&img);
    if (rc < 0) return -1;
    fu_record rec = fu_image_record(in, &small);
    rc = fu_emit(out, &rec);
    fu_image_free(&small);
    return rc;
}

int main(int argc, char **argv) {
    tool_init("fundus-resize", USAGE);
    static const struct option opts[] = {TOOL_COMMON_LONGOPTS,
                                         {"size", required_argument, 0, 's'},
                                         {"no-shrink-on-load", no_argument, 0, OPT_NO_SHRINK},
                                         {0, 0, 0, 0}};
    long size = 0;
    bool shrink_on_load = true;
    int c;
    while ((c = tool_getopt(argc, argv, TOOL_COMMON_SHORTOPTS "s:", opts)) != -1) {
        if (c == 's') size = tool_parse_long("--size", optarg, 1, 65535);
        else if (c == OPT_NO_SHRINK) shrink_on_load = false;
        else tool_usage_error("unexpected option");
    }
    if (size == 0) tool_usage_error("--size is required");

    resize_job job = {(uint32_t)size, shrink_on_load ? (uint32_t)size : 0};
    tool_map_to_output((fu_map_opts){
        .inputs = (const char *const *)argv + optind,
        .n_inputs = argc - optind,
        .fn = resize_record,
        .ctx = &job,
        .verify = true, // a payload CRC costs ~1% of a decode and names damage plainly
    });
    return 0;
}
