// TIFF through libtiff, from memory.
//
// The image is read with libtiff's RGBA interface, the path OpenCV 4.6's
// TiffDecoder takes for 8-bit output, so every layout libtiff understands
// (8/16-bit, gray/RGB/RGBA, palette, any compression) decodes the same way
// as cv2.imread; alpha is then dropped.
//
// libtiff's default handlers print to stderr and are process-global; the
// per-handle handlers of TIFFOpenOptions (libtiff >= 4.5) copy the first
// message into our context instead, so decoders on several threads keep
// their messages apart.
#include "image/codec_formats.h"

#include "core/error.h"

#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <tiffio.h>

typedef struct {
    const uint8_t *data;
    size_t n;
    uint64_t pos;
    char msg[200];
} tiff_source;

static tmsize_t read_proc(thandle_t h, void *buf, tmsize_t size) {
    tiff_source *s = h;
    if (size < 0) return -1;
    uint64_t left = s->pos < s->n ? s->n - s->pos : 0;
    uint64_t k = (uint64_t)size < left ? (uint64_t)size : left;
    memcpy(buf, s->data + s->pos, k);
    s->pos += k;
    return (tmsize_t)k;
}

static tmsize_t write_proc(thandle_t h, void *buf, tmsize_t size) { return -1; }

static toff_t seek_proc(thandle_t h, toff_t off, int whence) {
    tiff_source *s = h;
    uint64_t base = whence == SEEK_CUR ? s->pos : whence == SEEK_END ? s->n : 0;
    s->pos = base + off;
    return s->pos;
}

static int close_proc(thandle_t h) { return 0; }
static toff_t size_proc(thandle_t h) { return ((tiff_source *)h)->n; }

// Lets libtiff read strips straight from the buffer instead of copying them.
static int map_proc(thandle_t h, void **base, toff_t *size) {
    tiff_source *s = h;
    *base = (void *)s->data;
    *size = s->n;
    return 1;
}
static void unmap_proc(thandle_t h, void *base, toff_t size) {}

static int on_error(TIFF *tif, void *user, const char *module, const char *fmt, va_list ap) {
    tiff_source *s = user;
    if (!s->msg[0]) vsnprintf(s->msg, sizeof s->msg, fmt, ap);
    return 1; // handled: the global handler stays silent
}

static int on_warning(TIFF *tif, void *user, const char *module, const char *fmt, va_list ap) { return 1; }

static TIFF *open_tiff(tiff_source *s) {
    TIFFOpenOptions *opts = TIFFOpenOptionsAlloc();
    if (!opts) return NULL;
    TIFFOpenOptionsSetErrorHandlerExtR(opts, on_error, s);
    TIFFOpenOptionsSetWarningHandlerExtR(opts, on_warning, s);
    TIFF *tif = TIFFClientOpenExt("tiff", "r", s, read_proc, write_proc, seek_proc, close_proc, size_proc,
                                  map_proc, unmap_proc, opts);
    TIFFOpenOptionsFree(opts);
    return tif;
}

static const char *reason(const tiff_source *s) { return s->msg[0] ? s->msg : "not a readable TIFF file"; }

int fu_probe_tiff(const uint8_t *data, size_t n, uint32_t *w, uint32_t *h, uint32_t *c) {
    tiff_source s = {data, n, 0, ""};
    TIFF *tif = open_tiff(&s);
    if (!tif) return fu_fail("tiff", "%s", reason(&s));
    uint16_t spp = 1;
    int ok = TIFFGetField(tif, TIFFTAG_IMAGEWIDTH, w) && TIFFGetField(tif, TIFFTAG_IMAGELENGTH, h);
    TIFFGetFieldDefaulted(tif, TIFFTAG_SAMPLESPERPIXEL, &spp);
    TIFFClose(tif);
    if (!ok) return fu_fail("tiff", "no image size in the header");
    *c = spp;
    return 0;
}

int fu_decode_tiff(const uint8_t *data, size_t n, const char *subject, fu_image *out) {
    tiff_source s = {data, n, 0, ""};
    out->px = NULL;
    TIFF *tif = open_tiff(&s);
    if (!tif) return fu_fail(subject, "TIFF: %s", reason(&s));
    uint32_t w = 0, h = 0;
    char why[1024];
    uint32_t *raster = NULL;
    if (!TIFFGetField(tif, TIFFTAG_IMAGEWIDTH, &w) || !TIFFGetField(tif, TIFFTAG_IMAGELENGTH, &h)) {
        fu_fail(subject, "TIFF: no image size in the header");
        goto fail;
    }
    if (fu_codec_check_size(subject, "TIFF", w, h) < 0) goto fail;
    if (!TIFFRGBAImageOK(tif, why)) {
        fu_fail(subject, "TIFF: %s", why);
        goto fail;
    }
    raster = malloc((size_t)w * h * sizeof *raster); // (H, W) packed ABGR
    if (!raster) {
        fu_fail(subject, "out of memory for a %ux%u TIFF", w, h);
        goto fail;
    }
    if (!TIFFReadRGBAImageOriented(tif, w, h, raster, ORIENTATION_TOPLEFT, 1)) {
        fu_fail(subject, "TIFF: %s", reason(&s));
        goto fail;
    }
    if (fu_image_alloc(out, w, h, 3) < 0) goto fail;
    size_t count = (size_t)w * h;
    uint8_t *px = out->px; // (H, W, 3)
    for (size_t i = 0; i < count; i++) {
        px[3 * i + 0] = (uint8_t)TIFFGetR(raster[i]);
        px[3 * i + 1] = (uint8_t)TIFFGetG(raster[i]);
        px[3 * i + 2] = (uint8_t)TIFFGetB(raster[i]);
    }
    free(raster);
    TIFFClose(tif);
    return 0;
fail:
    free(raster);
    TIFFClose(tif);
    return -1;
}
