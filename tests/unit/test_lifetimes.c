// Placing buffers by lifetime (nn/lifetimes.h), which both backends' gradient
// arenas rely on: properties over random lifetimes (aligned, inside the
// arena, apart in bytes wherever alive together, and an arena between the
// busiest op's needs and one buffer each), and the cases whose answer is
// known exactly.
#include "check.h"

#include "core/rng.h"
#include "nn/lifetimes.h"

#include <stdarg.h>
#include <stdbool.h>
#include <stdio.h>

enum { MAX_N = 48, OPS = 64, TRIALS = 400 };

static size_t aligned(size_t bytes, size_t align) { return (bytes + align - 1) & ~(align - 1); }

static bool meet(const int *from, const int *to, int a, int b) { return from[a] <= to[b] && from[b] <= to[a]; }

static char why[160]; // what the last unsound placement did wrong

static __attribute__((format(printf, 1, 2))) bool unsound(const char *fmt, ...) {
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(why, sizeof why, fmt, ap);
    va_end(ap);
    return false;
}

// What every placement must satisfy.
static bool sound(int n, const size_t *size, const int *from, const int *to, size_t align, const size_t *at,
                  size_t total) {
    size_t sum = 0;
    for (int a = 0; a < n; a++) {
        if (!size[a]) continue;
        size_t end = at[a] + aligned(size[a], align);
        sum += aligned(size[a], align);
        if (at[a] % align) return unsound("buffer %d at %zu, not a multiple of %zu", a, at[a], align);
        if (end > total) return unsound("buffer %d ends at %zu, past the arena's %zu", a, end, total);
        for (int b = 0; b < a; b++)
            if (size[b] && meet(from, to, a, b) && at[a] < at[b] + aligned(size[b], align) && at[b] < end)
                return unsound("buffers %d and %d, alive together, overlap in bytes", a, b);
    }
    // Those alive at one op are apart in bytes, so the arena holds them all;
    // and it is never more than one buffer each.
    for (int t = 0; t < OPS; t++) {
        size_t live = 0;
        for (int a = 0; a < n; a++)
            if (size[a] && from[a] <= t && t <= to[a]) live += aligned(size[a], align);
        if (live > total) return unsound("op %d needs %zu bytes, the arena has %zu", t, live, total);
    }
    if (total > (sum > align ? sum : align))
        return unsound("arena of %zu bytes, more than one buffer each (%zu)", total, sum);
    return true;
}

static void test_random(void) {
    fu_rng r = fu_rng_make(11, 0, 0);
    size_t size[MAX_N], at[MAX_N], again[MAX_N], total, total2, sum_total = 0, sum_each = 0;
    int from[MAX_N], to[MAX_N];
    bool ok = true, same = true;
    for (int trial = 0; trial < TRIALS && ok; trial++) {
        int n = (int)fu_rng_below(&r, MAX_N + 1);
        size_t align = (size_t)1 << fu_rng_below(&r, 8); // 1 to 128
        for (int i = 0; i < n; i++) {
            size[i] = fu_rng_below(&r, 6) ? fu_rng_below(&r, 5000) : 0; // some none
            from[i] = (int)fu_rng_below(&r, OPS);
            to[i] = from[i] + (int)fu_rng_below(&r, (uint32_t)(OPS - from[i]));
        }
        if (fu_place_lifetimes(n, size, from, to, align, at, &total) < 0 ||
            fu_place_lifetimes(n, size, from, to, align, again, &total2) < 0) {
            ok = unsound("trial %d: out of memory", trial);
            break;
        }
        ok = sound(n, size, from, to, align, at, total);
        for (int i = 0; i < n; i++) same &= at[i] == again[i];
        same &= total == total2;
        sum_total += total;
        for (int i = 0; i < n; i++) sum_each += aligned(size[i], align);
    }
    CHECK(ok, "random lifetimes: aligned, inside the arena, apart where alive together, arena between the busiest "
              "op's need and one buffer each", "%s", why);
    CHECK(same, "random lifetimes: the same placement on a second call", "differs");
    printf("# %d random placements: arenas %.0f%% of one buffer each\n", TRIALS, 100.0 * sum_total / sum_each);
}

static void test_known(void) {
    size_t at[4], total;
    int from[4] = {0, 2, 4, 6}, to[4] = {1, 3, 5, 7};
    size_t apart[4] = {100, 300, 200, 50};
    fu_place_lifetimes(4, apart, from, to, 64, at, &total);
    CHECK(total == 320 && !at[0] && !at[1] && !at[2] && !at[3], "lifetimes that never meet share offset 0: the "
          "arena is the largest buffer, aligned (320)", "total %zu, at %zu %zu %zu %zu", total, at[0], at[1], at[2],
          at[3]);

    int all_from[4] = {0, 0, 0, 0}, all_to[4] = {3, 3, 3, 3};
    fu_place_lifetimes(4, apart, all_from, all_to, 64, at, &total);
    CHECK(total == 128 + 320 + 256 + 64 && at[1] == 0 && at[2] == 320 && at[0] == 576 && at[3] == 704,
          "all alive at once: one after another, largest first (768 bytes)", "total %zu, at %zu %zu %zu %zu", total,
          at[0], at[1], at[2], at[3]);

    // 0 and 2 both meet 1 but not each other: 2 may sit where 0 does.
    int chain_from[3] = {0, 1, 2}, chain_to[3] = {1, 2, 3};
    size_t chain[3] = {64, 64, 64};
    fu_place_lifetimes(3, chain, chain_from, chain_to, 64, at, &total);
    CHECK(total == 128 && at[0] == at[2] && at[1] != at[0], "a chain 0-1-2: 0 and 2 share, 1 apart (128 bytes)",
          "total %zu, at %zu %zu %zu", total, at[0], at[1], at[2]);

    size_t none[2] = {0, 0};
    fu_place_lifetimes(2, none, chain_from, chain_to, 64, at, &total);
    CHECK(total == 64, "buffers of 0 bytes take no room: an arena of align bytes", "total %zu", total);
    int rc = fu_place_lifetimes(0, NULL, NULL, NULL, 16, NULL, &total);
    CHECK(rc == 0 && total == 16, "no buffers: an arena of align bytes", "rc %d, total %zu", rc, total);
}

int main(void) {
    test_random();
    test_known();
    return check_done();
}
