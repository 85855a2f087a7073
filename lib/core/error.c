#include "core/error.h"

#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

enum { MSG_MAX = 1024 };
static _Thread_local char g_msg[MSG_MAX];
static _Thread_local char g_hint[MSG_MAX];

int fu_fail(const char *subject, const char *fmt, ...) {
    int n = subject && *subject ? snprintf(g_msg, MSG_MAX, "%s: ", subject) : 0;
    if (n < 0 || n >= MSG_MAX) n = 0;
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(g_msg + n, MSG_MAX - (size_t)n, fmt, ap);
    va_end(ap);
    g_hint[0] = '\0';
    return -1;
}

void fu_hint(const char *fmt, ...) {
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(g_hint, MSG_MAX, fmt, ap);
    va_end(ap);
}

void fu_error_prefix(const char *fmt, ...) {
    char prefix[MSG_MAX], old[MSG_MAX];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(prefix, MSG_MAX, fmt, ap);
    va_end(ap);
    memcpy(old, g_msg, MSG_MAX);
    snprintf(g_msg, MSG_MAX, "%.500s: %.*s", prefix, MSG_MAX - 510, old);
}

const char *fu_error(void) { return g_msg; }
const char *fu_error_hint(void) { return g_hint; }
void fu_clear_error(void) { g_msg[0] = g_hint[0] = '\0'; }

void fu_set_error(const char *msg, const char *hint) {
    snprintf(g_msg, MSG_MAX, "%s", msg ? msg : "");
    snprintf(g_hint, MSG_MAX, "%s", hint ? hint : "");
}

static void *oom(size_t n, const char *file, int line) {
    fu_fail("memory", "out of memory allocating %zu bytes (%s:%d)", n, file, line);
    return NULL;
}

void *fu_malloc_at(size_t n, const char *file, int line) {
    void *p = malloc(n ? n : 1);
    return p ? p : oom(n, file, line);
}

void *fu_calloc_at(size_t n, size_t size, const char *file, int line) {
    void *p = calloc(n ? n : 1, size ? size : 1);
    return p ? p : oom(n * size, file, line);
}

void *fu_realloc_at(void *p, size_t n, const char *file, int line) {
    void *q = realloc(p, n ? n : 1);
    return q ? q : oom(n, file, line);
}
