// Progress on stderr, only when stderr is a terminal and not --quiet:
// "fundus-resize: 340 records  118.2/s" redrawn in place at most 5 times a second.
#ifndef FU_CORE_PROGRESS_H
#define FU_CORE_PROGRESS_H

#include <stdbool.h>
#include <stdint.h>

typedef struct {
    const char *name; // tool name
    bool on;
    double t0, last;
    uint64_t done;
} fu_progress;

void fu_progress_start(fu_progress *p, const char *name, bool quiet);
void fu_progress_add(fu_progress *p, uint64_t n);
void fu_progress_end(fu_progress *p);
double fu_now(void); // monotonic seconds

#endif
