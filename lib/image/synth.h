// Synthetic colour fundus photographs: the project's embedded dataset, so the
// demo and the tests need no real data. SYNTHETIC, not clinical: what the
// renderer models and what it does not is in docs/synthetic-data.md.
//
// An image is a pure function of (seed, index, size): every random choice
// comes from an rng keyed by (seed, index, stream), so images can be rendered
// in any order on any number of threads and come out byte-identical.
#ifndef FU_IMAGE_SYNTH_H
#define FU_IMAGE_SYNTH_H

#include "image/image.h"

#include <stdbool.h>
#include <stdint.h>

typedef struct {
    uint64_t seed;
    uint32_t width, height;
    double glaucoma_fraction; // share of label-1 images, spread evenly over the indices
} fu_synth_config;

// The ground truth of one rendered image, in pixels of that image.
typedef struct {
    int label;               // 1 = glaucoma (large cup), 0 = normal
    double cdr;              // vertical cup-to-disc ratio
    double fov_x, fov_y, fov_r;      // circular field of view
    double disc_x, disc_y, disc_r;   // optic disc centre, horizontal radius
    double disc_ry;                  // disc vertical radius (the disc is a tall oval)
    double macula_x, macula_y;
    bool left_eye;           // disc on the left of the image
} fu_synth_truth;

// Label of image `index`: exactly round(n * fraction) of the first n images
// are glaucoma, spread evenly (image i is 1 when round((i+1)f) > round(i f)).
int fu_synth_label(const fu_synth_config *c, uint64_t index);

// Render image `index` into *out (allocated here, RGB). truth may be NULL.
int fu_synth_render(const fu_synth_config *c, uint64_t index, fu_image *out, fu_synth_truth *truth);

#endif
