// Resizing 8-bit interleaved images with OpenCV 4.6's INTER_AREA semantics,
// bit for bit: cv2.resize(img, (w, h), interpolation=cv2.INTER_AREA).
//
//   shrinking on both axes by integer factors: box average (resizeAreaFast_)
//   shrinking on both axes otherwise: exact pixel-area weights in float (ResizeArea_)
//   enlarging on either axis: OpenCV's 11-bit fixed-point bilinear with the
//   area-mode source coordinates
#ifndef FU_IMAGE_RESIZE_H
#define FU_IMAGE_RESIZE_H

#include "image/image.h"

// Allocates *dst as w x h with src's channel count. -1 + message on failure.
int fu_resize(const fu_image *src, uint32_t w, uint32_t h, fu_image *dst);

#endif
