// Contrast-limited adaptive histogram equalisation of one 8-bit plane, the
// semantics and the bits of OpenCV 4.6's
// cv2.createCLAHE(clipLimit=clip, tileGridSize=(tiles_x, tiles_y)).apply(src).
#ifndef FU_IMAGE_CLAHE_H
#define FU_IMAGE_CLAHE_H

#include <stdint.h>

// src, dst: (h, w), may be the same buffer. clip <= 0 equalises without a
// limit (as OpenCV does); tiles 1..256 each way. -1 + message on failure.
int fu_clahe(const uint8_t *src, uint8_t *dst, uint32_t w, uint32_t h, double clip, int tiles_x, int tiles_y);

#endif
