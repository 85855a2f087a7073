// The shard format: round trips through files and pipes, concatenation,
// random access, and every kind of damage reported with its byte offset.
#include "check.h"

#include "core/error.h"
#include "shard/mapper.h"
#include "shard/shard.h"

#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <unistd.h>

enum { N = 7 };

static fu_record make_record(int i, uint8_t *pixels) {
    static char ids[N][16];
    snprintf(ids[i], sizeof ids[i], "img-%d", i);
    uint32_t w = 3 + (uint32_t)i, h = 2 + (uint32_t)i;
    for (uint32_t k = 0; k < w * h * 3; k++) pixels[k] = (uint8_t)(k * 7 + (uint32_t)i);
    return (fu_record){.kind = FU_KIND_PIXELS, .label = i % 2, .split = (fu_split)(i % 4),
                       .height = h, .width = w, .channels = 3, .id = ids[i],
                       .id_len = (uint32_t)strlen(ids[i]), .payload = pixels, .payload_len = w * h * 3};
}

static char *write_shard(const char *path, int n) {
    FILE *f = fopen(path, "wb");
    fu_shard_writer w;
    fu_shard_writer_init(&w, f, path);
    static uint8_t px[N][4096];
    for (int i = 0; i < n; i++) {
        fu_record r = make_record(i, px[i]);
        fu_shard_write(&w, &r);
    }
    fu_shard_finish(&w);
    fclose(f);
    return strdup(path);
}

static long file_size(const char *p) {
    FILE *f = fopen(p, "rb");
    fseek(f, 0, SEEK_END);
    long n = ftell(f);
    fclose(f);
    return n;
}

// Reads all records; returns count or -1. Checks content against make_record.
static int read_all(const char *path, int *mismatch) {
    fu_shard_reader *r = fu_shard_open(path);
    if (!r) return -1;
    fu_record rec;
    int n = 0, got;
    static uint8_t px[4096];
    while ((got = fu_shard_next(r, &rec, true)) == 1) {
        fu_record want = make_record(n % N, px);
        if (rec.kind != want.kind || rec.label != want.label || rec.split != want.split ||
            rec.width != want.width || rec.height != want.height || rec.id_len != want.id_len ||
            memcmp(rec.id, want.id, want.id_len) || rec.payload_len != want.payload_len ||
            memcmp(rec.payload, want.payload, want.payload_len))
            (*mismatch)++;
        n++;
    }
    fu_shard_close(r);
    return got < 0 ? -1 : n;
}

static void corrupt(const char *src, const char *dst, long at, uint8_t xor_byte, long truncate_to) {
    FILE *f = fopen(src, "rb");
    long n = file_size(src);
    uint8_t *b = malloc((size_t)n);
    fread(b, 1, (size_t)n, f);
    fclose(f);
    if (at >= 0) b[at] ^= xor_byte;
    f = fopen(dst, "wb");
    fwrite(b, 1, truncate_to >= 0 ? (size_t)truncate_to : (size_t)n, f);
    fclose(f);
    free(b);
}

static int expect_error(const char *path, const char *needle, char *msg, size_t cap) {
    int mismatch = 0;
    fu_clear_error();
    int n = read_all(path, &mismatch);
    snprintf(msg, cap, "%s", fu_error());
    return n < 0 && strstr(fu_error(), needle) != NULL;
}

// Pipe mode: feed the file through a pipe as stdin of a forked reader.
static int read_through_pipe(const char *path) {
    int fds[2];
    if (pipe(fds) != 0) return -1;
    pid_t pid = fork();
    if (pid == 0) {
        close(fds[1]);
        dup2(fds[0], 0);
        int mismatch = 0;
        int n = read_all("-", &mismatch);
        _exit(n == 2 * N && mismatch == 0 ? 0 : 1);
    }
    close(fds[0]);
    FILE *f = fopen(path, "rb");
    char buf[4096];
    size_t got;
    while ((got = fread(buf, 1, sizeof buf, f)) > 0) write(fds[1], buf, got);
    fclose(f);
    close(fds[1]);
    int status;
    waitpid(pid, &status, 0);
    return WIFEXITED(status) ? WEXITSTATUS(status) : -1;
}

static int double_index(void *ctx, const fu_record *in, uint64_t index, fu_emitter *out) {
    (void)ctx;
    // Emit index%3 copies so the output order and counts depend on the input.
    for (uint64_t k = 0; k < index % 3; k++)
        if (fu_emit(out, in) < 0) return -1;
    if (index == 1000) return fu_fail("test", "never");
    return 0;
}

int main(void) {
    char dir[] = "/tmp/test_shard.XXXXXX";
    if (!mkdtemp(dir)) return 1;
    char a[256], b[256], cat[256], bad[256], msg[1024];
    snprintf(a, sizeof a, "%s/a.shard", dir);
    snprintf(b, sizeof b, "%s/b.shard", dir);
    snprintf(cat, sizeof cat, "%s/cat.shard", dir);
    snprintf(bad, sizeof bad, "%s/bad.shard", dir);
    free(write_shard(a, N));
    free(write_shard(b, N));

    int mismatch = 0;
    CHECK(read_all(a, &mismatch) == N && mismatch == 0, "round trip through a mapped file", "%s", fu_error());
    CHECK(file_size(a) % 64 == 0, "file length is a multiple of 64", "%ld", file_size(a));

    char cmd[1024];
    snprintf(cmd, sizeof cmd, "cat %s %s > %s", a, b, cat);
    system(cmd);
    mismatch = 0;
    CHECK(read_all(cat, &mismatch) == 2 * N && mismatch == 0, "concatenated shards read as one", "%s", fu_error());
    CHECK(read_through_pipe(cat) == 0, "concatenated shards read through a pipe", "child failed");

    fu_shard_reader *r = fu_shard_open(cat);
    fu_shard_index idx;
    int ok = fu_shard_build_index(r, &idx) == 0 && idx.count == 2 * N;
    CHECK(ok, "index of a concatenated file", "%s", fu_error());
    fu_record rec;
    ok = ok && fu_shard_read_at(r, idx.offsets[N + 3], &rec, true) == 0 && rec.id_len == 5 &&
         memcmp(rec.id, "img-3", 5) == 0;
    CHECK(ok, "random access by index", "%s", fu_error());
    CHECK(fu_shard_read_at(r, idx.offsets[1] + 64, &rec, false) < 0, "random access to a non-record fails", "accepted");
    fu_shard_index_free(&idx);
    fu_shard_close(r);

    long first_payload = 64 + 64 + 64; // stream header, record header, padded id
    corrupt(a, bad, first_payload + 5, 0x10, -1);
    CHECK(expect_error(bad, "byte 64", msg, sizeof msg) && strstr(msg, "payload CRC mismatch"),
          "flipped payload byte is caught with its record's offset", "%s", msg);
    corrupt(a, bad, 64 + 9, 0x01, -1);
    CHECK(expect_error(bad, "corrupt record header at byte 64", msg, sizeof msg), "flipped header byte is caught", "%s", msg);
    corrupt(a, bad, 0, 0xff, -1);
    CHECK(expect_error(bad, "not a shard", msg, sizeof msg), "wrong magic", "%s", msg);
    corrupt(a, bad, -1, 0, file_size(a) - 64);
    CHECK(expect_error(bad, "without an end record", msg, sizeof msg), "missing end record = truncated", "%s", msg);
    corrupt(a, bad, -1, 0, file_size(a) - 100);
    CHECK(expect_error(bad, "truncated", msg, sizeof msg), "cut inside a payload", "%s", msg);
    corrupt(a, bad, -1, 0, 30);
    CHECK(expect_error(bad, "not a shard", msg, sizeof msg), "cut inside the stream header", "%s", msg);
    corrupt(a, bad, -1, 0, 0);
    CHECK(expect_error(bad, "empty input", msg, sizeof msg), "empty file", "%s", msg);
    corrupt(a, bad, 8, 0x02, -1);
    CHECK(expect_error(bad, "stream header", msg, sizeof msg), "version field damaged", "%s", msg);

    // An empty shard (no records) is valid.
    FILE *f = fopen(bad, "wb");
    fu_shard_writer w;
    fu_shard_writer_init(&w, f, bad);
    fu_shard_finish(&w);
    fclose(f);
    mismatch = 0;
    CHECK(read_all(bad, &mismatch) == 0, "a shard with no records reads as empty", "%s", fu_error());

    // The mapper: ordered output independent of the thread count.
    char m1[256], m4[256];
    snprintf(m1, sizeof m1, "%s/m1.shard", dir);
    snprintf(m4, sizeof m4, "%s/m4.shard", dir);
    const char *ins[] = {cat};
    int threads[2] = {1, 4};
    char *outs[2] = {m1, m4};
    for (int t = 0; t < 2; t++) {
        f = fopen(outs[t], "wb");
        fu_shard_writer_init(&w, f, outs[t]);
        fu_map_opts o = {.inputs = ins, .n_inputs = 1, .writer = &w, .threads = threads[t], .fn = double_index,
                         .verify = true};
        ok = fu_map_run(&o) == 0;
        fclose(f);
        CHECK(ok, threads[t] == 1 ? "mapper, 1 thread" : "mapper, 4 threads", "%s", fu_error());
    }
    snprintf(cmd, sizeof cmd, "cmp -s %s %s", m1, m4);
    CHECK(system(cmd) == 0, "mapper output is the same for 1 and 4 threads", "differ");
    r = fu_shard_open(m1);
    int n = 0;
    while (fu_shard_next(r, &rec, true) == 1) n++;
    fu_shard_close(r);
    int want = 0;
    for (int i = 0; i < 2 * N; i++) want += i % 3;
    CHECK(n == want, "mapper emits 0..k records per input", "%d records, want %d", n, want);

    snprintf(cmd, sizeof cmd, "rm -rf %s", dir);
    system(cmd);
    return check_done();
}
