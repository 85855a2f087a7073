// shard-pack: image files + labels -> a shard of their original bytes.
// Nothing is decoded (no loss); each header is probed so that a non-image
// fails here, at the start of the pipeline, with its path.
#include "core/csv.h"
#include "image/codec.h"
#include "shard/shard.h"
#include "toolkit.h"

#include <dirent.h>
#include <errno.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/stat.h>

static const char USAGE[] =
    "usage: shard-pack [--labels CSV] [-o OUT] [FILE|DIR...]\n"
    "Pack image files (PNG, JPEG, TIFF) into a shard, storing their original bytes.\n"
    "Labels come from a CSV `path,label[,split]` (paths relative to the CSV's folder;\n"
    "label 0..127 or normal/glaucoma; split train/val/test or empty), or from class\n"
    "folders while walking DIRs: 0/ 1/ or normal/ glaucoma/, optionally below a\n"
    "train/ val/ test/ level (the SMDG-19 layout). Files in folders are taken in\n"
    "name order; record ids are paths relative to the CSV or DIR, minus the extension.\n"
    "  --labels CSV   take the images and labels listed in CSV (no FILE/DIR then)\n"
    "  -o FILE        write to FILE (atomically) instead of stdout\n"
    "  -q, --quiet    no progress;  -h, --help;  --version\n"
    "example: shard-pack --labels data/acrima/labels.csv -o raw.shard\n";

enum { OPT_LABELS = TOOL_OPT_FIRST_FREE };
enum { MAX_FILE = 256 << 20 };

typedef struct {
    char *path; // to open
    char *id;
    int label;
    fu_split split;
} item;

typedef struct {
    item *v;
    size_t n, cap;
} item_list;

static void push(item_list *l, const char *path, const char *id, int label, fu_split split) {
    if (l->n == l->cap) {
        l->cap = l->cap ? 2 * l->cap : 256;
        l->v = realloc(l->v, l->cap * sizeof *l->v);
        if (!l->v) tool_die("out of memory");
    }
    l->v[l->n++] = (item){strdup(path), strdup(id), label, split};
}

static bool has_image_ext(const char *name) {
    const char *dot = strrchr(name, '.');
    if (!dot) return false;
    static const char *exts[] = {".png", ".jpg", ".jpeg", ".tif", ".tiff", ".jpe"};
    for (size_t i = 0; i < sizeof exts / sizeof *exts; i++)
        if (strcasecmp(dot, exts[i]) == 0) return true;
    return false;
}

// "images/Im001.jpg" -> "images/Im001"
static char *strip_ext(const char *path) {
    char *s = strdup(path);
    char *dot = strrchr(s, '.'), *slash = strrchr(s, '/');
    if (dot && (!slash || dot > slash + 1)) *dot = '\0';
    return s;
}

static int parse_label(const char *s) {
    if (!*s) return FU_LABEL_NONE;
    if (strcasecmp(s, "normal") == 0) return 0;
    if (strcasecmp(s, "glaucoma") == 0) return 1;
    char *end;
    long v = strtol(s, &end, 10);
    if (*end || end == s || v < 0 || v > 127) return -2;
    return (int)v;
}

static int folder_label(const char *name) {
    if (strcmp(name, "0") == 0 || strcasecmp(name, "normal") == 0) return 0;
    if (strcmp(name, "1") == 0 || strcasecmp(name, "glaucoma") == 0) return 1;
    return FU_LABEL_NONE;
}

static bool folder_split(const char *name, fu_split *s) {
    char lower[16];
    size_t n = strlen(name);
    if (n >= sizeof lower) return false;
    for (size_t i = 0; i <= n; i++) lower[i] = (char)(name[i] >= 'A' && name[i] <= 'Z' ? name[i] + 32 : name[i]);
    return *lower && fu_split_parse(lower, s) == 0;
}

static int cmp_str(const void *a, const void *b) { return strcmp(*(char *const *)a, *(char *const *)b); }

// Walk DIR in name order; `rel` is the path below the walk's root.
static void walk(item_list *l, const char *dir, const char *rel, int label, fu_split split) {
    DIR *d = opendir(dir);
    if (!d) tool_die("%s: cannot open folder: %s", dir, strerror(errno));
    char **names = NULL;
    size_t n = 0, cap = 0;
    struct dirent *e;
    while ((e = readdir(d))) {
        if (e->d_name[0] == '.') continue;
        if (n == cap) {
            cap = cap ? 2 * cap : 64;
            names = realloc(names, cap * sizeof *names);
            if (!names) tool_die("out of memory");
        }
        names[n++] = strdup(e->d_name);
    }
    closedir(d);
    qsort(names, n, sizeof *names, cmp_str);
    for (size_t i = 0; i < n; i++) {
        char path[4096], sub[4096];
        snprintf(path, sizeof path, "%s/%s", dir, names[i]);
        snprintf(sub, sizeof sub, "%s%s%s", rel, *rel ? "/" : "", names[i]);
        struct stat st;
        if (stat(path, &st) != 0) tool_die("%s: %s", path, strerror(errno));
        if (S_ISDIR(st.st_mode)) {
            int lab = folder_label(names[i]);
            fu_split sp = split;
            bool is_split = folder_split(names[i], &sp);
            walk(l, path, sub, lab != FU_LABEL_NONE ? lab : (is_split ? FU_LABEL_NONE : label), sp);
        } else if (S_ISREG(st.st_mode) && has_image_ext(names[i])) {
            char *id = strip_ext(sub);
            push(l, path, id, label, split);
            free(id);
        }
        free(names[i]);
    }
    free(names);
}

static void from_csv(item_list *l, const char *csv_path) {
    fu_csv c;
    if (fu_csv_open(&c, csv_path) < 0) tool_fail();
    char base[4096];
    snprintf(base, sizeof base, "%s", csv_path);
    char *slash = strrchr(base, '/');
    if (slash) slash[1] = '\0';
    else base[0] = '\0';
    int got;
    bool first = true;
    while ((got = fu_csv_next(&c)) == 1) {
        if (first && c.n >= 2 && strcasecmp(c.fields[0], "path") == 0) { // header row
            first = false;
            continue;
        }
        first = false;
        if (c.n < 2 || c.n > 3) tool_die("%s: line %ld: want path,label[,split], got %d fields", csv_path, c.line, c.n);
        int label = parse_label(c.fields[1]);
        if (label == -2) {
            fu_fail(csv_path, "line %ld: unknown label '%s'", c.line, c.fields[1]);
            fu_hint("labels are 0..127, normal or glaucoma");
            tool_fail();
        }
        fu_split split = FU_SPLIT_NONE;
        if (c.n == 3 && fu_split_parse(c.fields[2], &split) < 0)
            tool_die("%s: line %ld: unknown split '%s' (train, val, test or empty)", csv_path, c.line, c.fields[2]);
        if (!*c.fields[0]) tool_die("%s: line %ld: empty path", csv_path, c.line);
        char path[4096];
        snprintf(path, sizeof path, "%s%s", c.fields[0][0] == '/' ? "" : base, c.fields[0]);
        char *id = strip_ext(c.fields[0]);
        push(l, path, id, label, split);
        free(id);
    }
    if (got < 0) tool_fail();
    fu_csv_close(&c);
}

static uint8_t *read_file(const char *path, size_t *n) {
    FILE *f = fopen(path, "rb");
    if (!f) tool_die("%s: cannot open: %s", path, strerror(errno));
    struct stat st;
    if (fstat(fileno(f), &st) != 0 || !S_ISREG(st.st_mode)) tool_die("%s: not a regular file", path);
    if (st.st_size == 0) tool_die("%s: empty file", path);
    if (st.st_size > MAX_FILE) tool_die("%s: %lld bytes is too large for an image", path, (long long)st.st_size);
    uint8_t *buf = malloc((size_t)st.st_size);
    if (!buf) tool_die("out of memory");
    if (fread(buf, 1, (size_t)st.st_size, f) != (size_t)st.st_size) tool_die("%s: read failed", path);
    fclose(f);
    *n = (size_t)st.st_size;
    return buf;
}

static int cmp_id(const void *a, const void *b) { return strcmp(((const item *)a)->id, ((const item *)b)->id); }

static void check_unique_ids(const item_list *l) {
    item *sorted = malloc(l->n * sizeof *sorted);
    if (!sorted && l->n) tool_die("out of memory");
    memcpy(sorted, l->v, l->n * sizeof *sorted);
    qsort(sorted, l->n, sizeof *sorted, cmp_id);
    for (size_t i = 1; i < l->n; i++)
        if (strcmp(sorted[i - 1].id, sorted[i].id) == 0)
            tool_die("%s: two images would get the id '%s' (%s)", sorted[i].path, sorted[i].id, sorted[i - 1].path);
    free(sorted);
}

int main(int argc, char **argv) {
    tool_init("shard-pack", USAGE);
    static const struct option opts[] = {TOOL_COMMON_LONGOPTS, {"labels", required_argument, 0, OPT_LABELS}, {0, 0, 0, 0}};
    const char *labels = NULL;
    int c;
    while ((c = tool_getopt(argc, argv, TOOL_COMMON_SHORTOPTS, opts)) != -1) {
        if (c == OPT_LABELS) labels = optarg;
        else tool_usage_error("unexpected option");
    }
    if (labels && optind < argc) tool_usage_error("--labels takes the image list from the CSV; drop the FILE/DIR arguments");
    if (!labels && optind >= argc) tool_usage_error("no input: name image files or folders, or --labels CSV");

    item_list items = {0};
    if (labels) {
        from_csv(&items, labels);
    } else {
        for (int i = optind; i < argc; i++) {
            struct stat st;
            if (stat(argv[i], &st) != 0) tool_die("%s: cannot open: %s", argv[i], strerror(errno));
            if (S_ISDIR(st.st_mode)) {
                walk(&items, argv[i], "", FU_LABEL_NONE, FU_SPLIT_NONE);
            } else {
                const char *slash = strrchr(argv[i], '/');
                char *id = strip_ext(slash ? slash + 1 : argv[i]);
                push(&items, argv[i], id, FU_LABEL_NONE, FU_SPLIT_NONE);
                free(id);
            }
        }
    }
    if (items.n == 0) tool_die("%s: no images found", labels ? labels : argv[optind]);
    check_unique_ids(&items);

    FILE *out = tool_open_output(true);
    fu_shard_writer w;
    fu_shard_writer_init(&w, out, tool_output_name());
    fu_progress_start(&tool.progress, tool.name, tool.quiet);
    for (size_t i = 0; i < items.n; i++) {
        item *it = &items.v[i];
        size_t n;
        uint8_t *bytes = read_file(it->path, &n);
        fu_format fmt;
        uint32_t wd, ht, ch;
        if (fu_probe(bytes, n, &fmt, &wd, &ht, &ch) < 0) {
            fu_error_prefix("%s", it->path);
            tool_fail();
        }
        fu_record rec = {.kind = FU_KIND_ENCODED, .label = it->label, .split = it->split,
                         .height = ht, .width = wd, .channels = ch,
                         .id = it->id, .id_len = (uint32_t)strlen(it->id),
                         .payload = bytes, .payload_len = n};
        if (fu_shard_write(&w, &rec) < 0) tool_fail();
        free(bytes);
        fu_progress_add(&tool.progress, 1);
    }
    if (fu_shard_finish(&w) < 0) tool_fail();
    tool_commit_output();
    fu_progress_end(&tool.progress);
    for (size_t i = 0; i < items.n; i++) {
        free(items.v[i].path);
        free(items.v[i].id);
    }
    free(items.v);
    return 0;
}
