// A small CSV reader and field writer (RFC 4180 quoting) for label files,
// predictions and result tables.
#ifndef FU_CORE_CSV_H
#define FU_CORE_CSV_H

#include <stddef.h>
#include <stdio.h>

typedef struct {
    FILE *f;
    const char *name;
    long line;      // 1-based number of the line last read
    char *buf;      // the fields, NUL-separated
    size_t cap;
    char **fields;
    int n, fcap;
} fu_csv;

int fu_csv_open(fu_csv *c, const char *path); // -1 + message
// 1 = a row (c->fields[0..n-1]), 0 = end, -1 = error. Blank lines are skipped.
int fu_csv_next(fu_csv *c);
void fu_csv_close(fu_csv *c);

// Writes one field, quoted (and its quotes doubled) when it holds a comma,
// a quote or a line break.
void fu_csv_put(FILE *f, const char *s, size_t n);

#endif
