// An 8-bit image in memory: interleaved rows, (H, W, C), C = 3 means RGB.
#ifndef FU_IMAGE_IMAGE_H
#define FU_IMAGE_IMAGE_H

#include <stdint.h>
#include <stddef.h>

typedef struct {
    uint32_t w, h, c;
    uint8_t *px; // (h, w, c), row stride w*c
} fu_image;

int fu_image_alloc(fu_image *im, uint32_t w, uint32_t h, uint32_t c); // -1 + message on failure
void fu_image_free(fu_image *im);
static inline size_t fu_image_bytes(const fu_image *im) { return (size_t)im->w * im->h * im->c; }

#endif
