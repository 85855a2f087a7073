// CLAHE as OpenCV 4.6 does it (imgproc/src/clahe.cpp):
//
//  1. Tiles: when w or h is not a multiple of the grid, the image is extended
//     right and down by tiles - (size % tiles) pixels (BORDER_REFLECT_101, on
//     both axes, even one that divides) and the tiles cover the extension.
//  2. Per tile: histogram, clip at max(int(clip * area / 256), 1), spread the
//     clipped count evenly, then one extra count every max(256 / residual, 1)
//     bins from bin 0; LUT[i] = round(cumsum[i] * (255 / area)) in float.
//  3. Per pixel: bilinear blend of the LUTs of the four nearest tile centres,
//     in float with OpenCV's operation order, rounded half to even.
//
// The extension is never built: histograms read through row and column maps.
#include "image/clahe.h"

#include "core/error.h"

#include <stdlib.h>
#include <string.h>

// OpenCV's borderInterpolate for BORDER_REFLECT_101 (gfedcb|abcdefgh|gfedcba).
static uint32_t reflect101(int64_t p, int64_t len) {
    if (len == 1) return 0;
    while (p < 0 || p >= len) p = p < 0 ? -p : 2 * (len - 1) - p;
    return (uint32_t)p;
}

// Round half to even, as cvRound; exact for 0 <= v < 2^22 (here v <= 255).
static inline __attribute__((always_inline)) int round_even(float v) { return (int)((v + 0x1.8p23f) - 0x1.8p23f); }

// lut holds the byte values as floats, ready for the blend.
static void tile_lut(uint32_t hist[256], int clip_limit, float scale, float lut[256]) {
    if (clip_limit > 0) {
        uint32_t clipped = 0;
        for (int i = 0; i < 256; i++)
            if (hist[i] > (uint32_t)clip_limit) {
                clipped += hist[i] - (uint32_t)clip_limit;
                hist[i] = (uint32_t)clip_limit;
            }
        uint32_t batch = clipped / 256, residual = clipped - batch * 256;
        for (int i = 0; i < 256; i++) hist[i] += batch;
        if (residual) {
            uint32_t step = 256 / residual > 1 ? 256 / residual : 1;
            for (uint32_t i = 0; i < 256 && residual > 0; i += step, residual--) hist[i]++;
        }
    }
    uint32_t sum = 0;
    for (int i = 0; i < 256; i++) {
        sum += hist[i];
        int v = round_even((float)sum * scale);
        lut[i] = (float)(v > 255 ? 255 : v);
    }
}

// One output row (src and dst distinct): v -> the blend of lut1 (tile row
// above) and lut2 (below) at the column offsets ind1 (tile left) and ind2
// (right), in OpenCV's order of float operations (no fused multiply-adds: ISO C mode keeps GCC from
// contracting). The float LUT lets AVX2 gather it; see lab.c on the two
// compilations of a kernel.
#define BLEND_ARGS                                                                                        \
    const uint8_t *restrict src, uint8_t *restrict dst, uint32_t w, const float *restrict lut1,              \
        const float *restrict lut2, const int32_t *restrict ind1, const int32_t *restrict ind2,               \
        const float *restrict xa, const float *restrict xa1, float ya, float ya1

static inline __attribute__((always_inline)) void blend_row_body(BLEND_ARGS) {
    for (uint32_t x = 0; x < w; x++) {
        int32_t v = src[x], i1 = ind1[x] + v, i2 = ind2[x] + v;
        float res = (lut1[i1] * xa1[x] + lut1[i2] * xa[x]) * ya1 + (lut2[i1] * xa1[x] + lut2[i2] * xa[x]) * ya;
        dst[x] = (uint8_t)round_even(res);
    }
}

static void blend_row_base(BLEND_ARGS) { blend_row_body(src, dst, w, lut1, lut2, ind1, ind2, xa, xa1, ya, ya1); }
#if defined(__x86_64__)
__attribute__((target("avx2,tune=haswell"))) static void blend_row_avx2(BLEND_ARGS) {
    blend_row_body(src, dst, w, lut1, lut2, ind1, ind2, xa, xa1, ya, ya1);
}
#endif

int fu_clahe(const uint8_t *src, uint8_t *dst, uint32_t w, uint32_t h, double clip, int tiles_x, int tiles_y) {
    if (tiles_x < 1 || tiles_y < 1 || tiles_x > 256 || tiles_y > 256)
        return fu_fail("clahe", "tile grid %dx%d is outside 1..256", tiles_x, tiles_y);
    if (w == 0 || h == 0) return fu_fail("clahe", "empty image");
    uint32_t tx_n = (uint32_t)tiles_x, ty_n = (uint32_t)tiles_y;
    uint32_t ext_w = w, ext_h = h;
    if (w % tx_n || h % ty_n) {
        ext_w = w + tx_n - w % tx_n;
        ext_h = h + ty_n - h % ty_n;
    }
    uint32_t tw = ext_w / tx_n, th = ext_h / ty_n;
    size_t area = (size_t)tw * th;
    if (area > INT32_MAX) return fu_fail("clahe", "tiles of %ux%u pixels are too large", tw, th);
    int clip_limit = 0;
    if (clip > 0.0) {
        clip_limit = (int)(clip * (double)area / 256.0);
        if (clip_limit < 1) clip_limit = 1;
    }
    float scale = 255.0f / (float)area;

    // One allocation: LUTs, histograms (4 interleaved copies per tile column,
    // so runs of equal pixels do not serialise on one counter), the column
    // map, per-column blend weights and LUT offsets, a row for in-place use.
    size_t lut_bytes = (size_t)tx_n * ty_n * 256 * sizeof(float);
    size_t hist_n = (size_t)tx_n * 4 * 256;
    size_t bytes = lut_bytes + hist_n * 4 + (size_t)ext_w * 4 + (size_t)w * 17;
    uint8_t *mem = malloc(bytes);
    if (!mem) return fu_fail("clahe", "out of memory for a %ux%u image", w, h);
    uint32_t *hist = (uint32_t *)mem;                                // (tiles_x, 4, 256)
    uint32_t *cmap = hist + hist_n;                                  // (ext_w)
    int32_t *ind1 = (int32_t *)(cmap + ext_w), *ind2 = ind1 + w;     // (w) each
    float *xa = (float *)(ind2 + w), *xa1 = xa + w;                  // (w) each
    float *lut = xa1 + w;                                            // (tiles_y, tiles_x, 256)
    uint8_t *row_out = (uint8_t *)(lut + (size_t)tx_n * ty_n * 256); // (w)

    for (uint32_t x = 0; x < ext_w; x++) cmap[x] = reflect101(x, w);
    for (uint32_t ty = 0; ty < ty_n; ty++) {
        memset(hist, 0, hist_n * 4);
        for (uint32_t r = ty * th; r < (ty + 1) * th; r++) {
            const uint8_t *row = src + (size_t)reflect101(r, h) * w;
            for (uint32_t tx = 0; tx < tx_n; tx++) {
                uint32_t *hs = hist + (size_t)tx * 1024;
                uint32_t x = tx * tw, end = x + tw;
                if (end <= w) {
                    for (; x + 4 <= end; x += 4) {
                        hs[row[x]]++;
                        hs[256 + row[x + 1]]++;
                        hs[512 + row[x + 2]]++;
                        hs[768 + row[x + 3]]++;
                    }
                    for (; x < end; x++) hs[row[x]]++;
                } else {
                    for (; x < end; x++) hs[row[cmap[x]]]++;
                }
            }
        }
        for (uint32_t tx = 0; tx < tx_n; tx++) {
            uint32_t *hs = hist + (size_t)tx * 1024;
            for (int i = 0; i < 256; i++) hs[i] += hs[256 + i] + hs[512 + i] + hs[768 + i];
            tile_lut(hs, clip_limit, scale, lut + ((size_t)ty * tx_n + tx) * 256);
        }
    }

    // Tile coordinates: pixel x sits at x / tw - 0.5 in tile-centre units.
    float inv_tw = 1.0f / (float)tw, inv_th = 1.0f / (float)th;
    for (uint32_t x = 0; x < w; x++) {
        float txf = (float)x * inv_tw - 0.5f;
        int t1 = (int)txf - (txf < (float)(int)txf); // floor
        xa[x] = txf - (float)t1;
        xa1[x] = 1.0f - xa[x];
        int t2 = t1 + 1;
        if (t1 < 0) t1 = 0;
        if (t2 > tiles_x - 1) t2 = tiles_x - 1;
        ind1[x] = t1 * 256;
        ind2[x] = t2 * 256;
    }
    void (*blend_row)(BLEND_ARGS) = blend_row_base;
#if defined(__x86_64__)
    if (__builtin_cpu_supports("avx2")) blend_row = blend_row_avx2;
#endif
    for (uint32_t y = 0; y < h; y++) {
        float tyf = (float)y * inv_th - 0.5f;
        int t1 = (int)tyf - (tyf < (float)(int)tyf);
        float ya = tyf - (float)t1, ya1 = 1.0f - ya;
        int t2 = t1 + 1;
        if (t1 < 0) t1 = 0;
        if (t2 > tiles_y - 1) t2 = tiles_y - 1;
        const float *lut1 = lut + (size_t)t1 * tx_n * 256, *lut2 = lut + (size_t)t2 * tx_n * 256;
        uint8_t *d = dst + (size_t)y * w;
        blend_row(src + (size_t)y * w, src == dst ? row_out : d, w, lut1, lut2, ind1, ind2, xa, xa1, ya, ya1);
        if (src == dst) memcpy(d, row_out, w);
    }
    free(mem);
    return 0;
}
