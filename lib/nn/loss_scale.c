// fp16 loss scaling's state as text (loss_scale.h), for checkpoints.
#include "nn/loss_scale.h"

#include <float.h>
#include <stdio.h>
#include <stdlib.h>

void fu_loss_scale_format(const fu_loss_scale *s, char *out, size_t size) {
    snprintf(out, size, "%a %d", (double)s->scale, s->clean);
}

int fu_loss_scale_parse(const char *text, fu_loss_scale *out) {
    int n = 0;
    for (const char *at = text;;) {
        char *end;
        double scale = strtod(at, &end);
        if (end == at || *end != ' ' || !(scale <= FLT_MAX)) return -1; // beyond, (float) is undefined
        at = end + 1;
        long clean = strtol(at, &end, 10);
        if (end == at || clean < 0 || clean >= FU_LOSS_SCALE_GROWTH) return -1;
        fu_loss_scale one = {(float)scale, (int)clean};
        if (!fu_loss_scale_valid(&one)) return -1;
        if (n++ == 0 || one.scale < out->scale) *out = one;
        if (!*end) return 0;
        if (*end != ';') return -1;
        at = end + 1;
    }
}
