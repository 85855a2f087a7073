// shard-info: what a shard holds (counts per class and split, sizes, payload
// kinds), optionally checking every payload's CRC; --list prints a CSV line
// per record instead.
#include "shard/shard.h"
#include "core/csv.h"
#include "toolkit.h"

#include <inttypes.h>
#include <stdio.h>
#include <string.h>

static const char USAGE[] =
    "usage: shard-info [--verify] [--list] [SHARD...]\n"
    "Summarise shards (stdin when none is named): records per label and split,\n"
    "payload kinds and image sizes.\n"
    "  --verify     check every payload's CRC-32 (headers are always checked)\n"
    "  --list       print one CSV line per record: id,label,split,kind,width,height,channels,bytes\n"
    "  -q, --quiet  print nothing; the exit status says whether the shards are valid\n"
    "  -h, --help   this text;  --version   the version\n"
    "example: shard-pack --labels data/acrima/labels.csv | shard-info --verify\n";

enum { OPT_VERIFY = TOOL_OPT_FIRST_FREE, OPT_LIST };

typedef struct {
    uint64_t records, bytes, by_kind[3], by_split_label[4][129];
    uint32_t min_w, min_h, max_w, max_h;
    uint64_t sized;
} summary;

static void add(summary *s, const fu_record *r) {
    s->records++;
    s->bytes += r->payload_len;
    s->by_kind[r->kind]++;
    s->by_split_label[r->split][r->label + 1]++;
    if (r->width && r->height) {
        if (!s->sized || r->width * (uint64_t)r->height < s->min_w * (uint64_t)s->min_h) {
            s->min_w = r->width;
            s->min_h = r->height;
        }
        if (!s->sized || r->width * (uint64_t)r->height > s->max_w * (uint64_t)s->max_h) {
            s->max_w = r->width;
            s->max_h = r->height;
        }
        s->sized++;
    }
}

static void print_summary(const summary *s, bool verified) {
    printf("records: %" PRIu64 "\n", s->records);
    printf("payload bytes: %" PRIu64 "\n", s->bytes);
    printf("kinds:");
    for (int k = 1; k <= 2; k++)
        if (s->by_kind[k]) printf(" %s=%" PRIu64, fu_kind_name((fu_kind)k), s->by_kind[k]);
    printf("\nlabels:");
    for (int l = 0; l < 129; l++) {
        uint64_t n = 0;
        for (int sp = 0; sp < 4; sp++) n += s->by_split_label[sp][l];
        if (n && l == 0) printf(" unknown=%" PRIu64, n);
        else if (n) printf(" %d=%" PRIu64, l - 1, n);
    }
    printf("\n");
    for (int sp = 0; sp < 4; sp++) {
        uint64_t n = 0;
        for (int l = 0; l < 129; l++) n += s->by_split_label[sp][l];
        if (!n) continue;
        printf("split %s: %" PRIu64 " (", sp ? fu_split_name((fu_split)sp) : "none", n);
        const char *sep = "";
        for (int l = 0; l < 129; l++)
            if (s->by_split_label[sp][l]) {
                if (l == 0) printf("%sunknown=%" PRIu64, sep, s->by_split_label[sp][l]);
                else printf("%s%d=%" PRIu64, sep, l - 1, s->by_split_label[sp][l]);
                sep = " ";
            }
        printf(")\n");
    }
    if (s->sized)
        printf("sizes: smallest %ux%u, largest %ux%u\n", s->min_w, s->min_h, s->max_w, s->max_h);
    if (verified) printf("verify: %" PRIu64 " payload CRCs ok\n", s->records);
}

int main(int argc, char **argv) {
    tool_init("shard-info", USAGE);
    static const struct option opts[] = {TOOL_COMMON_LONGOPTS,
                                         {"verify", no_argument, 0, OPT_VERIFY},
                                         {"list", no_argument, 0, OPT_LIST},
                                         {0, 0, 0, 0}};
    bool verify = false, list = false;
    int c;
    while ((c = tool_getopt(argc, argv, TOOL_COMMON_SHORTOPTS, opts)) != -1) {
        if (c == OPT_VERIFY) verify = true;
        else if (c == OPT_LIST) list = true;
        else tool_usage_error("unexpected option");
    }
    static const char *const stdin_only[] = {"-"};
    const char *const *inputs = optind < argc ? (const char *const *)argv + optind : stdin_only;
    int n_inputs = optind < argc ? argc - optind : 1;

    static summary s;
    if (list && !tool.quiet) printf("id,label,split,kind,width,height,channels,bytes\n");
    for (int i = 0; i < n_inputs; i++) {
        fu_shard_reader *r = fu_shard_open(inputs[i]);
        if (!r) tool_fail();
        fu_record rec;
        int got;
        while ((got = fu_shard_next(r, &rec, verify)) == 1) {
            add(&s, &rec);
            if (list && !tool.quiet) {
                fu_csv_put(stdout, rec.id, rec.id_len);
                if (rec.label == FU_LABEL_NONE) printf(",");
                else printf(",%d", rec.label);
                printf(",%s,%s,%u,%u,%u,%" PRIu64 "\n", fu_split_name(rec.split), fu_kind_name(rec.kind),
                       rec.width, rec.height, rec.channels, rec.payload_len);
            }
        }
        if (got < 0) {
            fflush(stdout);
            tool_fail();
        }
        fu_shard_close(r);
    }
    if (!list && !tool.quiet) print_summary(&s, verify);
    if (fflush(stdout) != 0) tool_die("stdout: write failed");
    return 0;
}
