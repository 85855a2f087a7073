// Gamma correction of 8-bit samples through a 256-entry table.
#ifndef FU_IMAGE_GAMMA_H
#define FU_IMAGE_GAMMA_H

#include <stddef.h>
#include <stdint.h>

// lut[i] = round(255 * (i / 255)^(1 / gamma)), gamma > 0: gamma > 1 brightens
// the mid-tones, gamma = 1 is the identity; lut[0] = 0 and lut[255] = 255.
void fu_gamma_lut(double gamma, uint8_t lut[256]);

// px[i] = lut[px[i]] for n bytes.
void fu_apply_lut(uint8_t *px, size_t n, const uint8_t lut[256]);

#endif
