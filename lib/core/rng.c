#include "core/rng.h"

#include <math.h>

uint64_t fu_mix64(uint64_t x) {
    x += 0x9E3779B97F4A7C15ull;
    x = (x ^ (x >> 30)) * 0xBF58476D1CE4E5B9ull;
    x = (x ^ (x >> 27)) * 0x94D049BB133111EBull;
    return x ^ (x >> 31);
}

fu_rng fu_rng_make(uint64_t seed, uint64_t a, uint64_t b) {
    fu_rng r = {fu_mix64(fu_mix64(fu_mix64(seed) ^ a) ^ b)};
    return r;
}

uint64_t fu_rng_u64(fu_rng *r) {
    r->state += 0x9E3779B97F4A7C15ull;
    return fu_mix64(r->state);
}

// A draw adds the golden-ratio increment to the counter, so k draws add k of them.
void fu_rng_skip(fu_rng *r, uint64_t k) { r->state += k * 0x9E3779B97F4A7C15ull; }

double fu_rng_uniform(fu_rng *r) { return (double)(fu_rng_u64(r) >> 11) * 0x1.0p-53; }

double fu_rng_range(fu_rng *r, double lo, double hi) { return lo + (hi - lo) * fu_rng_uniform(r); }

uint32_t fu_rng_below(fu_rng *r, uint32_t n) {
    // Lemire's multiply-shift with rejection.
    uint64_t m = (uint64_t)(uint32_t)fu_rng_u64(r) * n;
    uint32_t low = (uint32_t)m;
    if (low < n) {
        uint32_t t = (uint32_t)(-n) % n;
        while (low < t) {
            m = (uint64_t)(uint32_t)fu_rng_u64(r) * n;
            low = (uint32_t)m;
        }
    }
    return (uint32_t)(m >> 32);
}

double fu_rng_normal(fu_rng *r) {
    // Box-Muller; one value per call keeps the generator stateless beyond `state`.
    double u = fu_rng_uniform(r), v = fu_rng_uniform(r);
    return sqrt(-2.0 * log1p(-u)) * cos(2.0 * M_PI * v);
}
