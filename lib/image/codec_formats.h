// Internal to the codecs (codec*.c): one decoder and one header reader per
// format, and the size limits every decoder checks before allocating.
#ifndef FU_IMAGE_CODEC_FORMATS_H
#define FU_IMAGE_CODEC_FORMATS_H

#include "image/codec.h"

// A bogus header must not make us allocate gigabytes: no side above 65535
// and no more than 2^30 pixels (a 32768 x 32768 photograph).
#define FU_CODEC_MAX_SIDE 65535u
#define FU_CODEC_MAX_PIXELS (UINT64_C(1) << 30)

// 0 when w x h is a size we are willing to decode, else -1 with a message.
int fu_codec_check_size(const char *subject, const char *format, uint64_t w, uint64_t h);

int fu_probe_png(const uint8_t *data, size_t n, uint32_t *w, uint32_t *h, uint32_t *c);
int fu_probe_jpeg(const uint8_t *data, size_t n, uint32_t *w, uint32_t *h, uint32_t *c);
int fu_probe_tiff(const uint8_t *data, size_t n, uint32_t *w, uint32_t *h, uint32_t *c);

// 1 = decoded, 0 = not a plain 8-bit PNG (decode with libpng), -1 = error.
int fu_decode_png_fast(const uint8_t *data, size_t n, const char *subject, fu_image *out);
int fu_decode_png(const uint8_t *data, size_t n, const char *subject, fu_image *out);
int fu_decode_jpeg(const uint8_t *data, size_t n, uint32_t min_side, const char *subject, fu_image *out);
int fu_decode_tiff(const uint8_t *data, size_t n, const char *subject, fu_image *out);

#endif
