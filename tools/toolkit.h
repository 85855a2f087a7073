// What every tool shares: common options, messages, exit codes, output.
//
//   tool: subject: what is wrong      (exit 1: bad input)
//   tool: hint: what to try
//   tool: --size: must be 1..65535    (exit 2: bad usage)
#ifndef TOOLS_TOOLKIT_H
#define TOOLS_TOOLKIT_H

#include "core/error.h"
#include "core/outfile.h"
#include "core/progress.h"
#include "image/enhance.h"
#include "shard/mapper.h"

#include <getopt.h>
#include <stdbool.h>
#include <stdnoreturn.h>

typedef struct {
    const char *name;
    const char *usage;    // the --help text
    const char *out_path; // -o, NULL = stdout
    int threads;          // --threads, default: all cores
    bool threads_given;   // --threads was on the command line
    bool quiet;
    fu_progress progress;
    // Called before a fatal message (tool_die, tool_fail, tool_usage_error)
    // is printed; returns whether this process prints it. A data-parallel
    // tool uses it so that a failure every rank meets is reported once.
    bool (*before_fatal)(void);
} tool_state;

extern tool_state tool;

enum { TOOL_OPT_THREADS = 0x1000, TOOL_OPT_VERSION, TOOL_OPT_FIRST_FREE = 0x1100 };

// Long options every tool accepts; put first in the tool's table.
#define TOOL_COMMON_LONGOPTS                                                                       \
    {"output", required_argument, 0, 'o'}, {"threads", required_argument, 0, TOOL_OPT_THREADS},   \
        {"quiet", no_argument, 0, 'q'}, {"help", no_argument, 0, 'h'},                              \
        {"version", no_argument, 0, TOOL_OPT_VERSION}
#define TOOL_COMMON_SHORTOPTS "o:qh"

void tool_init(const char *name, const char *usage);
// getopt_long over the tool's table; handles the common options itself and
// exits 2 on unknown options or missing arguments. Returns the next
// tool-specific option, or -1 at the end.
int tool_getopt(int argc, char **argv, const char *shortopts, const struct option *longopts);

noreturn void tool_usage_error(const char *fmt, ...) __attribute__((format(printf, 1, 2)));
noreturn void tool_die(const char *fmt, ...) __attribute__((format(printf, 1, 2)));
noreturn void tool_fail(void); // report the library's error (fu_error) and exit 1
// A note on stderr, "tool: ...", unless --quiet (not progress: shown off a terminal too).
void tool_note(const char *fmt, ...) __attribute__((format(printf, 1, 2)));

long tool_parse_long(const char *opt, const char *arg, long lo, long hi);
double tool_parse_double(const char *opt, const char *arg, double lo, double hi);

// The tool's main output (-o FILE or stdout), written atomically; an error or
// a signal before tool_commit_output() removes the temporary.
FILE *tool_open_output(bool binary);
void tool_commit_output(void);
const char *tool_output_name(void); // "stdout" or the path

// The body of every record-to-record tool: open the output (-o or stdout),
// run fu_map_run with the tool's threads and progress, write the end record,
// commit. `mo` supplies inputs (or generate), fn, ctx and verify. Exits on error.
void tool_map_to_output(fu_map_opts mo);

// The enhancement options fundus-clahe and cnn-predict share: same names,
// bounds and switches. A --no-* switch wins over a value given in any order.
enum {
    TOOL_OPT_CLIP = 0x1080,
    TOOL_OPT_TILES,
    TOOL_OPT_GAMMA,
    TOOL_OPT_MEDIAN,
    TOOL_OPT_NO_CLAHE,
    TOOL_OPT_NO_GAMMA,
    TOOL_OPT_NO_MEDIAN,
};
#define TOOL_ENHANCE_LONGOPTS                                                                                     \
    {"clip", required_argument, 0, TOOL_OPT_CLIP}, {"tiles", required_argument, 0, TOOL_OPT_TILES},             \
        {"gamma", required_argument, 0, TOOL_OPT_GAMMA}, {"median", required_argument, 0, TOOL_OPT_MEDIAN},     \
        {"no-clahe", no_argument, 0, TOOL_OPT_NO_CLAHE}, {"no-gamma", no_argument, 0, TOOL_OPT_NO_GAMMA},       \
        {"no-median", no_argument, 0, TOOL_OPT_NO_MEDIAN}

typedef struct {
    fu_enhance_opts values; // starts as fu_enhance_defaults()
    bool no_clahe, no_gamma, no_median;
} tool_enhance;

tool_enhance tool_enhance_init(void);
// Takes option c if it is an enhancement option (returns false otherwise).
bool tool_enhance_option(tool_enhance *e, int c, const char *arg);
fu_enhance_opts tool_enhance_result(const tool_enhance *e);

#endif
