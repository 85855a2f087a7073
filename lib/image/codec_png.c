// PNG through libpng's classic API, from and to memory.
//
// Decoding applies the transforms OpenCV 4.6's PngDecoder asks for with
// IMREAD_COLOR, so the pixels equal cv2.imread's (reversed to RGB): 16-bit
// samples keep their high byte (png_set_strip_16), palettes expand, gray is
// replicated and alpha is dropped without compositing. Plain 8-bit files
// take the faster route of codec_png_fast.c first.
//
// libpng reports errors by longjmp. Every call that can fail runs under one
// setjmp in the function that owns the allocations, the error handler copies
// libpng's message into our context, and warnings are swallowed: libpng
// never prints.
#include "image/codec_formats.h"

#include "core/error.h"

#include <png.h>
#include <setjmp.h>
#include <stdlib.h>
#include <string.h>

typedef struct {
    const uint8_t *data;
    size_t n, pos;
    char msg[160];
} png_source;

static void on_error(png_structp png, png_const_charp msg) {
    png_source *src = png_get_error_ptr(png);
    snprintf(src->msg, sizeof src->msg, "%s", msg);
    png_longjmp(png, 1);
}

static void on_warning(png_structp png, png_const_charp msg) {}

static void read_from_memory(png_structp png, png_bytep dst, size_t len) {
    png_source *src = png_get_io_ptr(png);
    if (len > src->n - src->pos) png_error(png, "file ends early (truncated PNG)");
    memcpy(dst, src->data + src->pos, len);
    src->pos += len;
}


// Reads the signature and IHDR; fails when the file is not a PNG.
static png_structp open_reader(png_source *src, png_infop *info) {
    png_structp png = png_create_read_struct(PNG_LIBPNG_VER_STRING, src, on_error, on_warning);
    if (!png) return NULL;
    *info = png_create_info_struct(png);
    if (!*info) {
        png_destroy_read_struct(&png, NULL, NULL);
        return NULL;
    }
    png_set_read_fn(png, src, read_from_memory);
    return png;
}

int fu_probe_png(const uint8_t *data, size_t n, uint32_t *w, uint32_t *h, uint32_t *c) {
    png_source src = {data, n, 0, ""};
    png_infop info = NULL;
    png_structp png = open_reader(&src, &info);
    if (!png) return fu_fail("png", "out of memory");
    if (setjmp(png_jmpbuf(png))) {
        png_destroy_read_struct(&png, &info, NULL);
        return fu_fail("png", "%s", src.msg);
    }
    png_read_info(png, info);
    *w = png_get_image_width(png, info);
    *h = png_get_image_height(png, info);
    int type = png_get_color_type(png, info);
    *c = type == PNG_COLOR_TYPE_PALETTE ? 3 : png_get_channels(png, info);
    png_destroy_read_struct(&png, &info, NULL);
    return 0;
}

int fu_decode_png(const uint8_t *data, size_t n, const char *subject, fu_image *out) {
    out->px = NULL;
    int fast = fu_decode_png_fast(data, n, subject, out);
    if (fast != 0) return fast < 0 ? -1 : 0;
    png_source src = {data, n, 0, ""};
    png_infop info = NULL;
    png_structp png = open_reader(&src, &info);
    if (!png) return fu_fail(subject, "out of memory");
    png_bytep *volatile rows = NULL;
    if (setjmp(png_jmpbuf(png))) {
        png_destroy_read_struct(&png, &info, NULL);
        free(rows);
        fu_image_free(out);
        return fu_fail(subject, "PNG: %s", src.msg);
    }
    // Chunk CRCs stay checked (about 1% of the decode); the zlib Adler-32
    // repeats what the IDAT CRCs already guarantee and costs 7-10%.
#ifdef PNG_IGNORE_ADLER32
    png_set_option(png, PNG_IGNORE_ADLER32, PNG_OPTION_ON);
#endif
    png_read_info(png, info);
    uint32_t w = png_get_image_width(png, info), h = png_get_image_height(png, info);
    int depth = png_get_bit_depth(png, info), type = png_get_color_type(png, info);
    if (fu_codec_check_size(subject, "PNG", w, h) < 0) {
        png_destroy_read_struct(&png, &info, NULL);
        return -1;
    }
    if (depth == 16) png_set_strip_16(png);
    png_set_strip_alpha(png);
    if (type == PNG_COLOR_TYPE_PALETTE) png_set_palette_to_rgb(png);
    if (!(type & PNG_COLOR_MASK_COLOR)) {
        if (depth < 8) png_set_expand_gray_1_2_4_to_8(png);
        png_set_gray_to_rgb(png);
    }
    png_set_interlace_handling(png);
    png_read_update_info(png, info);
    if (png_get_rowbytes(png, info) != (size_t)w * 3) png_error(png, "unexpected row layout after conversion");
    if (fu_image_alloc(out, w, h, 3) < 0) {
        png_destroy_read_struct(&png, &info, NULL);
        return -1;
    }
    rows = malloc(sizeof *rows * h);
    if (!rows) png_error(png, "out of memory");
    for (uint32_t y = 0; y < h; y++) rows[y] = out->px + (size_t)y * w * 3;
    png_read_image(png, rows);
    png_read_end(png, NULL); // as OpenCV does: a file cut off before IEND is an error
    png_destroy_read_struct(&png, &info, NULL);
    free(rows);
    return 0;
}

// ---- encoding --------------------------------------------------------------

typedef struct {
    uint8_t *buf;
    size_t n, cap;
    char msg[160];
} png_sink;

static void write_to_memory(png_structp png, png_bytep data, size_t len) {
    png_sink *s = png_get_io_ptr(png);
    if (s->n + len > s->cap) {
        size_t cap = s->cap ? s->cap : 65536;
        while (cap < s->n + len) cap *= 2;
        uint8_t *p = realloc(s->buf, cap);
        if (!p) png_error(png, "out of memory");
        s->buf = p;
        s->cap = cap;
    }
    memcpy(s->buf + s->n, data, len);
    s->n += len;
}

static void flush_nothing(png_structp png) {}

static void on_write_error(png_structp png, png_const_charp msg) {
    png_sink *s = png_get_error_ptr(png);
    snprintf(s->msg, sizeof s->msg, "%s", msg);
    png_longjmp(png, 1);
}

int fu_encode_png(const fu_image *im, int level, uint8_t **out, size_t *n) {
    static const int types[5] = {-1, PNG_COLOR_TYPE_GRAY, PNG_COLOR_TYPE_GRAY_ALPHA, PNG_COLOR_TYPE_RGB,
                                 PNG_COLOR_TYPE_RGBA};
    if (im->c < 1 || im->c > 4) return fu_fail("png", "cannot encode %u channels", im->c);
    if (im->w == 0 || im->h == 0 || im->w > FU_CODEC_MAX_SIDE || im->h > FU_CODEC_MAX_SIDE)
        return fu_fail("png", "cannot encode a %ux%u image", im->w, im->h);
    png_sink sink = {NULL, 0, 0, ""};
    png_structp png = png_create_write_struct(PNG_LIBPNG_VER_STRING, &sink, on_write_error, on_warning);
    png_infop info = png ? png_create_info_struct(png) : NULL;
    if (!info) {
        png_destroy_write_struct(&png, NULL);
        return fu_fail("png", "out of memory");
    }
    if (setjmp(png_jmpbuf(png))) {
        png_destroy_write_struct(&png, &info);
        free(sink.buf);
        return fu_fail("png", "encoding failed: %s", sink.msg);
    }
    png_set_write_fn(png, &sink, write_to_memory, flush_nothing);
    png_set_compression_level(png, level < 0 ? 6 : level > 9 ? 9 : level);
    png_set_IHDR(png, info, im->w, im->h, 8, types[im->c], PNG_INTERLACE_NONE, PNG_COMPRESSION_TYPE_DEFAULT,
                 PNG_FILTER_TYPE_DEFAULT);
    png_write_info(png, info);
    size_t stride = (size_t)im->w * im->c;
    for (uint32_t y = 0; y < im->h; y++) png_write_row(png, im->px + y * stride);
    png_write_end(png, info);
    png_destroy_write_struct(&png, &info);
    *out = sink.buf;
    *n = sink.n;
    return 0;
}
