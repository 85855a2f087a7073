// Placing buffers by lifetime (lifetimes.h).
#include "nn/lifetimes.h"

#include "core/error.h"

#include <stdbool.h>
#include <stdlib.h>

int fu_place_lifetimes(int n, const size_t *size, const int *from, const int *to, size_t align, size_t *at,
                       size_t *total) {
    int *order = fu_malloc((size_t)(n ? n : 1) * sizeof *order);
    bool *placed = fu_calloc((size_t)(n ? n : 1), sizeof *placed);
    if (!order || !placed) {
        free(order), free(placed);
        return -1;
    }
    for (int i = 0; i < n; i++) {
        order[i] = i;
        at[i] = 0;
    }
    for (int i = 1; i < n; i++) // by size, descending; ties in index order (insertion sort: n is small)
        for (int j = i; j > 0 && size[order[j]] > size[order[j - 1]]; j--) {
            int t = order[j];
            order[j] = order[j - 1], order[j - 1] = t;
        }
    *total = align;
    for (int k = 0; k < n; k++) {
        int a = order[k];
        if (!size[a]) continue;
        size_t bytes = (size[a] + align - 1) & ~(align - 1), off = 0;
        for (bool moved = true; moved;) { // past every placed buffer alive with it that it would overlap
            moved = false;
            for (int b = 0; b < n; b++) {
                size_t end = at[b] + ((size[b] + align - 1) & ~(align - 1));
                if (placed[b] && from[a] <= to[b] && from[b] <= to[a] && off < end && at[b] < off + bytes) {
                    off = end;
                    moved = true;
                }
            }
        }
        at[a] = off;
        placed[a] = true;
        if (off + bytes > *total) *total = off + bytes;
    }
    free(order), free(placed);
    return 0;
}
