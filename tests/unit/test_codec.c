// Codec tests: round trips through our encoders, PNG kinds made with libpng
// here (16-bit, gray, gray+alpha, palette with tRNS, RGBA), TIFFs made with
// libtiff, and hostile input (truncated, corrupt, bogus sizes, CMYK, not an
// image) that must fail with a message and never crash.
#include "check.h"
#include "core/error.h"
#include "image/codec.h"

#include <png.h>
#include <setjmp.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <tiffio.h>
#include <zlib.h>

#include <jpeglib.h>

// ---- fixtures ------------------------------------------------------------------

static fu_image gradient(uint32_t w, uint32_t h, uint32_t c) {
    fu_image im;
    if (fu_image_alloc(&im, w, h, c) < 0) abort();
    for (uint32_t y = 0; y < h; y++)
        for (uint32_t x = 0; x < w; x++)
            for (uint32_t k = 0; k < c; k++)
                im.px[((size_t)y * w + x) * c + k] = (uint8_t)((x * 7 + y * 3 + k * 50) & 255);
    return im;
}

// Smooth enough for JPEG to keep it close.
static fu_image ramp(uint32_t w, uint32_t h, uint32_t c) {
    fu_image im;
    if (fu_image_alloc(&im, w, h, c) < 0) abort();
    for (uint32_t y = 0; y < h; y++)
        for (uint32_t x = 0; x < w; x++)
            for (uint32_t k = 0; k < c; k++)
                im.px[((size_t)y * w + x) * c + k] = (uint8_t)(x * 120 / w + y * 120 / h + k * 10);
    return im;
}

typedef struct {
    uint8_t *buf;
    size_t n, cap;
} membuf;

static void mem_write(png_structp png, png_bytep data, size_t len) {
    membuf *m = png_get_io_ptr(png);
    if (m->n + len > m->cap) {
        m->cap = (m->n + len) * 2;
        m->buf = realloc(m->buf, m->cap);
    }
    memcpy(m->buf + m->n, data, len);
    m->n += len;
}
static void mem_flush(png_structp png) {}

// A PNG of any colour type and depth from raw rows (samples big-endian for 16-bit).
static membuf make_png_interlaced(uint32_t w, uint32_t h, int type, int depth, const uint8_t *raw,
                                  const png_color *palette, int n_palette, const uint8_t *trans, int n_trans,
                                  bool adam7) {
    membuf m = {0};
    png_structp png = png_create_write_struct(PNG_LIBPNG_VER_STRING, NULL, NULL, NULL);
    png_infop info = png_create_info_struct(png);
    if (setjmp(png_jmpbuf(png))) abort();
    png_set_write_fn(png, &m, mem_write, mem_flush);
    png_set_IHDR(png, info, w, h, depth, type, adam7 ? PNG_INTERLACE_ADAM7 : PNG_INTERLACE_NONE,
                 PNG_COMPRESSION_TYPE_DEFAULT, PNG_FILTER_TYPE_DEFAULT);
    if (palette) png_set_PLTE(png, info, palette, n_palette);
    if (trans) png_set_tRNS(png, info, trans, n_trans, NULL);
    png_write_info(png, info);
    int passes = adam7 ? png_set_interlace_handling(png) : 1;
    size_t stride = png_get_rowbytes(png, info);
    for (int pass = 0; pass < passes; pass++)
        for (uint32_t y = 0; y < h; y++) png_write_row(png, raw + y * stride);
    png_write_end(png, info);
    png_destroy_write_struct(&png, &info);
    return m;
}

static void put_be32(uint8_t *p, uint32_t v) {
    p[0] = (uint8_t)(v >> 24), p[1] = (uint8_t)(v >> 16), p[2] = (uint8_t)(v >> 8), p[3] = (uint8_t)v;
}

static void add_chunk(membuf *m, const char *type, const uint8_t *body, uint32_t len) {
    m->buf = realloc(m->buf, m->n + len + 12);
    put_be32(m->buf + m->n, len);
    memcpy(m->buf + m->n + 4, type, 4);
    if (len) memcpy(m->buf + m->n + 8, body, len);
    put_be32(m->buf + m->n + 8 + len, (uint32_t)crc32(0, m->buf + m->n + 4, len + 4));
    m->n += len + 12;
}

// An 8-bit RGB PNG from already filtered rows (filter byte + 3w bytes each),
// its zlib stream cut into IDAT chunks of `split` bytes.
static membuf make_raw_png(uint32_t w, uint32_t h, const uint8_t *filtered, size_t len, size_t split) {
    membuf m = {malloc(8), 8, 8};
    memcpy(m.buf, "\x89PNG\r\n\x1a\n", 8);
    uint8_t ihdr[13] = {0};
    put_be32(ihdr, w);
    put_be32(ihdr + 4, h);
    ihdr[8] = 8, ihdr[9] = PNG_COLOR_TYPE_RGB;
    add_chunk(&m, "IHDR", ihdr, 13);
    uLongf zn = compressBound(len);
    uint8_t *z = malloc(zn);
    compress(z, &zn, filtered, len);
    for (size_t at = 0; at < zn; at += split) add_chunk(&m, "IDAT", z + at, (uint32_t)(zn - at < split ? zn - at : split));
    add_chunk(&m, "IEND", NULL, 0);
    free(z);
    return m;
}

static membuf make_png(uint32_t w, uint32_t h, int type, int depth, const uint8_t *raw, const png_color *palette,
                       int n_palette, const uint8_t *trans, int n_trans) {
    return make_png_interlaced(w, h, type, depth, raw, palette, n_palette, trans, n_trans, false);
}

static membuf make_cmyk_jpeg(void) {
    struct jpeg_compress_struct cinfo;
    struct jpeg_error_mgr jerr;
    cinfo.err = jpeg_std_error(&jerr);
    jpeg_create_compress(&cinfo);
    unsigned char *buf = NULL;
    unsigned long len = 0;
    jpeg_mem_dest(&cinfo, &buf, &len);
    cinfo.image_width = 16;
    cinfo.image_height = 8;
    cinfo.input_components = 4;
    cinfo.in_color_space = JCS_CMYK;
    jpeg_set_defaults(&cinfo);
    jpeg_start_compress(&cinfo, TRUE);
    uint8_t row[16 * 4];
    for (int i = 0; i < 64; i++) row[i] = (uint8_t)(i * 4);
    while (cinfo.next_scanline < 8) {
        JSAMPROW r = row;
        jpeg_write_scanlines(&cinfo, &r, 1);
    }
    jpeg_finish_compress(&cinfo);
    jpeg_destroy_compress(&cinfo);
    return (membuf){buf, len, len};
}

// A valid progressive JPEG with 568 scans: every AC coefficient of every
// component in its own band, refined bit by bit.
static membuf make_many_scan_jpeg(void) {
    struct jpeg_compress_struct cinfo;
    struct jpeg_error_mgr jerr;
    cinfo.err = jpeg_std_error(&jerr);
    jpeg_create_compress(&cinfo);
    unsigned char *buf = NULL;
    unsigned long len = 0;
    jpeg_mem_dest(&cinfo, &buf, &len);
    cinfo.image_width = 16;
    cinfo.image_height = 16;
    cinfo.input_components = 3;
    cinfo.in_color_space = JCS_RGB;
    jpeg_set_defaults(&cinfo);
    static jpeg_scan_info scans[1 + 3 * 63 * 3];
    int k = 0;
    scans[k++] = (jpeg_scan_info){3, {0, 1, 2, 0}, 0, 0, 0, 0};
    for (int c = 0; c < 3; c++)
        for (int band = 1; band < 64; band++) {
            scans[k++] = (jpeg_scan_info){1, {c, 0, 0, 0}, band, band, 0, 2};
            scans[k++] = (jpeg_scan_info){1, {c, 0, 0, 0}, band, band, 2, 1};
            scans[k++] = (jpeg_scan_info){1, {c, 0, 0, 0}, band, band, 1, 0};
        }
    cinfo.scan_info = scans;
    cinfo.num_scans = k;
    jpeg_start_compress(&cinfo, TRUE);
    uint8_t row[16 * 3];
    for (int i = 0; i < 48; i++) row[i] = (uint8_t)(i * 5);
    while (cinfo.next_scanline < 16) {
        JSAMPROW r = row;
        jpeg_write_scanlines(&cinfo, &r, 1);
    }
    jpeg_finish_compress(&cinfo);
    jpeg_destroy_compress(&cinfo);
    return (membuf){buf, len, len};
}

static membuf read_whole(const char *path) {
    membuf m = {0};
    FILE *f = fopen(path, "rb");
    if (!f) abort();
    fseek(f, 0, SEEK_END);
    m.n = m.cap = (size_t)ftell(f);
    rewind(f);
    m.buf = malloc(m.n);
    if (fread(m.buf, 1, m.n, f) != m.n) abort();
    fclose(f);
    return m;
}

// A TIFF written by libtiff to a temporary file, returned as bytes.
static membuf make_tiff(uint32_t w, uint32_t h, int spp, int bps, int compression, const void *raw) {
    char path[] = "/tmp/test_codec_XXXXXX";
    int fd = mkstemp(path);
    if (fd < 0) abort();
    close(fd);
    TIFF *t = TIFFOpen(path, "w");
    TIFFSetField(t, TIFFTAG_IMAGEWIDTH, w);
    TIFFSetField(t, TIFFTAG_IMAGELENGTH, h);
    TIFFSetField(t, TIFFTAG_SAMPLESPERPIXEL, spp);
    TIFFSetField(t, TIFFTAG_BITSPERSAMPLE, bps);
    TIFFSetField(t, TIFFTAG_PHOTOMETRIC, spp >= 3 ? PHOTOMETRIC_RGB : PHOTOMETRIC_MINISBLACK);
    TIFFSetField(t, TIFFTAG_PLANARCONFIG, PLANARCONFIG_CONTIG);
    TIFFSetField(t, TIFFTAG_COMPRESSION, compression);
    TIFFSetField(t, TIFFTAG_ROWSPERSTRIP, 4);
    size_t stride = (size_t)w * spp * bps / 8;
    for (uint32_t y = 0; y < h; y++) TIFFWriteScanline(t, (uint8_t *)raw + y * stride, y, 0);
    TIFFClose(t);
    membuf m = read_whole(path);
    remove(path);
    return m;
}

static int decode_fails(const uint8_t *data, size_t n, const char *expect) {
    fu_image im = {0};
    fu_clear_error();
    int rc = fu_decode(data, n, 0, "x", &im);
    if (rc == 0) {
        fu_image_free(&im);
        return 0;
    }
    return im.px == NULL && fu_error()[0] && (!expect || strstr(fu_error(), expect));
}

// ---- tests ---------------------------------------------------------------------

static void test_png_round_trip(void) {
    for (uint32_t c = 1; c <= 4; c++) {
        fu_image im = gradient(37, 23, c), back = {0};
        uint8_t *png = NULL;
        size_t n = 0;
        char name[64];
        snprintf(name, sizeof name, "png encode %u channel(s)", c);
        if (!CHECK(fu_encode_png(&im, 6, &png, &n) == 0 && fu_sniff(png, n) == FU_FMT_PNG, name, "%s", fu_error()))
            continue;
        fu_format f = FU_FMT_UNKNOWN;
        uint32_t w = 0, h = 0, cc = 0;
        snprintf(name, sizeof name, "png probe %u channel(s)", c);
        int probed = fu_probe(png, n, &f, &w, &h, &cc);
        CHECK(probed == 0 && f == FU_FMT_PNG && w == 37 && h == 23 && cc == c, name,
              "%s %ux%ux%u", fu_error(), w, h, cc);
        snprintf(name, sizeof name, "png decode %u channel(s) to RGB", c);
        int ok = fu_decode(png, n, 0, "t", &back) == 0 && back.w == 37 && back.h == 23 && back.c == 3;
        for (size_t i = 0; ok && i < (size_t)37 * 23; i++)
            for (int k = 0; k < 3; k++) // gray is replicated, alpha dropped
                ok &= back.px[i * 3 + k] == im.px[i * c + (c >= 3 ? (uint32_t)k : 0)];
        CHECK(ok, name, "%s", fu_error());
        fu_image_free(&back);
        free(png);
        fu_image_free(&im);
    }
}

static void test_png_kinds(void) {
    enum { W = 9, H = 5 };
    // 16-bit RGB: the high byte of each sample survives (OpenCV's png_set_strip_16).
    uint8_t raw16[H][W * 6];
    for (int y = 0; y < H; y++)
        for (int i = 0; i < W * 6; i++) raw16[y][i] = (uint8_t)(i % 2 == 0 ? (y * 40 + i) : 255 - i);
    membuf m = make_png(W, H, PNG_COLOR_TYPE_RGB, 16, &raw16[0][0], NULL, 0, NULL, 0);
    fu_image im = {0};
    int ok = fu_decode(m.buf, m.n, 0, "t", &im) == 0;
    for (int y = 0; ok && y < H; y++)
        for (int i = 0; i < W * 3; i++) ok &= im.px[y * W * 3 + i] == raw16[y][2 * i];
    CHECK(ok, "png 16-bit RGB keeps the high byte", "%s", fu_error());
    fu_image_free(&im);
    free(m.buf);

    // 16-bit gray + alpha.
    uint8_t rawga[H][W * 4];
    for (int y = 0; y < H; y++)
        for (int i = 0; i < W * 4; i++) rawga[y][i] = (uint8_t)(y * 50 + i * 3);
    m = make_png(W, H, PNG_COLOR_TYPE_GRAY_ALPHA, 16, &rawga[0][0], NULL, 0, NULL, 0);
    ok = fu_decode(m.buf, m.n, 0, "t", &im) == 0;
    for (int y = 0; ok && y < H; y++)
        for (int x = 0; x < W; x++)
            for (int k = 0; k < 3; k++) ok &= im.px[(y * W + x) * 3 + k] == rawga[y][x * 4];
    CHECK(ok, "png 16-bit gray+alpha: gray replicated, alpha dropped", "%s", fu_error());
    fu_image_free(&im);
    free(m.buf);

    // 2-bit gray scales to 0, 85, 170, 255.
    uint8_t raw2[H][3]; // 9 pixels of 2 bits in 3 bytes
    for (int y = 0; y < H; y++)
        for (int i = 0; i < 3; i++) raw2[y][i] = 0x1b; // 0,1,2,3 repeating
    m = make_png(W, H, PNG_COLOR_TYPE_GRAY, 2, &raw2[0][0], NULL, 0, NULL, 0);
    ok = fu_decode(m.buf, m.n, 0, "t", &im) == 0;
    for (int x = 0; ok && x < W; x++) ok &= im.px[x * 3] == (x % 4) * 85 && im.px[x * 3 + 2] == (x % 4) * 85;
    CHECK(ok, "png 2-bit gray expands to 8 bits", "%s", fu_error());
    fu_image_free(&im);
    free(m.buf);

    // Adam7 interlacing.
    fu_image rgb = gradient(W, H, 3);
    m = make_png_interlaced(W, H, PNG_COLOR_TYPE_RGB, 8, rgb.px, NULL, 0, NULL, 0, true);
    ok = fu_decode(m.buf, m.n, 0, "t", &im) == 0 && memcmp(im.px, rgb.px, fu_image_bytes(&rgb)) == 0;
    CHECK(ok, "png interlaced (Adam7) decodes", "%s", fu_error());
    fu_image_free(&im);
    fu_image_free(&rgb);
    free(m.buf);

    // Palette with transparency: colours expand, transparency is ignored.
    png_color pal[4] = {{255, 0, 0}, {0, 255, 0}, {0, 0, 255}, {10, 20, 30}};
    uint8_t trans[4] = {0, 128, 255, 7};
    uint8_t rawp[H][W];
    for (int y = 0; y < H; y++)
        for (int x = 0; x < W; x++) rawp[y][x] = (uint8_t)((x + y) % 4);
    m = make_png(W, H, PNG_COLOR_TYPE_PALETTE, 8, &rawp[0][0], pal, 4, trans, 4);
    ok = fu_decode(m.buf, m.n, 0, "t", &im) == 0;
    for (int y = 0; ok && y < H; y++)
        for (int x = 0; x < W; x++) {
            const png_color *p = &pal[rawp[y][x]];
            const uint8_t *q = im.px + (y * W + x) * 3;
            ok &= q[0] == p->red && q[1] == p->green && q[2] == p->blue;
        }
    CHECK(ok, "png palette with tRNS to RGB", "%s", fu_error());
    fu_image_free(&im);
    free(m.buf);
}

static void test_png_hostile(void) {
    fu_image im = gradient(64, 48, 3);
    uint8_t *png = NULL;
    size_t n = 0;
    if (fu_encode_png(&im, 6, &png, &n) < 0) abort();
    int all = 1;
    for (size_t cut = 0; cut < n; cut += (cut < 64 ? 1 : 97)) all &= decode_fails(png, cut, NULL);
    CHECK(all, "png truncated anywhere fails with a message", "last error: %s", fu_error());
    CHECK(decode_fails(png, n - 12, NULL), "png without IEND fails", "%s", fu_error());

    // Corrupt bytes inside the compressed data: an error or some pixels, never a crash.
    uint8_t *bad = malloc(n);
    int survived = 1;
    for (size_t at = 60; at < n - 20; at += 13) {
        memcpy(bad, png, n);
        bad[at] ^= 0x5a;
        fu_image out = {0};
        fu_clear_error();
        if (fu_decode(bad, n, 0, "x", &out) == 0) fu_image_free(&out);
        else survived &= fu_error()[0] != 0;
    }
    CHECK(survived, "png corrupt data never crashes", "error without message");
    memcpy(bad, png, n);
    bad[n / 2] ^= 0x01; // inside the IDAT chunk
    CHECK(decode_fails(bad, n, NULL), "png with a damaged IDAT fails (zlib or CRC error)", "%s", fu_error());

    // A header that claims 100000 x 100000 pixels.
    memcpy(bad, png, n);
    for (int k = 16; k < 24; k += 4) {
        bad[k] = 0;
        bad[k + 1] = 0x01;
        bad[k + 2] = 0x86;
        bad[k + 3] = 0xa0;
    }
    uint32_t crc = (uint32_t)crc32(0, bad + 12, 17);
    bad[29] = (uint8_t)(crc >> 24), bad[30] = (uint8_t)(crc >> 16), bad[31] = (uint8_t)(crc >> 8),
    bad[32] = (uint8_t)crc;
    CHECK(decode_fails(bad, n, "limit"), "png with a huge size in IHDR is refused", "%s", fu_error());
    fu_format f;
    uint32_t w, h, c;
    CHECK(fu_probe(bad, n, &f, &w, &h, &c) < 0, "png probe refuses a huge size", "probe passed");
    free(bad);
    free(png);
    fu_image_free(&im);
}

static void test_png_raw_streams(void) {
    enum { W = 6, H = 4, ROW = 1 + W * 3 };
    uint8_t rows[H + 1][ROW]; // one spare row for "too much data"
    for (int y = 0; y <= H; y++) {
        rows[y][0] = (uint8_t)(y % 5);
        for (int i = 1; i < ROW; i++) rows[y][i] = (uint8_t)(y * 31 + i * 7);
    }
    fu_image im = {0};
    membuf m = make_raw_png(W, H, &rows[0][0], H * ROW, 3);
    int ok = fu_decode(m.buf, m.n, 0, "t", &im) == 0;
    CHECK(ok, "png with every filter type in 3-byte IDAT chunks decodes", "%s", fu_error());
    uint8_t first[W * 3];
    if (ok) memcpy(first, im.px, sizeof first);
    fu_image_free(&im);
    free(m.buf);
    m = make_raw_png(W, H, &rows[0][0], H * ROW, 1 << 20);
    ok = fu_decode(m.buf, m.n, 0, "t", &im) == 0 && memcmp(first, im.px, sizeof first) == 0;
    CHECK(ok, "png decodes the same whatever the IDAT split", "%s", fu_error());
    fu_image_free(&im);
    free(m.buf);

    rows[2][0] = 5; // no such filter
    m = make_raw_png(W, H, &rows[0][0], H * ROW, 1 << 20);
    CHECK(decode_fails(m.buf, m.n, "filter"), "png with an unknown filter type fails", "%s", fu_error());
    free(m.buf);
    rows[2][0] = 2;
    m = make_raw_png(W, H, &rows[0][0], (H - 1) * ROW + 5, 1 << 20);
    CHECK(decode_fails(m.buf, m.n, NULL), "png with too little image data fails", "%s", fu_error());
    free(m.buf);
    m = make_raw_png(W, H, &rows[0][0], (H + 1) * ROW, 1 << 20);
    fu_clear_error();
    ok = fu_decode(m.buf, m.n, 0, "t", &im) == 0; // libpng warns about the extra data and goes on
    CHECK(ok && im.w == W && im.h == H, "png with extra image data decodes as libpng does", "%s", fu_error());
    fu_image_free(&im);
    free(m.buf);
}

static double mean_abs_diff(const fu_image *a, const fu_image *b) {
    double s = 0;
    for (size_t i = 0; i < fu_image_bytes(a); i++) s += abs((int)a->px[i] - (int)b->px[i]);
    return s / (double)fu_image_bytes(a);
}

static void test_jpeg(void) {
    fu_image im = ramp(80, 60, 3), back = {0};
    uint8_t *jpg = NULL;
    size_t n = 0;
    if (!CHECK(fu_encode_jpeg(&im, 95, &jpg, &n) == 0 && fu_sniff(jpg, n) == FU_FMT_JPEG, "jpeg encode", "%s",
               fu_error()))
        return;
    fu_format f = FU_FMT_UNKNOWN;
    uint32_t w = 0, h = 0, c = 0;
    int probed = fu_probe(jpg, n, &f, &w, &h, &c);
    CHECK(probed == 0 && f == FU_FMT_JPEG && w == 80 && h == 60 && c == 3,
          "jpeg probe", "%s", fu_error());
    int ok = fu_decode(jpg, n, 0, "t", &back) == 0 && back.w == 80 && back.h == 60 && back.c == 3;
    double mad = ok ? mean_abs_diff(&im, &back) : 999;
    CHECK(ok && mad < 1.5, "jpeg round trip at quality 95", "%s mean abs diff %.2f", fu_error(), mad);
    fu_image_free(&back);

    // Shrink-on-load: the largest 1/d that keeps both sides >= min_side.
    static const struct {
        uint32_t min_side, w, h;
    } cases[] = {{0, 80, 60}, {61, 80, 60}, {60, 80, 60}, {30, 40, 30}, {16, 40, 30}, {15, 20, 15},
                 {7, 10, 8},  {8, 10, 8},   {1, 10, 8}};
    for (size_t i = 0; i < sizeof cases / sizeof *cases; i++) {
        char name[80];
        snprintf(name, sizeof name, "jpeg shrink-on-load min_side %u gives %ux%u", cases[i].min_side, cases[i].w,
                 cases[i].h);
        back = (fu_image){0};
        ok = fu_decode(jpg, n, cases[i].min_side, "t", &back) == 0;
        CHECK(ok && back.w == cases[i].w && back.h == cases[i].h, name, "%s got %ux%u", fu_error(), back.w, back.h);
        fu_image_free(&back);
    }

    int all = 1;
    for (size_t cut = 0; cut < n - 2; cut += (cut < 700 ? 7 : 211)) all &= decode_fails(jpg, cut, NULL);
    CHECK(all, "jpeg truncated anywhere fails with a message", "last error: %s", fu_error());
    CHECK(decode_fails(jpg, n * 2 / 3, "truncated"), "jpeg cut short says truncated", "%s", fu_error());

    uint8_t *bad = malloc(n);
    int survived = 1;
    for (size_t at = 2; at < n; at += 5) {
        memcpy(bad, jpg, n);
        bad[at] ^= 0xa5;
        fu_image out = {0};
        fu_clear_error();
        if (fu_decode(bad, n, 64, "x", &out) == 0) fu_image_free(&out);
        else survived &= fu_error()[0] != 0;
    }
    CHECK(survived, "jpeg corrupt bytes never crash", "error without message");
    memcpy(bad, jpg, n);
    for (size_t i = 0; i < 64; i++) bad[n / 2 + i] = (uint8_t)i; // scribble over the entropy-coded data
    CHECK(decode_fails(bad, n, "Corrupt JPEG data"), "jpeg with scribbled data fails", "%s", fu_error());
    free(bad);
    // Two stray bytes before EOI: padding, not damage (libjpeg warns, we decode).
    bad = malloc(n + 2);
    memcpy(bad, jpg, n - 2);
    bad[n - 2] = 0, bad[n - 1] = 0, bad[n] = 0xff, bad[n + 1] = 0xd9;
    back = (fu_image){0};
    ok = fu_decode(bad, n + 2, 0, "t", &back) == 0;
    CHECK(ok, "jpeg with two stray bytes before EOI decodes", "%s", fu_error());
    fu_image_free(&back);
    free(bad);
    free(jpg);
    fu_image_free(&im);

    fu_image gray = gradient(32, 16, 1);
    if (fu_encode_jpeg(&gray, 90, &jpg, &n) == 0 && fu_decode(jpg, n, 0, "g", &back) == 0) {
        ok = back.c == 3;
        for (size_t i = 0; ok && i < 32 * 16; i++) ok &= back.px[3 * i] == back.px[3 * i + 1] && back.px[3 * i] == back.px[3 * i + 2];
        CHECK(ok, "gray jpeg decodes to replicated RGB", "channels differ");
        fu_image_free(&back);
        free(jpg);
    } else CHECK(0, "gray jpeg decodes to replicated RGB", "%s", fu_error());
    fu_image_free(&gray);

    membuf many = make_many_scan_jpeg();
    CHECK(decode_fails(many.buf, many.n, "scans"), "jpeg with 568 progressive scans is refused", "%s", fu_error());
    free(many.buf);

    membuf cmyk = make_cmyk_jpeg();
    CHECK(decode_fails(cmyk.buf, cmyk.n, "CMYK JPEG is not supported") && fu_error_hint()[0], "cmyk jpeg refused with a hint",
          "%s", fu_error());
    CHECK(fu_probe(cmyk.buf, cmyk.n, &f, &w, &h, &c) < 0 && strstr(fu_error(), "CMYK"), "cmyk jpeg probe refused",
          "%s", fu_error());
    free(cmyk.buf);
}

static void test_tiff(void) {
    enum { W = 21, H = 11 };
    fu_image rgb = gradient(W, H, 3), back = {0};
    static const int comps[] = {COMPRESSION_NONE, COMPRESSION_LZW, COMPRESSION_ADOBE_DEFLATE};
    for (int i = 0; i < 3; i++) {
        membuf m = make_tiff(W, H, 3, 8, comps[i], rgb.px);
        char name[64];
        snprintf(name, sizeof name, "tiff 8-bit RGB compression %d", comps[i]);
        int ok = fu_sniff(m.buf, m.n) == FU_FMT_TIFF && fu_decode(m.buf, m.n, 0, "t", &back) == 0 &&
                 memcmp(back.px, rgb.px, fu_image_bytes(&rgb)) == 0;
        CHECK(ok, name, "%s", fu_error());
        fu_image_free(&back);
        if (i == 1) {
            fu_format f;
            uint32_t w, h, c;
            CHECK(fu_probe(m.buf, m.n, &f, &w, &h, &c) == 0 && f == FU_FMT_TIFF && w == W && h == H && c == 3,
                  "tiff probe", "%s", fu_error());
            int all = 1;
            for (size_t cut = 0; cut < m.n; cut += 17) all &= decode_fails(m.buf, cut, NULL);
            CHECK(all, "tiff truncated anywhere fails with a message", "last error: %s", fu_error());
        }
        free(m.buf);
    }
    uint16_t gray16[H][W];
    for (int y = 0; y < H; y++)
        for (int x = 0; x < W; x++) gray16[y][x] = (uint16_t)(x * 3000 + y * 100);
    membuf m = make_tiff(W, H, 1, 16, COMPRESSION_LZW, gray16);
    int ok = fu_decode(m.buf, m.n, 0, "t", &back) == 0;
    for (int y = 0; ok && y < H; y++)
        for (int x = 0; x < W; x++) {
            int want = gray16[y][x] >> 8, got = back.px[(y * W + x) * 3];
            ok &= abs(got - want) <= 1 && back.px[(y * W + x) * 3 + 1] == got;
        }
    CHECK(ok, "tiff 16-bit gray to 8-bit RGB within 1", "%s", fu_error());
    fu_image_free(&back);
    free(m.buf);
    fu_image_free(&rgb);
}

static void test_not_images(void) {
    static const uint8_t text[] = "hello, this is not an image at all";
    CHECK(decode_fails(text, sizeof text, "not a PNG, JPEG or TIFF"), "text is not an image", "%s", fu_error());
    CHECK(decode_fails(text, 0, "not a PNG, JPEG or TIFF"), "empty buffer is not an image", "%s", fu_error());
    static const uint8_t magic_only[] = {0x89, 'P', 'N', 'G', '\r', '\n', 0x1a, '\n', 0, 0, 0};
    CHECK(decode_fails(magic_only, sizeof magic_only, NULL), "png magic alone fails", "%s", fu_error());
    static const uint8_t soi_only[] = {0xff, 0xd8, 0xff, 0xe0, 0, 16};
    CHECK(decode_fails(soi_only, sizeof soi_only, NULL), "jpeg markers alone fail", "%s", fu_error());
    static const uint8_t tiff_hdr[] = {'I', 'I', 42, 0, 8, 0, 0, 0, 0xff, 0xff};
    CHECK(decode_fails(tiff_hdr, sizeof tiff_hdr, NULL), "tiff header alone fails", "%s", fu_error());
    fu_format f;
    uint32_t w, h, c;
    CHECK(fu_probe(text, sizeof text, &f, &w, &h, &c) < 0 && f == FU_FMT_UNKNOWN, "probe refuses text",
          "probe passed");
    CHECK(strcmp(fu_format_name(FU_FMT_JPEG), "jpeg") == 0 && strcmp(fu_format_name(FU_FMT_UNKNOWN), "unknown") == 0,
          "format names", "wrong");
}

int main(void) {
    test_png_round_trip();
    test_png_kinds();
    test_png_hostile();
    test_png_raw_streams();
    test_jpeg();
    test_tiff();
    test_not_images();
    return check_done();
}
