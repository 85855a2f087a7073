#include "core/progress.h"

#include <stdio.h>
#include <time.h>
#include <unistd.h>

double fu_now(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + 1e-9 * (double)ts.tv_nsec;
}

void fu_progress_start(fu_progress *p, const char *name, bool quiet) {
    p->name = name;
    p->on = !quiet && isatty(STDERR_FILENO);
    p->t0 = p->last = fu_now();
    p->done = 0;
}

static void draw(fu_progress *p, double now) {
    double dt = now - p->t0;
    fprintf(stderr, "\r%s: %llu records  %.1f/s ", p->name, (unsigned long long)p->done,
            dt > 0 ? (double)p->done / dt : 0.0);
    fflush(stderr);
}

void fu_progress_add(fu_progress *p, uint64_t n) {
    p->done += n;
    if (!p->on) return;
    double now = fu_now();
    if (now - p->last < 0.2) return;
    p->last = now;
    draw(p, now);
}

void fu_progress_end(fu_progress *p) {
    if (!p->on) return;
    draw(p, fu_now());
    fputc('\n', stderr);
}
