// The chain fuses where it costs nothing in exactness: CLAHE touches only L,
// so the image is split into L, a, b planes, L is equalised in place, and the
// gamma table is folded into the Lab -> RGB inverse-gamma table, so gamma
// costs no extra pass. The median needs a second buffer.
#include "image/enhance.h"

#include "core/error.h"
#include "image/clahe.h"
#include "image/gamma.h"
#include "image/lab.h"
#include "image/median.h"

#include <stdbool.h>

fu_enhance_opts fu_enhance_defaults(void) {
    return (fu_enhance_opts){.clip = 2.0, .tiles = 8, .gamma = 1.2, .median = 3};
}

int fu_enhance_check(const fu_enhance_opts *o) {
    if (!(o->clip <= 1000.0)) return fu_fail("clip", "%g is not a number in 0..1000", o->clip);
    if (o->tiles < 1 || o->tiles > 256) return fu_fail("tiles", "%d is outside 1..256", o->tiles);
    if (!(o->gamma > 0.0 && o->gamma <= 100.0)) return fu_fail("gamma", "%g is not in (0, 100]", o->gamma);
    if (o->median != 1 && o->median != 3 && o->median != 5)
        return fu_fail("median", "kernel size %d is not 1 (off), 3 or 5", o->median);
    return 0;
}

int fu_enhance(const fu_enhance_opts *o, fu_image *img) {
    if (fu_enhance_check(o) < 0) return -1;
    if (img->c != 3) return fu_fail("enhance", "image has %u channels, not 3 (RGB)", img->c);
    uint8_t lut[256];
    bool clahe = o->clip > 0.0, gamma = o->gamma != 1.0, median = o->median > 1;
    if (gamma) fu_gamma_lut(o->gamma, lut);
    // One scratch image serves first as the L, a, b planes, then as the
    // median's output, which then becomes the image.
    fu_image scratch = {0};
    if ((clahe || median) && fu_image_alloc(&scratch, img->w, img->h, 3) < 0) return -1;
    size_t n = (size_t)img->w * img->h;
    if (clahe) {
        uint8_t *L = scratch.px, *a = L + n, *b = a + n; // (h, w) each
        fu_rgb_to_lab_planes(img->px, L, a, b, n);
        if (fu_clahe(L, L, img->w, img->h, o->clip, o->tiles, o->tiles) < 0) {
            fu_image_free(&scratch);
            return -1;
        }
        fu_lab_planes_to_rgb(L, a, b, gamma ? lut : NULL, img->px, n);
    } else if (gamma) {
        fu_apply_lut(img->px, 3 * n, lut);
    }
    if (median) {
        if (fu_median(img, &scratch, o->median) < 0) {
            fu_image_free(&scratch);
            return -1;
        }
        uint8_t *t = img->px;
        img->px = scratch.px;
        scratch.px = t;
    }
    fu_image_free(&scratch);
    return 0;
}
