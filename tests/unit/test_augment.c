// Augmentation building blocks: flips are exact involutions, rotation by 0 is
// the identity and by 90/180 an exact permutation, brightness/contrast follow
// their formula, drawn parameters stay in range, and copy shares are exact.
#include "check.h"
#include "core/rng.h"
#include "image/augment.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>

static fu_image random_image(uint32_t w, uint32_t h, uint64_t seed) {
    fu_image im;
    if (fu_image_alloc(&im, w, h, 3) < 0) exit(1);
    fu_rng r = fu_rng_make(seed, 0, 0);
    for (size_t i = 0; i < fu_image_bytes(&im); i++) im.px[i] = (uint8_t)fu_rng_below(&r, 256);
    return im;
}

static fu_image copy_of(const fu_image *a) {
    fu_image b;
    if (fu_image_alloc(&b, a->w, a->h, a->c) < 0) exit(1);
    memcpy(b.px, a->px, fu_image_bytes(a));
    return b;
}

static bool same(const fu_image *a, const fu_image *b) {
    return a->w == b->w && a->h == b->h && memcmp(a->px, b->px, fu_image_bytes(a)) == 0;
}

static const uint8_t *at(const fu_image *im, uint32_t x, uint32_t y) { return im->px + ((size_t)y * im->w + x) * 3; }

int main(void) {
    fu_image a = random_image(37, 23, 1); // odd and even sides
    fu_image b = copy_of(&a);

    fu_flip_horizontal(&b);
    bool mirrored = memcmp(at(&b, 0, 5), at(&a, 36, 5), 3) == 0 && memcmp(at(&b, 18, 0), at(&a, 18, 0), 3) == 0;
    fu_flip_horizontal(&b);
    CHECK(mirrored && same(&a, &b), "horizontal flip mirrors columns and undoes itself", "mismatch");
    fu_flip_vertical(&b);
    mirrored = memcmp(at(&b, 4, 0), at(&a, 4, 22), 3) == 0;
    fu_flip_vertical(&b);
    CHECK(mirrored && same(&a, &b), "vertical flip mirrors rows and undoes itself", "mismatch");

    fu_image r;
    if (fu_rotate(&a, 0, &r) < 0) return 1;
    CHECK(same(&a, &r), "rotation by 0 is the identity", "pixels changed");
    fu_image_free(&r);

    // 180 degrees about ((w-1)/2, (h-1)/2) is both flips, exactly.
    if (fu_rotate(&a, 180, &r) < 0) return 1;
    fu_flip_horizontal(&b);
    fu_flip_vertical(&b);
    CHECK(same(&b, &r), "rotation by 180 equals both flips", "pixels differ");
    fu_image_free(&r);
    fu_image_free(&b);

    // 90 degrees counter-clockwise on a square: out(x, y) = in(c - (y - c), c + (x - c)).
    fu_image sq = random_image(31, 31, 2);
    if (fu_rotate(&sq, 90, &r) < 0) return 1;
    int wrong = 0;
    for (uint32_t y = 0; y < 31; y++)
        for (uint32_t x = 0; x < 31; x++) wrong += memcmp(at(&r, x, y), at(&sq, 30 - y, x), 3) != 0;
    CHECK(wrong == 0, "rotation by 90 is an exact quarter turn (counter-clockwise)", "%d pixels wrong", wrong);
    // Top-right corner moves to the top-left for a counter-clockwise turn.
    CHECK(memcmp(at(&r, 0, 0), at(&sq, 30, 0), 3) == 0, "positive angles turn counter-clockwise", "corner");
    fu_image_free(&r);

    // A small rotation keeps the size, makes the corners black, and a
    // constant image stays constant near the centre.
    fu_image flat;
    fu_image_alloc(&flat, 41, 41, 3);
    memset(flat.px, 200, fu_image_bytes(&flat));
    if (fu_rotate(&flat, 20, &r) < 0) return 1;
    bool ok = r.w == 41 && r.h == 41 && at(&r, 0, 0)[0] == 0 && at(&r, 40, 40)[1] == 0 && at(&r, 20, 20)[2] == 200 &&
              at(&r, 10, 25)[0] == 200;
    CHECK(ok, "rotation by 20 keeps the size, centre values, and fills the corners with 0", "got %u %u %u",
          at(&r, 0, 0)[0], at(&r, 20, 20)[2], at(&r, 10, 25)[0]);
    fu_image_free(&r);
    fu_image_free(&flat);
    fu_image_free(&sq);

    // Brightness/contrast: v' = (v - mean) c + mean + 255 b.
    fu_image two;
    fu_image_alloc(&two, 2, 1, 3);
    memset(two.px, 100, 3);
    memset(two.px + 3, 200, 3);
    fu_brightness_contrast(&two, 0, 1);
    CHECK(two.px[0] == 100 && two.px[5] == 200, "brightness 0, contrast 1 is the identity", "%u %u", two.px[0],
          two.px[5]);
    fu_brightness_contrast(&two, 0, 1.2); // mean 150 -> 90, 210
    CHECK(two.px[0] == 90 && two.px[3] == 210, "contrast scales about the mean", "%u %u", two.px[0], two.px[3]);
    fu_brightness_contrast(&two, 0.2, 1); // +51
    CHECK(two.px[0] == 141 && two.px[3] == 255, "brightness adds a share of 255 and clamps", "%u %u", two.px[0],
          two.px[3]);
    fu_brightness_contrast(&two, -0.2, 0.8);
    CHECK(two.px[0] == (uint8_t)lround((141 - 198.0) * 0.8 + 198 - 51),
          "brightness and contrast combine as documented", "%u", two.px[0]);
    fu_image_free(&two);

    // Drawn parameters: in range, both flips about half the time, keyed by
    // (seed, index, copy) only.
    int out_of_range = 0, hflips = 0, vflips = 0;
    double lo = 1e9, hi = -1e9;
    for (uint32_t i = 0; i < 2000; i++) {
        fu_augment_params p = fu_augment_draw(7, i / 4, 1 + i % 4);
        out_of_range += fabs(p.degrees) > 20 || fabs(p.brightness) > 0.2 || p.contrast < 0.8 || p.contrast > 1.2;
        hflips += p.hflip;
        vflips += p.vflip;
        lo = fmin(lo, p.degrees);
        hi = fmax(hi, p.degrees);
    }
    CHECK(out_of_range == 0 && lo < -19 && hi > 19, "rotation, brightness, contrast stay within their bounds",
          "%d out of range, degrees %.2f..%.2f", out_of_range, lo, hi);
    CHECK(hflips > 900 && hflips < 1100 && vflips > 900 && vflips < 1100, "each flip happens with p = 0.5",
          "%d, %d of 2000", hflips, vflips);
    fu_augment_params p1 = fu_augment_draw(7, 3, 2), p2 = fu_augment_draw(7, 3, 2), p3 = fu_augment_draw(7, 3, 3);
    CHECK(memcmp(&p1, &p2, sizeof p1) == 0 && p1.degrees != p3.degrees, "parameters depend on (seed, index, copy)",
          "draws differ or repeat");

    // Copy shares: exact totals, each the floor or ceiling of extra / n.
    int share_bad = 0;
    for (uint64_t n = 1; n <= 60; n++)
        for (uint64_t extra = 0; extra <= 3 * n + 7; extra++) {
            uint64_t total = 0;
            for (uint64_t j = 0; j < n; j++) {
                uint64_t s = fu_augment_share(extra, n, j);
                if (s != extra / n && s != (extra + n - 1) / n) share_bad++;
                total += s;
            }
            if (total != extra) share_bad++;
        }
    CHECK(share_bad == 0, "copy shares sum exactly and differ by at most one", "%d faults", share_bad);

    // The whole transform is deterministic.
    fu_augment_params p = fu_augment_draw(1, 2, 3);
    fu_image x, y;
    fu_augment_apply(&a, &p, &x);
    fu_augment_apply(&a, &p, &y);
    CHECK(same(&x, &y) && !same(&x, &a), "augment_apply is deterministic and changes the image", "mismatch");
    fu_image_free(&x);
    fu_image_free(&y);
    fu_image_free(&a);
    return check_done();
}
