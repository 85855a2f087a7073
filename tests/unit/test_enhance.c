// Properties of the enhancement steps that hold without an oracle (the
// OpenCV comparison is tests/ref/clahe_parity.py): CLAHE raises contrast and
// keeps flat images flat, the median equals a brute-force median and removes
// salt-and-pepper noise, the gamma table's shape, the Lab round trip of grey,
// the chain's options.
#include "check.h"
#include "core/error.h"
#include "image/clahe.h"
#include "image/enhance.h"
#include "image/gamma.h"
#include "image/lab.h"
#include "image/median.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>

static uint32_t rng_state = 12345;
static uint32_t rnd(void) { // xorshift32: a fixed, portable stream
    rng_state ^= rng_state << 13;
    rng_state ^= rng_state >> 17;
    rng_state ^= rng_state << 5;
    return rng_state;
}

static double stddev(const uint8_t *p, size_t n) {
    double s = 0, s2 = 0;
    for (size_t i = 0; i < n; i++) {
        s += p[i];
        s2 += (double)p[i] * p[i];
    }
    double m = s / n;
    return sqrt(s2 / n - m * m);
}

static int cmp_u8(const void *a, const void *b) { return *(const uint8_t *)a - *(const uint8_t *)b; }

// Sort-based median with replicated borders: slow and obviously right.
static uint8_t median_at(const fu_image *im, int x, int y, int ch, int k) {
    uint8_t v[25];
    int n = 0, r = k / 2;
    for (int dy = -r; dy <= r; dy++)
        for (int dx = -r; dx <= r; dx++) {
            int yy = y + dy < 0 ? 0 : y + dy >= (int)im->h ? (int)im->h - 1 : y + dy;
            int xx = x + dx < 0 ? 0 : x + dx >= (int)im->w ? (int)im->w - 1 : x + dx;
            v[n++] = im->px[((size_t)yy * im->w + xx) * im->c + ch];
        }
    qsort(v, n, 1, cmp_u8);
    return v[n / 2];
}

static void test_median_matches_brute_force(void) {
    static const uint32_t sizes[][2] = {{1, 1}, {2, 3}, {5, 7}, {13, 9}, {64, 33}, {100, 1}, {1, 50}};
    for (int k = 3; k <= 5; k += 2) {
        int bad = 0;
        char where[96] = "";
        for (size_t s = 0; s < sizeof sizes / sizeof sizes[0]; s++) {
            for (uint32_t c = 1; c <= 3; c += 2) {
                fu_image im, out;
                fu_image_alloc(&im, sizes[s][0], sizes[s][1], c);
                fu_image_alloc(&out, sizes[s][0], sizes[s][1], c);
                for (size_t i = 0; i < fu_image_bytes(&im); i++) im.px[i] = (uint8_t)(rnd() >> 24);
                if (fu_median(&im, &out, k) < 0) bad++;
                for (int y = 0; y < (int)im.h; y++)
                    for (int x = 0; x < (int)im.w; x++)
                        for (int ch = 0; ch < (int)c; ch++)
                            if (out.px[((size_t)y * im.w + x) * c + ch] != median_at(&im, x, y, ch, k) && !bad++)
                                snprintf(where, sizeof where, "%ux%ux%u at (%d,%d,%d)", im.w, im.h, c, x, y, ch);
                fu_image_free(&im);
                fu_image_free(&out);
            }
        }
        char name[64];
        snprintf(name, sizeof name, "median %dx%d equals a sorting median", k, k);
        CHECK(bad == 0, name, "%d samples differ, first %s", bad, where);
    }
}

static void test_median_removes_salt_and_pepper(void) {
    fu_image im, out;
    fu_image_alloc(&im, 60, 40, 3);
    fu_image_alloc(&out, 60, 40, 3);
    memset(im.px, 100, fu_image_bytes(&im));
    int noisy = 0;
    for (uint32_t y = 1; y < im.h; y += 3) // isolated specks, never two in one window row
        for (uint32_t x = (y * 7) % 3; x < im.w; x += 3) {
            memset(im.px + ((size_t)y * im.w + x) * 3, (rnd() & 1) ? 255 : 0, 3);
            noisy++;
        }
    fu_median(&im, &out, 3);
    size_t left = 0;
    for (size_t i = 0; i < fu_image_bytes(&out); i++) left += out.px[i] != 100;
    CHECK(noisy > 200 && left == 0, "median 3x3 removes salt-and-pepper noise", "%zu noisy samples left of %d",
          left, noisy * 3);
    CHECK(fu_median(&im, &out, 4) < 0 && fu_median(&im, &im, 3) < 0, "median rejects k=4 and in-place use",
          "accepted");
    fu_image_free(&im);
    fu_image_free(&out);
}

static void test_clahe(void) {
    // A dim, low-contrast plane: a smooth bump from 100 to 140 plus noise.
    enum { W = 96, H = 80 };
    static uint8_t src[W * H], dst[W * H];
    for (int y = 0; y < H; y++)
        for (int x = 0; x < W; x++)
            src[y * W + x] = (uint8_t)(100 + 30 * sin(x * 0.07) * cos(y * 0.05) * 0.5 + 15 + (rnd() % 10));
    double before = stddev(src, W * H);
    fu_clahe(src, dst, W, H, 2.0, 8, 8);
    double after = stddev(dst, W * H);
    CHECK(after > 1.5 * before, "clahe raises the contrast of a dim image", "std %.2f -> %.2f", before, after);

    memset(src, 77, sizeof src);
    fu_clahe(src, dst, W, H, 2.0, 8, 8);
    int flat = 1;
    for (int i = 1; i < W * H; i++) flat &= dst[i] == dst[0];
    CHECK(flat, "clahe keeps a flat image flat", "values %u .. differ", dst[0]);

    // Sizes that do not divide by the grid, down to one pixel, and in place.
    static const uint32_t sizes[][2] = {{1, 1}, {9, 13}, {301, 225}, {3, 2}, {8, 7}};
    int fails = 0;
    for (size_t s = 0; s < sizeof sizes / sizeof sizes[0]; s++) {
        uint32_t w = sizes[s][0], h = sizes[s][1];
        uint8_t *a = malloc((size_t)w * h), *b = malloc((size_t)w * h);
        for (size_t i = 0; i < (size_t)w * h; i++) a[i] = (uint8_t)(rnd() >> 24);
        fails += fu_clahe(a, b, w, h, 2.0, 8, 8) < 0;
        fails += fu_clahe(a, a, w, h, 2.0, 8, 8) < 0;
        fails += memcmp(a, b, (size_t)w * h) != 0;
        free(a);
        free(b);
    }
    CHECK(fails == 0, "clahe handles odd and tiny sizes, in place or not", "%d failures", fails);
    CHECK(fu_clahe(src, dst, W, H, 2.0, 0, 8) < 0, "clahe rejects a 0-tile grid", "accepted");
}

static void test_gamma(void) {
    uint8_t lut[256];
    fu_gamma_lut(1.2, lut);
    int monotone = 1;
    for (int i = 1; i < 256; i++) monotone &= lut[i] >= lut[i - 1];
    CHECK(monotone && lut[0] == 0 && lut[255] == 255, "gamma 1.2 table is monotone from 0 to 255",
          "lut[0]=%u lut[255]=%u monotone=%d", lut[0], lut[255], monotone);
    CHECK(lut[128] > 128 && lut[64] > 64, "gamma 1.2 brightens the mid-tones", "lut[64]=%u lut[128]=%u", lut[64],
          lut[128]);
    fu_gamma_lut(1.0, lut);
    int identity = 1;
    for (int i = 0; i < 256; i++) identity &= lut[i] == i;
    CHECK(identity, "gamma 1 is the identity", "differs");
}

static void test_lab_grey(void) {
    uint8_t rgb[256 * 3], lab[256 * 3], back[256 * 3];
    for (int v = 0; v < 256; v++) rgb[3 * v] = rgb[3 * v + 1] = rgb[3 * v + 2] = (uint8_t)v;
    fu_rgb_to_lab(rgb, lab, 256);
    fu_lab_to_rgb(lab, back, 256);
    int neutral = 1, worst = 0, spread = 0, rising = 1;
    for (int v = 0; v < 256; v++) {
        neutral &= lab[3 * v + 1] == 128 && lab[3 * v + 2] == 128;
        if (v) rising &= lab[3 * v] >= lab[3 * (v - 1)];
        int lo = 255, hi = 0;
        for (int k = 0; k < 3; k++) {
            int d = abs(back[3 * v + k] - v);
            worst = d > worst ? d : worst;
            lo = back[3 * v + k] < lo ? back[3 * v + k] : lo;
            hi = back[3 * v + k] > hi ? back[3 * v + k] : hi;
        }
        spread = hi - lo > spread ? hi - lo : spread;
    }
    CHECK(neutral && rising && lab[0] == 0 && lab[255 * 3] == 255, "grey has a = b = 128 and L rising 0..255",
          "neutral=%d rising=%d L(0)=%u L(255)=%u", neutral, rising, lab[0], lab[255 * 3]);
    CHECK(worst <= 1 && spread <= 1, "Lab round trip keeps grey grey (within 1, as OpenCV)",
          "max error %d, channel spread %d", worst, spread);

    // The planar forms agree with the interleaved ones.
    uint8_t L[256], a[256], b[256], again[256 * 3];
    for (int i = 0; i < 256 * 3; i++) rgb[i] = (uint8_t)(rnd() >> 24);
    fu_rgb_to_lab(rgb, lab, 256);
    fu_rgb_to_lab_planes(rgb, L, a, b, 256);
    int same = 1;
    for (int i = 0; i < 256; i++) same &= L[i] == lab[3 * i] && a[i] == lab[3 * i + 1] && b[i] == lab[3 * i + 2];
    fu_lab_to_rgb(lab, back, 256);
    fu_lab_planes_to_rgb(L, a, b, NULL, again, 256);
    same &= memcmp(back, again, sizeof back) == 0;
    memcpy(again, rgb, sizeof again); // in place
    fu_rgb_to_lab(again, again, 256);
    same &= memcmp(again, lab, sizeof lab) == 0;
    CHECK(same, "planar, interleaved and in-place Lab conversions agree", "differ");
}

static void test_enhance_options(void) {
    fu_enhance_opts o = fu_enhance_defaults();
    CHECK(o.clip == 2.0 && o.tiles == 8 && o.gamma == 1.2 && o.median == 3, "defaults are the study's",
          "clip %g tiles %d gamma %g median %d", o.clip, o.tiles, o.gamma, o.median);
    fu_image im;
    fu_image_alloc(&im, 31, 17, 3);
    for (size_t i = 0; i < fu_image_bytes(&im); i++) im.px[i] = (uint8_t)(rnd() >> 24);
    uint8_t *orig = malloc(fu_image_bytes(&im));
    memcpy(orig, im.px, fu_image_bytes(&im));
    fu_enhance_opts off = {.clip = 0, .tiles = 8, .gamma = 1, .median = 1};
    fu_enhance(&off, &im);
    CHECK(memcmp(orig, im.px, fu_image_bytes(&im)) == 0, "every step off is the identity", "changed");
    CHECK(fu_enhance(&o, &im) == 0 && im.w == 31 && im.h == 17 && im.c == 3, "the default chain runs on 31x17",
          "%s", fu_error());
    fu_enhance_opts bad[] = {{2, 8, 1.2, 4}, {2, 0, 1.2, 3}, {2, 8, 0, 3}, {NAN, 8, 1.2, 3}};
    int rejected = 0;
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) rejected += fu_enhance(&bad[i], &im) < 0;
    CHECK(rejected == 4, "bad options are rejected", "%d of 4", rejected);
    free(orig);
    fu_image_free(&im);
}

int main(void) {
    test_median_matches_brute_force();
    test_median_removes_salt_and_pepper();
    test_clahe();
    test_gamma();
    test_lab_grey();
    test_enhance_options();
    return check_done();
}
