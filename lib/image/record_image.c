#include "image/record_image.h"

#include "core/error.h"
#include "image/codec.h"

#include <string.h>

int fu_record_to_image(const fu_record *rec, uint32_t min_side, fu_image *out) {
    char subject[96];
    snprintf(subject, sizeof subject, "%.*s", (int)(rec->id_len < 80 ? rec->id_len : 80), rec->id);
    if (rec->kind == FU_KIND_ENCODED) return fu_decode(rec->payload, rec->payload_len, min_side, subject, out);
    if (rec->channels != 3)
        return fu_fail(subject, "pixel record has %u channels; the image tools work on RGB (3)", rec->channels);
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
