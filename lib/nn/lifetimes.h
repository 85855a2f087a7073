// Buffers that live over ranges of op indices share one arena where their
// ranges do not meet: a backward pass's activation gradients, each alive
// from the op that first writes it (late in the op list) down to the one
// that last reads it (earlier), hold a fraction of what one buffer each
// would. Both backends plan their gradients with it.
#ifndef FU_NN_LIFETIMES_H
#define FU_NN_LIFETIMES_H

#include <stddef.h>

// Buffer i, size[i] bytes (0: none), is alive over op indices
// [from[i], to[i]] (inclusive, from[i] <= to[i]). Places each at an offset
// at[i] (a multiple of align, which is a power of two) such that buffers whose
// ranges meet do not overlap in bytes: largest first, each at the lowest
// offset clear of every placed buffer alive with it. *total: the arena's
// bytes (align at least). -1 (out of memory) or 0.
int fu_place_lifetimes(int n, const size_t *size, const int *from, const int *to, size_t align, size_t *at,
                       size_t *total);

#endif
