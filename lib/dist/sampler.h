// Which samples each rank trains on: PyTorch's DistributedSampler semantics.
// The epoch's order (fu_epoch_order from (seed, epoch)) is padded to a
// multiple of the rank count by repeating its first samples, and rank r takes
// positions r, r + size, r + 2 size, ... So the ranks' slices are disjoint
// except for the padding, together cover every sample, hold the same count
// (equal step counts: no rank waits at a collective that others skip), and
// are the same on a rerun. With batch b per rank, step k of the ranks
// together trains on positions [k*b*size, (k+1)*b*size) of the padded order:
// the batch one process with batch b*size trains on at step k.
#ifndef FU_DIST_SAMPLER_H
#define FU_DIST_SAMPLER_H

#include <stddef.h>
#include <stdint.h>

// Samples each rank gets from n: ceil(n / size).
size_t fu_rank_share(size_t n, int size);

// Rank `rank`'s order for epoch `epoch`: out (fu_rank_share(n, size)).
// scratch (n + size) is working space.
void fu_rank_order(uint64_t seed, uint64_t epoch, size_t n, int rank, int size, uint32_t *scratch, uint32_t *out);

#endif
