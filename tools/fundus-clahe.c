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

enum { OPT_NO_VERIFY = TOOL_OPT_FIRST_FREE };

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
                                         TOOL_ENHANCE_LONGOPTS,
                                         {"no-verify", no_argument, 0, OPT_NO_VERIFY},
                                         {0, 0, 0, 0}};
    tool_enhance e = tool_enhance_init();
    bool verify = true;
    int c;
    while ((c = tool_getopt(argc, argv, TOOL_COMMON_SHORTOPTS, opts)) != -1) {
        if (tool_enhance_option(&e, c, optarg)) continue;
        if (c == OPT_NO_VERIFY) verify = false;
        else tool_usage_error("unexpected option");
    }
    fu_enhance_opts o = tool_enhance_result(&e);
    tool_map_to_output((fu_map_opts){.inputs = (const char *const *)argv + optind,
                                     .n_inputs = argc - optind,
                                     .fn = enhance_record,
                                     .ctx = &o,
                                     .verify = verify});
    return 0;
}
