// Errors and messages for libfundus.
//
// lib/ never prints and never exits: a function that fails returns -1 (or NULL)
// and leaves one message, "subject: reason", in a thread-local slot, with an
// optional hint. Tools print it as "tool: subject: reason" (tools/toolkit.c).
#ifndef FU_CORE_ERROR_H
#define FU_CORE_ERROR_H

#include <stddef.h>

// Record a failure; always returns -1 so callers can `return fu_fail(...)`.
// An empty subject leaves it to the caller to prefix one (fu_error_prefix).
int fu_fail(const char *subject, const char *fmt, ...)
    __attribute__((format(printf, 2, 3)));
// Attach a hint ("try --no-shrink-on-load") to the current error.
void fu_hint(const char *fmt, ...) __attribute__((format(printf, 1, 2)));
// Prefix the current error's subject: "record 12 (Im001)" + ": " + old message.
void fu_error_prefix(const char *fmt, ...) __attribute__((format(printf, 1, 2)));

const char *fu_error(void);      // "" when no error was recorded
const char *fu_error_hint(void); // "" when none
void fu_clear_error(void);
// Copy another thread's error into this thread's slot (worker -> main).
void fu_set_error(const char *msg, const char *hint);

// Allocation that records "out of memory" with the caller's file and line.
void *fu_malloc_at(size_t n, const char *file, int line);
void *fu_calloc_at(size_t n, size_t size, const char *file, int line);
void *fu_realloc_at(void *p, size_t n, const char *file, int line);
#define fu_malloc(n) fu_malloc_at((n), __FILE__, __LINE__)
#define fu_calloc(n, s) fu_calloc_at((n), (s), __FILE__, __LINE__)
#define fu_realloc(p, n) fu_realloc_at((p), (n), __FILE__, __LINE__)

#endif
