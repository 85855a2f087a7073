// Atomic output: a named file is written as FILE.tmp.XXXXXX and renamed into
// place only on commit, so a failed run never leaves a half-written FILE.
// Standard output ("-" or NULL) is written directly; binary data is refused
// when stdout is a terminal.
#ifndef FU_CORE_OUTFILE_H
#define FU_CORE_OUTFILE_H

#include <stdbool.h>
#include <stdio.h>

typedef struct {
    FILE *f;
    char *path; // final name, NULL for stdout
    char *tmp;  // temporary name, NULL for stdout
} fu_outfile;

int fu_out_open(fu_outfile *o, const char *path, bool binary);
int fu_out_commit(fu_outfile *o); // flush, close, rename; aborts on failure
void fu_out_abort(fu_outfile *o); // close and unlink the temporary (idempotent)

// Write a whole buffer to a named file atomically (small side outputs).
int fu_write_file_atomic(const char *path, const void *data, size_t n);

#endif
