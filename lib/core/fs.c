#include "core/fs.h"

#include "core/error.h"

#include <errno.h>
#include <stdbool.h>
#include <stdio.h>
#include <string.h>
#include <sys/stat.h>

int fu_make_dirs(const char *path, void (*made)(const char *dir, void *ctx), void *ctx) {
    char p[4096];
    if (snprintf(p, sizeof p, "%s", path) >= (int)sizeof p) return fu_fail(path, "path too long");
    for (char *s = p + 1;; s++) {
        bool end = *s == '\0';
        if (*s == '/' || end) {
            *s = '\0';
            if (mkdir(p, 0777) == 0) {
                if (made) made(p, ctx);
            } else if (errno != EEXIST) {
                return fu_fail(p, "cannot create folder: %s", strerror(errno));
            }
            if (!end) *s = '/';
        }
        if (end) break;
    }
    struct stat st;
    if (stat(path, &st) != 0 || !S_ISDIR(st.st_mode)) return fu_fail(path, "exists and is not a folder");
    return 0;
}
