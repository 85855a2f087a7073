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
#include "shard/mapper.h"

#include <getopt.h>
#include <stdbool.h>
#include <stdnoreturn.h>

typedef struct {
    const char *name;
    const char *usage;    // the --help text
    const char *out_path; // -o, NULL = stdout
    int threads;          // --threads, default: all cores
    bool quiet;
    fu_progress progress;
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

#endif
