// Fixed-point sRGB <-> L*a*b*, the arithmetic of OpenCV 4.6's RGB2Lab_b and
// Lab2RGBinteger (imgproc/src/color_lab.cpp), table for table.
//
// OpenCV builds its tables with its own software floating point (softfloat);
// every step there is an IEEE single or double operation, so the same
// operations in C give the same bits. Its pow is rounded to float before use,
// where a last-bit difference of libm's pow cannot show; its cube root is an
// approximation of its own, copied below. tests/ref/clahe_parity.py checks
// all 2^24 inputs of both directions against cv2.
#include "image/lab.h"

#include <math.h>
#include <pthread.h>
#include <string.h>

enum {
    XYZ_SHIFT = 12,                 // fixed-point bits of the colour matrices
    GAMMA_SHIFT = 3,                // extra bits of linear RGB (0..2040)
    LAB_SHIFT2 = XYZ_SHIFT + GAMMA_SHIFT,
    CBRT_TAB = 256 * 3 / 2 << GAMMA_SHIFT, // cube root of 0..1.5 in 2040ths
    INV_GAMMA_SHIFT = 12,
    INV_GAMMA_TAB = 1 << INV_GAMMA_SHIFT,
    BASE_SHIFT = 14,                // fixed-point bits of Y, f(Y), X, Z in Lab -> RGB
    BASE = 1 << BASE_SHIFT,
    MIN_AB = -8145,                 // smallest f(X) / f(Z) index the a, b range reaches
    AB_TAB = BASE * 9 / 4,
    RGB_SHIFT = XYZ_SHIFT + BASE_SHIFT - INV_GAMMA_SHIFT,
};

// sRGB (D65) -> XYZ and back, as the nearest doubles of OpenCV's constants.
static const double RGB2XYZ[9] = {0.412453, 0.357580, 0.180423, 0.212671, 0.715160,
                                  0.072169, 0.019334, 0.119193, 0.950227};
static const double XYZ2RGB[9] = {3.240479,  -1.53715,  -0.498535, -0.969256, 1.875991,
                                  0.041556,  0.055648,  -0.204043, 1.057311};
static const double D65[3] = {0.950456, 1.0, 1.088754};

static struct {
    int gamma[256];                   // sRGB byte -> linear, 0..2040
    int cbrt[CBRT_TAB];               // linear/2040 -> f(t) << 15
    uint8_t inv_gamma[INV_GAMMA_TAB]; // linear << 12 -> sRGB byte
    int y[256], fy[256];              // L byte -> Y << 14, f(Y) << 14
    int ab_to_xz[AB_TAB];             // f(X) << 14 (offset by MIN_AB) -> X << 14
    int to_xyz[9];                    // rows X, Y, Z; columns R, G, B; white-normalised
    int to_rgb[9];                    // rows R, G, B; columns X, Y, Z
} T;

// OpenCV's softfloat cbrt (Ken Turkowski's rational approximation), which
// truncates rather than rounds: a correctly rounded cube root differs in 15
// table entries and so in 1 of 1000 colours. Positive finite x only.
static float cbrt_opencv(float x) {
    uint32_t u;
    memcpy(&u, &x, 4);
    if (u == 0) return 0.0f;
    int ex = (int)(u >> 23 & 0xff) - 127;
    int shx = ex % 3;
    shx -= shx >= 0 ? 3 : 0;
    ex = (ex - shx) / 3 - 1; // exponent of the root
    uint64_t fbits = (uint64_t)(shx + 1023) << 52 | (uint64_t)(u & 0x7fffff) << 29;
    double fr; // the mantissa scaled into [0.125, 1)
    memcpy(&fr, &fbits, 8);
    fr = ((((0x1.6a09e6653ba70p+5 * fr + 0x1.808f46c6116e0p+7) * fr + 0x1.dca97439cae14p+6) * fr +
           0x1.add70d2827500p+3) * fr + 0x1.4f15f83f55d2dp-3) /
         ((((0x1.d9e20660edb21p+3 * fr + 0x1.2ff15c0285815p+7) * fr + 0x1.510d06a8112cep+7) * fr +
           0x1.0fecbc9e2c375p+5) * fr + 1.0);
    memcpy(&fbits, &fr, 8);
    u = (uint32_t)(ex + 127) << 23 | (uint32_t)((fbits & ((UINT64_C(1) << 52) - 1)) >> 29);
    memcpy(&x, &u, 4);
    return x;
}

// OpenCV's applyGamma / applyInvGamma: the sRGB curve in double, rounded to float.
static float srgb_to_linear(float x) {
    double d = x;
    return (float)(d <= 809.0 / 20000.0 ? d / (323.0 / 25.0)
                                        : pow((d + 11.0 / 200.0) / (1.0 + 11.0 / 200.0), 12.0 / 5.0));
}

static float linear_to_srgb(float x) {
    double d = x;
    return (float)(d <= 7827.0 / 2500000.0
                       ? d * (323.0 / 25.0)
                       : pow(d, 1.0 / (12.0 / 5.0)) * (1.0 + 11.0 / 200.0) - 11.0 / 200.0);
}

static void build_tables(void) {
    for (int i = 0; i < 256; i++) T.gamma[i] = (int)lrintf(2040.0f * srgb_to_linear((float)i / 255.0f));

    // f(t) = t^(1/3) above (6/29)^3, else the linear toe 841/108 t + 16/116
    // (a fused multiply-add in OpenCV, hence fmaf).
    const float thresh = 216.0f / 24389.0f, scale = 841.0f / 108.0f, bias = 16.0f / 116.0f;
    const float step = 1.0f / 2040.0f;
    for (int i = 0; i < CBRT_TAB; i++) {
        float t = step * (float)i;
        float f = t < thresh ? fmaf(t, scale, bias) : cbrt_opencv(t);
        T.cbrt[i] = (int)lrintf((float)(1 << LAB_SHIFT2) * f);
    }

    for (int i = 0; i < INV_GAMMA_TAB; i++) {
        float t = (1.0f / INV_GAMMA_TAB) * (float)i;
        T.inv_gamma[i] = (uint8_t)lrintf(255.0f * linear_to_srgb(t));
    }

    for (int i = 0; i < 256; i++) {
        if (i <= 20) { // the linear part: Y = L / 903.3, f(Y) = 7.787 Y + 16/116
            T.y[i] = (int)lrintf((float)(i * BASE * 20 * 9) / (float)(17 * 29 * 29 * 29));
            T.fy[i] = (int)lrintf((float)BASE * (16.0f / 116.0f + (float)(i * 5) / (float)(3 * 17 * 29)));
        } else {
            float fy = (float)(i * 100 * BASE) / (float)(255 * 116) + (float)(16 * BASE) / 116.0f;
            T.fy[i] = (int)lrintf(fy);
            T.y[i] = (int)lrintf(fy * fy * fy / (float)(BASE * BASE));
        }
    }

    for (int i = MIN_AB; i < AB_TAB + MIN_AB; i++) {
        int v;
        if (i <= 3390) v = i * 108 / 841 - BASE * 16 / 116 * 108 / 841; // 3390 = 6/29 in BASE units
        else v = i * i / BASE * i / BASE;
        T.ab_to_xz[i - MIN_AB] = v;
    }

    for (int r = 0; r < 3; r++)
        for (int c = 0; c < 3; c++) {
            T.to_xyz[r * 3 + c] = (int)lrint((double)(1 << XYZ_SHIFT) * RGB2XYZ[r * 3 + c] / D65[r]);
            T.to_rgb[r * 3 + c] = (int)lrint((double)(1 << XYZ_SHIFT) * XYZ2RGB[r * 3 + c] * D65[c]);
        }
}

static inline __attribute__((always_inline)) uint8_t sat_u8(int v) { return (uint8_t)(v < 0 ? 0 : v > 255 ? 255 : v); }

// The kernels are written for the vectoriser (int tables, restrict, no
// branches) and compiled twice: for baseline x86-64 and for AVX2 tuned for
// Haswell, where table reads become hardware gathers (GCC's generic tuning
// emulates gathers with scalar loads, slower than plain scalar code). The
// variant is picked once, when the tables are built.
#define RGB_TO_LAB_ARGS                                                                                      \
    const uint8_t *restrict rgb, uint8_t *restrict L, uint8_t *restrict A, uint8_t *restrict B, size_t n
#define LAB_TO_RGB_ARGS                                                                                      \
    const uint8_t *restrict L, const uint8_t *restrict A, const uint8_t *restrict B, const int32_t *restrict tab, \
        uint8_t *restrict rgb, size_t n

static inline __attribute__((always_inline)) void rgb_to_lab_body(RGB_TO_LAB_ARGS) {
    enum { LSCALE = (116 * 255 + 50) / 100, LBIAS = -((16 * 255 * (1 << LAB_SHIFT2) + 50) / 100) };
    enum { ROUND = 1 << (XYZ_SHIFT - 1), ROUND2 = 1 << (LAB_SHIFT2 - 1), AB_BIAS = 128 << LAB_SHIFT2 };
    const int c0 = T.to_xyz[0], c1 = T.to_xyz[1], c2 = T.to_xyz[2], c3 = T.to_xyz[3], c4 = T.to_xyz[4],
              c5 = T.to_xyz[5], c6 = T.to_xyz[6], c7 = T.to_xyz[7], c8 = T.to_xyz[8];
    for (size_t i = 0; i < n; i++) {
        int r = T.gamma[rgb[3 * i]], g = T.gamma[rgb[3 * i + 1]], b = T.gamma[rgb[3 * i + 2]];
        int fx = T.cbrt[(r * c0 + g * c1 + b * c2 + ROUND) >> XYZ_SHIFT];
        int fy = T.cbrt[(r * c3 + g * c4 + b * c5 + ROUND) >> XYZ_SHIFT];
        int fz = T.cbrt[(r * c6 + g * c7 + b * c8 + ROUND) >> XYZ_SHIFT];
        L[i] = sat_u8((LSCALE * fy + LBIAS + ROUND2) >> LAB_SHIFT2);
        A[i] = sat_u8((500 * (fx - fy) + AB_BIAS + ROUND2) >> LAB_SHIFT2);
        B[i] = sat_u8((200 * (fy - fz) + AB_BIAS + ROUND2) >> LAB_SHIFT2);
    }
}

// tab: linear RGB << 12 -> output byte (the inverse gamma, maybe composed).
static inline __attribute__((always_inline)) void lab_to_rgb_body(LAB_TO_RGB_ARGS) {
    enum { ROUND = 1 << (RGB_SHIFT - 1), HI = INV_GAMMA_TAB - 1 };
    const int c0 = T.to_rgb[0], c1 = T.to_rgb[1], c2 = T.to_rgb[2], c3 = T.to_rgb[3], c4 = T.to_rgb[4],
              c5 = T.to_rgb[5], c6 = T.to_rgb[6], c7 = T.to_rgb[7], c8 = T.to_rgb[8];
    for (size_t i = 0; i < n; i++) {
        int y = T.y[L[i]], fy = T.fy[L[i]];
        // a/500 and b/200 in BASE units, by OpenCV's multiply-shift approximations.
        int adiv = ((5 * 53687 * A[i] + (1 << 7)) >> 13) - 128 * BASE / 500;
        int bdiv = ((41943 * B[i] + (1 << 4)) >> 9) - 128 * BASE / 200 + 1;
        int x = T.ab_to_xz[fy + adiv - MIN_AB];
        int z = T.ab_to_xz[fy - bdiv - MIN_AB];
        int r = (c0 * x + c1 * y + c2 * z + ROUND) >> RGB_SHIFT;
        int g = (c3 * x + c4 * y + c5 * z + ROUND) >> RGB_SHIFT;
        int b = (c6 * x + c7 * y + c8 * z + ROUND) >> RGB_SHIFT;
        r = r < 0 ? 0 : r > HI ? HI : r;
        g = g < 0 ? 0 : g > HI ? HI : g;
        b = b < 0 ? 0 : b > HI ? HI : b;
        rgb[3 * i] = (uint8_t)tab[r];
        rgb[3 * i + 1] = (uint8_t)tab[g];
        rgb[3 * i + 2] = (uint8_t)tab[b];
    }
}

static void rgb_to_lab_base(RGB_TO_LAB_ARGS) { rgb_to_lab_body(rgb, L, A, B, n); }
static void lab_to_rgb_base(LAB_TO_RGB_ARGS) { lab_to_rgb_body(L, A, B, tab, rgb, n); }
static void (*rgb_to_lab_kernel)(RGB_TO_LAB_ARGS) = rgb_to_lab_base;
static void (*lab_to_rgb_kernel)(LAB_TO_RGB_ARGS) = lab_to_rgb_base;
#if defined(__x86_64__)
__attribute__((target("avx2,tune=haswell"))) static void rgb_to_lab_avx2(RGB_TO_LAB_ARGS) {
    rgb_to_lab_body(rgb, L, A, B, n);
}
__attribute__((target("avx2,tune=haswell"))) static void lab_to_rgb_avx2(LAB_TO_RGB_ARGS) {
    lab_to_rgb_body(L, A, B, tab, rgb, n);
}
#endif

static pthread_once_t tables_once = PTHREAD_ONCE_INIT;

static void init_once(void) {
    build_tables();
#if defined(__x86_64__)
    if (__builtin_cpu_supports("avx2")) {
        rgb_to_lab_kernel = rgb_to_lab_avx2;
        lab_to_rgb_kernel = lab_to_rgb_avx2;
    }
#endif
}

static void init_tables(void) { pthread_once(&tables_once, init_once); }

void fu_rgb_to_lab_planes(const uint8_t *rgb, uint8_t *L, uint8_t *a, uint8_t *b, size_t n) {
    init_tables();
    rgb_to_lab_kernel(rgb, L, a, b, n);
}

void fu_lab_planes_to_rgb(const uint8_t *L, const uint8_t *a, const uint8_t *b, const uint8_t *lut,
                          uint8_t *rgb, size_t n) {
    init_tables();
    // Fold the caller's curve into the inverse-gamma table: one lookup per byte.
    int32_t tab[INV_GAMMA_TAB];
    for (int i = 0; i < INV_GAMMA_TAB; i++) tab[i] = lut ? lut[T.inv_gamma[i]] : T.inv_gamma[i];
    lab_to_rgb_kernel(L, a, b, tab, rgb, n);
}

// The interleaved forms go through planes a block at a time, which also makes
// them safe in place.
enum { BLOCK = 512 };

void fu_rgb_to_lab(const uint8_t *rgb, uint8_t *lab, size_t n) {
    init_tables();
    uint8_t p[3][BLOCK];
    for (size_t i0 = 0; i0 < n; i0 += BLOCK) {
        size_t m = n - i0 < BLOCK ? n - i0 : BLOCK;
        rgb_to_lab_kernel(rgb + 3 * i0, p[0], p[1], p[2], m);
        for (size_t i = 0; i < m; i++)
            for (int k = 0; k < 3; k++) lab[3 * (i0 + i) + k] = p[k][i];
    }
}

void fu_lab_to_rgb(const uint8_t *lab, uint8_t *rgb, size_t n) {
    init_tables();
    int32_t tab[INV_GAMMA_TAB];
    for (int i = 0; i < INV_GAMMA_TAB; i++) tab[i] = T.inv_gamma[i];
    uint8_t p[3][BLOCK];
    for (size_t i0 = 0; i0 < n; i0 += BLOCK) {
        size_t m = n - i0 < BLOCK ? n - i0 : BLOCK;
        for (size_t i = 0; i < m; i++)
            for (int k = 0; k < 3; k++) p[k][i] = lab[3 * (i0 + i) + k];
        lab_to_rgb_kernel(p[0], p[1], p[2], tab, rgb + 3 * i0, m);
    }
}
