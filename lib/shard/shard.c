// Shard reading and writing. Layout (little-endian, docs/shard-format.md):
//
//   stream header (64 B): magic "\x89SHD\r\n\x1a\n", u32 version, u32 flags,
//                         zeros, u32 CRC-32 of bytes 0..59 at byte 60
//   record header (64 B): "FREC", u8 kind, u8 split, u8 channels, i8 label,
//                         u32 height, u32 width, u32 id_len, u32 payload_crc,
//                         u64 payload_len, u64 count (end records), zeros,
//                         u32 CRC-32 of bytes 0..59 at byte 60
//   then id bytes, zero padding to 64, payload, zero padding to 64.
#include "shard/shard.h"

#include "core/error.h"

#include <errno.h>
#include <fcntl.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>
#include <libdeflate.h>

enum { HDR = 64 };
static const uint8_t STREAM_MAGIC[8] = {0x89, 'S', 'H', 'D', '\r', '\n', 0x1a, '\n'};
static const uint8_t RECORD_MAGIC[4] = {'F', 'R', 'E', 'C'};

// libdeflate's CRC-32 (carry-less multiply where the CPU has it) is the same
// checksum as zlib's, several times faster on image-sized payloads.
uint32_t fu_crc32(const void *data, size_t n) { return libdeflate_crc32(0, data, n); }

static uint64_t pad64(uint64_t n) { return (n + FU_SHARD_ALIGN - 1) & ~(uint64_t)(FU_SHARD_ALIGN - 1); }

static void put32(uint8_t *p, uint32_t v) {
    for (int i = 0; i < 4; i++) p[i] = (uint8_t)(v >> (8 * i));
}
static void put64(uint8_t *p, uint64_t v) {
    for (int i = 0; i < 8; i++) p[i] = (uint8_t)(v >> (8 * i));
}
static uint32_t get32(const uint8_t *p) {
    return (uint32_t)p[0] | (uint32_t)p[1] << 8 | (uint32_t)p[2] << 16 | (uint32_t)p[3] << 24;
}
static uint64_t get64(const uint8_t *p) { return (uint64_t)get32(p) | (uint64_t)get32(p + 4) << 32; }

const char *fu_split_name(fu_split s) {
    static const char *names[] = {"", "train", "val", "test"};
    return (unsigned)s < 4 ? names[s] : "?";
}

int fu_split_parse(const char *s, fu_split *out) {
    static const char *names[] = {"", "train", "val", "test"};
    for (int i = 0; i < 4; i++)
        if (strcmp(s, names[i]) == 0) {
            *out = (fu_split)i;
            return 0;
        }
    if (strcmp(s, "valid") == 0 || strcmp(s, "validation") == 0) {
        *out = FU_SPLIT_VAL;
        return 0;
    }
    return -1;
}

const char *fu_kind_name(fu_kind k) {
    switch (k) {
    case FU_KIND_END: return "end";
    case FU_KIND_ENCODED: return "encoded";
    case FU_KIND_PIXELS: return "u8-hwc";
    }
    return "?";
}

// ---- writing ---------------------------------------------------------------

void fu_shard_writer_init(fu_shard_writer *w, FILE *f, const char *name) {
    memset(w, 0, sizeof *w);
    w->f = f;
    w->name = name ? name : "stdout";
}

static int put_bytes(fu_shard_writer *w, const void *p, uint64_t n) {
    if (n && fwrite(p, 1, n, w->f) != n) return fu_fail(w->name, "write failed: %s", strerror(errno));
    w->written += n;
    return 0;
}

static int put_zeros(fu_shard_writer *w, uint64_t n) {
    static const uint8_t zeros[FU_SHARD_ALIGN];
    return put_bytes(w, zeros, n);
}

static int write_stream_header(fu_shard_writer *w) {
    uint8_t h[HDR] = {0};
    memcpy(h, STREAM_MAGIC, 8);
    put32(h + 8, FU_SHARD_VERSION);
    put32(h + 60, fu_crc32(h, 60));
    w->header_done = true;
    return put_bytes(w, h, HDR);
}

static void encode_header(uint8_t h[HDR], const fu_record *r, uint32_t crc, uint64_t count) {
    memset(h, 0, HDR);
    memcpy(h, RECORD_MAGIC, 4);
    h[4] = (uint8_t)r->kind;
    h[5] = (uint8_t)r->split;
    h[6] = (uint8_t)r->channels;
    h[7] = (uint8_t)(int8_t)r->label;
    put32(h + 8, r->height);
    put32(h + 12, r->width);
    put32(h + 16, r->id_len);
    put32(h + 20, crc);
    put64(h + 24, r->payload_len);
    put64(h + 32, count);
    put32(h + 60, fu_crc32(h, 60));
}

int fu_shard_write(fu_shard_writer *w, const fu_record *r) {
    if (!w->header_done && write_stream_header(w) < 0) return -1;
    if (r->id_len > FU_SHARD_ID_MAX)
        return fu_fail(w->name, "record id of %u bytes is longer than %d", r->id_len, FU_SHARD_ID_MAX);
    if (r->label < FU_LABEL_NONE || r->label > 127)
        return fu_fail(w->name, "label %d out of range (0..127)", r->label);
    uint8_t h[HDR];
    encode_header(h, r, fu_crc32(r->payload, r->payload_len), 0);
    if (put_bytes(w, h, HDR) < 0 || put_bytes(w, r->id, r->id_len) < 0 ||
        put_zeros(w, pad64(r->id_len) - r->id_len) < 0 ||
        put_bytes(w, r->payload, r->payload_len) < 0 ||
        put_zeros(w, pad64(r->payload_len) - r->payload_len) < 0)
        return -1;
    w->count++;
    return 0;
}

int fu_shard_finish(fu_shard_writer *w) {
    if (!w->header_done && write_stream_header(w) < 0) return -1;
    fu_record end = {.kind = FU_KIND_END, .label = FU_LABEL_NONE};
    uint8_t h[HDR];
    encode_header(h, &end, fu_crc32(NULL, 0), w->count);
    if (put_bytes(w, h, HDR) < 0) return -1;
    if (fflush(w->f) != 0) return fu_fail(w->name, "write failed: %s", strerror(errno));
    return 0;
}

// ---- reading ---------------------------------------------------------------

struct fu_shard_reader {
    char *name;
    // mapped mode
    const uint8_t *map;
    uint64_t size;
    // stream mode
    FILE *f;
    bool own_file;
    uint8_t *buf; // id + payload of the current record
    size_t cap;
    // position and segment state
    uint64_t pos;         // byte offset of the next unread byte
    uint64_t seg_count;   // data records seen in the current segment
    bool in_segment;      // a stream header was read and its end record not yet
    bool any_header;
};

const char *fu_shard_name(const fu_shard_reader *r) { return r->name; }
bool fu_shard_is_mapped(const fu_shard_reader *r) { return r->map != NULL; }

fu_shard_reader *fu_shard_open(const char *path) {
    bool use_stdin = !path || strcmp(path, "-") == 0;
    fu_shard_reader *r = fu_calloc(1, sizeof *r);
    if (!r) return NULL;
    r->name = strdup(use_stdin ? "stdin" : path);
    int fd = use_stdin ? STDIN_FILENO : open(path, O_RDONLY | O_CLOEXEC);
    if (fd < 0) {
        fu_fail(path, "cannot open: %s", strerror(errno));
        goto fail;
    }
    struct stat st;
    if (fstat(fd, &st) == 0 && S_ISDIR(st.st_mode)) {
        fu_fail(r->name, "is a directory, not a shard");
        if (!use_stdin) close(fd);
        goto fail;
    }
    if (fstat(fd, &st) == 0 && S_ISREG(st.st_mode) && st.st_size > 0) {
        void *m = mmap(NULL, (size_t)st.st_size, PROT_READ, MAP_PRIVATE, fd, 0);
        if (m != MAP_FAILED) {
            madvise(m, (size_t)st.st_size, MADV_SEQUENTIAL);
            r->map = m;
            r->size = (uint64_t)st.st_size;
            if (!use_stdin) close(fd);
            return r;
        }
    }
    r->f = use_stdin ? stdin : fdopen(fd, "rb");
    r->own_file = !use_stdin;
    if (!r->f) {
        fu_fail(r->name, "cannot open: %s", strerror(errno));
        close(fd);
        goto fail;
    }
    return r;
fail:
    free(r->name);
    free(r);
    return NULL;
}

fu_shard_reader *fu_shard_open_stream(FILE *f, const char *name, bool own) {
    fu_shard_reader *r = fu_calloc(1, sizeof *r);
    if (!r) return NULL;
    r->name = strdup(name ? name : "stream");
    r->f = f;
    r->own_file = own;
    return r;
}

void fu_shard_close(fu_shard_reader *r) {
    if (!r) return;
    if (r->map) munmap((void *)r->map, r->size);
    if (r->f && r->own_file) fclose(r->f);
    free(r->buf);
    free(r->name);
    free(r);
}

// Reads n bytes at the current position; *p points at them. Returns bytes got.
static uint64_t take(fu_shard_reader *r, uint64_t n, const uint8_t **p, uint8_t *dst) {
    if (r->map) {
        uint64_t left = r->size - r->pos;
        uint64_t got = n < left ? n : left;
        *p = r->map + r->pos;
        r->pos += got;
        return got;
    }
    size_t got = fread(dst, 1, n, r->f);
    *p = dst;
    r->pos += got;
    return got;
}

static int ensure_buf(fu_shard_reader *r, uint64_t n) {
    if (n <= r->cap) return 0;
    uint8_t *b = fu_realloc(r->buf, n);
    if (!b) return -1;
    r->buf = b;
    r->cap = n;
    return 0;
}

static int truncated(fu_shard_reader *r, uint64_t at, const char *what) {
    fu_fail(r->name, "truncated: input ends at byte %llu inside the %s of the record at byte %llu",
            (unsigned long long)r->pos, what, (unsigned long long)at);
    return -1;
}

static int check_stream_header(fu_shard_reader *r, const uint8_t *h, uint64_t at) {
    if (get32(h + 60) != fu_crc32(h, 60))
        return fu_fail(r->name, "corrupt stream header at byte %llu (header CRC mismatch)",
                       (unsigned long long)at);
    uint32_t v = get32(h + 8);
    if (v != FU_SHARD_VERSION) {
        fu_fail(r->name, "shard format version %u at byte %llu; this build reads version %d", v,
                (unsigned long long)at, FU_SHARD_VERSION);
        fu_hint("the file was written by a newer release");
        return -1;
    }
    return 0;
}

// Validates a decoded record header; `at` is its byte offset.
static int check_record(fu_shard_reader *r, const fu_record *rec, uint64_t at) {
    unsigned long long o = (unsigned long long)at;
    if (rec->kind > FU_KIND_PIXELS) return fu_fail(r->name, "record at byte %llu: unknown payload kind %d", o, rec->kind);
    if (rec->split > FU_SPLIT_TEST) return fu_fail(r->name, "record at byte %llu: unknown split %d", o, rec->split);
    if (rec->label < FU_LABEL_NONE) return fu_fail(r->name, "record at byte %llu: bad label %d", o, rec->label);
    if (rec->id_len > FU_SHARD_ID_MAX) return fu_fail(r->name, "record at byte %llu: id length %u too long", o, rec->id_len);
    if (rec->payload_len > FU_SHARD_PAYLOAD_MAX)
        return fu_fail(r->name, "record at byte %llu: payload length %llu too large", o,
                       (unsigned long long)rec->payload_len);
    if (rec->kind == FU_KIND_PIXELS) {
        uint64_t want = (uint64_t)rec->height * rec->width * rec->channels;
        if (rec->channels < 1 || rec->channels > 4 || rec->height == 0 || rec->width == 0 ||
            want != rec->payload_len)
            return fu_fail(r->name, "record at byte %llu: pixel payload of %llu bytes does not match %ux%ux%u",
                           o, (unsigned long long)rec->payload_len, rec->width, rec->height, rec->channels);
    }
    if (rec->kind == FU_KIND_ENCODED && rec->payload_len == 0)
        return fu_fail(r->name, "record at byte %llu: empty encoded payload", o);
    return 0;
}

static void decode_header(const uint8_t *h, fu_record *rec, uint64_t *count) {
    memset(rec, 0, sizeof *rec);
    rec->kind = (fu_kind)h[4];
    rec->split = (fu_split)h[5];
    rec->channels = h[6];
    rec->label = (int8_t)h[7];
    rec->height = get32(h + 8);
    rec->width = get32(h + 12);
    rec->id_len = get32(h + 16);
    rec->crc = get32(h + 20);
    rec->payload_len = get64(h + 24);
    *count = get64(h + 32);
}

int fu_shard_next(fu_shard_reader *r, fu_record *rec, bool verify) {
    uint8_t hbuf[HDR];
    for (;;) {
        uint64_t at = r->pos;
        const uint8_t *h;
        uint64_t got = take(r, HDR, &h, hbuf);
        if (got == 0) {
            if (!r->any_header) return fu_fail(r->name, "empty input (not a shard)");
            if (r->in_segment) {
                fu_fail(r->name, "truncated: input ends at byte %llu without an end record",
                        (unsigned long long)at);
                fu_hint("the program that wrote it stopped early; check its error");
                return -1;
            }
            return 0;
        }
        if (got < HDR) {
            if (!r->any_header) goto not_a_shard;
            return truncated(r, at, "header");
        }
        if (memcmp(h, STREAM_MAGIC, 8) == 0) {
            if (r->in_segment)
                return fu_fail(r->name, "stream header at byte %llu inside a segment (missing end record)",
                               (unsigned long long)at);
            if (check_stream_header(r, h, at) < 0) return -1;
            r->any_header = r->in_segment = true;
            r->seg_count = 0;
            continue;
        }
        if (!r->any_header) goto not_a_shard;
        if (memcmp(h, RECORD_MAGIC, 4) != 0)
            return fu_fail(r->name, "bad record magic at byte %llu", (unsigned long long)at);
        if (get32(h + 60) != fu_crc32(h, 60))
            return fu_fail(r->name, "corrupt record header at byte %llu (header CRC mismatch)",
                           (unsigned long long)at);
        if (!r->in_segment)
            return fu_fail(r->name, "record at byte %llu after an end record without a new stream header",
                           (unsigned long long)at);
        uint64_t count;
        decode_header(h, rec, &count);
        rec->offset = at;
        if (check_record(r, rec, at) < 0) return -1;
        if (rec->kind == FU_KIND_END) {
            if (count != r->seg_count)
                return fu_fail(r->name, "end record at byte %llu counts %llu records but the segment has %llu",
                               (unsigned long long)at, (unsigned long long)count,
                               (unsigned long long)r->seg_count);
            r->in_segment = false;
            continue;
        }
        uint64_t id_pad = pad64(rec->id_len), pay_pad = pad64(rec->payload_len);
        if (!r->map && ensure_buf(r, id_pad + pay_pad) < 0) return -1;
        const uint8_t *body;
        if (take(r, id_pad + pay_pad, &body, r->buf) < id_pad + pay_pad)
            return truncated(r, at, "payload");
        rec->id = (const char *)body;
        rec->payload = body + id_pad;
        if (verify && fu_crc32(rec->payload, rec->payload_len) != rec->crc)
            return fu_fail(r->name, "record at byte %llu (%.*s): payload CRC mismatch", (unsigned long long)at,
                           (int)rec->id_len, rec->id);
        r->seg_count++;
        return 1;
    }
not_a_shard:
    fu_fail(r->name, "not a shard (bad magic at byte 0)");
    fu_hint("shard-pack turns image files into a shard");
    return -1;
}

// ---- random access ----------------------------------------------------------

int fu_shard_build_index(fu_shard_reader *r, fu_shard_index *idx) {
    memset(idx, 0, sizeof *idx);
    if (!r->map) return fu_fail(r->name, "random access needs a regular file, not a pipe");
    size_t cap = 0;
    uint64_t save = r->pos;
    r->pos = 0;
    r->any_header = r->in_segment = false;
    r->seg_count = 0;
    fu_record rec;
    int got;
    while ((got = fu_shard_next(r, &rec, false)) == 1) {
        if (idx->count == cap) {
            cap = cap ? 2 * cap : 256;
            uint64_t *o = fu_realloc(idx->offsets, cap * sizeof *o);
            if (!o) {
                got = -1;
                break;
            }
            idx->offsets = o;
        }
        idx->offsets[idx->count++] = rec.offset;
    }
    r->pos = save;
    if (got < 0) {
        fu_shard_index_free(idx);
        return -1;
    }
    return 0;
}

int fu_shard_read_at(fu_shard_reader *r, uint64_t offset, fu_record *rec, bool verify) {
    if (!r->map) return fu_fail(r->name, "random access needs a regular file, not a pipe");
    if (offset > r->size || r->size - offset < HDR)
        return fu_fail(r->name, "no record at byte %llu", (unsigned long long)offset);
    const uint8_t *h = r->map + offset;
    if (memcmp(h, RECORD_MAGIC, 4) != 0 || get32(h + 60) != fu_crc32(h, 60))
        return fu_fail(r->name, "no valid record header at byte %llu", (unsigned long long)offset);
    uint64_t count;
    decode_header(h, rec, &count);
    rec->offset = offset;
    if (check_record(r, rec, offset) < 0) return -1;
    uint64_t body = pad64(rec->id_len) + pad64(rec->payload_len);
    if (rec->kind == FU_KIND_END || r->size - offset - HDR < body)
        return fu_fail(r->name, "no data record at byte %llu", (unsigned long long)offset);
    rec->id = (const char *)h + HDR;
    rec->payload = h + HDR + pad64(rec->id_len);
    if (verify && fu_crc32(rec->payload, rec->payload_len) != rec->crc)
        return fu_fail(r->name, "record at byte %llu: payload CRC mismatch", (unsigned long long)offset);
    return 0;
}

void fu_shard_index_free(fu_shard_index *idx) {
    free(idx->offsets);
    idx->offsets = NULL;
    idx->count = 0;
}
