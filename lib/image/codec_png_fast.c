// A fast path for the PNGs a fundus pipeline meets: 8-bit gray, gray+alpha,
// RGB or RGBA, not interlaced. One whole-buffer inflate (libdeflate) of the
// gathered IDAT chunks into the filtered rows, then our own unfiltering into
// the RGB output. libpng inflates row by row through zlib and an extra copy
// and unfilters with branchy scalar code.
//
// Anything unusual (other depths or colour types, interlacing, unknown
// critical chunks, split or misplaced IDATs, a damaged zlib stream, missing
// IEND, too much or too little data) returns 0 and the caller decodes with
// libpng, which then has the last word on errors and warnings. Chunk CRCs
// and the zlib Adler-32 are checked (a mismatch also goes to libpng).
#include "image/codec_formats.h"

#include "core/error.h"

#include <stdlib.h>
#include <string.h>
#include <libdeflate.h>

static uint32_t be32(const uint8_t *p) {
    return (uint32_t)p[0] << 24 | (uint32_t)p[1] << 16 | (uint32_t)p[2] << 8 | p[3];
}

static bool is_type(const uint8_t *t, const char *name) { return memcmp(t, name, 4) == 0; }

static bool valid_chunk_name(const uint8_t *t) {
    for (int i = 0; i < 4; i++)
        if (!((t[i] >= 'A' && t[i] <= 'Z') || (t[i] >= 'a' && t[i] <= 'z'))) return false;
    return true;
}

static inline uint8_t paeth(int a, int b, int c) {
    int pa = abs(b - c), pb = abs(a - c), pc = abs(a + b - 2 * c);
    return (uint8_t)((pa <= pb && pa <= pc) ? a : pb <= pc ? b : c);
}

// Paeth for 3- and 4-byte pixels, one pixel per step with its channels in
// the lanes of a vector, without branches: the scalar form's unpredictable
// branches cost about 5 ns a byte. GCC's vector extensions keep it portable.
typedef int16_t v8s __attribute__((vector_size(16)));
typedef uint8_t v8u8 __attribute__((vector_size(8)));

static inline v8s load_px(const uint8_t *p, unsigned bpp) {
    return (v8s){p[0], p[1], p[2], bpp == 4 ? p[3] : 0, 0, 0, 0, 0};
}

// Eight bytes at once where the row has them (lanes past bpp are ignored).
static inline v8s load8(const uint8_t *p) {
    v8u8 v;
    memcpy(&v, p, 8);
    return __builtin_convertvector(v, v8s);
}

static inline v8s vabs(v8s x) {
    v8s m = x >> 15;
    return (x ^ m) - m;
}

static inline __attribute__((always_inline)) v8s paeth_px(v8s a, v8s b, v8s c, v8s x) {
    v8s pa = vabs(b - c), pb = vabs(a - c), pc = vabs(a + b - c - c);
    v8s take_a = (pa <= pb) & (pa <= pc), take_b = pb <= pc;
    v8s pred = (a & take_a) | (~take_a & ((b & take_b) | (c & ~take_b)));
    return (x + pred) & 0xff;
}

static inline __attribute__((always_inline)) void paeth_row(uint8_t *cur, const uint8_t *raw, const uint8_t *prev,
                                                            size_t n, unsigned bpp) {
    v8s a = {0}, c = {0};
    size_t i = 0;
    // While 8 bytes remain: wide loads, and a 4-byte store whose spare byte
    // (bpp 3) the next pixel overwrites.
    for (; i + 8 <= n; i += bpp) {
        v8s b = load8(prev + i);
        a = paeth_px(a, b, c, load8(raw + i));
        c = b;
        v8u8 out = __builtin_convertvector(a, v8u8);
        memcpy(cur + i, &out, 4);
    }
    for (; i < n; i += bpp) {
        v8s b = load_px(prev + i, bpp);
        a = paeth_px(a, b, c, load_px(raw + i, bpp));
        c = b;
        for (unsigned k = 0; k < bpp; k++) cur[i + k] = (uint8_t)a[k];
    }
}

// Undo one row's filter: cur = raw + prediction from the left pixel (bpp
// bytes back) and the row above (prev, all zeros for the first row).
// cur may equal raw. Returns false for an unknown filter type.
static inline __attribute__((always_inline)) bool unfilter(uint8_t *cur, const uint8_t *raw, const uint8_t *prev,
                                                           size_t n, unsigned bpp, unsigned filter) {
    switch (filter) {
    case 0:
        if (cur != raw) memcpy(cur, raw, n);
        return true;
    case 1:
        for (size_t i = 0; i < bpp; i++) cur[i] = raw[i];
        for (size_t i = bpp; i < n; i++) cur[i] = (uint8_t)(raw[i] + cur[i - bpp]);
        return true;
    case 2:
        for (size_t i = 0; i < n; i++) cur[i] = (uint8_t)(raw[i] + prev[i]);
        return true;
    case 3:
        for (size_t i = 0; i < bpp; i++) cur[i] = (uint8_t)(raw[i] + (prev[i] >> 1));
        for (size_t i = bpp; i < n; i++) cur[i] = (uint8_t)(raw[i] + ((cur[i - bpp] + prev[i]) >> 1));
        return true;
    case 4:
        if (bpp >= 3) {
            paeth_row(cur, raw, prev, n, bpp);
            return true;
        }
        for (size_t i = 0; i < bpp; i++) cur[i] = (uint8_t)(raw[i] + prev[i]);
        for (size_t i = bpp; i < n; i++) cur[i] = (uint8_t)(raw[i] + paeth(cur[i - bpp], prev[i], prev[i - bpp]));
        return true;
    }
    return false;
}

static bool unfilter_any(uint8_t *cur, const uint8_t *raw, const uint8_t *prev, size_t n, unsigned bpp,
                         unsigned filter) {
    switch (bpp) { // constant strides let the compiler unroll the channel loop
    case 1: return unfilter(cur, raw, prev, n, 1, filter);
    case 2: return unfilter(cur, raw, prev, n, 2, filter);
    case 3: return unfilter(cur, raw, prev, n, 3, filter);
    default: return unfilter(cur, raw, prev, n, 4, filter);
    }
}

// Walks the chunks after IHDR and gathers the IDAT bodies into one zlib
// stream (*zs, malloc'd), checking each chunk's CRC. Returns false when the
// chunk layout is anything but clean (libpng then decides what is wrong).
static bool gather_idats(const uint8_t *data, size_t n, bool gray, uint8_t **zs, size_t *zs_len) {
    size_t total = 0, pos = 33; // signature and IHDR
    bool idat_seen = false, idat_done = false;
    // First pass: validate the layout and size the stream.
    for (;;) {
        if (n - pos < 12) return false;
        uint32_t len = be32(data + pos);
        const uint8_t *type = data + pos + 4, *body = data + pos + 8;
        if (len > 0x7fffffffu || len > n - pos - 12 || !valid_chunk_name(type) ||
            libdeflate_crc32(0, type, len + 4) != be32(body + len))
            return false;
        if (is_type(type, "IDAT")) {
            if (idat_done) return false;
            idat_seen = true;
            total += len;
        } else {
            if (idat_seen) idat_done = true;
            if (is_type(type, "IEND")) break;
            if (is_type(type, "PLTE")) {
                if (gray || idat_seen) return false;
            } else if (!(type[0] & 0x20)) {
                return false; // IHDR again or an unknown critical chunk
            }
        }
        pos += 12 + (size_t)len;
    }
    if (!idat_seen || total < 2) return false;
    // Second pass: copy the bodies; libdeflate inflates whole buffers only.
    uint8_t *buf = malloc(total);
    if (!buf) return false;
    size_t at = 0;
    for (pos = 33; at < total;) {
        uint32_t len = be32(data + pos);
        if (is_type(data + pos + 4, "IDAT")) {
            memcpy(buf + at, data + pos + 8, len);
            at += len;
        }
        pos += 12 + (size_t)len;
    }
    *zs = buf;
    *zs_len = total;
    return true;
}

// Inflates the PNG's zlib stream into `filtered`, which must come out exactly
// `need` bytes. libdeflate (whole-buffer) inflates about twice as fast as
// zlib's streaming inflate here and checks the Adler-32 at no visible cost.
static bool inflate_idats(const uint8_t *data, size_t n, bool gray, uint8_t *filtered, size_t need) {
    uint8_t *zs;
    size_t zs_len, got = 0;
    if (!gather_idats(data, n, gray, &zs, &zs_len)) return false;
    struct libdeflate_decompressor *d = libdeflate_alloc_decompressor();
    bool ok = d && libdeflate_zlib_decompress(d, zs, zs_len, filtered, need, &got) == LIBDEFLATE_SUCCESS &&
              got == need;
    if (d) libdeflate_free_decompressor(d);
    free(zs);
    return ok;
}

int fu_decode_png_fast(const uint8_t *data, size_t n, const char *subject, fu_image *out) {
    if (n < 45 || be32(data + 8) != 13 || !is_type(data + 12, "IHDR")) return 0;
    const uint8_t *ihdr = data + 16;
    uint32_t w = be32(ihdr), h = be32(ihdr + 4);
    unsigned depth = ihdr[8], type = ihdr[9];
    if (depth != 8 || ihdr[10] != 0 || ihdr[11] != 0 || ihdr[12] != 0) return 0;
    unsigned bpp = type == 0 ? 1 : type == 4 ? 2 : type == 2 ? 3 : type == 6 ? 4 : 0;
    if (bpp == 0 || w == 0 || h == 0 || w > FU_CODEC_MAX_SIDE || h > FU_CODEC_MAX_SIDE ||
        (uint64_t)w * h > FU_CODEC_MAX_PIXELS)
        return 0;
    const size_t stride = (size_t)w * bpp, need = (size_t)h * (stride + 1);
    uint8_t *filtered = malloc(need);
    uint8_t *zeros = calloc(stride, 1);
    int rc = 0;
    if (!filtered || !zeros) {
        rc = fu_fail(subject, "out of memory for a %ux%u PNG", w, h);
        goto done;
    }
    if (!inflate_idats(data, n, bpp <= 2, filtered, need)) goto done;
    if (fu_image_alloc(out, w, h, 3) < 0) {
        rc = -1;
        goto done;
    }
    rc = 1;
    for (uint32_t y = 0; y < h && rc == 1; y++) {
        uint8_t *raw = filtered + y * (stride + 1); // filter type byte, then the row
        if (bpp == 3) { // straight into the output, whose previous row is the prediction
            uint8_t *cur = out->px + (size_t)y * stride;
            if (!unfilter_any(cur, raw + 1, y ? cur - stride : zeros, stride, 3, raw[0])) rc = 0;
            continue;
        }
        // In place; the previous row's pixels end right before this row's filter byte.
        if (!unfilter_any(raw + 1, raw + 1, y ? raw - stride : zeros, stride, bpp, raw[0])) {
            rc = 0;
            continue;
        }
        uint8_t *rgb = out->px + (size_t)y * w * 3; // (W, 3)
        const uint8_t *px = raw + 1;                // (W, bpp)
        for (uint32_t x = 0; x < w; x++, px += bpp, rgb += 3) {
            rgb[0] = px[0];
            rgb[1] = px[bpp >= 3 ? 1 : 0];
            rgb[2] = px[bpp >= 3 ? 2 : 0];
        }
    }
    if (rc == 0) fu_image_free(out); // an unknown filter type: libpng will say so
done:
    free(filtered);
    free(zeros);
    return rc;
}
