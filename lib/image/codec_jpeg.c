// JPEG through libjpeg-turbo, from and to memory.
//
// Decoding uses libjpeg's defaults, as OpenCV 4.6's JpegDecoder does (islow
// DCT, fancy upsampling), so a full-size decode equals cv2.imread's pixels.
// With min_side > 0 the decoder may scale by 1/2, 1/4 or 1/8 inside the DCT
// (shrink-on-load), which skips most of the work for large photographs.
//
// Like cv2.imread, the EXIF orientation tag (APP1) is applied after decoding.
//
// libjpeg's error_exit must not return: ours copies the message and
// longjmps back to the function that owns the decompressor. Warnings are
// ignored as OpenCV ignores them, except a premature end of data, where
// libjpeg would pad the image with grey: that is a truncated file.
#include "image/codec_formats.h"

#include "core/error.h"

#include <setjmp.h>
#include <stdio.h> // before jpeglib.h, which uses FILE
#include <stdlib.h>
#include <string.h>

#include <jerror.h>
#include <jpeglib.h>

typedef struct {
    struct jpeg_error_mgr pub;
    jmp_buf jump;
    char msg[JMSG_LENGTH_MAX];
} jpeg_errors;

static void on_error_exit(j_common_ptr cinfo) {
    jpeg_errors *e = (jpeg_errors *)cinfo->err;
    cinfo->err->format_message(cinfo, e->msg);
    longjmp(e->jump, 1);
}

// Whether a warning means the pixels are damaged. More than a few stray
// bytes before a marker that follows entropy-coded data (EOI, SOS, RSTn)
// mean the decoder lost its place; one or two are padding some encoders leave.
static bool damaged(const struct jpeg_error_mgr *err) {
    switch (err->msg_code) {
    case JWRN_HIT_MARKER:
    case JWRN_HUFF_BAD_CODE:
    case JWRN_MUST_RESYNC: return true;
    case JWRN_EXTRANEOUS_DATA: {
        int marker = err->msg_parm.i[1];
        return err->msg_parm.i[0] > 32 && (marker == 0xd9 || marker == 0xda || (marker >= 0xd0 && marker <= 0xd7));
    }
    default: return false;
    }
}

// Warnings that OpenCV ignores are errors here when the image they leave is
// not the one in the file: libjpeg pads a truncated file with grey and
// decodes damaged data to garbage, which must not reach a training set.
static void on_message(j_common_ptr cinfo, int level) {
    if (level >= 0) return; // trace messages
    jpeg_errors *e = (jpeg_errors *)cinfo->err;
    if (cinfo->err->msg_code == JWRN_JPEG_EOF) {
        snprintf(e->msg, sizeof e->msg, "truncated JPEG (data ends before the image is complete)");
        longjmp(e->jump, 1);
    }
    if (damaged(cinfo->err)) {
        cinfo->err->format_message(cinfo, e->msg);
        longjmp(e->jump, 1);
    }
}

static void print_nothing(j_common_ptr cinfo) {}

// A hostile progressive JPEG can hold thousands of tiny scans, each costing
// a pass over the whole image; real encoders write at most a few dozen.
enum { MAX_SCANS = 500 };

static void limit_scans(j_common_ptr cinfo) {
    j_decompress_ptr d = (j_decompress_ptr)cinfo;
    if (d->input_scan_number > MAX_SCANS) {
        jpeg_errors *e = (jpeg_errors *)cinfo->err;
        snprintf(e->msg, sizeof e->msg, "more than %d progressive scans (a damaged or hostile file)", MAX_SCANS);
        longjmp(e->jump, 1);
    }
}

static void install_errors(jpeg_errors *e) {
    jpeg_std_error(&e->pub);
    e->pub.error_exit = on_error_exit;
    e->pub.emit_message = on_message;
    e->pub.output_message = print_nothing;
    e->msg[0] = 0;
}

static int refuse_cmyk(const char *subject, J_COLOR_SPACE cs) {
    if (cs != JCS_CMYK && cs != JCS_YCCK) return 0;
    fu_fail(subject, "CMYK JPEG is not supported");
    fu_hint("convert it to RGB first, e.g. `convert in.jpg -colorspace sRGB out.jpg`");
    return -1;
}

int fu_probe_jpeg(const uint8_t *data, size_t n, uint32_t *w, uint32_t *h, uint32_t *c) {
    struct jpeg_decompress_struct cinfo = {0};
    jpeg_errors err;
    install_errors(&err);
    cinfo.err = &err.pub;
    if (setjmp(err.jump)) {
        jpeg_destroy_decompress(&cinfo);
        return fu_fail("jpeg", "%s", err.msg);
    }
    jpeg_create_decompress(&cinfo);
    jpeg_mem_src(&cinfo, data, n);
    jpeg_read_header(&cinfo, TRUE);
    *w = cinfo.image_width;
    *h = cinfo.image_height;
    *c = (uint32_t)cinfo.num_components;
    J_COLOR_SPACE cs = cinfo.jpeg_color_space;
    jpeg_destroy_decompress(&cinfo);
    return refuse_cmyk("jpeg", cs);
}

static unsigned get16(const uint8_t *p, bool le) { return le ? p[0] | p[1] << 8 : p[0] << 8 | p[1]; }
static uint32_t get32(const uint8_t *p, bool le) {
    return le ? get16(p, le) | (uint32_t)get16(p + 2, le) << 16 : (uint32_t)get16(p, le) << 16 | get16(p + 2, le);
}

// The EXIF orientation (1..8) from a saved APP1 marker; 1 when there is none.
static int exif_orientation(j_decompress_ptr cinfo) {
    for (jpeg_saved_marker_ptr m = cinfo->marker_list; m; m = m->next) {
        const uint8_t *p = m->data;
        size_t n = m->data_length;
        if (m->marker != JPEG_APP0 + 1 || n < 14 || memcmp(p, "Exif\0\0", 6) != 0) continue;
        const uint8_t *tiff = p + 6;
        size_t tn = n - 6;
        bool le = tiff[0] == 'I' && tiff[1] == 'I';
        if (!le && !(tiff[0] == 'M' && tiff[1] == 'M')) continue;
        uint32_t ifd = get32(tiff + 4, le);
        if (ifd > tn - 2) continue;
        unsigned count = get16(tiff + ifd, le);
        for (unsigned i = 0; i < count && ifd + 2 + 12 * (i + 1) <= tn; i++) {
            const uint8_t *e = tiff + ifd + 2 + 12 * i;
            if (get16(e, le) == 0x0112 && get16(e + 2, le) == 3) { // orientation, SHORT
                unsigned v = get16(e + 8, le);
                return v >= 1 && v <= 8 ? (int)v : 1;
            }
        }
    }
    return 1;
}

// OpenCV's ExifTransform: 5..8 transpose first; then 2, 3, 6, 7 flip left-right
// and 3, 4, 7, 8 flip top-bottom.
static int apply_orientation(fu_image *im, int orientation) {
    if (orientation <= 1) return 0;
    bool transpose = orientation >= 5;
    bool flip_x = orientation == 2 || orientation == 3 || orientation == 6 || orientation == 7;
    bool flip_y = orientation == 3 || orientation == 4 || orientation == 7 || orientation == 8;
    fu_image out;
    if (fu_image_alloc(&out, transpose ? im->h : im->w, transpose ? im->w : im->h, 3) < 0) return -1;
    for (uint32_t y = 0; y < out.h; y++) {
        uint32_t ty = flip_y ? out.h - 1 - y : y;
        uint8_t *d = out.px + (size_t)y * out.w * 3; // (W, 3)
        for (uint32_t x = 0; x < out.w; x++) {
            uint32_t tx = flip_x ? out.w - 1 - x : x;
            const uint8_t *s = transpose ? im->px + ((size_t)tx * im->w + ty) * 3 : im->px + ((size_t)ty * im->w + tx) * 3;
            d[3 * x] = s[0], d[3 * x + 1] = s[1], d[3 * x + 2] = s[2];
        }
    }
    fu_image_free(im);
    *im = out;
    return 0;
}

// The largest DCT reduction 1/d (d in 8, 4, 2) that keeps both sides >= min_side.
static unsigned shrink_denominator(uint32_t w, uint32_t h, uint32_t min_side) {
    if (min_side == 0) return 1;
    for (unsigned d = 8; d > 1; d /= 2)
        if ((w + d - 1) / d >= min_side && (h + d - 1) / d >= min_side) return d;
    return 1;
}

int fu_decode_jpeg(const uint8_t *data, size_t n, uint32_t min_side, const char *subject, fu_image *out) {
    struct jpeg_decompress_struct cinfo = {0};
    jpeg_errors err;
    install_errors(&err);
    cinfo.err = &err.pub;
    out->px = NULL;
    if (setjmp(err.jump)) {
        jpeg_destroy_decompress(&cinfo);
        fu_image_free(out);
        return fu_fail(subject, "JPEG: %s", err.msg);
    }
    jpeg_create_decompress(&cinfo);
    struct jpeg_progress_mgr progress = {.progress_monitor = limit_scans};
    cinfo.progress = &progress;
    jpeg_mem_src(&cinfo, data, n);
    jpeg_save_markers(&cinfo, JPEG_APP0 + 1, 0xffff);
    jpeg_read_header(&cinfo, TRUE);
    const int orientation = exif_orientation(&cinfo);
    if (refuse_cmyk(subject, cinfo.jpeg_color_space) < 0 ||
        fu_codec_check_size(subject, "JPEG", cinfo.image_width, cinfo.image_height) < 0) {
        jpeg_destroy_decompress(&cinfo);
        return -1;
    }
    cinfo.out_color_space = JCS_RGB;
    cinfo.scale_num = 1;
    cinfo.scale_denom = shrink_denominator(cinfo.image_width, cinfo.image_height, min_side);
    jpeg_start_decompress(&cinfo);
    if (cinfo.output_components != 3) {
        snprintf(err.msg, sizeof err.msg, "cannot convert %d components to RGB", cinfo.output_components);
        longjmp(err.jump, 1);
    }
    if (fu_image_alloc(out, cinfo.output_width, cinfo.output_height, 3) < 0) {
        jpeg_destroy_decompress(&cinfo);
        return -1;
    }
    size_t stride = (size_t)out->w * 3;
    while (cinfo.output_scanline < cinfo.output_height) {
        JSAMPROW rows[16];
        unsigned k = 0;
        for (; k < 16 && cinfo.output_scanline + k < cinfo.output_height; k++)
            rows[k] = out->px + (cinfo.output_scanline + k) * stride;
        jpeg_read_scanlines(&cinfo, rows, k);
    }
    jpeg_finish_decompress(&cinfo);
    jpeg_destroy_decompress(&cinfo);
    if (apply_orientation(out, orientation) < 0) {
        fu_image_free(out);
        return -1;
    }
    return 0;
}

int fu_encode_jpeg(const fu_image *im, int quality, uint8_t **out, size_t *n) {
    if (im->c != 1 && im->c != 3) return fu_fail("jpeg", "cannot encode %u channels (1 or 3)", im->c);
    if (im->w == 0 || im->h == 0 || im->w > 65500 || im->h > 65500)
        return fu_fail("jpeg", "cannot encode a %ux%u image", im->w, im->h);
    struct jpeg_compress_struct cinfo = {0};
    jpeg_errors err;
    install_errors(&err);
    cinfo.err = &err.pub;
    unsigned char *volatile buf = NULL;
    unsigned long len = 0;
    if (setjmp(err.jump)) {
        jpeg_destroy_compress(&cinfo);
        free(buf);
        return fu_fail("jpeg", "encoding failed: %s", err.msg);
    }
    jpeg_create_compress(&cinfo);
    jpeg_mem_dest(&cinfo, (unsigned char **)&buf, &len);
    cinfo.image_width = im->w;
    cinfo.image_height = im->h;
    cinfo.input_components = (int)im->c;
    cinfo.in_color_space = im->c == 3 ? JCS_RGB : JCS_GRAYSCALE;
    jpeg_set_defaults(&cinfo);
    jpeg_set_quality(&cinfo, quality < 1 ? 1 : quality > 100 ? 100 : quality, TRUE);
    jpeg_start_compress(&cinfo, TRUE);
    size_t stride = (size_t)im->w * im->c;
    while (cinfo.next_scanline < cinfo.image_height) {
        JSAMPROW row = im->px + cinfo.next_scanline * stride;
        jpeg_write_scanlines(&cinfo, &row, 1);
    }
    jpeg_finish_compress(&cinfo);
    jpeg_destroy_compress(&cinfo);
    *out = buf;
    *n = len;
    return 0;
}
