// The study's per-image enhancement, one call per image:
//   RGB -> L*a*b* -> CLAHE on L -> RGB -> gamma -> median,
// each step bit-exact with OpenCV 4.6 (cvtColor, createCLAHE().apply,
// a LUT, medianBlur), which tests/ref/clahe_parity.py checks.
#ifndef FU_IMAGE_ENHANCE_H
#define FU_IMAGE_ENHANCE_H

#include "image/image.h"

typedef struct {
    double clip;  // CLAHE clip limit; <= 0 skips CLAHE and the Lab round trip
    int tiles;    // CLAHE grid: tiles x tiles, 1..256
    double gamma; // out = 255 (in/255)^(1/gamma); 1 = off
    int median;   // median kernel: 1 = off, 3 or 5
} fu_enhance_opts;

// The study's settings: clip 2, 8x8 tiles, gamma 1.2, 3x3 median.
fu_enhance_opts fu_enhance_defaults(void);

// Checks the options; -1 + message naming the bad one.
int fu_enhance_check(const fu_enhance_opts *o);

// Enhance an RGB image in place (img->px may be replaced). -1 + message on failure.
// It allocates one image-sized scratch buffer per call; a caller looping over
// many images should keep glibc from returning such blocks to the kernel each
// time (mallopt M_MMAP_THRESHOLD / M_TRIM_THRESHOLD, as tools/fundus-clahe.c
// does), or page faults add 10-30% to the time.
int fu_enhance(const fu_enhance_opts *o, fu_image *img);

#endif
