// Median filters as sorting networks over whole rows: every step is a byte
// min/max across a row, which the compiler turns into 16 or 32 lanes at once.
// An interleaved row is filtered as a row of samples: the neighbours of byte i
// in its channel are bytes i - c and i + c.
//
// 3x3: sort each column of three (lo <= mid <= hi); the median of the nine is
// med3(max of the three lo, med3 of the three mid, min of the three hi).
// 5x5: Batcher's odd-even merge sort of 32 wires (the 25 samples, 3 zeros,
// 4 x 255), pruned to the comparators that reach wire 15, the median.
#include "image/median.h"

#include "core/error.h"

#include <stdbool.h>
#include <stdlib.h>
#include <string.h>

#define MIN(a, b) ((a) < (b) ? (a) : (b))
#define MAX(a, b) ((a) > (b) ? (a) : (b))

static uint32_t clamp_row(int64_t y, uint32_t h) { return y < 0 ? 0 : y >= h ? h - 1 : (uint32_t)y; }

// Copy the c replicated border samples at each end of a row padded by pad pixels.
static void pad_row(uint8_t *p, size_t n, size_t c, int pad) {
    for (int k = 1; k <= pad; k++) {
        memcpy(p + (size_t)(pad - k) * c, p + (size_t)pad * c, c);
        memcpy(p + (size_t)pad * c + n + (size_t)(k - 1) * c, p + (size_t)pad * c + n - c, c);
    }
}

__attribute__((target_clones("avx2", "default"))) static void
median3_row(const uint8_t *restrict r0, const uint8_t *restrict r1, const uint8_t *restrict r2, size_t n, size_t c,
            uint8_t *restrict lo, uint8_t *restrict mid, uint8_t *restrict hi, uint8_t *restrict out) {
    // lo, mid, hi: (n + 2c), the column sorts with one replicated pixel each side
    for (size_t i = 0; i < n; i++) {
        uint8_t a = r0[i], b = r1[i], d = r2[i];
        uint8_t l = MIN(a, b), h = MAX(a, b);
        lo[c + i] = MIN(l, d);
        uint8_t m = MAX(l, d);
        mid[c + i] = MIN(m, h);
        hi[c + i] = MAX(m, h);
    }
    pad_row(lo, n, c, 1);
    pad_row(mid, n, c, 1);
    pad_row(hi, n, c, 1);
    for (size_t i = 0; i < n; i++) {
        uint8_t l = MAX(MAX(lo[i], lo[i + c]), lo[i + 2 * c]);
        uint8_t h = MIN(MIN(hi[i], hi[i + c]), hi[i + 2 * c]);
        uint8_t a = mid[i], b = mid[i + c], d = mid[i + 2 * c];
        uint8_t m = MAX(MIN(a, b), MIN(MAX(a, b), d));
        out[i] = MAX(MIN(l, m), MIN(MAX(l, m), h));
    }
}

static int median3(const fu_image *src, fu_image *dst) {
    size_t c = src->c, n = (size_t)src->w * c;
    uint8_t *buf = malloc(3 * (n + 2 * c));
    if (!buf) return fu_fail("median", "out of memory");
    uint8_t *lo = buf, *mid = lo + n + 2 * c, *hi = mid + n + 2 * c;
    for (uint32_t y = 0; y < src->h; y++) {
        const uint8_t *r0 = src->px + clamp_row((int64_t)y - 1, src->h) * n;
        const uint8_t *r1 = src->px + (size_t)y * n;
        const uint8_t *r2 = src->px + clamp_row((int64_t)y + 1, src->h) * n;
        median3_row(r0, r1, r2, n, c, lo, mid, hi, dst->px + (size_t)y * n);
    }
    free(buf);
    return 0;
}

enum { WIRES = 32, MEDIAN_WIRE = 15, CHUNK = 64 };

// Batcher's network for 32 wires, keeping only comparators that can move a
// value onto MEDIAN_WIRE. Returns the number of pairs written.
static int median25_network(uint8_t pairs[][2]) {
    static uint8_t all[WIRES * WIRES][2];
    int n = 0;
    for (int p = 1; p < WIRES; p <<= 1)
        for (int k = p; k >= 1; k >>= 1)
            for (int j = k % p; j + k < WIRES; j += 2 * k)
                for (int i = 0; i < k && i + j + k < WIRES; i++)
                    if ((i + j) / (2 * p) == (i + j + k) / (2 * p)) {
                        all[n][0] = (uint8_t)(i + j);
                        all[n][1] = (uint8_t)(i + j + k);
                        n++;
                    }
    bool need[WIRES] = {0};
    need[MEDIAN_WIRE] = true;
    int m = 0;
    uint8_t kept[WIRES * WIRES][2];
    for (int q = n - 1; q >= 0; q--)
        if (need[all[q][0]] || need[all[q][1]]) {
            need[all[q][0]] = need[all[q][1]] = true;
            kept[m][0] = all[q][0];
            kept[m][1] = all[q][1];
            m++;
        }
    for (int q = 0; q < m; q++) { // back into forward order
        pairs[q][0] = kept[m - 1 - q][0];
        pairs[q][1] = kept[m - 1 - q][1];
    }
    return m;
}

__attribute__((target_clones("avx2", "default"))) static void
network_chunk(uint8_t v[WIRES][CHUNK], const uint8_t (*pairs)[2], int n_pairs) {
    for (int q = 0; q < n_pairs; q++) {
        uint8_t *restrict a = v[pairs[q][0]], *restrict b = v[pairs[q][1]];
        for (int i = 0; i < CHUNK; i++) {
            uint8_t x = a[i], y = b[i];
            a[i] = MIN(x, y);
            b[i] = MAX(x, y);
        }
    }
}

static int median5(const fu_image *src, fu_image *dst) {
    size_t c = src->c, n = (size_t)src->w * c, pn = n + 4 * c;
    uint8_t *rows = malloc(5 * pn);
    if (!rows) return fu_fail("median", "out of memory");
    uint8_t pairs[WIRES * WIRES][2];
    int n_pairs = median25_network(pairs);
    uint8_t v[WIRES][CHUNK] __attribute__((aligned(64)));
    memset(v, 0, sizeof v);
    for (uint32_t y = 0; y < src->h; y++) {
        for (int dy = 0; dy < 5; dy++) {
            memcpy(rows + dy * pn + 2 * c, src->px + clamp_row((int64_t)y + dy - 2, src->h) * n, n);
            pad_row(rows + dy * pn, n, c, 2);
        }
        uint8_t *out = dst->px + (size_t)y * n;
        for (size_t i0 = 0; i0 < n; i0 += CHUNK) {
            size_t len = MIN((size_t)CHUNK, n - i0);
            for (int dy = 0; dy < 5; dy++)
                for (int dx = 0; dx < 5; dx++) memcpy(v[dy * 5 + dx], rows + dy * pn + i0 + dx * c, len);
            for (int w = 25; w < WIRES; w++) memset(v[w], w < 28 ? 0 : 255, CHUNK);
            network_chunk(v, (const uint8_t(*)[2])pairs, n_pairs);
            memcpy(out + i0, v[MEDIAN_WIRE], len);
        }
    }
    free(rows);
    return 0;
}

int fu_median(const fu_image *src, fu_image *dst, int k) {
    if (k != 3 && k != 5) return fu_fail("median", "kernel size %d is not 3 or 5", k);
    if (dst->w != src->w || dst->h != src->h || dst->c != src->c || dst->px == src->px)
        return fu_fail("median", "the output must be a separate image of the input's shape");
    return k == 3 ? median3(src, dst) : median5(src, dst);
}
