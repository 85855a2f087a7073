// shard-unpack: records back to image files. Every record (encoded or pixels)
// is decoded and written as a lossless PNG named after its id, plus
// DIR/labels.csv `file,id,label,split`. Records are converted to PNG bytes in
// parallel (fu_map_run); files are named and written in stream order by the
// sink, so the folder is the same for any --threads.
#include "core/fs.h"
#include "image/codec.h"
#include "image/record_image.h"
#include "shard/mapper.h"
#include "shard/shard.h"
#include "core/csv.h"
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

// ---- conversion (worker threads) ------------------------------------------------

// Any record -> an encoded record holding the PNG file's bytes.
static int to_png(void *ctx, const fu_record *in, uint64_t index, fu_emitter *out) {
    fu_image im;
    if (fu_record_to_image(in, 0, &im) < 0) return -1;
    uint8_t *png;
    size_t n;
    int rc = fu_encode_png(&im, 6, &png, &n);
    if (rc == 0) {
        fu_record r = fu_image_record(in, &im);
        r.kind = FU_KIND_ENCODED;
        r.payload = png;
        r.payload_len = n;
        rc = fu_emit(out, &r);
        free(png);
    }
    fu_image_free(&im);
    return rc;
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

static void remember_dir(const char *dir, void *ctx) {
    if (made.n_dirs < 64) made.dirs[made.n_dirs++] = strdup(dir);
}

static void make_dirs(const char *path) {
    if (fu_make_dirs(path, remember_dir, NULL) < 0) fail_and_undo();
}

// ---- writing (main thread, stream order) -------------------------------------------

typedef struct {
    const char *dir;
    bool dir_made;
    name_set used;
    FILE *csv; // labels.csv, in memory until the end
} sink_state;

static int write_png(void *ctx, const fu_record *rec) {
    sink_state *st = ctx;
    if (!st->dir_made) { // only now, so that unreadable input leaves no folder
        make_dirs(st->dir);
        st->dir_made = true;
    }
    char *name = file_name(&st->used, rec->id, rec->id_len);
    char path[4096];
    snprintf(path, sizeof path, "%s/%s", st->dir, name);
    if (fu_write_file_atomic(path, rec->payload, rec->payload_len) < 0) return -1;
    remember_file(st->dir, name);
    fprintf(st->csv, "%s,", name);
    fu_csv_put(st->csv, rec->id, rec->id_len);
    if (rec->label == FU_LABEL_NONE) fprintf(st->csv, ",");
    else fprintf(st->csv, ",%d", rec->label);
    fprintf(st->csv, ",%s\n", fu_split_name(rec->split));
    return 0;
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
    sink_state st = {.dir = dir, .csv = open_memstream(&csv_buf, &csv_len)};
    if (!st.csv) tool_die("out of memory");
    fprintf(st.csv, "file,id,label,split\n");
    fu_progress_start(&tool.progress, tool.name, tool.quiet);
    fu_map_opts mo = {.inputs = inputs, .n_inputs = n_inputs, .sink = write_png, .sink_ctx = &st,
                      .threads = tool.threads, .fn = to_png, .verify = true, .progress = &tool.progress};
    if (fu_map_run(&mo) < 0) fail_and_undo();
    fu_progress_end(&tool.progress);
    if (!st.dir_made) make_dirs(dir);
    if (fclose(st.csv) != 0) tool_die("out of memory");
    char path[4096];
    snprintf(path, sizeof path, "%s/labels.csv", dir);
    if (fu_write_file_atomic(path, csv_buf, csv_len) < 0) fail_and_undo();
    free(csv_buf);
    return 0;
}
