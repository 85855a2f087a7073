#include "image/record_image.h"

#include "core/error.h"
#include "image/codec.h"

#include <string.h>

int fu_record_to_image(const fu_record *rec, uint32_t min_side, fu_image *out) {
    // No subject: the mapper names the record ("record 12 (Im013): JPEG: ...").
    if (rec->kind == FU_KIND_ENCODED) return fu_decode(rec->payload, rec->payload_len, min_side, "", out);
    if (rec->channels != 3)
        return fu_fail("", "pixel record has %u channels; the image tools work on RGB (3)", rec->channels);
    if (fu_image_alloc(out, rec->width, rec->height, 3) < 0) return -1;
    memcpy(out->px, rec->payload, fu_image_bytes(out));
    return 0;
}

fu_record fu_image_record(const fu_record *in, const fu_image *im) {
    fu_record r = *in;
    r.kind = FU_KIND_PIXELS;
    r.width = im->w;
    r.height = im->h;
    r.channels = im->c;
    r.payload = im->px;
    r.payload_len = fu_image_bytes(im);
    return r;
}
