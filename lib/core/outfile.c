#include "core/outfile.h"

#include "core/error.h"

#include <errno.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

static bool is_stdout(const char *path) { return !path || strcmp(path, "-") == 0; }

int fu_out_open(fu_outfile *o, const char *path, bool binary) {
    memset(o, 0, sizeof *o);
    if (is_stdout(path)) {
        if (binary && isatty(STDOUT_FILENO)) {
            fu_fail("stdout", "refusing to write binary data to a terminal");
            fu_hint("redirect to a file or pipe, or use -o FILE");
            return -1;
        }
        o->f = stdout;
        return 0;
    }
    size_t n = strlen(path);
    o->path = fu_malloc(n + 1);
    o->tmp = fu_malloc(n + 16);
    if (!o->path || !o->tmp) goto fail;
    memcpy(o->path, path, n + 1);
    snprintf(o->tmp, n + 16, "%s.tmp.XXXXXX", path);
    int fd = mkstemp(o->tmp);
    if (fd < 0) {
        fu_fail(path, "cannot create output: %s", strerror(errno));
        free(o->tmp);
        o->tmp = NULL;
        goto fail;
    }
    // mkstemp makes 0600; give the file the permissions a plain fopen would.
    mode_t mask = umask(0);
    umask(mask);
    fchmod(fd, 0666 & ~mask);
    o->f = fdopen(fd, "wb");
    if (!o->f) {
        fu_fail(path, "cannot open output: %s", strerror(errno));
        close(fd);
        goto fail;
    }
    return 0;
fail:
    fu_out_abort(o);
    return -1;
}

int fu_out_commit(fu_outfile *o) {
    const char *name = o->path ? o->path : "stdout";
    if (!o->f) return fu_fail(name, "output already closed");
    int bad = fflush(o->f) != 0 || ferror(o->f);
    int err = errno;
    if (o->f == stdout) {
        o->f = NULL;
        if (bad) return fu_fail(name, "write failed: %s", strerror(err));
        return 0;
    }
    if (fclose(o->f) != 0 && !bad) {
        bad = 1;
        err = errno;
    }
    o->f = NULL;
    if (bad) {
        fu_fail(name, "write failed: %s", strerror(err));
        fu_out_abort(o);
        return -1;
    }
    if (rename(o->tmp, o->path) != 0) {
        fu_fail(name, "cannot rename %s into place: %s", o->tmp, strerror(errno));
        fu_out_abort(o);
        return -1;
    }
    free(o->tmp);
    free(o->path);
    o->tmp = o->path = NULL;
    return 0;
}

void fu_out_abort(fu_outfile *o) {
    if (o->f && o->f != stdout) fclose(o->f);
    if (o->f == stdout) fflush(stdout);
    o->f = NULL;
    if (o->tmp) unlink(o->tmp);
    free(o->tmp);
    free(o->path);
    o->tmp = o->path = NULL;
}

int fu_write_file_atomic(const char *path, const void *data, size_t n) {
    fu_outfile o;
    if (fu_out_open(&o, path, false) < 0) return -1;
    if (n && fwrite(data, 1, n, o.f) != n) {
        fu_fail(path, "write failed: %s", strerror(errno));
        fu_out_abort(&o);
        return -1;
    }
    return fu_out_commit(&o);
}
