// lib/cuda/conv_algos: the record of measured convolution algorithms. A
// missing file has no records; what is saved loads back; a save merges with
// what another process recorded meanwhile (its record of a shared key wins);
// nothing is written without new records; malformed files and keys are
// refused naming the line; no temporary file is left behind.
#include "check.h"
#include "core/error.h"
#include "cuda/conv_algos.h"

#include <dirent.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

static char dir[] = "/tmp/fu-conv-algos-XXXXXX";

static void write_text(const char *path, const char *text) {
    FILE *f = fopen(path, "w");
    if (f) fputs(text, f), fclose(f);
}

static int files_in_dir(void) {
    DIR *d = opendir(dir);
    int n = 0;
    for (struct dirent *e; d && (e = readdir(d));) n += e->d_name[0] != '.';
    if (d) closedir(d);
    return n;
}

static bool same(const fu_algo_rec *r, const int v[6]) { return r && !memcmp(r->v, v, sizeof r->v); }

static void check_round_trip(const char *path) {
    fu_algo_file f;
    static const int a[6] = {1, 3, 0, 1, 5, 2}, b[6] = {6, 1, -3, 1, 3, 1};
    bool ok = fu_algo_load(&f, path) == 0;
    CHECK(ok && f.n == 0, "a missing file: no records", "rc %d n %d: %s", ok, f.n, fu_error());
    if (!ok) return;
    ok = fu_algo_add(&f, "GPU:sm_90:cudnn91900:fp16:32x64x56x56:64x3x3:s1p1d1", a) == 0 &&
         fu_algo_add(&f, "GPU:sm_90:cudnn91900:fp16:32x3x224x224:64x7x7:s2p3d1", b) == 0 && fu_algo_save(&f) == 0;
    CHECK(ok && f.added == 0 && files_in_dir() == 1, "two records saved, no temporary file left", "%s",
          fu_error());
    fu_algo_free(&f);
    ok = fu_algo_load(&f, path) == 0;
    CHECK(ok && f.n == 2 && same(fu_algo_find(&f, "GPU:sm_90:cudnn91900:fp16:32x64x56x56:64x3x3:s1p1d1"), a) &&
              same(fu_algo_find(&f, "GPU:sm_90:cudnn91900:fp16:32x3x224x224:64x7x7:s2p3d1"), b) &&
              !fu_algo_find(&f, "GPU:sm_90:cudnn91900:fp32:32x64x56x56:64x3x3:s1p1d1"),
          "loaded back: both records, nothing else", "n %d: %s", f.n, fu_error());
    fu_algo_free(&f);
}

// Two loads of the same file, each adding records, saved one after the other.
static void check_merge(const char *path) {
    fu_algo_file p, q;
    static const int mine[6] = {2, 1, 1, 1, 1, 1}, theirs[6] = {0, 1, 0, 1, 0, 1}, other[6] = {4, 2, 4, 2, 4, 2};
    if (!CHECK(fu_algo_load(&p, path) == 0 && fu_algo_load(&q, path) == 0, "two loads", "%s", fu_error())) return;
    bool ok = fu_algo_add(&q, "shared", theirs) == 0 && fu_algo_save(&q) == 0 && fu_algo_add(&p, "shared", mine) == 0 &&
              fu_algo_add(&p, "only-p", other) == 0 && fu_algo_save(&p) == 0;
    CHECK(ok && p.n == 4 && same(fu_algo_find(&p, "shared"), theirs) && same(fu_algo_find(&p, "only-p"), other),
          "a save keeps what another process recorded meanwhile, its record of a shared key first", "n %d: %s",
          p.n, fu_error());
    fu_algo_free(&p), fu_algo_free(&q);
    struct stat before, after;
    ok = stat(path, &before) == 0 && fu_algo_load(&p, path) == 0 && fu_algo_save(&p) == 0 && stat(path, &after) == 0;
    CHECK(ok && before.st_ino == after.st_ino && p.n == 4, "nothing added: the file is not rewritten",
          "inode %lu -> %lu", (unsigned long)before.st_ino, (unsigned long)after.st_ino);
    CHECK(fu_algo_add(&p, "shared", mine) < 0 && strstr(fu_error(), "must be new") &&
              fu_algo_add(&p, "two words", mine) < 0 && fu_algo_add(&p, "", mine) < 0,
          "a key recorded already, one with a blank, an empty one: refused", "%s", fu_error());
    fu_algo_free(&p);
}

static void check_malformed(const char *path) {
    static const struct {
        const char *text, *want;
    } cases[] = {
        {"# comment\nkey 1 2 3 4 5\n", ":2: expected a key and six numbers"},
        {"key 1 2 3 4 5 6 7\n", ":1: expected a key and six numbers"},
        {"\nkey 1 2 x 4 5 6\n", ":2: expected a key and six numbers"},
        {"key 1 2 3 4 5 99999999999\n", ":1: expected a key and six numbers"},
        {"a 1 2 3 4 5 6\nb 1 2 3 4 5 6\na 1 2 3 4 5 6\n", ":3: the key is recorded twice"},
    };
    for (size_t i = 0; i < sizeof cases / sizeof *cases; i++) {
        write_text(path, cases[i].text);
        fu_algo_file f;
        int rc = fu_algo_load(&f, path);
        char name[96];
        snprintf(name, sizeof name, "malformed file %zu refused: '%s'", i + 1, cases[i].want);
        CHECK(rc < 0 && strstr(fu_error(), path) && strstr(fu_error(), cases[i].want) && f.n == 0 && !f.rec, name,
              "rc %d: %s", rc, fu_error());
    }
    char key[FU_ALGO_KEY + 8];
    memset(key, 'k', sizeof key - 1);
    key[sizeof key - 1] = '\0';
    char text[sizeof key + 32];
    snprintf(text, sizeof text, "%s 1 2 3 4 5 6\n", key);
    write_text(path, text);
    fu_algo_file f;
    CHECK(fu_algo_load(&f, path) < 0 && strstr(fu_error(), ":1: the key is too long"), "a key too long: refused",
          "%s", fu_error());
    unlink(path);
}

int main(void) {
    if (!mkdtemp(dir)) return perror("mkdtemp"), 1;
    char path[sizeof dir + 16];
    snprintf(path, sizeof path, "%s/algos.txt", dir);
    check_round_trip(path);
    check_merge(path);
    check_malformed(path);
    fu_algo_file f;
    char in_missing[sizeof dir + 32];
    snprintf(in_missing, sizeof in_missing, "%s/no/such/algos.txt", dir);
    static const int v[6] = {0};
    CHECK(fu_algo_load(&f, in_missing) == 0 && fu_algo_add(&f, "k", v) == 0 && fu_algo_save(&f) < 0 &&
              strstr(fu_error(), in_missing),
          "a file in a missing folder: loads empty, the save fails naming it", "%s", fu_error());
    fu_algo_free(&f);
    CHECK(files_in_dir() == 0, "nothing left behind", "%d files", files_in_dir());
    rmdir(dir);
    return check_done();
}
