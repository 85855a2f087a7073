#include "image/image.h"

#include "core/error.h"

#include <stdlib.h>

int fu_image_alloc(fu_image *im, uint32_t w, uint32_t h, uint32_t c) {
    im->w = w;
    im->h = h;
    im->c = c;
    im->px = NULL;
    if (w == 0 || h == 0 || c == 0) return fu_fail("image", "empty image %ux%ux%u", w, h, c);
    // 64-byte alignment helps vector loads; the size cap keeps a bogus header
    // from asking for terabytes.
    size_t n = (size_t)w * h * c;
    if ((uint64_t)w * h * c > (UINT64_C(1) << 34))
        return fu_fail("image", "%ux%u pixels is too large", w, h);
    size_t padded = (n + 63) & ~(size_t)63;
    im->px = aligned_alloc(64, padded);
    if (!im->px) return fu_fail("image", "out of memory for %ux%ux%u", w, h, c);
    return 0;
}

void fu_image_free(fu_image *im) {
    free(im->px);
    im->px = NULL;
}
