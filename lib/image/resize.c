// INTER_AREA resizing, bit-exact with OpenCV 4.6 (imgproc/src/resize.cpp).
//
// cv::resize picks one of three algorithms from the scale factors
// scale = src/dst per axis (computed as 1 / (dst/src) in double, as OpenCV does):
//   both >= 1 and both integers   -> box average of kx*ky pixels, sum * (1/area) rounded
//                                    (half up for 2x2 boxes, half to even otherwise)
//   both >= 1 otherwise           -> each output is the area-weighted mean of the source
//                                    pixels it covers, accumulated in float in OpenCV's order
//   either < 1 (enlarging)        -> bilinear in 11-bit fixed point, with source coordinates
//                                    sx = floor(dx*scale), fx = frac((dx+1) - (sx+1)/scale)
// Each path is separable: a horizontal pass per source row into a wide
// buffer, then a vertical combination of buffered rows; every coefficient
// and offset is tabulated once per call.
#include "image/resize.h"

#include "core/error.h"

#include <float.h>
#include <math.h>
#include <stdbool.h>
#include <stdlib.h>
#include <string.h>

// cvRound (round half to even under the default FP mode) and saturation to
// u8: adding 1.5 * 2^23 leaves the rounded integer in the low mantissa bits.
static inline uint8_t round_u8(float v) {
    float r = (v + 12582912.0f) - 12582912.0f;
    return r <= 0.0f ? 0 : r >= 255.0f ? 255 : (uint8_t)r;
}

static const uint8_t *row_of(const fu_image *im, uint32_t y) { return im->px + (size_t)y * im->w * im->c; }
static uint8_t *row_out(fu_image *im, uint32_t y) { return im->px + (size_t)y * im->w * im->c; }

// ---- integer factors: resizeAreaFast_ ----------------------------------------

// Column sums of ky rows in 16 bits (ky <= 257 keeps them below 65536).
static void sum_rows_u16(const fu_image *src, uint32_t y0, uint32_t ky, uint16_t *sum) {
    const uint32_t sn = src->w * src->c;
    const uint8_t *S = row_of(src, y0);
    for (uint32_t i = 0; i < sn; i++) sum[i] = S[i];
    for (uint32_t k = 1; k < ky; k++) {
        S = row_of(src, y0 + k);
        for (uint32_t i = 0; i < sn; i++) sum[i] = (uint16_t)(sum[i] + S[i]);
    }
}

static void sum_rows_u32(const fu_image *src, uint32_t y0, uint32_t ky, uint32_t *sum) {
    const uint32_t sn = src->w * src->c;
    memset(sum, 0, sizeof *sum * sn);
    for (uint32_t k = 0; k < ky; k++) {
        const uint8_t *S = row_of(src, y0 + k);
        for (uint32_t i = 0; i < sn; i++) sum[i] += S[i];
    }
}

// Sums of kx neighbouring column sums, mapped to the mean through lut (or,
// for boxes too large for a table, rounded directly).
#define AREA_FAST_HSUM(T)                                                                                   \
    static inline __attribute__((always_inline)) void hsum_##T(const T *sum, uint32_t dw, uint32_t c,        \
                                                               uint32_t kx, const uint8_t *lut, float scale, \
                                                               uint8_t *D) {                                \
        for (uint32_t dx = 0; dx < dw; dx++)                                                                \
            for (uint32_t ch = 0; ch < c; ch++) {                                                           \
                const T *p = sum + (size_t)dx * kx * c + ch;                                                \
                uint64_t s = 0;                                                                             \
                for (uint32_t j = 0; j < kx; j++) s += p[j * c];                                            \
                D[dx * c + ch] = lut ? lut[s] : round_u8((float)s * scale);                                 \
            }                                                                                               \
    }
AREA_FAST_HSUM(uint16_t)
AREA_FAST_HSUM(uint32_t)

enum { AREA_LUT_MAX = 4096 }; // boxes up to 64 x 64 get a sum -> mean table

static int area_fast(const fu_image *src, uint32_t kx, uint32_t ky, fu_image *dst) {
    const uint32_t c = src->c, dw = dst->w, sn = src->w * c;
    const uint64_t area = (uint64_t)kx * ky;
    const float scale = 1.0f / (float)area;
    const bool narrow = ky <= 257;                        // column sums fit 16 bits
    void *sum = fu_malloc((narrow ? 2 : 4) * (size_t)sn); // (src W * C) column sums
    uint8_t *lut = area <= AREA_LUT_MAX ? fu_malloc(area * 255 + 1) : NULL; // box sum -> mean
    if (!sum || (area <= AREA_LUT_MAX && !lut)) {
        free(sum);
        free(lut);
        return -1;
    }
    // OpenCV's SIMD kernel for 2x2 boxes rounds (s + 2) >> 2, half up; every
    // other box rounds s * (1/area) in float, half to even.
    const bool two_by_two = kx == 2 && ky == 2;
    for (uint32_t s = 0; lut && s <= area * 255; s++)
        lut[s] = two_by_two ? (uint8_t)((s + 2) >> 2) : round_u8((float)s * scale);
    for (uint32_t dy = 0; dy < dst->h; dy++) {
        uint8_t *D = row_out(dst, dy);
        if (narrow) {
            sum_rows_u16(src, dy * ky, ky, sum);
            if (c == 3 && kx == 2) hsum_uint16_t(sum, dw, 3, 2, lut, scale, D);
            else if (c == 3) hsum_uint16_t(sum, dw, 3, kx, lut, scale, D);
            else hsum_uint16_t(sum, dw, c, kx, lut, scale, D);
        } else {
            sum_rows_u32(src, dy * ky, ky, sum);
            hsum_uint32_t(sum, dw, c, kx, lut, scale, D);
        }
    }
    free(sum);
    free(lut);
    return 0;
}

// ---- general shrink: ResizeArea_ ---------------------------------------------

typedef struct {
    uint32_t di, si; // destination and source index along the axis
    float alpha;     // share of source pixel si in destination pixel di
} area_tap;

// computeResizeAreaTab: for each destination pixel, the partially covered
// source pixel on the left, the fully covered ones, the partial one on the right.
static uint32_t area_taps(uint32_t ssize, uint32_t dsize, double scale, area_tap *tab) {
    uint32_t k = 0;
    for (uint32_t dx = 0; dx < dsize; dx++) {
        double fsx1 = dx * scale, fsx2 = fsx1 + scale;
        double cell = fmin(scale, ssize - fsx1);
        int sx1 = (int)ceil(fsx1), sx2 = (int)floor(fsx2);
        if (sx2 > (int)ssize - 1) sx2 = (int)ssize - 1;
        if (sx1 > sx2) sx1 = sx2;
        if (sx1 - fsx1 > 1e-3) tab[k++] = (area_tap){dx, (uint32_t)(sx1 - 1), (float)((sx1 - fsx1) / cell)};
        for (int sx = sx1; sx < sx2; sx++) tab[k++] = (area_tap){dx, (uint32_t)sx, (float)(1.0 / cell)};
        if (fsx2 - sx2 > 1e-3) tab[k++] = (area_tap){dx, (uint32_t)sx2, (float)(fmin(fmin(fsx2 - sx2, 1.0), cell) / cell)};
    }
    return k;
}

// The taps of one output column cover consecutive source pixels (a partial
// one, whole ones, a partial one), so a column is its first source pixel, a
// tap count and that many weights, stored one column after another.
typedef struct {
    uint32_t *first, *count;
    float *weight;
} area_columns;

typedef float v4f __attribute__((vector_size(16)));

// One source row (as floats, (W * 3 + 1) with a spare lane) through the
// column taps: R, G, B and a don't-care lane accumulate together. Each lane
// computes acc = acc + s * w tap by tap, exactly OpenCV's scalar order.
static void area_hpass_rgb(const float *Sf, uint32_t dw, const area_columns *col, float *buf) {
    const float *w = col->weight;
    for (uint32_t dx = 0; dx < dw; dx++) {
        const float *p = Sf + (size_t)col->first[dx] * 3;
        v4f acc = {0, 0, 0, 0};
        for (uint32_t j = 0; j < col->count[dx]; j++) {
            v4f s;
            memcpy(&s, p + 3 * j, sizeof s);
            acc = acc + s * w[j];
        }
        w += col->count[dx];
        memcpy(buf + (size_t)dx * 3, &acc, sizeof acc); // lane 3 is overwritten by the next column
    }
}

static void area_hpass_any(const float *Sf, uint32_t dw, uint32_t c, const area_columns *col, float *buf) {
    const float *w = col->weight;
    for (uint32_t dx = 0; dx < dw; dx++) {
        const float *p = Sf + (size_t)col->first[dx] * c;
        for (uint32_t ch = 0; ch < c; ch++) {
            float acc = 0.0f;
            for (uint32_t j = 0; j < col->count[dx]; j++) acc = acc + p[j * c + ch] * w[j];
            buf[(size_t)dx * c + ch] = acc;
        }
        w += col->count[dx];
    }
}

static int area_general(const fu_image *src, double scale_x, double scale_y, fu_image *dst) {
    const uint32_t c = src->c, dw = dst->w, dn = dw * c, sn = src->w * c;
    area_tap *xtab = fu_malloc(sizeof *xtab * (2 * (size_t)src->w + 2 * dw + 2));
    area_tap *ytab = fu_malloc(sizeof *ytab * (2 * (size_t)src->h + 2 * dst->h + 2));
    area_columns col = {fu_malloc(sizeof *col.first * dw), fu_calloc(dw, sizeof *col.count), NULL};
    float *Sf = fu_malloc(sizeof *Sf * (sn + 1));           // source row as floats, one spare lane
    float *buf = fu_malloc(sizeof *buf * (2 * (size_t)dn + 1)); // resized row (+ spare lane), running sum
    int rc = -1;
    if (!xtab || !ytab || !col.first || !col.count || !Sf || !buf) goto done;
    uint32_t nx = area_taps(src->w, dw, scale_x, xtab);
    uint32_t ny = area_taps(src->h, dst->h, scale_y, ytab);
    col.weight = fu_malloc(sizeof *col.weight * nx);
    if (!col.weight) goto done;
    for (uint32_t k = 0; k < nx; k++) {
        if (col.count[xtab[k].di]++ == 0) col.first[xtab[k].di] = xtab[k].si;
        col.weight[k] = xtab[k].alpha;
    }
    Sf[sn] = 0.0f;

    float *row = buf, *sum = buf + dn + 1;
    uint32_t prev_dy = ytab[0].di, cached_sy = UINT32_MAX;
    for (uint32_t k = 0; k < ny; k++) {
        const float beta = ytab[k].alpha;
        const uint32_t dy = ytab[k].di, sy = ytab[k].si;
        if (sy != cached_sy) { // a source row shared by two output rows is resized once
            const uint8_t *S = row_of(src, sy);
            for (uint32_t i = 0; i < sn; i++) Sf[i] = (float)S[i];
            if (c == 3) area_hpass_rgb(Sf, dw, &col, row);
            else area_hpass_any(Sf, dw, c, &col, row);
            cached_sy = sy;
        }
        if (k == 0) {
            for (uint32_t i = 0; i < dn; i++) sum[i] = beta * row[i];
        } else if (dy != prev_dy) {
            uint8_t *D = row_out(dst, prev_dy);
            for (uint32_t i = 0; i < dn; i++) {
                D[i] = round_u8(sum[i]);
                sum[i] = beta * row[i];
            }
            prev_dy = dy;
        } else {
            for (uint32_t i = 0; i < dn; i++) sum[i] += beta * row[i];
        }
    }
    uint8_t *D = row_out(dst, prev_dy);
    for (uint32_t i = 0; i < dn; i++) D[i] = round_u8(sum[i]);
    rc = 0;
done:
    free(xtab);
    free(ytab);
    free(col.first);
    free(col.count);
    free(col.weight);
    free(Sf);
    free(buf);
    return rc;
}

// ---- enlarging: fixed-point bilinear with area-mode coordinates ---------------

enum { COEF_BITS = 11, COEF_ONE = 1 << COEF_BITS };

// Source index and the two 11-bit weights of each output position. On the
// x axis positions past the last source pixel collapse onto it (OpenCV's
// xmax); the y axis clamps rows instead, keeping its weights.
static uint32_t linear_axis(uint32_t ssize, uint32_t dsize, double inv_scale, double scale, bool clamp_edge,
                            uint32_t *ofs, int16_t *wt) {
    uint32_t first_edge = dsize;
    for (uint32_t d = 0; d < dsize; d++) {
        int s = (int)floor(d * scale);
        float f = (float)((d + 1) - (s + 1) * inv_scale);
        f = f <= 0 ? 0.0f : f - (float)(int)floorf(f);
        if (clamp_edge && s + 1 >= (int)ssize) {
            if (first_edge == dsize) first_edge = d;
            f = 0.0f;
            s = (int)ssize - 1;
        }
        ofs[d] = (uint32_t)s;
        wt[2 * d] = (int16_t)lrintf((1.0f - f) * COEF_ONE);
        wt[2 * d + 1] = (int16_t)lrintf(f * COEF_ONE);
    }
    return first_edge;
}

// The vertical step only uses the horizontal sums shifted right by 4
// (OpenCV's VResizeLinear for u8), which fit 16 bits: store them that way.
static inline __attribute__((always_inline)) void linear_hpass(const uint8_t *S, uint32_t dw, uint32_t c,
                                                               uint32_t xmax, const uint32_t *xofs,
                                                               const int16_t *xw, int16_t *D) {
    for (uint32_t dx = 0; dx < xmax; dx++) {
        const uint8_t *p = S + (size_t)xofs[dx] * c;
        int32_t a0 = xw[2 * dx], a1 = xw[2 * dx + 1];
        for (uint32_t ch = 0; ch < c; ch++) D[dx * c + ch] = (int16_t)((p[ch] * a0 + p[c + ch] * a1) >> 4);
    }
    for (uint32_t dx = xmax; dx < dw; dx++) {
        const uint8_t *p = S + (size_t)xofs[dx] * c;
        for (uint32_t ch = 0; ch < c; ch++) D[dx * c + ch] = (int16_t)((p[ch] * COEF_ONE) >> 4);
    }
}

static void linear_hpass_any(const uint8_t *S, uint32_t dw, uint32_t c, uint32_t xmax, const uint32_t *xofs,
                             const int16_t *xw, int16_t *D) {
    if (c == 3) linear_hpass(S, dw, 3, xmax, xofs, xw, D);
    else if (c == 1) linear_hpass(S, dw, 1, xmax, xofs, xw, D);
    else linear_hpass(S, dw, c, xmax, xofs, xw, D);
}

static int linear_area_mode(const fu_image *src, double inv_x, double scale_x, double inv_y, double scale_y,
                            fu_image *dst) {
    const uint32_t c = src->c, dw = dst->w, dh = dst->h, dn = dw * c;
    uint32_t *xofs = fu_malloc(sizeof *xofs * dw), *yofs = fu_malloc(sizeof *yofs * dh);
    int16_t *xw = fu_malloc(sizeof *xw * 2 * dw), *yw = fu_malloc(sizeof *yw * 2 * dh);
    int16_t *rows = fu_malloc(sizeof *rows * 2 * dn); // two horizontally resized source rows
    int rc = -1;
    if (!xofs || !yofs || !xw || !yw || !rows) goto done;
    uint32_t xmax = linear_axis(src->w, dw, inv_x, scale_x, true, xofs, xw);
    linear_axis(src->h, dh, inv_y, scale_y, false, yofs, yw);

    uint32_t have[2] = {UINT32_MAX, UINT32_MAX}; // source row held by rows[0], rows[1]
    for (uint32_t dy = 0; dy < dh; dy++) {
        uint32_t sy[2] = {yofs[dy], yofs[dy] + 1};
        for (int k = 0; k < 2; k++)
            if (sy[k] >= src->h) sy[k] = src->h - 1;
        // rows[] caches two horizontally resized source rows; consecutive
        // output rows share one or both.
        int slot[2];
        for (int k = 0; k < 2; k++) {
            slot[k] = have[0] == sy[k] ? 0 : have[1] == sy[k] ? 1 : -1;
            if (slot[k] >= 0) continue;
            if (k == 0) slot[0] = have[0] == sy[1] ? 1 : 0; // keep the row sy[1] will use
            else slot[1] = 1 - slot[0];
            linear_hpass_any(row_of(src, sy[k]), dw, c, xmax, xofs, xw, rows + (size_t)slot[k] * dn);
            have[slot[k]] = sy[k];
        }
        const int16_t *R0 = rows + (size_t)slot[0] * dn, *R1 = rows + (size_t)slot[1] * dn;
        const int16_t b0 = yw[2 * dy], b1 = yw[2 * dy + 1];
        uint8_t *D = row_out(dst, dy);
        for (uint32_t i = 0; i < dn; i++) // 16 x 16 -> high 16 bits, as OpenCV's SIMD does
            D[i] = (uint8_t)(((int16_t)((b0 * R0[i]) >> 16) + (int16_t)((b1 * R1[i]) >> 16) + 2) >> 2);
    }
    rc = 0;
done:
    free(xofs);
    free(yofs);
    free(xw);
    free(yw);
    free(rows);
    return rc;
}

// ---- entry ---------------------------------------------------------------------

int fu_resize(const fu_image *src, uint32_t w, uint32_t h, fu_image *dst) {
    dst->px = NULL;
    if (!src->px || src->w == 0 || src->h == 0 || src->c == 0)
        return fu_fail("resize", "empty source image %ux%ux%u", src->w, src->h, src->c);
    if (w == 0 || h == 0) return fu_fail("resize", "cannot resize to %ux%u", w, h);
    if (fu_image_alloc(dst, w, h, src->c) < 0) return -1;
    if (w == src->w && h == src->h) {
        memcpy(dst->px, src->px, fu_image_bytes(src));
        return 0;
    }
    const double inv_x = (double)w / src->w, inv_y = (double)h / src->h;
    const double scale_x = 1.0 / inv_x, scale_y = 1.0 / inv_y;
    int rc;
    if (scale_x >= 1 && scale_y >= 1) {
        const double ix = nearbyint(scale_x), iy = nearbyint(scale_y);
        if (fabs(scale_x - ix) < DBL_EPSILON && fabs(scale_y - iy) < DBL_EPSILON)
            rc = area_fast(src, (uint32_t)ix, (uint32_t)iy, dst);
        else rc = area_general(src, scale_x, scale_y, dst);
    } else {
        rc = linear_area_mode(src, inv_x, scale_x, inv_y, scale_y, dst);
    }
    if (rc < 0) fu_image_free(dst);
    return rc;
}
