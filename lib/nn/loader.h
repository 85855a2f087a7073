// Training data: a shard of images of one size, mapped and indexed once, and
// batches of normalised (n, 3, H, W) floats made from it, optionally with the
// recipe's online augmentation. Every random choice is keyed, never drawn
// from shared state: the epoch's order by (seed, epoch), a sample's
// augmentation by (seed, epoch, record index). A batch therefore does not
// depend on the thread that made it, on the thread count, or on whether the
// run was resumed.
#ifndef FU_NN_LOADER_H
#define FU_NN_LOADER_H

#include "image/image.h"
#include "shard/shard.h"

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#define FU_MAX_CLASSES 16

// ImageNet statistics the pixels are normalised with, after scaling to [0, 1].
extern const float fu_imagenet_mean[3], fu_imagenet_std[3];

typedef struct {
    fu_shard_reader *r;
    fu_shard_index idx;
    size_t n;            // records
    int *labels;         // (n)
    char **ids;          // (n), NUL-terminated
    uint32_t height, width;
    size_t count[FU_MAX_CLASSES]; // records per label
    int classes;
} fu_dataset;

// Opens and checks a shard: at least one record, every record an RGB image
// (pixels, or encoded bytes that are decoded) of the first record's size,
// with a label in 0..classes-1. Messages name the shard and the record.
int fu_dataset_open(fu_dataset *d, const char *path, int classes);
void fu_dataset_close(fu_dataset *d);
const char *fu_dataset_name(const fu_dataset *d);
// Labels present in the split: 1 means a single-class split.
int fu_dataset_classes_present(const fu_dataset *d);

// The order of epoch `epoch`: a Fisher-Yates shuffle of 0..n-1 drawn from
// (seed, epoch).
void fu_epoch_order(uint64_t seed, uint64_t epoch, size_t n, uint32_t *order);

// The recipe's online augmentation of one training sample: flips p = 0.5
// each, rotation U(-15, 15) degrees (bilinear, black fill), then, on [0, 1]
// floats in this fixed order, brightness x U(0.9, 1.1), contrast U(0.9, 1.1)
// about the mean grey level, saturation U(0.95, 1.05) towards each pixel's
// grey, hue shifted by U(-0.05, 0.05) of a turn (torchvision ColorJitter's
// operations, which it applies in a random order; ours is fixed).
typedef struct {
    bool hflip, vflip;
    double degrees, brightness, contrast, saturation, hue;
} fu_sample_augment;

fu_sample_augment fu_sample_augment_draw(uint64_t seed, uint64_t epoch, uint64_t index);

// One image (H, W, 3) u8 -> x (3, H, W) normalised floats; aug NULL = none.
int fu_image_to_input(const fu_image *im, const fu_sample_augment *aug, float *x);

// Batch of records indices[0..n-1] of d: x (n, 3, H, W), labels (n). With
// augment, each sample is augmented by (seed, epoch, its record index).
// `threads` make the samples side by side (each its own slot and its own
// keyed draws: the same bytes for any count); a failure names the first
// failing sample in batch order.
int fu_load_batch(const fu_dataset *d, const uint32_t *indices, int n, bool augment, uint64_t seed,
                  uint64_t epoch, int threads, float *x, int *labels);

#endif
