// The shard format (docs/shard-format.md, version 1): a stream of 64-byte
// aligned records that works through pipes and `cat a.shard b.shard`, and is
// randomly accessible in a regular file through an index built in one pass.
#ifndef FU_SHARD_SHARD_H
#define FU_SHARD_SHARD_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>

#define FU_SHARD_VERSION 1
#define FU_SHARD_ALIGN 64
#define FU_SHARD_ID_MAX 4096
#define FU_SHARD_PAYLOAD_MAX (UINT64_C(1) << 32) // 4 GiB: far above any photograph

typedef enum {
    FU_KIND_END = 0,     // end of a segment; carries the segment's record count
    FU_KIND_ENCODED = 1, // original PNG/JPEG/TIFF file bytes
    FU_KIND_PIXELS = 2,  // decoded pixels, u8, HWC, RGB (channels = 3)
} fu_kind;

typedef enum { FU_SPLIT_NONE = 0, FU_SPLIT_TRAIN = 1, FU_SPLIT_VAL = 2, FU_SPLIT_TEST = 3 } fu_split;
#define FU_LABEL_NONE (-1)

// One record as seen by a program. Pointers stay valid until the next read
// from the same reader (stream mode) or until the reader closes (mapped mode).
typedef struct {
    fu_kind kind;
    int label;   // 0..127, FU_LABEL_NONE when unknown
    fu_split split;
    uint32_t height, width, channels; // 0 when unknown (encoded records may say)
    const char *id;                   // not NUL-terminated; see id_len
    uint32_t id_len;
    const uint8_t *payload;
    uint64_t payload_len;
    uint32_t crc;    // CRC-32 of payload as stored
    uint64_t offset; // byte offset of the record header in its input
} fu_record;

const char *fu_split_name(fu_split s); // "", "train", "val", "test"
int fu_split_parse(const char *s, fu_split *out); // accepts "" too; -1 on unknown
const char *fu_kind_name(fu_kind k);

// ---- writing -------------------------------------------------------------

typedef struct {
    FILE *f;
    const char *name;   // for messages
    uint64_t written;   // bytes
    uint64_t count;     // records in this segment
    bool header_done;
} fu_shard_writer;

void fu_shard_writer_init(fu_shard_writer *w, FILE *f, const char *name);
// Writes the record; computes the payload CRC (rec->crc is ignored).
int fu_shard_write(fu_shard_writer *w, const fu_record *rec);
// Writes the end record. A stream without one is reported as truncated.
int fu_shard_finish(fu_shard_writer *w);

// ---- reading -------------------------------------------------------------

typedef struct fu_shard_reader fu_shard_reader;

// path "-" or NULL reads stdin. Regular files are mapped; pipes are streamed.
fu_shard_reader *fu_shard_open(const char *path);
// Read from an open stream front to back (never mapped); closes f when own.
fu_shard_reader *fu_shard_open_stream(FILE *f, const char *name, bool own);
void fu_shard_close(fu_shard_reader *r);
const char *fu_shard_name(const fu_shard_reader *r);
bool fu_shard_is_mapped(const fu_shard_reader *r);
// Next data record: 1 = got one, 0 = clean end of input, -1 = error (message set).
// End records and repeated stream headers are consumed silently.
// verify=true checks each payload's CRC (the header's own CRC is always checked).
int fu_shard_next(fu_shard_reader *r, fu_record *rec, bool verify);

// ---- random access (mapped readers only) ----------------------------------

typedef struct {
    uint64_t *offsets; // byte offset of each data record's header
    size_t count;
} fu_shard_index;

// One pass over the headers (payloads are skipped, not checked).
int fu_shard_build_index(fu_shard_reader *r, fu_shard_index *idx);
int fu_shard_read_at(fu_shard_reader *r, uint64_t offset, fu_record *rec, bool verify);
void fu_shard_index_free(fu_shard_index *idx);

// The CRC used everywhere: CRC-32 as zlib's and PNG's.
uint32_t fu_crc32(const void *data, size_t n);

#endif
