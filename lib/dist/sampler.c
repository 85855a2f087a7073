// DistributedSampler semantics (sampler.h).
#include "dist/sampler.h"

#include "nn/loader.h" // fu_epoch_order

size_t fu_rank_share(size_t n, int size) { return (n + (size_t)size - 1) / (size_t)size; }

void fu_rank_order(uint64_t seed, uint64_t epoch, size_t n, int rank, int size, uint32_t *scratch, uint32_t *out) {
    fu_epoch_order(seed, epoch, n, scratch);
    size_t share = fu_rank_share(n, size), total = share * (size_t)size;
    for (size_t i = n; i < total; i++) scratch[i] = scratch[i - n]; // padding: wrap to the start
    for (size_t j = 0; j < share; j++) out[j] = scratch[j * (size_t)size + (size_t)rank];
}
