// Image codecs: PNG (libpng), JPEG (libjpeg-turbo), TIFF (libtiff), all from
// memory buffers, all decoding to 8-bit RGB the way OpenCV's imread(COLOR)
// does (16-bit -> high byte, gray -> replicated, alpha dropped, palette
// expanded), so our pixels equal OpenCV's (which are BGR).
#ifndef FU_IMAGE_CODEC_H
#define FU_IMAGE_CODEC_H

#include "image/image.h"

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

typedef enum { FU_FMT_UNKNOWN = 0, FU_FMT_PNG, FU_FMT_JPEG, FU_FMT_TIFF } fu_format;

fu_format fu_sniff(const uint8_t *data, size_t n); // from the magic bytes
const char *fu_format_name(fu_format f);           // "png", "jpeg", "tiff", "unknown"

// Header only: format, size and channel count as stored (before conversion).
// Fails with a clear message for non-images and for unsupported kinds (CMYK JPEG).
int fu_probe(const uint8_t *data, size_t n, fu_format *fmt, uint32_t *w, uint32_t *h, uint32_t *c);

// Decode to RGB (c = 3). When min_side > 0, a JPEG may be decoded at a reduced
// DCT scale (1/2, 1/4, 1/8) as long as both sides stay >= min_side
// (shrink-on-load); min_side = 0 decodes at full size (the exact path).
// `subject` names the input in messages.
int fu_decode(const uint8_t *data, size_t n, uint32_t min_side, const char *subject, fu_image *out);

// Encoders for synthetic data, shard-unpack and tests. *out is malloc'd.
int fu_encode_png(const fu_image *im, int level, uint8_t **out, size_t *n);
int fu_encode_jpeg(const fu_image *im, int quality, uint8_t **out, size_t *n);

#endif
