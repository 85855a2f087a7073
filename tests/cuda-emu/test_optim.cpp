// The cuda backend's optimizer kernels (lib/cuda/cuda_optim.cu), run under
// the host emulation (emu.h), against the host's clipping and AdamW
// (lib/nn/adamw.c): cu_grad_norm against fu_clip_grad_norm's norm, and
// cu_grad_norm + cu_adamw against fu_clip_grad_norm + fu_adamw_step on the
// same gradients. Both apply adamw_math.h's fu_adamw_elem, so without
// clipping the weights and moments must be the same bytes. Also the refused
// steps' count, which moves the later steps' t, and fp16's loss scale
// update (cu_loss_scale_update) against GradScaler's rule.
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

// The host's step: clipping, then AdamW step t on the clipped gradients.
static void host_step(state *s, const vector<fu_param_group> &groups, double max_norm, int64_t t = STEP) {
    vector<float> g = s->g;
    fu_clip_grad_norm(g.data(), g.size(), max_norm);
    fu_adamw_step(&OPTS, LR, t, groups.data(), (int)groups.size(), s->p.data(), g.data(), s->m1.data(),
                  s->m2.data());
}

// The device's step, as the cuda backend's resident step runs it: the
// scalars of step t and the 15 before it, *refused the steps refused unseen.
static void device_step(state *s, const vector<fu_param_group> &groups, double max_norm, int64_t t = STEP,
                        int *refused = NULL, bool count_refusal = false) {
    cu_adamw_coefs ks;
    for (int j = 0; j < FU_FIGURE_SLOTS; j++)
        ks.k[j] = fu_adamw_coef_of(OPTS.beta1, OPTS.beta2, OPTS.eps, OPTS.weight_decay, LR, t - j > 1 ? t - j : 1);
    int none = 0;
    double norm = device_norm(s->g);
    cu_adamw(s->g.size(), groups.data(), (int)groups.size(), &ks, refused ? refused : &none, count_refusal, max_norm,
             &norm, s->g.data(), s->p.data(), s->m1.data(), s->m2.data());
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

// Steps refused where the host does not see them (count_refusal): each
// counts one, and a later step given t runs as step t - refused, bit for bit
// the host's; a refusal the host sees (its norm read back) counts none.
static void test_adamw_refusals(size_t n) {
    vector<bool> in_group;
    vector<fu_param_group> groups = make_groups(n, &in_group);
    state start = random_state(n);
    state bad = start, dev = start, host = start;
    bad.g[7] = INFINITY;
    int refused = 0;
    device_step(&bad, groups, 1e30, 9, &refused, false);
    report(refused == 0, "adamw: a refusal the host reads back is not counted");
    device_step(&bad, groups, 1e30, 9, &refused, true);
    device_step(&bad, groups, 1e30, 10, &refused, true);
    report(refused == 2, "adamw: two refusals the host has not read are counted", refused);
    device_step(&dev, groups, 1e30, 11, &refused, true);
    host_step(&host, groups, 1e30, 9);
    report_same("adamw given t 11 after 2 unseen refusals: step 9's weights, bit for bit", dev.p, host.p);
    report_same("adamw after 2 unseen refusals: step 9's m2", dev.m2, host.m2);
    report(refused == 2, "adamw: a step taken leaves the count alone", refused);
    state other = start;
    host_step(&other, groups, 1e30, 11);
    report(!same_bytes(other.p, host.p), "adamw: steps 9 and 11 differ (the comparison is not vacuous)");
}

// GradScaler's update: halve on an overflow (down to the least), double
// after growth clean passes in a row, an overflow restarting the count.
static void test_loss_scale_update() {
    fu_loss_scale s = {65536, 0};
    int overflow = 1, clean = 0;
    cu_loss_scale_update(&s, &overflow, 0x1p-24f, 3);
    report(s.scale == 32768 && s.clean == 0, "loss scale: an overflow halves it", s.scale);
    cu_loss_scale_update(&s, &clean, 0x1p-24f, 3);
    cu_loss_scale_update(&s, &clean, 0x1p-24f, 3);
    report(s.scale == 32768 && s.clean == 2, "loss scale: clean passes counted", s.clean);
    cu_loss_scale_update(&s, &overflow, 0x1p-24f, 3);
    cu_loss_scale_update(&s, &clean, 0x1p-24f, 3);
    cu_loss_scale_update(&s, &clean, 0x1p-24f, 3);
    report(s.scale == 16384 && s.clean == 2, "loss scale: an overflow restarts the count", s.scale);
    cu_loss_scale_update(&s, &clean, 0x1p-24f, 3);
    report(s.scale == 32768 && s.clean == 0, "loss scale: the growth-th clean pass doubles it", s.scale);
    s = {0x1p-23f, 5};
    cu_loss_scale_update(&s, &overflow, 0x1p-24f, 3);
    cu_loss_scale_update(&s, &overflow, 0x1p-24f, 3);
    report(s.scale == 0x1p-24f && s.clean == 0, "loss scale: never below the least", s.scale);
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
    test_adamw_refusals(150001);
    test_loss_scale_update();
    printf("# %d failed\n", failures);
    return failures != 0;
}
