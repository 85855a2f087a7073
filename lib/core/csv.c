#include "core/csv.h"

#include "core/error.h"

#include <errno.h>
#include <stdbool.h>
#include <stdlib.h>
#include <string.h>

int fu_csv_open(fu_csv *c, const char *path) {
    memset(c, 0, sizeof *c);
    c->name = path;
    c->f = fopen(path, "rb");
    if (!c->f) return fu_fail(path, "cannot open: %s", strerror(errno));
    return 0;
}

void fu_csv_close(fu_csv *c) {
    if (c->f) fclose(c->f);
    free(c->buf);
    free(c->fields);
    memset(c, 0, sizeof *c);
}

static int push_char(fu_csv *c, size_t *len, char ch) {
    if (*len + 1 >= c->cap) {
        size_t cap = c->cap ? 2 * c->cap : 256;
        if (cap > (1u << 24)) return fu_fail(c->name, "line %ld is longer than 16 MiB", c->line);
        char *b = fu_realloc(c->buf, cap);
        if (!b) return -1;
        c->buf = b;
        c->cap = cap;
    }
    c->buf[(*len)++] = ch;
    return 0;
}

int fu_csv_next(fu_csv *c) {
    for (;;) {
        size_t len = 0;
        int nfields = 1, ch, quoted = 0, any = 0;
        c->line++;
        while ((ch = fgetc(c->f)) != EOF) {
            any = 1;
            if (quoted) {
                if (ch == '"') {
                    int next = fgetc(c->f);
                    if (next == '"') {
                        if (push_char(c, &len, '"') < 0) return -1;
                        continue;
                    }
                    quoted = 0;
                    if (next == EOF) break;
                    ch = next;
                } else {
                    if (ch == '\n') c->line++;
                    if (push_char(c, &len, (char)ch) < 0) return -1;
                    continue;
                }
            }
            if (ch == '"') {
                quoted = 1;
            } else if (ch == ',') {
                if (push_char(c, &len, '\0') < 0) return -1;
                nfields++;
            } else if (ch == '\n') {
                break;
            } else if (ch != '\r') {
                if (push_char(c, &len, (char)ch) < 0) return -1;
            }
        }
        if (ferror(c->f)) return fu_fail(c->name, "read failed: %s", strerror(errno));
        if (quoted) return fu_fail(c->name, "line %ld: unterminated quoted field", c->line);
        if (!any) return 0;
        if (len == 0 && nfields == 1) {
            if (ch == EOF) return 0;
            continue; // blank line
        }
        if (push_char(c, &len, '\0') < 0) return -1;
        if (nfields > c->fcap) {
            char **f = fu_realloc(c->fields, (size_t)nfields * sizeof *f);
            if (!f) return -1;
            c->fields = f;
            c->fcap = nfields;
        }
        char *p = c->buf;
        for (int i = 0; i < nfields; i++) {
            c->fields[i] = p;
            p += strlen(p) + 1;
        }
        c->n = nfields;
        return 1;
    }
}

void fu_csv_put(FILE *f, const char *s, size_t n) {
    bool quote = memchr(s, ',', n) || memchr(s, '"', n) || memchr(s, '\n', n) || memchr(s, '\r', n);
    if (!quote) {
        fwrite(s, 1, n, f);
        return;
    }
    fputc('"', f);
    for (size_t i = 0; i < n; i++) {
        if (s[i] == '"') fputc('"', f);
        fputc(s[i], f);
    }
    fputc('"', f);
}
