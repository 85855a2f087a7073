// The cuda backend's optimizer kernels (lib/cuda/cuda_optim.cu), run under
// the host emulation (emu.h), against the host's clipping and AdamW
// (lib/nn/adamw.c): cu_grad_norm against fu_clip_grad_norm's norm, and
// cu_grad_norm + cu_adamw against fu_clip_grad_norm + fu_adamw_step on the
// same gradients. Both apply adamw_math.h's fu_adamw_elem, so without
// clipping the weights and moments must be the same bytes.
#include "compare.h"

#include "cuda/cuda_optim.h"

#include <cmath>
#include <cstdio>
#include <cstring>
#include <vector>

using std::vector;

static const fu_adamw_opts OPTS = {0.9, 0.999, 1e-8, 1e-2}; // a weight decay whose effect shows in every float
static const double LR = 1e-3;
static const int64_t STEP = 3;

// The norm as the device computes it (chunks of 65536 summed by blocks).
static double device_norm(const vector<float> &g) {
    vector<double> part(cu_grad_norm_part_size(g.size()));
    double norm = NAN;
    cu_grad_norm(g.size(), g.data(), part.data(), &norm);
    return norm;
}

// cu_grad_norm against fu_clip_grad_norm (which sums each chunk in sequence,
// the kernel by a tree over a block's threads: the last bits may differ).
static void test_grad_norm(size_t n) {
    char what[128];
    vector<float> g = random_floats(n);
    vector<float> g_host = g;
    double want = fu_clip_grad_norm(g_host.data(), n, INFINITY);
    double got = device_norm(g);
    double err = want > 0 ? std::fabs(got - want) / want : std::fabs(got - want);
    snprintf(what, sizeof what, "grad norm of %zu gradients = fu_clip_grad_norm's", n);
    report(err <= 1e-12, what, err);
}

// The parameter groups of the test: sorted by offset, as cu_adamw requires;
// decayed and not, sizes from 1 up, some back to back, some with a gap
// before them; elements 0-4, the gaps and the tail are in no group.
static vector<fu_param_group> make_groups(size_t n, vector<bool> *in_group) {
    static const size_t sizes[] = {1, 2, 3, 64, 255, 256, 257, 1000, 7};
    vector<fu_param_group> groups;
    size_t offset = 5;
    for (int j = 0; j < 60; j++) {
        size_t count = sizes[j % 9];
        groups.push_back({offset, count, j % 3 != 1});
        offset += count + (j % 4 == 3 ? 11 : 0);
    }
    groups.push_back({offset, n - 10 - offset, true}); // the bulk, then a tail of 10 in no group
    in_group->assign(n, false);
    for (const fu_param_group &gr : groups) {
        for (size_t i = gr.offset; i < gr.offset + gr.count; i++) (*in_group)[i] = true;
    }
    return groups;
}

// Weights, moments (m2 >= 0, as squares) and gradients of one step.
struct state {
    vector<float> p, m1, m2, g;
};

static state random_state(size_t n) {
    state s = {random_floats(n), random_floats(n), random_floats(n), random_floats(n)};
    for (size_t i = 0; i < n; i++) {
        s.m1[i] *= 1e-2f;
        s.m2[i] = s.m2[i] * s.m2[i] * 1e-4f;
    }
    return s;
}

// The host's step: clipping, then AdamW on the clipped gradients.
static void host_step(state *s, const vector<fu_param_group> &groups, double max_norm) {
    vector<float> g = s->g;
    fu_clip_grad_norm(g.data(), g.size(), max_norm);
    fu_adamw_step(&OPTS, LR, STEP, groups.data(), (int)groups.size(), s->p.data(), g.data(), s->m1.data(),
                  s->m2.data());
}

// The device's step, as the cuda backend's resident step runs it.
static void device_step(state *s, const vector<fu_param_group> &groups, double max_norm) {
    fu_adamw_coef k = fu_adamw_coef_of(OPTS.beta1, OPTS.beta2, OPTS.eps, OPTS.weight_decay, LR, STEP);
    double norm = device_norm(s->g);
    cu_adamw(s->g.size(), groups.data(), (int)groups.size(), k, max_norm, &norm, s->g.data(), s->p.data(),
             s->m1.data(), s->m2.data());
}

static bool same_bytes(const vector<float> &a, const vector<float> &b) {
    return a.size() == b.size() && memcmp(a.data(), b.data(), a.size() * sizeof a[0]) == 0;
}

// Elements where a and b differ (as bytes), and the first of them.
static size_t count_diffs(const vector<float> &a, const vector<float> &b, size_t *first) {
    size_t diffs = 0;
    *first = a.size();
    for (size_t i = 0; i < a.size(); i++) {
        if (memcmp(&a[i], &b[i], sizeof a[i]) != 0 && diffs++ == 0) *first = i;
    }
    return diffs;
}

static void report_same(const char *what, const vector<float> &got, const vector<float> &want) {
    size_t first;
    size_t diffs = count_diffs(got, want, &first);
    if (diffs == 0) {
        report(true, what);
        return;
    }
    printf("not ok - %s: %zu elements differ, the first at %zu (%.9g, want %.9g)\n", what, diffs, first,
           (double)got[first], (double)want[first]);
    failures++;
}

// Without clipping: weights and both moments the same bytes as the host's,
// elements in no group untouched, the gradients not written.
static void test_adamw_exact(size_t n) {
    vector<bool> in_group;
    vector<fu_param_group> groups = make_groups(n, &in_group);
    state start = random_state(n);
    state host = start, dev = start;
    host_step(&host, groups, 1e30);
    device_step(&dev, groups, 1e30);
    report_same("adamw without clipping: weights bit-identical to fu_adamw_step", dev.p, host.p);
    report_same("adamw without clipping: m1 bit-identical", dev.m1, host.m1);
    report_same("adamw without clipping: m2 bit-identical", dev.m2, host.m2);
    size_t moved = 0, outside_changed = 0;
    for (size_t i = 0; i < n; i++) {
        bool changed = dev.p[i] != start.p[i] || dev.m1[i] != start.m1[i] || dev.m2[i] != start.m2[i];
        if (in_group[i]) moved += changed;
        else outside_changed += changed;
    }
    report(outside_changed == 0, "adamw: elements in no group (head, gaps, tail) untouched");
    report(moved > n / 2, "adamw: the step moved the grouped elements (the comparison is not vacuous)");
    report_same("adamw: the gradients are not written", dev.g, start.g);
}

// Clipping to a quarter of the norm: within 1e-6 of the host (the two norms
// may differ in the last bits, and so the float clipping factor).
static void test_adamw_clipped(size_t n) {
    vector<bool> in_group;
    vector<fu_param_group> groups = make_groups(n, &in_group);
    state start = random_state(n);
    state host = start, dev = start;
    double max_norm = device_norm(start.g) / 4;
    host_step(&host, groups, max_norm);
    device_step(&dev, groups, max_norm);
    near("adamw clipping to norm / 4: weights within 1e-6", dev.p, to_double(host.p), 1e-6);
    near("adamw clipping to norm / 4: m1 within 1e-6", dev.m1, to_double(host.m1), 1e-6);
    near("adamw clipping to norm / 4: m2 within 1e-6", dev.m2, to_double(host.m2), 1e-6);
    state unclipped = start;
    host_step(&unclipped, groups, 1e30);
    report(rel_l2(dev.m1.data(), to_double(unclipped.m1).data(), n) > 1e-2,
           "adamw clipping: m1 differs from the unclipped step's (clipping took effect)");
}

// A non-finite gradient makes the norm non-finite: the step is refused and
// weights and moments stay as they were, bit for bit.
static void test_adamw_nonfinite(size_t n, float bad, const char *what) {
    char line[160];
    vector<bool> in_group;
    vector<fu_param_group> groups = make_groups(n, &in_group);
    state start = random_state(n);
    start.g[n / 2] = bad;
    state dev = start;
    snprintf(line, sizeof line, "grad norm with %s gradient is not finite", what);
    report(!std::isfinite(device_norm(start.g)), line);
    device_step(&dev, groups, 1e30);
    snprintf(line, sizeof line, "adamw with %s gradient: weights, m1, m2 unchanged bit for bit", what);
    report(same_bytes(dev.p, start.p) && same_bytes(dev.m1, start.m1) && same_bytes(dev.m2, start.m2), line);
}

int main() {
    test_grad_norm(150001);     // 3 chunks of 65536, the last partial
    test_grad_norm(131072);     // exactly 2 chunks
    test_grad_norm(1000);       // under one chunk
    test_grad_norm(0);          // no gradients: norm 0
    test_adamw_exact(150001);   // 587 blocks of 256
    test_adamw_clipped(150001);
    test_adamw_nonfinite(150001, NAN, "a NaN");
    test_adamw_nonfinite(150001, INFINITY, "an inf");
    printf("# %d failed\n", failures);
    return failures != 0;
}
