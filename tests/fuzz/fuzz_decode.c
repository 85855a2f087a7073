// libFuzzer harness: probing and decoding PNG/JPEG/TIFF from memory, at full
// size and with shrink-on-load.
#include "core/error.h"
#include "image/codec.h"

#include <stdint.h>

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    fu_format fmt;
    uint32_t w, h, c;
    if (fu_probe(data, size, &fmt, &w, &h, &c) < 0) return 0;
    // Keep each run cheap: skip images the fuzzer made enormous.
    if ((uint64_t)w * h > (1u << 22)) return 0;
    fu_image im;
    if (fu_decode(data, size, 0, "fuzz", &im) == 0) fu_image_free(&im);
    if (fu_decode(data, size, 16, "fuzz", &im) == 0) fu_image_free(&im);
    return 0;
}
