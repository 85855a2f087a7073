// Offline augmentation of training images (fundus-augment): a random
// rotation, flips and a brightness/contrast change per copy, drawn from an
// rng keyed by (seed, record index, copy number), so a copy does not depend
// on the thread that made it or on the other copies.
#ifndef FU_IMAGE_AUGMENT_H
#define FU_IMAGE_AUGMENT_H

#include "image/image.h"

#include <stdbool.h>
#include <stdint.h>

#define FU_AUGMENT_MAX_DEGREES 20.0
#define FU_AUGMENT_MAX_BRIGHTNESS 0.2 // added, as a share of full scale (255)
#define FU_AUGMENT_MIN_CONTRAST 0.8
#define FU_AUGMENT_MAX_CONTRAST 1.2

typedef struct {
    double degrees;    // rotation about the centre, counter-clockwise as displayed (OpenCV's sign)
    bool hflip, vflip; // mirror left-right, top-bottom
    double brightness; // added to every value, share of 255
    double contrast;   // scale about the image's mean value
} fu_augment_params;

// The transform of copy `copy` (1, 2, ...) of record `index`: degrees
// U(-20, 20), each flip with p = 0.5, brightness U(-0.2, 0.2), contrast U(0.8, 1.2).
fu_augment_params fu_augment_draw(uint64_t seed, uint64_t index, uint32_t copy);

// Rotate, then flip, then brightness/contrast. *out is allocated here.
int fu_augment_apply(const fu_image *in, const fu_augment_params *p, fu_image *out);

// Building blocks, exposed for the tests.
// Bilinear rotation about ((w-1)/2, (h-1)/2); samples outside the image are 0
// (fundus photographs have a black surround), like OpenCV's
// warpAffine(INTER_LINEAR, BORDER_CONSTANT 0). Same size as the input.
int fu_rotate(const fu_image *in, double degrees, fu_image *out);
void fu_flip_horizontal(fu_image *im);
void fu_flip_vertical(fu_image *im);
// v' = (v - mean) * contrast + mean + brightness * 255, rounded and clamped;
// mean is over all values of the image.
void fu_brightness_contrast(fu_image *im, double brightness, double contrast);

// How many of `extra` copies record j (0-based, in stream order) of a class of
// n records gets: floor((j+1) extra / n) - floor(j extra / n). Each record gets
// the floor or the ceiling of extra/n, spread evenly, and the shares sum to
// exactly `extra`.
uint64_t fu_augment_share(uint64_t extra, uint64_t n, uint64_t j);

#endif
