// shard-unpack: records back to image files. Every record (encoded or pixels)
// is decoded and written as a lossless PNG named after its id, plus
// DIR/labels.csv `file,id,label,split`. Batches are converted in parallel;
// names are given in stream order, so the folder is the same for any --threads.
#include "image/codec.h"
#include "image/record_image.h"
#include "shard/shard.h"
#include "toolkit.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

static const char USAGE[] =
    "usage: shard-unpack --dir DIR [SHARD...]\n"
    "Write each record of the shards (stdin when none is named) as DIR/NAME.png, where NAME is\n"
    "the record's id with characters other than letters, digits and . _ - + # = turned into _\n"
    "(so images/Im001 -> images_Im001.png); a name already used gets -2, -3, ... . Encoded\n"
    "records are decoded and re-encoded as PNG (lossless from the decoded pixels). Then\n"
    "DIR/labels.csv lists file,id,label,split. After an error, the files (and folders) this\n"
    "run made are removed again.\n"
    "  --dir DIR     output folder, created if missing (required)\n"
    "  --threads N   convert on N threads (default: all cores)\n"
    "  -q, --quiet   no progress;  -h, --help;  --version\n"
    "example: fundus-synth --count 8 | fundus-augment | shard-unpack --dir /tmp/look\n";

enum { OPT_DIR = TOOL_OPT_FIRST_FREE };
enum { NAME_MAX_BYTES = 200 };

typedef struct {
    fu_record rec;
    uint8_t *copy; // id + payload when the reader streams
    size_t cap;
    char *name;    // file name in DIR
    int failed;
    char msg[1024], hint[512];
} job;

// ---- unique file names ------------------------------------------------------

typedef struct {
    char **slot;
    size_t cap, n;
} name_set;

static uint64_t hash(const char *s) {
    uint64_t h = 1469598103934665603ull; // FNV-1a
    for (; *s; s++) h = (h ^ (uint8_t)*s) * 1099511628211ull;
    return h;
}

static bool set_has(const name_set *s, const char *name) {
    if (!s->cap) return false;
    for (size_t i = hash(name) & (s->cap - 1); s->slot[i]; i = (i + 1) & (s->cap - 1))
        if (strcmp(s->slot[i], name) == 0) return true;
    return false;
}

static void set_add(name_set *s, char *name) {
    if (2 * (s->n + 1) > s->cap) {
        name_set bigger = {calloc(s->cap ? 2 * s->cap : 1024, sizeof(char *)), s->cap ? 2 * s->cap : 1024, 0};
        if (!bigger.slot) tool_die("out of memory");
        for (size_t i = 0; i < s->cap; i++)
            if (s->slot[i]) set_add(&bigger, s->slot[i]);
        free(s->slot);
        *s = bigger;
    }
    size_t i = hash(name) & (s->cap - 1);
    while (s->slot[i]) i = (i + 1) & (s->cap - 1);
    s->slot[i] = name;
    s->n++;
}

// The file name for an id: safe characters only, unique within this run.
static char *file_name(name_set *used, const char *id, uint32_t id_len) {
    char base[NAME_MAX_BYTES + 1];
    size_t n = id_len < NAME_MAX_BYTES ? id_len : NAME_MAX_BYTES;
    for (size_t i = 0; i < n; i++) {
        char ch = id[i];
        bool safe = (ch >= 'a' && ch <= 'z') || (ch >= 'A' && ch <= 'Z') || (ch >= '0' && ch <= '9') ||
                    strchr("._-+#=", ch);
        base[i] = safe && ch ? ch : '_';
    }
    base[n] = '\0';
    if (n == 0) snprintf(base, sizeof base, "record");
    if (base[0] == '.') base[0] = '_'; // no hidden files, no "." or ".."
    char name[NAME_MAX_BYTES + 32];
    snprintf(name, sizeof name, "%s.png", base);
    for (unsigned k = 2; set_has(used, name); k++) snprintf(name, sizeof name, "%s-%u.png", base, k);
    char *s = strdup(name);
    if (!s) tool_die("out of memory");
    set_add(used, s);
    return s;
}

// ---- conversion ---------------------------------------------------------------

static int convert(const char *dir, const job *j) {
    fu_image im;
    if (fu_record_to_image(&j->rec, 0, &im) < 0) return -1;
    uint8_t *png;
    size_t n;
    int rc = fu_encode_png(&im, 6, &png, &n);
    fu_image_free(&im);
    if (rc < 0) return -1;
    char path[4096];
    snprintf(path, sizeof path, "%s/%s", dir, j->name);
    rc = fu_write_file_atomic(path, png, n);
    free(png);
    return rc;
}

// Keep a private copy of a streamed record, whose bytes the reader reuses.
static void hold(job *j, const fu_record *rec, bool mapped) {
    j->rec = *rec;
    if (mapped) return;
    size_t need = rec->id_len + rec->payload_len;
    if (need > j->cap) {
        free(j->copy);
        j->copy = malloc(need);
        if (!j->copy) tool_die("out of memory");
        j->cap = need;
    }
    memcpy(j->copy, rec->id, rec->id_len);
    memcpy(j->copy + rec->id_len, rec->payload, rec->payload_len);
    j->rec.id = (const char *)j->copy;
    j->rec.payload = j->copy + rec->id_len;
}

// What this run created, so that a failure can take it back: the folders
// (deepest last) and the image files written so far.
static struct {
    char *dirs[64];
    int n_dirs;
    char **files;
    size_t n_files, cap_files;
} made;

static void remember_file(const char *dir, const char *name) {
    if (made.n_files == made.cap_files) {
        made.cap_files = made.cap_files ? 2 * made.cap_files : 256;
        made.files = realloc(made.files, made.cap_files * sizeof *made.files);
        if (!made.files) tool_die("out of memory");
    }
    char path[4096];
    snprintf(path, sizeof path, "%s/%s", dir, name);
    made.files[made.n_files++] = strdup(path);
}

static noreturn void fail_and_undo(void) {
    for (size_t i = 0; i < made.n_files; i++) unlink(made.files[i]);
    for (int i = made.n_dirs - 1; i >= 0; i--) rmdir(made.dirs[i]);
    tool_fail();
}

static void make_dirs(const char *path) {
    char p[4096];
    snprintf(p, sizeof p, "%s", path);
    for (char *s = p + 1;; s++) {
        bool end = *s == '\0';
        if (*s == '/' || end) {
            *s = '\0';
            if (mkdir(p, 0777) == 0) {
                if (made.n_dirs < 64) made.dirs[made.n_dirs++] = strdup(p);
            } else if (errno != EEXIST) {
                fu_fail(p, "cannot create folder: %s", strerror(errno));
                fail_and_undo();
            }
            if (!end) *s = '/';
        }
        if (end) break;
    }
    struct stat st;
    if (stat(path, &st) != 0 || !S_ISDIR(st.st_mode)) {
        fu_fail(path, "exists and is not a folder");
        fail_and_undo();
    }
}

static void csv_field(FILE *f, const char *p, size_t n) {
    bool quote = memchr(p, ',', n) || memchr(p, '"', n) || memchr(p, '\n', n) || memchr(p, '\r', n);
    if (quote) fputc('"', f);
    for (size_t i = 0; i < n; i++) {
        if (p[i] == '"') fputc('"', f);
        fputc(p[i], f);
    }
    if (quote) fputc('"', f);
}

int main(int argc, char **argv) {
    tool_init("shard-unpack", USAGE);
    static const struct option opts[] = {TOOL_COMMON_LONGOPTS, {"dir", required_argument, 0, OPT_DIR}, {0, 0, 0, 0}};
    const char *dir = NULL;
    int c;
    while ((c = tool_getopt(argc, argv, TOOL_COMMON_SHORTOPTS, opts)) != -1) {
        if (c == OPT_DIR) dir = optarg;
        else tool_usage_error("unexpected option");
    }
    if (!dir) tool_usage_error("--dir: required (the folder to write the images to)");
    if (tool.out_path) tool_usage_error("-o: shard-unpack writes files into --dir");
    static const char *const stdin_only[] = {"-"};
    const char *const *inputs = optind < argc ? (const char *const *)argv + optind : stdin_only;
    int n_inputs = optind < argc ? argc - optind : 1;

    char *csv_buf = NULL;
    size_t csv_len = 0;
    FILE *csv = open_memstream(&csv_buf, &csv_len);
    if (!csv) tool_die("out of memory");
    fprintf(csv, "file,id,label,split\n");
    name_set used = {0};
    int batch = 4 * tool.threads;
    job *jobs = calloc((size_t)batch, sizeof *jobs);
    if (!jobs) tool_die("out of memory");
    bool dir_made = false;
    fu_progress_start(&tool.progress, tool.name, tool.quiet);
    for (int f = 0; f < n_inputs; f++) {
        fu_shard_reader *r = fu_shard_open(inputs[f]);
        if (!r) fail_and_undo();
        bool mapped = fu_shard_is_mapped(r);
        int got = 0;
        do {
            int n = 0;
            fu_record rec;
            while (n < batch && (got = fu_shard_next(r, &rec, true)) == 1) {
                hold(&jobs[n], &rec, mapped);
                jobs[n].name = file_name(&used, rec.id, rec.id_len);
                n++;
            }
            if (got < 0) fail_and_undo(); // before converting: a broken input leaves nothing
            if (n > 0 && !dir_made) {
                make_dirs(dir); // only now, so that unreadable input leaves no folder
                dir_made = true;
            }
#pragma omp parallel for schedule(dynamic, 1) num_threads(tool.threads)
            for (int i = 0; i < n; i++) {
                job *j = &jobs[i];
                fu_clear_error();
                j->failed = convert(dir, j) < 0;
                if (j->failed) {
                    snprintf(j->msg, sizeof j->msg, "%s", fu_error());
                    snprintf(j->hint, sizeof j->hint, "%s", fu_error_hint());
                }
            }
            for (int i = 0; i < n; i++)
                if (!jobs[i].failed) remember_file(dir, jobs[i].name);
            for (int i = 0; i < n; i++) {
                job *j = &jobs[i];
                if (j->failed) {
                    fu_set_error(j->msg, j->hint);
                    fail_and_undo();
                }
                fprintf(csv, "%s,", j->name);
                csv_field(csv, j->rec.id, j->rec.id_len);
                if (j->rec.label == FU_LABEL_NONE) fprintf(csv, ",");
                else fprintf(csv, ",%d", j->rec.label);
                fprintf(csv, ",%s\n", fu_split_name(j->rec.split));
                fu_progress_add(&tool.progress, 1);
            }
        } while (got == 1);
        fu_shard_close(r);
    }
    fu_progress_end(&tool.progress);
    if (!dir_made) make_dirs(dir);
    if (fclose(csv) != 0) tool_die("out of memory");
    char path[4096];
    snprintf(path, sizeof path, "%s/labels.csv", dir);
    if (fu_write_file_atomic(path, csv_buf, csv_len) < 0) fail_and_undo();
    for (int i = 0; i < batch; i++) free(jobs[i].copy);
    free(jobs);
    free(csv_buf);
    return 0;
}
