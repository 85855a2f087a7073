// Minimal test helpers for the C unit tests: each check prints one
// "ok - name" or "not ok - name: detail" line; main returns check_done().
#ifndef TESTS_UNIT_CHECK_H
#define TESTS_UNIT_CHECK_H

#include <stdarg.h>
#include <stdio.h>

static int check_failures;

static inline __attribute__((format(printf, 3, 4))) int check_at(int cond, const char *name, const char *fmt,
                                                                  ...) {
    if (cond) {
        printf("ok - %s\n", name);
        return 1;
    }
    printf("not ok - %s: ", name);
    va_list ap;
    va_start(ap, fmt);
    vprintf(fmt, ap);
    va_end(ap);
    putchar('\n');
    check_failures++;
    return 0;
}

// CHECK(cond, name, "detail %d", x)
#define CHECK(cond, name, ...) check_at(!!(cond), name, __VA_ARGS__)
static inline int check_done(void) { return check_failures ? 1 : 0; }

#endif
