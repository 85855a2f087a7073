#include "toolkit.h"

#include <errno.h>
#include <limits.h>
#include <malloc.h>
#include <math.h>
#include <omp.h>
#include <signal.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#ifndef FU_VERSION
#define FU_VERSION "unknown"
#endif

tool_state tool;
static fu_outfile g_out;
static volatile sig_atomic_t g_out_open;

static void on_signal(int sig) {
    // Async-signal-safe cleanup: remove the half-written temporary, then die
    // of the same signal.
    if (g_out_open && g_out.tmp) unlink(g_out.tmp);
    signal(sig, SIG_DFL);
    raise(sig);
}

void tool_init(const char *name, const char *usage) {
    tool.name = name;
    tool.usage = usage;
    tool.threads = omp_get_num_procs();
    // Every record allocates and frees the same few image-sized buffers. By
    // default glibc hands each back to the kernel (munmap, heap trimming), and
    // faulting the pages in again costs 10-30% of a stage; keep them.
    // (32 MiB is the largest mmap threshold glibc documents.)
    mallopt(M_MMAP_THRESHOLD, 32 << 20);
    mallopt(M_TRIM_THRESHOLD, 256 << 20);
    signal(SIGINT, on_signal);
    signal(SIGTERM, on_signal);
    signal(SIGHUP, on_signal);
}

static void cleanup_output(void) {
    if (g_out_open) {
        fu_out_abort(&g_out);
        g_out_open = 0;
    }
}

noreturn void tool_usage_error(const char *fmt, ...) {
    cleanup_output();
    va_list ap;
    if (tool.before_fatal && !tool.before_fatal()) exit(2);
    va_start(ap, fmt);
    fprintf(stderr, "%s: ", tool.name);
    vfprintf(stderr, fmt, ap);
    fprintf(stderr, "\n%s: hint: see '%s --help'\n", tool.name, tool.name);
    va_end(ap);
    exit(2);
}

// "tool: message" on stderr, one line.
static void say(const char *fmt, va_list ap) {
    fprintf(stderr, "%s: ", tool.name);
    vfprintf(stderr, fmt, ap);
    fputc('\n', stderr);
}

noreturn void tool_die(const char *fmt, ...) {
    cleanup_output();
    if (tool.before_fatal && !tool.before_fatal()) exit(1);
    va_list ap;
    va_start(ap, fmt);
    say(fmt, ap);
    va_end(ap);
    exit(1);
}

noreturn void tool_fail(void) {
    cleanup_output();
    if (tool.before_fatal && !tool.before_fatal()) exit(1);
    if (tool.progress.on) fputc('\n', stderr);
    const char *msg = fu_error();
    fprintf(stderr, "%s: %s\n", tool.name, *msg ? msg : "failed (no message)");
    if (*fu_error_hint()) fprintf(stderr, "%s: hint: %s\n", tool.name, fu_error_hint());
    exit(1);
}

void tool_note(const char *fmt, ...) {
    if (tool.quiet) return;
    va_list ap;
    va_start(ap, fmt);
    say(fmt, ap);
    va_end(ap);
}

int tool_getopt(int argc, char **argv, const char *shortopts, const struct option *longopts) {
    opterr = 0;
    for (;;) {
        int prev = optind;
        int c = getopt_long(argc, argv, shortopts, longopts, NULL);
        switch (c) {
        case 'o': tool.out_path = optarg; break;
        case 'q': tool.quiet = true; break;
        case TOOL_OPT_THREADS:
            tool.threads = (int)tool_parse_long("--threads", optarg, 1, 1024);
            tool.threads_given = true;
            break;
        case 'h':
            fputs(tool.usage, stdout);
            exit(0);
        case TOOL_OPT_VERSION:
            printf("%s %s\n", tool.name, FU_VERSION);
            exit(0);
        case '?':
        case ':': {
            const char *arg = argv[optind - 1 >= prev ? optind - 1 : prev];
            if (optopt && strchr(shortopts, optopt) && c == ':')
                tool_usage_error("-%c: needs a value", optopt);
            if (optopt && !strchr(shortopts, optopt)) tool_usage_error("-%c: unknown option", optopt);
            tool_usage_error("%s: unknown option or missing value", arg ? arg : "?");
        }
        default: return c;
        }
    }
}

long tool_parse_long(const char *opt, const char *arg, long lo, long hi) {
    char *end;
    errno = 0;
    long v = strtol(arg, &end, 10);
    if (errno || end == arg || *end) tool_usage_error("%s: '%s' is not a whole number", opt, arg);
    if (v < lo || v > hi) tool_usage_error("%s: %ld is out of range (%ld..%ld)", opt, v, lo, hi);
    return v;
}

double tool_parse_double(const char *opt, const char *arg, double lo, double hi) {
    char *end;
    errno = 0;
    double v = strtod(arg, &end);
    if (errno || end == arg || *end || !isfinite(v)) tool_usage_error("%s: '%s' is not a number", opt, arg);
    if (v < lo || v > hi) tool_usage_error("%s: %g is out of range (%g..%g)", opt, v, lo, hi);
    return v;
}

FILE *tool_open_output(bool binary) {
    if (fu_out_open(&g_out, tool.out_path, binary) < 0) tool_fail();
    g_out_open = 1;
    return g_out.f;
}

void tool_commit_output(void) {
    g_out_open = 0;
    if (fu_out_commit(&g_out) < 0) tool_fail();
}

const char *tool_output_name(void) {
    return tool.out_path && strcmp(tool.out_path, "-") != 0 ? tool.out_path : "stdout";
}

void tool_map_to_output(fu_map_opts mo) {
    fu_shard_writer w;
    fu_shard_writer_init(&w, tool_open_output(true), tool_output_name());
    mo.writer = &w;
    mo.threads = tool.threads;
    mo.progress = &tool.progress;
    fu_progress_start(&tool.progress, tool.name, tool.quiet);
    if (fu_map_run(&mo) < 0) tool_fail();
    tool_commit_output();
    fu_progress_end(&tool.progress);
}

tool_enhance tool_enhance_init(void) { return (tool_enhance){.values = fu_enhance_defaults()}; }

bool tool_enhance_option(tool_enhance *e, int c, const char *arg) {
    fu_enhance_opts *o = &e->values;
    switch (c) {
    case TOOL_OPT_CLIP: o->clip = tool_parse_double("--clip", arg, 0, 1000); return true;
    case TOOL_OPT_TILES: o->tiles = (int)tool_parse_long("--tiles", arg, 1, 256); return true;
    case TOOL_OPT_GAMMA: o->gamma = tool_parse_double("--gamma", arg, 0.01, 100); return true;
    case TOOL_OPT_MEDIAN:
        o->median = (int)tool_parse_long("--median", arg, 1, 5);
        if (o->median % 2 == 0) tool_usage_error("--median: %d is not 1, 3 or 5", o->median);
        return true;
    case TOOL_OPT_NO_CLAHE: e->no_clahe = true; return true;
    case TOOL_OPT_NO_GAMMA: e->no_gamma = true; return true;
    case TOOL_OPT_NO_MEDIAN: e->no_median = true; return true;
    default: return false;
    }
}

fu_enhance_opts tool_enhance_result(const tool_enhance *e) {
    fu_enhance_opts o = e->values;
    if (e->no_clahe) o.clip = 0;
    if (e->no_gamma) o.gamma = 1;
    if (e->no_median) o.median = 1;
    return o;
}
