// Training data (loader.h).
#include "nn/loader.h"

#include "core/error.h"
#include "core/rng.h"
#include "image/augment.h"
#include "image/codec.h"
#include "image/record_image.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

const float fu_imagenet_mean[3] = {0.485f, 0.456f, 0.406f};
const float fu_imagenet_std[3] = {0.229f, 0.224f, 0.225f};

enum { STREAM_ORDER = 1, STREAM_AUGMENT = 2 }; // rng streams of a seed

const char *fu_dataset_name(const fu_dataset *d) { return fu_shard_name(d->r); }

void fu_dataset_close(fu_dataset *d) {
    if (d->ids)
        for (size_t i = 0; i < d->n; i++) free(d->ids[i]);
    free(d->ids);
    free(d->labels);
    fu_shard_index_free(&d->idx);
    if (d->r) fu_shard_close(d->r);
    memset(d, 0, sizeof *d);
}

// The record's image size without decoding it.
static int record_size(const fu_record *rec, uint32_t *w, uint32_t *h) {
    if (rec->kind == FU_KIND_PIXELS) {
        if (rec->channels != 3) return fu_fail("", "pixel record has %u channels, not 3 (RGB)", rec->channels);
        *w = rec->width, *h = rec->height;
        return 0;
    }
    fu_format fmt;
    uint32_t c;
    return fu_probe(rec->payload, rec->payload_len, &fmt, w, h, &c);
}

int fu_dataset_open(fu_dataset *d, const char *path, int classes) {
    memset(d, 0, sizeof *d);
    d->classes = classes;
    d->r = fu_shard_open(path);
    if (!d->r) return -1;
    struct stat st;
    if (!fu_shard_is_mapped(d->r) && stat(path, &st) == 0 && S_ISREG(st.st_mode) && st.st_size == 0) {
        fu_fail(path, "an empty file, not a shard");
        goto fail;
    }
    if (!fu_shard_is_mapped(d->r)) {
        fu_fail(path, "training data must be a regular file (it is read in a new order every epoch)");
        goto fail;
    }
    if (fu_shard_build_index(d->r, &d->idx) < 0) goto fail;
    d->n = d->idx.count;
    if (d->n == 0) {
        fu_fail(path, "no records: the split is empty");
        goto fail;
    }
    d->labels = fu_calloc(d->n, sizeof *d->labels);
    d->ids = fu_calloc(d->n, sizeof *d->ids);
    if (!d->labels || !d->ids) goto fail;
    for (size_t i = 0; i < d->n; i++) {
        fu_record rec;
        uint32_t w, h;
        if (fu_shard_read_at(d->r, d->idx.offsets[i], &rec, false) < 0) goto fail;
        d->ids[i] = strndup(rec.id, rec.id_len);
        if (!d->ids[i]) {
            fu_fail(path, "out of memory");
            goto fail;
        }
        if (record_size(&rec, &w, &h) < 0) {
            fu_error_prefix("%s: record %zu (%s)", path, i, d->ids[i]);
            goto fail;
        }
        if (i == 0) d->width = w, d->height = h;
        if (w != d->width || h != d->height) {
            fu_fail(path, "record %zu (%s) is %ux%u, record 0 is %ux%u: all images must have one size", i,
                    d->ids[i], w, h, d->width, d->height);
            fu_hint("resize them first, e.g. fundus-resize --size 224");
            goto fail;
        }
        if (rec.label == FU_LABEL_NONE || rec.label >= classes) {
            fu_fail(path, "record %zu (%s) has %s; training needs labels 0..%d", i, d->ids[i],
                    rec.label == FU_LABEL_NONE ? "no label" : "another label", classes - 1);
            goto fail;
        }
        d->labels[i] = rec.label;
        d->count[rec.label]++;
    }
    return 0;
fail:
    fu_dataset_close(d);
    return -1;
}

int fu_dataset_classes_present(const fu_dataset *d) {
    int k = 0;
    for (int c = 0; c < d->classes; c++) k += d->count[c] > 0;
    return k;
}

void fu_epoch_order(uint64_t seed, uint64_t epoch, size_t n, uint32_t *order) {
    fu_rng rng = fu_rng_make(seed, epoch, STREAM_ORDER);
    for (size_t i = 0; i < n; i++) order[i] = (uint32_t)i;
    for (size_t i = n; i > 1; i--) {
        uint32_t j = fu_rng_below(&rng, (uint32_t)i);
        uint32_t t = order[i - 1];
        order[i - 1] = order[j];
        order[j] = t;
    }
}

fu_sample_augment fu_sample_augment_draw(uint64_t seed, uint64_t epoch, uint64_t index) {
    // One stream per (epoch, sample): the epoch goes into the seed word.
    fu_rng rng = fu_rng_make(fu_mix64(seed ^ fu_mix64(epoch + 1)), index, STREAM_AUGMENT);
    fu_sample_augment a;
    a.hflip = fu_rng_uniform(&rng) < 0.5;
    a.vflip = fu_rng_uniform(&rng) < 0.5;
    a.degrees = fu_rng_range(&rng, -15, 15);
    a.brightness = fu_rng_range(&rng, 0.9, 1.1);
    a.contrast = fu_rng_range(&rng, 0.9, 1.1);
    a.saturation = fu_rng_range(&rng, 0.95, 1.05);
    a.hue = fu_rng_range(&rng, -0.05, 0.05);
    return a;
}

static float clamp01(float v) { return v < 0 ? 0 : v > 1 ? 1 : v; }
static float grey(float r, float g, float b) { return 0.299f * r + 0.587f * g + 0.114f * b; }

// Hue rotation by `shift` of a turn through HSV, as torchvision's adjust_hue.
static void shift_hue(float *rgb, float shift) {
    float r = rgb[0], g = rgb[1], b = rgb[2];
    float mx = fmaxf(r, fmaxf(g, b)), mn = fminf(r, fminf(g, b)), c = mx - mn;
    if (c <= 0) return; // grey: no hue
    float h = mx == r ? (g - b) / c : mx == g ? 2 + (b - r) / c : 4 + (r - g) / c;
    h = h / 6 + shift;
    h -= floorf(h);
    float s = c / mx, v = mx, f = h * 6;
    int i = (int)f % 6;
    float fr = f - floorf(f), p = v * (1 - s), q = v * (1 - s * fr), t = v * (1 - s * (1 - fr));
    const float out[6][3] = {{v, t, p}, {q, v, p}, {p, v, t}, {p, q, v}, {t, p, v}, {v, p, q}};
    memcpy(rgb, out[i], sizeof out[i]);
}

// Colour jitter and normalisation of (H, W, 3) u8 into (3, H, W) floats.
static void jitter_normalise(const fu_image *im, const fu_sample_augment *a, float *x) {
    size_t hw = (size_t)im->w * im->h;
    const uint8_t *px = im->px; // (H, W, 3)
    double mean_grey = 0;
    if (a) {
        // Contrast blends with the mean grey of the brightness-adjusted image.
        for (size_t i = 0; i < hw; i++) {
            const uint8_t *p = px + 3 * i;
            float b = (float)a->brightness;
            mean_grey += grey(clamp01(p[0] / 255.0f * b), clamp01(p[1] / 255.0f * b), clamp01(p[2] / 255.0f * b));
        }
        mean_grey /= (double)hw;
    }
    for (size_t i = 0; i < hw; i++) {
        float v[3];
        for (int c = 0; c < 3; c++) v[c] = (float)px[3 * i + c] / 255.0f;
        if (a) {
            float b = (float)a->brightness, k = (float)a->contrast, s = (float)a->saturation;
            for (int c = 0; c < 3; c++) v[c] = clamp01(v[c] * b);
            for (int c = 0; c < 3; c++) v[c] = clamp01(k * v[c] + (1 - k) * (float)mean_grey);
            float g = grey(v[0], v[1], v[2]);
            for (int c = 0; c < 3; c++) v[c] = clamp01(s * v[c] + (1 - s) * g);
            shift_hue(v, (float)a->hue);
        }
        for (int c = 0; c < 3; c++) x[(size_t)c * hw + i] = (v[c] - fu_imagenet_mean[c]) / fu_imagenet_std[c];
    }
}

int fu_image_to_input(const fu_image *im, const fu_sample_augment *aug, float *x) {
    if (im->c != 3) return fu_fail("", "image has %u channels, not 3", im->c);
    if (!aug) {
        jitter_normalise(im, NULL, x);
        return 0;
    }
    fu_image rot;
    if (fu_rotate(im, aug->degrees, &rot) < 0) return -1;
    if (aug->hflip) fu_flip_horizontal(&rot);
    if (aug->vflip) fu_flip_vertical(&rot);
    jitter_normalise(&rot, aug, x);
    fu_image_free(&rot);
    return 0;
}

// Sample k of d into x (3, H, W) and *label.
static int load_one(const fu_dataset *d, uint32_t k, bool augment, uint64_t seed, uint64_t epoch, float *x,
                    int *label) {
    fu_record rec;
    fu_image im = {0};
    if (fu_shard_read_at(d->r, d->idx.offsets[k], &rec, false) < 0) return -1;
    if (fu_record_to_image(&rec, 0, &im) < 0 || im.w != d->width || im.h != d->height) {
        if (im.px) fu_fail("", "decoded to %ux%u, expected %ux%u", im.w, im.h, d->width, d->height);
        fu_image_free(&im);
        fu_error_prefix("%s: record %u (%s)", fu_dataset_name(d), k, d->ids[k]);
        return -1;
    }
    fu_sample_augment a = fu_sample_augment_draw(seed, epoch, k);
    int rc = fu_image_to_input(&im, augment ? &a : NULL, x);
    fu_image_free(&im);
    if (rc < 0) return -1;
    *label = d->labels[k];
    return 0;
}

int fu_load_batch(const fu_dataset *d, const uint32_t *indices, int n, bool augment, uint64_t seed,
                  uint64_t epoch, int threads, float *x, int *labels) {
    size_t per = (size_t)3 * d->height * d->width;
    int first_failed = n;
#pragma omp parallel for schedule(dynamic, 1) num_threads(threads > 1 ? threads : 1) if (threads > 1)
    for (int i = 0; i < n; i++) {
        if (load_one(d, indices[i], augment, seed, epoch, x + (size_t)i * per, &labels[i]) < 0) {
#pragma omp critical(fu_load_batch_failed)
            if (i < first_failed) first_failed = i;
        }
    }
    if (first_failed == n) return 0;
    // The message was set on the thread that failed (messages are per thread):
    // the first failing sample again, here, sets it on this one.
    int i = first_failed;
    if (load_one(d, indices[i], augment, seed, epoch, x + (size_t)i * per, &labels[i]) == 0)
        return fu_fail(fu_dataset_name(d), "record %u failed to load, then loaded", indices[i]);
    return -1;
}
