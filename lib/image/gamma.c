#include "image/gamma.h"

#include <math.h>

void fu_gamma_lut(double gamma, uint8_t lut[256]) {
    for (int i = 0; i < 256; i++) {
        double v = floor(255.0 * pow(i / 255.0, 1.0 / gamma) + 0.5);
        lut[i] = (uint8_t)(v < 0 ? 0 : v > 255 ? 255 : v);
    }
}

void fu_apply_lut(uint8_t *px, size_t n, const uint8_t lut[256]) {
    for (size_t i = 0; i < n; i++) px[i] = lut[px[i]];
}
