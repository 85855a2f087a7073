// Deterministic random numbers: a counter-based generator, so a stream can be
// derived from (seed, record index, copy) without any shared state. That is
// what makes outputs independent of the thread count.
#ifndef FU_CORE_RNG_H
#define FU_CORE_RNG_H

#include <stdint.h>

typedef struct {
    uint64_t state;
} fu_rng;

// SplitMix64 finaliser: a good 64-bit hash of one word.
uint64_t fu_mix64(uint64_t x);
// A generator keyed by up to three words (seed, index, stream).
fu_rng fu_rng_make(uint64_t seed, uint64_t a, uint64_t b);
uint64_t fu_rng_u64(fu_rng *r);
// Moves r past k draws of fu_rng_u64 (and of fu_rng_uniform, one each) in O(1).
void fu_rng_skip(fu_rng *r, uint64_t k);
double fu_rng_uniform(fu_rng *r);                    // [0, 1)
double fu_rng_range(fu_rng *r, double lo, double hi); // [lo, hi)
uint32_t fu_rng_below(fu_rng *r, uint32_t n);        // [0, n), unbiased
double fu_rng_normal(fu_rng *r);                     // N(0, 1)

#endif
