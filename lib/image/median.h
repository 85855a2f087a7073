// Per-channel median filter of an interleaved 8-bit image with replicated
// borders, pixel for pixel what cv2.medianBlur(src, k) gives for k = 3 or 5.
#ifndef FU_IMAGE_MEDIAN_H
#define FU_IMAGE_MEDIAN_H

#include "image/image.h"

// dst: an allocated image of src's shape, not src itself.
// -1 + message on failure (k not 3 or 5, shapes differ, out of memory).
int fu_median(const fu_image *src, fu_image *dst, int k);

#endif
