#include "image/augment.h"

#include "core/error.h"
#include "core/rng.h"

#include <math.h>
#include <string.h>

fu_augment_params fu_augment_draw(uint64_t seed, uint64_t index, uint32_t copy) {
    fu_rng r = fu_rng_make(seed, index, copy);
    fu_augment_params p;
    p.degrees = fu_rng_range(&r, -FU_AUGMENT_MAX_DEGREES, FU_AUGMENT_MAX_DEGREES);
    p.hflip = fu_rng_uniform(&r) < 0.5;
    p.vflip = fu_rng_uniform(&r) < 0.5;
    p.brightness = fu_rng_range(&r, -FU_AUGMENT_MAX_BRIGHTNESS, FU_AUGMENT_MAX_BRIGHTNESS);
    p.contrast = fu_rng_range(&r, FU_AUGMENT_MIN_CONTRAST, FU_AUGMENT_MAX_CONTRAST);
    return p;
}

int fu_rotate(const fu_image *in, double degrees, fu_image *out) {
    if (fu_image_alloc(out, in->w, in->h, in->c) < 0) return -1;
    const int W = (int)in->w, H = (int)in->h, C = (int)in->c;
    const double t = degrees * M_PI / 180.0, a = cos(t), b = sin(t);
    const double cx = 0.5 * (W - 1), cy = 0.5 * (H - 1);
    const uint8_t *src = in->px; // (H, W, C)
    uint8_t *dst = out->px;      // (H, W, C)
    // Inverse map: each output pixel samples the input at R(-t) (p - c) + c.
    for (int y = 0; y < H; y++) {
        for (int x = 0; x < W; x++) {
            double dx = x - cx, dy = y - cy;
            double sx = cx + a * dx - b * dy, sy = cy + b * dx + a * dy;
            double fx0 = floor(sx), fy0 = floor(sy);
            int x0 = (int)fx0, y0 = (int)fy0;
            double fx = sx - fx0, fy = sy - fy0;
            double w[4] = {(1 - fx) * (1 - fy), fx * (1 - fy), (1 - fx) * fy, fx * fy};
            const uint8_t *tap[4] = {NULL, NULL, NULL, NULL};
            if (y0 >= 0 && y0 < H) {
                if (x0 >= 0 && x0 < W) tap[0] = src + ((size_t)y0 * W + x0) * C;
                if (x0 + 1 >= 0 && x0 + 1 < W) tap[1] = src + ((size_t)y0 * W + x0 + 1) * C;
            }
            if (y0 + 1 >= 0 && y0 + 1 < H) {
                if (x0 >= 0 && x0 < W) tap[2] = src + ((size_t)(y0 + 1) * W + x0) * C;
                if (x0 + 1 >= 0 && x0 + 1 < W) tap[3] = src + ((size_t)(y0 + 1) * W + x0 + 1) * C;
            }
            uint8_t *o = dst + ((size_t)y * W + x) * C;
            for (int k = 0; k < C; k++) {
                double v = 0;
                for (int q = 0; q < 4; q++)
                    if (tap[q]) v += w[q] * tap[q][k];
                int iv = (int)(v + 0.5);
                o[k] = (uint8_t)(iv > 255 ? 255 : iv);
            }
        }
    }
    return 0;
}

void fu_flip_horizontal(fu_image *im) {
    size_t C = im->c;
    for (uint32_t y = 0; y < im->h; y++) {
        uint8_t *row = im->px + (size_t)y * im->w * C; // (W, C)
        for (uint32_t l = 0, r = im->w - 1; l < r; l++, r--)
            for (size_t k = 0; k < C; k++) {
                uint8_t t = row[l * C + k];
                row[l * C + k] = row[r * C + k];
                row[r * C + k] = t;
            }
    }
}

void fu_flip_vertical(fu_image *im) {
    size_t stride = (size_t)im->w * im->c;
    for (uint32_t t = 0, b = im->h - 1; t < b; t++, b--) {
        uint8_t *rt = im->px + t * stride, *rb = im->px + b * stride;
        for (size_t i = 0; i < stride; i++) {
            uint8_t v = rt[i];
            rt[i] = rb[i];
            rb[i] = v;
        }
    }
}

void fu_brightness_contrast(fu_image *im, double brightness, double contrast) {
    size_t n = fu_image_bytes(im);
    uint64_t sum = 0;
    for (size_t i = 0; i < n; i++) sum += im->px[i];
    double mean = n ? (double)sum / n : 0;
    // A table: 256 values, then one lookup per byte.
    uint8_t lut[256];
    for (int v = 0; v < 256; v++) {
        double o = floor((v - mean) * contrast + mean + brightness * 255.0 + 0.5);
        lut[v] = (uint8_t)(o < 0 ? 0 : o > 255 ? 255 : o);
    }
    for (size_t i = 0; i < n; i++) im->px[i] = lut[im->px[i]];
}

int fu_augment_apply(const fu_image *in, const fu_augment_params *p, fu_image *out) {
    if (fu_rotate(in, p->degrees, out) < 0) return -1;
    if (p->hflip) fu_flip_horizontal(out);
    if (p->vflip) fu_flip_vertical(out);
    fu_brightness_contrast(out, p->brightness, p->contrast);
    return 0;
}

uint64_t fu_augment_share(uint64_t extra, uint64_t n, uint64_t j) {
    if (n == 0) return 0;
    unsigned __int128 e = extra;
    return (uint64_t)((e * (j + 1)) / n - (e * j) / n);
}
