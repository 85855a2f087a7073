// The fuzzer's input as a file, for the readers that take a path.
#ifndef TESTS_FUZZ_INPUT_FILE_H
#define TESTS_FUZZ_INPUT_FILE_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <unistd.h>

// Writes data to a new temporary file, its name into path (a mkstemp
// template); false when that fails (the input is skipped). The caller
// unlinks it.
static inline bool fuzz_input_file(const uint8_t *data, size_t size, char *path) {
    int fd = mkstemp(path);
    if (fd < 0) return false;
    bool ok = write(fd, data, size) == (ssize_t)size;
    close(fd);
    if (!ok) unlink(path);
    return ok;
}

#endif
