// Resize properties that hold whatever OpenCV does (tests/ref/resize_parity.py
// compares with cv2 pixel for pixel): sizes, constants stay constant, identity,
// area shrinking keeps the mean, enlarging keeps a ramp monotone, and the
// 2x2 box's rounding.
#include "check.h"
#include "core/error.h"
#include "image/resize.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>

static fu_image filled(uint32_t w, uint32_t h, uint32_t c, uint8_t v) {
    fu_image im;
    if (fu_image_alloc(&im, w, h, c) < 0) abort();
    memset(im.px, v, fu_image_bytes(&im));
    return im;
}

static fu_image noise(uint32_t w, uint32_t h, uint32_t c, uint32_t seed) {
    fu_image im;
    if (fu_image_alloc(&im, w, h, c) < 0) abort();
    for (size_t i = 0; i < fu_image_bytes(&im); i++) {
        seed = seed * 1664525u + 1013904223u;
        im.px[i] = (uint8_t)(seed >> 24);
    }
    return im;
}

static double mean(const fu_image *im) {
    double s = 0;
    for (size_t i = 0; i < fu_image_bytes(im); i++) s += im->px[i];
    return s / (double)fu_image_bytes(im);
}

static const uint32_t SIZES[][4] = {
    // src w, src h, dst w, dst h: integer shrink, 2x2, fractional shrink, enlarge, mixed
    {64, 48, 16, 12}, {64, 48, 32, 24}, {100, 90, 37, 41}, {30, 20, 97, 64}, {50, 20, 20, 50}, {17, 99, 40, 9},
    {1, 1, 5, 3},     {7, 5, 1, 1},
};

static void test_constant_and_sizes(void) {
    for (size_t i = 0; i < sizeof SIZES / sizeof *SIZES; i++)
        for (uint32_t c = 1; c <= 4; c++) {
            fu_image src = filled(SIZES[i][0], SIZES[i][1], c, 173), dst = {0};
            int ok = fu_resize(&src, SIZES[i][2], SIZES[i][3], &dst) == 0 && dst.w == SIZES[i][2] &&
                     dst.h == SIZES[i][3] && dst.c == c;
            for (size_t k = 0; ok && k < fu_image_bytes(&dst); k++) ok &= dst.px[k] == 173;
            char name[96];
            snprintf(name, sizeof name, "constant stays constant %ux%u -> %ux%u, %u channel(s)", SIZES[i][0],
                     SIZES[i][1], SIZES[i][2], SIZES[i][3], c);
            CHECK(ok, name, "%s", fu_error());
            fu_image_free(&src);
            fu_image_free(&dst);
        }
}

static void test_identity(void) {
    fu_image src = noise(33, 21, 3, 7), dst = {0};
    CHECK(fu_resize(&src, 33, 21, &dst) == 0 && memcmp(src.px, dst.px, fu_image_bytes(&src)) == 0,
          "same size is a copy", "%s", fu_error());
    fu_image_free(&src);
    fu_image_free(&dst);
}

static void test_mean_preserved(void) {
    static const uint32_t to[][2] = {{64, 64}, {100, 100}, {37, 53}, {224, 224}, {255, 128}};
    for (size_t i = 0; i < sizeof to / sizeof *to; i++) {
        fu_image src = noise(256, 256, 3, 11 + (uint32_t)i), dst = {0};
        int ok = fu_resize(&src, to[i][0], to[i][1], &dst) == 0;
        double d = ok ? fabs(mean(&src) - mean(&dst)) : 99;
        char name[80];
        snprintf(name, sizeof name, "area shrink 256x256 -> %ux%u keeps the mean", to[i][0], to[i][1]);
        CHECK(ok && d < 0.6, name, "%s mean moved by %.3f", fu_error(), d);
        fu_image_free(&src);
        fu_image_free(&dst);
    }
}

static void test_enlarge_monotone(void) {
    fu_image src;
    if (fu_image_alloc(&src, 10, 3, 1) < 0) abort();
    for (uint32_t y = 0; y < 3; y++)
        for (uint32_t x = 0; x < 10; x++) src.px[y * 10 + x] = (uint8_t)(x * 25);
    fu_image dst = {0};
    int ok = fu_resize(&src, 47, 7, &dst) == 0;
    for (uint32_t y = 0; ok && y < 7; y++)
        for (uint32_t x = 1; x < 47; x++) ok &= dst.px[y * 47 + x] >= dst.px[y * 47 + x - 1];
    ok &= dst.px[0] == 0 && dst.px[46] == 225;
    CHECK(ok, "enlarging a ramp stays monotone and keeps its ends", "%s", fu_error());
    fu_image_free(&src);
    fu_image_free(&dst);
}

static void test_box_rounding(void) {
    // 2x2 boxes round half up ((s + 2) >> 2, OpenCV's SIMD kernel); 3x3 and
    // 1x4 boxes round s / area half to even.
    fu_image src;
    if (fu_image_alloc(&src, 2, 2, 1) < 0) abort();
    memcpy(src.px, (uint8_t[]){1, 2, 3, 4}, 4); // mean 2.5
    fu_image dst = {0};
    int got = fu_resize(&src, 1, 1, &dst) == 0 ? dst.px[0] : -1;
    CHECK(got == 3, "2x2 box rounds 2.5 up", "got %d", got);
    fu_image_free(&dst);
    fu_image_free(&src);
    if (fu_image_alloc(&src, 4, 1, 1) < 0) abort();
    memcpy(src.px, (uint8_t[]){1, 2, 3, 4}, 4); // mean 2.5
    got = fu_resize(&src, 1, 1, &dst) == 0 ? dst.px[0] : -1;
    CHECK(got == 2, "4x1 box rounds 2.5 to even", "got %d", got);
    fu_image_free(&dst);
    fu_image_free(&src);
}

static void test_errors(void) {
    fu_image src = filled(4, 4, 3, 1), dst = {0};
    CHECK(fu_resize(&src, 0, 4, &dst) < 0 && fu_error()[0] && dst.px == NULL, "zero width is refused", "passed");
    fu_image_free(&src);
}

int main(void) {
    test_constant_and_sizes();
    test_identity();
    test_mean_preserved();
    test_enlarge_monotone();
    test_box_rounding();
    test_errors();
    return check_done();
}
