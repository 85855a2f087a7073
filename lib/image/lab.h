// 8-bit sRGB <-> CIE L*a*b* (D65), bit-exact with OpenCV 4.6's
// cv::cvtColor(COLOR_RGB2Lab / COLOR_Lab2RGB) on CV_8U images.
//
// OpenCV converts 8-bit images with a fixed-point path of small tables
// (sRGB gamma, cube root, inverse gamma, L -> Y, a/b -> X/Z) rather than in
// floating point; we build the same tables and do the same integer arithmetic,
// so every pixel matches. The 8-bit encoding is OpenCV's: L scaled to 0..255
// (L*255/100), a and b offset by 128.
#ifndef FU_IMAGE_LAB_H
#define FU_IMAGE_LAB_H

#include <stddef.h>
#include <stdint.h>

// Interleaved: rgb (n, 3) -> lab (n, 3). In place is allowed.
void fu_rgb_to_lab(const uint8_t *rgb, uint8_t *lab, size_t n);
// Interleaved: lab (n, 3) -> rgb (n, 3). In place is allowed.
void fu_lab_to_rgb(const uint8_t *lab, uint8_t *rgb, size_t n);

// Planar forms for the enhancement chain, which works on L alone; the
// buffers must not overlap. rgb (n, 3) -> L (n), a (n), b (n).
void fu_rgb_to_lab_planes(const uint8_t *rgb, uint8_t *L, uint8_t *a, uint8_t *b, size_t n);
// L, a, b (n each) -> rgb (n, 3), each output byte then mapped through
// `lut` (256 entries; NULL = none), which lets a per-byte curve such as a
// gamma correction ride along for free.
void fu_lab_planes_to_rgb(const uint8_t *L, const uint8_t *a, const uint8_t *b, const uint8_t *lut,
                          uint8_t *rgb, size_t n);

#endif
