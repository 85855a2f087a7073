// fundus-clahe: the study's enhancement of every record: RGB -> L*a*b*,
// CLAHE on L, back to RGB, gamma correction, median filter; each step
// bit-exact with OpenCV 4.6 (lib/image/enhance.h).
#include "image/enhance.h"
#include "image/record_image.h"
#include "shard/mapper.h"
#include "toolkit.h"


static const char USAGE[] =
    "usage: fundus-clahe [--clip C] [--tiles N] [--gamma G] [--median K] [--no-clahe]\n"
    "                    [--no-gamma] [--no-median] [-o OUT] [SHARD...]\n"
    "Enhance each record as the study did, pixel for pixel what OpenCV 4.6 gives:\n"
    "cvtColor RGB->Lab, createCLAHE(C, (N, N)).apply on L, cvtColor Lab->RGB, the\n"
    "gamma table 255*(v/255)^(1/G) (rounded), medianBlur(K). Reads encoded or pixel\n"
    "records (stdin when no shard is named); writes pixel records with the same ids,\n"
    "labels and splits.\n"
    "  --clip C        CLAHE clip limit, 0..1000 (default 2); 0 = no CLAHE\n"
    "  --tiles N       CLAHE tile grid N x N, 1..256 (default 8)\n"
    "  --gamma G       gamma, 0.01..100 (default 1.2); 1 = no gamma correction\n"
    "  --median K      median kernel 1, 3 or 5 (default 3); 1 = no median\n"
    "  --no-clahe      skip CLAHE and the Lab round trip (same as --clip 0)\n"
    "  --no-gamma      skip the gamma correction (same as --gamma 1)\n"
    "  --no-median     skip the median filter (same as --median 1)\n"
    "  --no-verify     skip checking each payload's CRC-32 (headers are always checked)\n"
    "  -o, --output FILE  write FILE (atomically) instead of stdout\n"
    "  --threads T     worker threads (default: all cores); output is identical\n"
    "  -q, --quiet     no progress;  -h, --help;  --version\n"
    "example: fundus-resize --size 224 raw.shard | fundus-clahe > enhanced.shard\n";

enum {
    OPT_CLIP = TOOL_OPT_FIRST_FREE,
    OPT_TILES,
    OPT_GAMMA,
    OPT_MEDIAN,
    OPT_NO_CLAHE,
    OPT_NO_GAMMA,
    OPT_NO_MEDIAN,
    OPT_NO_VERIFY
};

static int enhance_record(void *ctx, const fu_record *in, uint64_t index, fu_emitter *out) {
    const fu_enhance_opts *o = ctx;
    fu_image img = {0};
    if (fu_record_to_image(in, 0, &img) < 0) return -1;
    int rc = fu_enhance(o, &img);
    if (rc == 0) {
        fu_record rec = fu_image_record(in, &img);
        rc = fu_emit(out, &rec);
    }
    fu_image_free(&img);
    return rc;
}

int main(int argc, char **argv) {
    tool_init("fundus-clahe", USAGE);
    static const struct option opts[] = {TOOL_COMMON_LONGOPTS,
                                         {"clip", required_argument, 0, OPT_CLIP},
                                         {"tiles", required_argument, 0, OPT_TILES},
                                         {"gamma", required_argument, 0, OPT_GAMMA},
                                         {"median", required_argument, 0, OPT_MEDIAN},
                                         {"no-clahe", no_argument, 0, OPT_NO_CLAHE},
                                         {"no-gamma", no_argument, 0, OPT_NO_GAMMA},
                                         {"no-median", no_argument, 0, OPT_NO_MEDIAN},
                                         {"no-verify", no_argument, 0, OPT_NO_VERIFY},
                                         {0, 0, 0, 0}};
    fu_enhance_opts o = fu_enhance_defaults();
    bool no_clahe = false, no_gamma = false, no_median = false, verify = true;
    int c;
    while ((c = tool_getopt(argc, argv, TOOL_COMMON_SHORTOPTS, opts)) != -1) {
        switch (c) {
        case OPT_CLIP: o.clip = tool_parse_double("--clip", optarg, 0, 1000); break;
        case OPT_TILES: o.tiles = (int)tool_parse_long("--tiles", optarg, 1, 256); break;
        case OPT_GAMMA: o.gamma = tool_parse_double("--gamma", optarg, 0.01, 100); break;
        case OPT_MEDIAN:
            o.median = (int)tool_parse_long("--median", optarg, 1, 5);
            if (o.median % 2 == 0) tool_usage_error("--median: %d is not 1, 3 or 5", o.median);
            break;
        case OPT_NO_CLAHE: no_clahe = true; break;
        case OPT_NO_GAMMA: no_gamma = true; break;
        case OPT_NO_MEDIAN: no_median = true; break;
        case OPT_NO_VERIFY: verify = false; break;
        default: tool_usage_error("unexpected option");
        }
    }
    if (no_clahe) o.clip = 0;
    if (no_gamma) o.gamma = 1;
    if (no_median) o.median = 1;
    tool_map_to_output((fu_map_opts){.inputs = (const char *const *)argv + optind,
                                     .n_inputs = argc - optind,
                                     .fn = enhance_record,
                                     .ctx = &o,
                                     .verify = verify});
    return 0;
}
