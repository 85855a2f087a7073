// shard-split: one shard -> DIR/{train,val,test}.shard, deterministic and
// optionally stratified by label. Two passes over a regular file: the headers
// (labels), then the records; stdin is first spooled to a temporary file.
// The three outputs are committed together or not at all.
#include "core/fs.h"
#include "core/rng.h"
#include "shard/shard.h"
#include "toolkit.h"

#include <errno.h>
#include <math.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

static const char USAGE[] =
    "usage: shard-split [--ratios TRAIN,VAL,TEST] [--seed S] [--stratify] -o DIR [SHARD]\n"
    "       shard-split --by-field -o DIR [SHARD]\n"
    "Split a shard (stdin when none is named) into DIR/train.shard, DIR/val.shard and\n"
    "DIR/test.shard, setting each record's split. Records keep their input order in each file.\n"
    "Counts are exact: a group of n records gets n x ratio each, rounded by largest remainder\n"
    "(ties to train, then val). Which records go where: the group's records are shuffled with\n"
    "rng(seed, group) (Fisher-Yates) and dealt out in that order.\n"
    "  --ratios A,B,C  percentages summing to 100, or fractions summing to 1 (default 70,15,15)\n"
    "  --seed S        (default 0)\n"
    "  --stratify      split each label separately, so every split keeps the class proportions\n"
    "                  (without it the whole shard is one group)\n"
    "  --by-field      no shuffling: send each record to the split it already names (a record\n"
    "                  without a split is an error)\n"
    "  -o DIR          output folder, created if missing (required); the three files appear\n"
    "                  together, or none does\n"
    "  -q, --quiet     no progress;  -h, --help;  --version\n"
    "example: shard-split --ratios 70,15,15 --seed 1 --stratify -o data/split raw.shard\n";

enum { OPT_RATIOS = TOOL_OPT_FIRST_FREE, OPT_SEED, OPT_STRATIFY, OPT_BY_FIELD };
enum { N_SPLITS = 3 };
static const fu_split SPLITS[N_SPLITS] = {FU_SPLIT_TRAIN, FU_SPLIT_VAL, FU_SPLIT_TEST};

// The three outputs; a signal handler removes their temporaries.
static fu_outfile outs[N_SPLITS];
static volatile sig_atomic_t outs_open;

static void on_signal(int sig) {
    if (outs_open)
        for (int k = 0; k < N_SPLITS; k++)
            if (outs[k].tmp) unlink(outs[k].tmp);
    signal(sig, SIG_DFL);
    raise(sig);
}

static noreturn void fail_all(void) {
    outs_open = 0;
    for (int k = 0; k < N_SPLITS; k++) fu_out_abort(&outs[k]);
    tool_fail();
}

// Integer weights (parts per 10^9) from three percentages or fractions.
static void parse_ratios(const char *arg, uint64_t w[N_SPLITS]) {
    double r[N_SPLITS], sum = 0;
    const char *p = arg;
    for (int k = 0; k < N_SPLITS; k++) {
        char *end;
        r[k] = strtod(p, &end);
        if (end == p || !isfinite(r[k]) || r[k] < 0 || (k < N_SPLITS - 1 ? *end != ',' : *end != '\0'))
            tool_usage_error("--ratios: '%s' is not three non-negative numbers like 70,15,15", arg);
        sum += r[k];
        p = end + 1;
    }
    if (fabs(sum - 100) > 1e-6 && fabs(sum - 1) > 1e-9)
        tool_usage_error("--ratios: '%s' sums to %g; give percentages summing to 100 or fractions summing to 1",
                         arg, sum);
    for (int k = 0; k < N_SPLITS; k++) w[k] = (uint64_t)llround(r[k] / sum * 1e9);
}

// Exact counts for a group of n: floor(n w_k / W) each, then the records
// left over go to the largest remainders (ties: the earlier split).
static void quotas(uint64_t n, const uint64_t w[N_SPLITS], uint64_t out[N_SPLITS]) {
    uint64_t W = w[0] + w[1] + w[2], given = 0;
    unsigned __int128 rem[N_SPLITS];
    for (int k = 0; k < N_SPLITS; k++) {
        unsigned __int128 share = (unsigned __int128)n * w[k];
        out[k] = (uint64_t)(share / W);
        rem[k] = share % W;
        given += out[k];
    }
    bool taken[N_SPLITS] = {false};
    for (; given < n; given++) {
        int best = -1;
        for (int k = 0; k < N_SPLITS; k++)
            if (!taken[k] && (best < 0 || rem[k] > rem[best])) best = k;
        out[best]++;
        taken[best] = true;
    }
}

// Stdin or a FIFO cannot be read twice: copy it into an unlinked temporary
// file, put that on stdin and map it (messages still say "stdin").
static fu_shard_reader *open_twice_readable(const char *path) {
    fu_shard_reader *r = fu_shard_open(path);
    if (!r) tool_fail();
    if (fu_shard_is_mapped(r)) return r;
    bool is_stdin = !path || strcmp(path, "-") == 0;
    struct stat st;
    if (!is_stdin && stat(path, &st) == 0 && S_ISREG(st.st_mode)) { // empty: let the reader say so
        fu_record rec;
        if (fu_shard_next(r, &rec, false) < 0) tool_fail();
    }
    fu_shard_close(r);
    FILE *in = is_stdin ? stdin : fopen(path, "rb");
    if (!in) tool_die("%s: cannot open: %s", path, strerror(errno));
    const char *tmpdir = getenv("TMPDIR");
    char tmp[4096];
    snprintf(tmp, sizeof tmp, "%s/shard-split-XXXXXX", tmpdir && *tmpdir ? tmpdir : "/tmp");
    int fd = mkstemp(tmp);
    if (fd < 0) tool_die("%s: cannot create a temporary file to hold the input: %s", tmp, strerror(errno));
    unlink(tmp); // the open descriptor keeps the bytes
    static uint8_t buf[1 << 16];
    size_t n;
    bool bad = false;
    while (!bad && (n = fread(buf, 1, sizeof buf, in)) > 0) bad = write(fd, buf, n) != (ssize_t)n;
    bad = bad || ferror(in);
    if (!is_stdin) fclose(in);
    if (bad || lseek(fd, 0, SEEK_SET) != 0 || dup2(fd, STDIN_FILENO) < 0)
        tool_die("%s: cannot spool the input to %s: %s", is_stdin ? "stdin" : path, tmp, strerror(errno));
    if (fd != STDIN_FILENO) close(fd);
    r = fu_shard_open("-");
    if (!r) tool_fail();
    if (!fu_shard_is_mapped(r)) { // empty: let the reader say so
        fu_record rec;
        if (fu_shard_next(r, &rec, false) < 0) tool_fail();
    }
    return r;
}

int main(int argc, char **argv) {
    tool_init("shard-split", USAGE);
    static const struct option opts[] = {TOOL_COMMON_LONGOPTS,
                                         {"ratios", required_argument, 0, OPT_RATIOS},
                                         {"seed", required_argument, 0, OPT_SEED},
                                         {"stratify", no_argument, 0, OPT_STRATIFY},
                                         {"by-field", no_argument, 0, OPT_BY_FIELD},
                                         {0, 0, 0, 0}};
    uint64_t w[N_SPLITS];
    parse_ratios("70,15,15", w);
    uint64_t seed = 0;
    bool stratify = false, by_field = false, ratios_given = false;
    int c;
    while ((c = tool_getopt(argc, argv, TOOL_COMMON_SHORTOPTS, opts)) != -1) {
        switch (c) {
        case OPT_RATIOS:
            parse_ratios(optarg, w);
            ratios_given = true;
            break;
        case OPT_SEED: seed = (uint64_t)tool_parse_long("--seed", optarg, 0, 0x7fffffffffffffffL); break;
        case OPT_STRATIFY: stratify = true; break;
        case OPT_BY_FIELD: by_field = true; break;
        default: tool_usage_error("unexpected option");
        }
    }
    if (!tool.out_path) tool_usage_error("-o DIR: required (the folder for train/val/test.shard)");
    if (by_field && (ratios_given || stratify)) tool_usage_error("--by-field takes no --ratios or --stratify");
    if (argc - optind > 1) tool_usage_error("%s: one input at a time (cat shards together first)", argv[optind + 1]);
    const char *input = optind < argc ? argv[optind] : "-";
    signal(SIGINT, on_signal);
    signal(SIGTERM, on_signal);
    signal(SIGHUP, on_signal);

    // Pass 1: the headers.
    fu_shard_reader *r = open_twice_readable(input);
    fu_shard_index idx;
    if (fu_shard_build_index(r, &idx) < 0) tool_fail();
    size_t n = idx.count;
    if (n > UINT32_MAX) tool_die("%s: %zu records is more than shard-split handles", fu_shard_name(r), n);
    int *label = malloc((n ? n : 1) * sizeof *label);
    uint8_t *dest = malloc(n ? n : 1); // split index 0..2 of each record
    uint32_t *order = malloc((n ? n : 1) * sizeof *order);
    if (!label || !dest || !order) tool_die("out of memory");
    for (size_t i = 0; i < n; i++) {
        fu_record rec;
        if (fu_shard_read_at(r, idx.offsets[i], &rec, false) < 0) tool_fail();
        label[i] = rec.label;
        if (by_field) {
            if (rec.split == FU_SPLIT_NONE)
                tool_die("%s: record %zu (%.*s): has no split; --by-field needs train, val or test",
                         fu_shard_name(r), i, (int)(rec.id_len < 200 ? rec.id_len : 200), rec.id);
            dest[i] = (uint8_t)(rec.split - FU_SPLIT_TRAIN);
        }
    }

    // The assignment: per group (a label, or everything), shuffle the
    // records' indices and deal them out by exact quotas.
    if (!by_field) {
        bool seen[129] = {false};
        for (size_t first = 0; first < n; first++) {
            int g = stratify ? label[first] : 0;
            if (stratify ? seen[g + 1] : first > 0) continue;
            if (stratify) seen[g + 1] = true;
            uint32_t m = 0;
            for (size_t i = first; i < n; i++)
                if (!stratify || label[i] == g) order[m++] = (uint32_t)i;
            fu_rng rng = stratify ? fu_rng_make(seed, (uint64_t)(g + 1), 1) : fu_rng_make(seed, 0, 2);
            for (uint32_t i = m; i > 1; i--) {
                uint32_t j = fu_rng_below(&rng, i);
                uint32_t t = order[i - 1];
                order[i - 1] = order[j];
                order[j] = t;
            }
            uint64_t q[N_SPLITS];
            quotas(m, w, q);
            uint32_t pos = 0;
            for (int k = 0; k < N_SPLITS; k++)
                for (uint64_t t = 0; t < q[k]; t++) dest[order[pos++]] = (uint8_t)k;
        }
    }

    // Pass 2: the records, in input order, each to its split's file.
    if (fu_make_dirs(tool.out_path, NULL, NULL) < 0) tool_fail();
    fu_shard_writer wr[N_SPLITS];
    for (int k = 0; k < N_SPLITS; k++) {
        char path[4096];
        snprintf(path, sizeof path, "%s/%s.shard", tool.out_path, fu_split_name(SPLITS[k]));
        outs_open = 1;
        if (fu_out_open(&outs[k], path, true) < 0) fail_all();
        fu_shard_writer_init(&wr[k], outs[k].f, outs[k].path);
    }
    fu_progress_start(&tool.progress, tool.name, tool.quiet);
    for (size_t i = 0; i < n; i++) {
        fu_record rec;
        if (fu_shard_read_at(r, idx.offsets[i], &rec, true) < 0) fail_all();
        rec.split = SPLITS[dest[i]];
        if (fu_shard_write(&wr[dest[i]], &rec) < 0) fail_all();
        fu_progress_add(&tool.progress, 1);
    }
    fu_progress_end(&tool.progress);
    for (int k = 0; k < N_SPLITS; k++)
        if (fu_shard_finish(&wr[k]) < 0) fail_all();
    // Three renames cannot be one atomic step; if a later one fails, take
    // back the earlier ones, so that no mix of old and new files is left.
    char committed[N_SPLITS][4096];
    for (int k = 0; k < N_SPLITS; k++) {
        snprintf(committed[k], sizeof committed[k], "%s", outs[k].path);
        if (fu_out_commit(&outs[k]) < 0) {
            for (int done = 0; done < k; done++) unlink(committed[done]);
            fail_all();
        }
    }
    outs_open = 0;
    fu_shard_index_free(&idx);
    fu_shard_close(r);
    free(label);
    free(dest);
    free(order);
    return 0;
}
