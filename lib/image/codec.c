// Format sniffing, header probing and dispatch to the per-format codecs
// (codec_png.c, codec_jpeg.c, codec_tiff.c).
#include "image/codec.h"

#include "core/error.h"
#include "image/codec_formats.h"

#include <string.h>

fu_format fu_sniff(const uint8_t *data, size_t n) {
    static const uint8_t png[8] = {0x89, 'P', 'N', 'G', '\r', '\n', 0x1a, '\n'};
    if (n >= 8 && memcmp(data, png, 8) == 0) return FU_FMT_PNG;
    if (n >= 3 && data[0] == 0xff && data[1] == 0xd8 && data[2] == 0xff) return FU_FMT_JPEG;
    if (n >= 4 && ((data[0] == 'I' && data[1] == 'I' && (data[2] == 42 || data[2] == 43) && data[3] == 0) ||
                   (data[0] == 'M' && data[1] == 'M' && data[2] == 0 && (data[3] == 42 || data[3] == 43))))
        return FU_FMT_TIFF;
    return FU_FMT_UNKNOWN;
}

const char *fu_format_name(fu_format f) {
    switch (f) {
    case FU_FMT_PNG: return "png";
    case FU_FMT_JPEG: return "jpeg";
    case FU_FMT_TIFF: return "tiff";
    case FU_FMT_UNKNOWN: break;
    }
    return "unknown";
}

int fu_codec_check_size(const char *subject, const char *format, uint64_t w, uint64_t h) {
    if (w == 0 || h == 0) return fu_fail(subject, "%s header says the image is %llux%llu", format,
                                         (unsigned long long)w, (unsigned long long)h);
    if (w > FU_CODEC_MAX_SIDE || h > FU_CODEC_MAX_SIDE || w * h > FU_CODEC_MAX_PIXELS)
        return fu_fail(subject, "%s image is %llux%llu, above the limit of %u per side and %llu pixels", format,
                       (unsigned long long)w, (unsigned long long)h, FU_CODEC_MAX_SIDE,
                       (unsigned long long)FU_CODEC_MAX_PIXELS);
    return 0;
}

static int not_an_image(const char *subject, const uint8_t *data, size_t n) {
    fu_fail(subject, "not a PNG, JPEG or TIFF file (%zu bytes%s)", n, n == 0 ? "" : ", unknown magic bytes");
    fu_hint("the image tools read PNG, JPEG and TIFF");
    return -1;
}

int fu_probe(const uint8_t *data, size_t n, fu_format *fmt, uint32_t *w, uint32_t *h, uint32_t *c) {
    *fmt = fu_sniff(data, n);
    int rc;
    switch (*fmt) {
    case FU_FMT_PNG: rc = fu_probe_png(data, n, w, h, c); break;
    case FU_FMT_JPEG: rc = fu_probe_jpeg(data, n, w, h, c); break;
    case FU_FMT_TIFF: rc = fu_probe_tiff(data, n, w, h, c); break;
    default: return not_an_image("image", data, n);
    }
    if (rc < 0) return -1;
    return fu_codec_check_size(fu_format_name(*fmt), fu_format_name(*fmt), *w, *h);
}

int fu_decode(const uint8_t *data, size_t n, uint32_t min_side, const char *subject, fu_image *out) {
    out->px = NULL;
    switch (fu_sniff(data, n)) {
    case FU_FMT_PNG: return fu_decode_png(data, n, subject, out);
    case FU_FMT_JPEG: return fu_decode_jpeg(data, n, min_side, subject, out);
    case FU_FMT_TIFF: return fu_decode_tiff(data, n, subject, out);
    case FU_FMT_UNKNOWN: break;
    }
    return not_an_image(subject, data, n);
}
