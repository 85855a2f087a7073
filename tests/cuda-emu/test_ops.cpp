// The cuda backend's own kernels (lib/cuda/cuda_ops.cu), run under the host
// emulation (emu.h), against the reference ops (lib/nn/ref_ops.c) in double.
// The kernels work on NHWC, the reference on NCHW: inputs are made NCHW and
// transposed by to_nhwc below (not by the kernels under test).
#include "compare.h"

#include "cuda/cuda_ops.h"
extern "C" {
#include "nn/ref_ops.h"
}

#include <algorithm>
#include <cmath>
#include <cstdio>
#include <string>
#include <vector>

using std::vector;

// (n, c, hw) -> (n, hw, c).
template <class T> static vector<T> to_nhwc(const vector<T> &x, int n, int c, int hw) {
    vector<T> y(x.size());
    for (int i = 0; i < n; i++) {
        for (int ch = 0; ch < c; ch++) {
            for (int p = 0; p < hw; p++) y[((size_t)i * hw + p) * c + ch] = x[((size_t)i * c + ch) * hw + p];
        }
    }
    return y;
}

// Value for value (a fused kernel against the ops it stands for: +0 and -0 alike).
static bool same_values(const vector<float> &a, const vector<float> &b) {
    for (size_t i = 0; i < a.size(); i++)
        if (!(a[i] == b[i])) return false;
    return a.size() == b.size();
}

// The layout kernels move every value to its place, and back; into bf16,
// each value rounded at its place.
static void test_layout(int n, int c, int hw) {
    char what[128];
    vector<float> x = random_floats((size_t)n * c * hw);
    vector<float> y(x.size()), back(x.size());
    cu_nchw_to_nhwc(n, c, hw, x.data(), CU_FP32, y.data());
    snprintf(what, sizeof what, "nchw_to_nhwc %dx%dx%d: every value at its NHWC place", n, c, hw);
    near(what, y, to_double(to_nhwc(x, n, c, hw)), 0);
    vector<unsigned short> y16(x.size()), want16(x.size());
    cu_nchw_to_nhwc(n, c, hw, x.data(), CU_BF16, y16.data());
    cu_to_half(true, y.size(), y.data(), want16.data());
    snprintf(what, sizeof what, "nchw_to_nhwc %dx%dx%d into bf16: the NHWC values rounded", n, c, hw);
    report(y16 == want16, what);
    cu_nhwc_to_nchw(n, c, hw, CU_FP32, y.data(), back.data());
    snprintf(what, sizeof what, "nhwc_to_nchw %dx%dx%d: the round trip gives x back", n, c, hw);
    near(what, back, to_double(x), 0);
}

// SE scale and global average pooling, forward and backward (+=); sums over
// positions in chunks of 64 (cu_pos_part_size).
static void test_scale_gap(int n, int c, int hw) {
    size_t big = (size_t)n * c * hw, nc = (size_t)n * c;
    vector<float> x = random_floats(big), s = random_floats(nc), dy = random_floats(big);
    vector<float> dx0 = random_floats(big), ds0 = random_floats(nc);
    vector<float> xh = to_nhwc(x, n, c, hw), dyh = to_nhwc(dy, n, c, hw);
    vector<double> xd = to_double(x), sd = to_double(s), dyd = to_double(dy);

    vector<float> y(big);
    vector<double> y_ref(big);
    cu_scale_fwd(n, hw, c, xh.data(), s.data(), y.data());
    fu_ref_scale_fwd_f64(nc, hw, xd.data(), sd.data(), y_ref.data());
    near("scale fwd: y = x * s per (image, channel)", y, to_nhwc(y_ref, n, c, hw), 2e-6);

    vector<float> dx = to_nhwc(dx0, n, c, hw), ds = ds0;
    vector<double> dx_ref = to_double(dx0), ds_ref = to_double(ds0);
    vector<double> part(cu_pos_part_size(n, hw, c));
    cu_scale_bwd(n, hw, c, xh.data(), s.data(), dyh.data(), dx.data(), true, ds.data(), true, part.data());
    fu_ref_scale_bwd_f64(nc, hw, xd.data(), sd.data(), dyd.data(), dx_ref.data(), ds_ref.data());
    near("scale bwd: dx += dy * s", dx, to_nhwc(dx_ref, n, c, hw), 2e-6);
    near("scale bwd: ds += sum over positions of dy * x", ds, ds_ref, 2e-6);

    vector<float> pooled(nc);
    vector<double> pooled_ref(nc);
    cu_gap_fwd(n, hw, c, CU_FP32, xh.data(), pooled.data(), part.data());
    fu_ref_gap_fwd_f64(nc, hw, xd.data(), pooled_ref.data());
    near("gap fwd: the mean over positions per (image, channel)", pooled, pooled_ref, 2e-6);

    vector<float> gdy = random_floats(nc);
    vector<float> gdx = to_nhwc(dx0, n, c, hw);
    vector<double> gdx_ref = to_double(dx0), gdy_d = to_double(gdy);
    cu_gap_bwd(n, hw, c, gdy.data(), gdx.data(), true);
    fu_ref_gap_bwd_f64(nc, hw, gdy_d.data(), gdx_ref.data());
    near("gap bwd: dx += dy / hw at every position", gdx, to_nhwc(gdx_ref, n, c, hw), 2e-6);
}

// SE scale + add + ReLU fused = the three kernels one after the other, value
// for value, forward and backward (dx, ds, and the shortcut's gradient).
static void test_scale_add_relu(int n, int c, int hw) {
    size_t big = (size_t)n * hw * c, nc = (size_t)n * c;
    vector<float> x = random_floats(big), s = random_floats(nc), sc = random_floats(big), dy = random_floats(big);
    vector<float> scaled(big), sum(big), y(big), yf(big);
    cu_scale_fwd(n, hw, c, x.data(), s.data(), scaled.data());
    cu_add_fwd(big, scaled.data(), sc.data(), sum.data());
    cu_relu_fwd(big, sum.data(), y.data());
    cu_scale_add_relu_fwd(n, hw, c, CU_FP32, x.data(), s.data(), CU_FP32, sc.data(), CU_FP32, yf.data());
    char name[128];
    snprintf(name, sizeof name, "scale + add + relu %dx%dx%d fused: forward = the three ops", n, c, hw);
    report(same_values(y, yf), name);

    vector<double> part(cu_pos_part_size(n, hw, c));
    vector<float> dsum(big, 0.0f), dscaled(big, 0.0f), dx = random_floats(big), ds = random_floats(nc);
    vector<float> dsc = random_floats(big), dxf = dx, dsf = ds, dscf = dsc;
    cu_relu_bwd(big, y.data(), dy.data(), dsum.data(), true);
    cu_add_bwd(big, dsum.data(), dscaled.data(), true, dsc.data(), true);
    cu_scale_bwd(n, hw, c, x.data(), s.data(), dscaled.data(), dx.data(), true, ds.data(), true, part.data());
    cu_scale_add_relu_bwd(n, hw, c, CU_FP32, x.data(), s.data(), CU_FP32, sc.data(), CU_FP32, yf.data(), dy.data(),
                          dxf.data(), true, dsf.data(), true, dscf.data(), true, part.data());
    snprintf(name, sizeof name, "scale + add + relu %dx%dx%d fused: backward = the three ops (dx, ds, dshortcut)", n,
             c, hw);
    report(same_values(dx, dxf) && same_values(ds, dsf) && same_values(dsc, dscf), name);
}

// Under amp a block's end reads x (a BatchNorm's output) and the shortcut
// in half and writes y in half, and global pooling reads half: each = the
// fp32 kernel on the values the half tensors hold, with y rounded, value
// for value, forward and backward, for fp16 and bf16 and for each mix the
// backend makes (the shortcut fp32: the stem's max pooling). Element 0's
// v = x s + sc is positive but below fp16's range (x 1, s 1e-9, sc 0): y
// is 0 in fp16, and backward still lets its gradient through, as fp32's.
static void test_block_end_half(int n, int c, int hw) {
    size_t big = (size_t)n * hw * c, nc = (size_t)n * c;
    vector<float> x0 = random_floats(big), s = random_floats(nc), sc0 = random_floats(big), dy = random_floats(big);
    x0[0] = 1, s[0] = 1e-9f, sc0[0] = 0;
    static const bool half_sc[] = {true, false};
    for (int t = 0; t < 2; t++) {
        cu_type h = t ? CU_BF16 : CU_FP16;
        for (bool hsc : half_sc) {
            // the typed inputs, and the fp32 values they hold
            vector<unsigned short> x16(big), sc16(big), y16(big), y_ref16(big);
            vector<float> x(big), sc = sc0, y(big);
            cu_to_half(t, big, x0.data(), x16.data());
            cu_from_half(t, big, x16.data(), x.data(), false);
            if (hsc) {
                cu_to_half(t, big, sc0.data(), sc16.data());
                cu_from_half(t, big, sc16.data(), sc.data(), false);
            }
            const void *sc_in = hsc ? (const void *)sc16.data() : sc.data();
            cu_type sct = hsc ? h : CU_FP32;
            cu_scale_add_relu_fwd(n, hw, c, CU_FP32, x.data(), s.data(), CU_FP32, sc.data(), CU_FP32, y.data());
            cu_scale_add_relu_fwd(n, hw, c, h, x16.data(), s.data(), sct, sc_in, h, y16.data());
            cu_to_half(t, big, y.data(), y_ref16.data());

            vector<double> part(cu_pos_part_size(n, hw, c));
            vector<float> dx = random_floats(big), ds = random_floats(nc), dsc = random_floats(big);
            vector<float> dx16 = dx, ds16 = ds, dsc16 = dsc;
            cu_scale_add_relu_bwd(n, hw, c, CU_FP32, x.data(), s.data(), CU_FP32, sc.data(), CU_FP32, y.data(),
                                  dy.data(), dx.data(), true, ds.data(), true, dsc.data(), true, part.data());
            cu_scale_add_relu_bwd(n, hw, c, h, x16.data(), s.data(), sct, sc_in, h, y16.data(), dy.data(),
                                  dx16.data(), true, ds16.data(), true, dsc16.data(), true, part.data());
            vector<float> pooled(nc), pooled16(nc);
            cu_gap_fwd(n, hw, c, CU_FP32, x.data(), pooled.data(), part.data());
            cu_gap_fwd(n, hw, c, h, x16.data(), pooled16.data(), part.data());
            bool underflow = t == 1 || (y16[0] == 0 && y[0] > 0 && dsc[0] == dsc16[0] && dy[0] != 0);
            char name[200];
            snprintf(name, sizeof name, "scale + add + relu %dx%dx%d, x%s and y in %s: y rounded, backward and the "
                     "pooling of x as in fp32%s", n, c, hw, hsc ? ", shortcut" : "", t ? "bf16" : "fp16",
                     t ? "" : " (also where y underflows to 0)");
            report(y16 == y_ref16 && same_values(dx, dx16) && same_values(ds, ds16) && same_values(dsc, dsc16) &&
                       same_values(pooled, pooled16) && underflow, name);
        }
    }
}

// A copy of v one element past a 16-byte boundary: the kernels' vec_ok
// refuses it, so they take one element at a time (V = 1).
template <class T> struct unaligned {
    vector<T> buf;
    explicit unaligned(const vector<T> &v) : buf(v.size() + 1) { std::copy(v.begin(), v.end(), buf.begin() + 1); }
    T *data() { return buf.data() + 1; }
    vector<T> values() const { return vector<T>(buf.begin() + 1, buf.end()); }
};

// Channels a multiple of 8 and aligned buffers: the element-wise kernels
// take 4 elements at a time (V = 4), 8 where every tensor is half;
// unaligned copies of the same inputs one at a time. The same bytes out,
// for BatchNorm's apply (fp32 x and bf16 y; fp16 x, fp32 y with a ReLU;
// fp16 x and y) and its input gradient (fp32 adding; half x, dy and dx with
// a ReLU's mask), the block end forward and backward (fp32; half x and y
// with an fp32 shortcut; all half), and global pooling's backward.
static void test_vector_paths(int n, int c, int hw) {
    size_t rows = (size_t)n * hw, big = rows * c, nc = (size_t)n * c;
    vector<float> x = random_floats(big), dy = random_floats(big), dx0 = random_floats(big), sc = random_floats(big);
    vector<float> gamma = random_floats(c), beta = random_floats(c), mean = random_floats(c), invstd = random_floats(c);
    vector<float> s = random_floats(nc), dnc = random_floats(nc), rm = random_floats(c), rv = random_floats(c);
    for (float &v : invstd) v = 1 + std::fabs(v);
    for (float &v : rv) v = 0.5f + std::fabs(v);
    vector<unsigned short> x16(big), dy16(big);
    cu_to_half(false, big, x.data(), x16.data());
    cu_to_half(false, big, dy.data(), dy16.data());
    vector<double> part(cu_bn_part_size(rows, c) > cu_pos_part_size(n, hw, c) ? cu_bn_part_size(rows, c)
                                                                             : cu_pos_part_size(n, hw, c));
    vector<double> v(2 * c + 1);
    vector<float> coef(3 * c), fcoef(2 * c), dg(c), db(c);
    cu_bn_bwd_sums(rows, c, CU_FP32, x.data(), mean.data(), invstd.data(), CU_FP32, dy.data(), nullptr, part.data(),
                   v.data(), dg.data(), db.data());
    cu_bn_eval_fwd(rows, c, CU_FP32, x.data(), gamma.data(), beta.data(), rm.data(), rv.data(), CU_FP32, dx0.data(),
                   1e-5, fcoef.data(), false); // fcoef: an affine map for the ReLU's mask
    bool same = true;

    { // BatchNorm apply: fp32 x, bf16 y; fp16 x, fp32 y, ReLU; fp16 x and y, ReLU
        vector<unsigned short> y(big);
        unaligned<float> ux(x);
        unaligned<unsigned short> uy(y);
        cu_bn_eval_fwd(rows, c, CU_FP32, x.data(), gamma.data(), beta.data(), rm.data(), rv.data(), CU_BF16, y.data(),
                       1e-5, coef.data(), false);
        cu_bn_eval_fwd(rows, c, CU_FP32, ux.data(), gamma.data(), beta.data(), rm.data(), rv.data(), CU_BF16,
                       uy.data(), 1e-5, coef.data(), false);
        same = same && y == uy.values();
        vector<float> y32(big);
        unaligned<unsigned short> ux16(x16);
        unaligned<float> uy32(y32);
        cu_bn_eval_fwd(rows, c, CU_FP16, x16.data(), gamma.data(), beta.data(), rm.data(), rv.data(), CU_FP32,
                       y32.data(), 1e-5, coef.data(), true);
        cu_bn_eval_fwd(rows, c, CU_FP16, ux16.data(), gamma.data(), beta.data(), rm.data(), rv.data(), CU_FP32,
                       uy32.data(), 1e-5, coef.data(), true);
        same = same && same_values(y32, uy32.values());
        vector<unsigned short> y16(big);
        unaligned<unsigned short> uy16(y16);
        cu_bn_eval_fwd(rows, c, CU_FP16, x16.data(), gamma.data(), beta.data(), rm.data(), rv.data(), CU_FP16,
                       y16.data(), 1e-5, coef.data(), true);
        cu_bn_eval_fwd(rows, c, CU_FP16, ux16.data(), gamma.data(), beta.data(), rm.data(), rv.data(), CU_FP16,
                       uy16.data(), 1e-5, coef.data(), true);
        same = same && y16 == uy16.values();
    }
    { // BatchNorm input gradient: fp32 adding; fp16 x, dy and dx with a ReLU's mask
        vector<float> dx = dx0;
        unaligned<float> ux(x), udy(dy), udx(dx0);
        cu_bn_global_bwd(rows, c, v.data(), CU_FP32, x.data(), gamma.data(), mean.data(), invstd.data(),
                         CU_FP32, dy.data(), nullptr, dx.data(), true, coef.data());
        cu_bn_global_bwd(rows, c, v.data(), CU_FP32, ux.data(), gamma.data(), mean.data(),
                         invstd.data(), CU_FP32, udy.data(), nullptr, udx.data(), true, coef.data());
        same = same && same_values(dx, udx.values());
        vector<unsigned short> dx16(big);
        unaligned<unsigned short> ux16(x16), udy16(dy16), udx16(dx16);
        cu_bn_global_bwd(rows, c, v.data(), CU_FP16, x16.data(), gamma.data(), mean.data(),
                         invstd.data(), CU_FP16, dy16.data(), fcoef.data(), dx16.data(), false, coef.data());
        cu_bn_global_bwd(rows, c, v.data(), CU_FP16, ux16.data(), gamma.data(), mean.data(),
                         invstd.data(), CU_FP16, udy16.data(), fcoef.data(), udx16.data(), false, coef.data());
        same = same && dx16 == udx16.values();
    }
    vector<unsigned short> sc16(big);
    cu_to_half(false, big, sc.data(), sc16.data());
    for (int h = 0; h < 3; h++) { // the block end: fp32; fp16 x and y, fp32 shortcut; all fp16
        cu_type t = h ? CU_FP16 : CU_FP32, sct = h == 2 ? CU_FP16 : CU_FP32;
        const void *xin = h ? (const void *)x16.data() : x.data();
        unaligned<float> ux(x), usc(sc), udy(dy);
        unaligned<unsigned short> ux16(x16), usc16(sc16);
        void *uxin = h ? (void *)ux16.data() : ux.data();
        const void *scin = h == 2 ? (const void *)sc16.data() : sc.data();
        const void *uscin = h == 2 ? (const void *)usc16.data() : usc.data();
        vector<float> y(big), dx = dx0, dsc = dx0, ds(nc, 0.0f), uds(nc, 0.0f);
        vector<unsigned short> y16(big);
        unaligned<float> uy(y), udx(dx0), udsc(dx0);
        unaligned<unsigned short> uy16(y16);
        void *yo = h ? (void *)y16.data() : y.data(), *uyo = h ? (void *)uy16.data() : uy.data();
        cu_scale_add_relu_fwd(n, hw, c, t, xin, s.data(), sct, scin, t, yo);
        cu_scale_add_relu_fwd(n, hw, c, t, uxin, s.data(), sct, uscin, t, uyo);
        same = same && (h ? y16 == uy16.values() : same_values(y, uy.values()));
        cu_scale_add_relu_bwd(n, hw, c, t, xin, s.data(), sct, scin, t, yo, dy.data(), dx.data(), true, ds.data(),
                              true, dsc.data(), false, part.data());
        cu_scale_add_relu_bwd(n, hw, c, t, uxin, s.data(), sct, uscin, t, uyo, udy.data(), udx.data(), true,
                              uds.data(), true, udsc.data(), false, part.data());
        same = same && same_values(dx, udx.values()) && same_values(dsc, udsc.values()) && same_values(ds, uds);
    }
    { // global pooling's backward, adding
        vector<float> dx = dx0;
        unaligned<float> udx(dx0);
        cu_gap_bwd(n, hw, c, dnc.data(), dx.data(), true);
        cu_gap_bwd(n, hw, c, dnc.data(), udx.data(), true);
        same = same && same_values(dx, udx.values());
    }
    char name[240];
    snprintf(name, sizeof name, "%dx%dx%d: 4 channels at a time (aligned; 8 where all tensors are half) = one at a "
             "time (unaligned copies), value for value: BN apply and input gradient, block end, pooling gradient",
             n, c, hw);
    report(same, name);
}

// A channel concat of three parts (odd channel counts), forward and backward.
static void test_concat(int n, int hw) {
    const int parts = 3, cs[parts] = {5, 16, 37}, ctot = 58;
    size_t rows = (size_t)n * hw;
    vector<vector<float>> x(parts);
    vector<vector<double>> xd(parts);
    const double *x_ref[parts];
    vector<float> y(rows * ctot);
    for (int p = 0, off = 0; p < parts; off += cs[p], p++) {
        x[p] = random_floats(rows * cs[p]);
        xd[p] = to_double(x[p]);
        x_ref[p] = xd[p].data();
        vector<float> xh = to_nhwc(x[p], n, cs[p], hw);
        cu_concat_fwd(rows, cs[p], ctot, off, xh.data(), y.data());
    }
    vector<double> y_ref(rows * ctot);
    fu_ref_concat_fwd_f64(n, hw, parts, cs, x_ref, y_ref.data());
    near("concat fwd: each part at its channel offset", y, to_nhwc(y_ref, n, ctot, hw), 0);

    vector<float> dy = random_floats(rows * ctot);
    vector<float> dyh = to_nhwc(dy, n, ctot, hw);
    vector<double> dyd = to_double(dy);
    vector<vector<double>> dx_ref(parts);
    vector<vector<float>> dx(parts);
    double *dx_ref_ptr[parts];
    for (int p = 0; p < parts; p++) {
        vector<float> dx0 = random_floats(rows * cs[p]);
        dx_ref[p] = to_double(dx0);
        dx_ref_ptr[p] = dx_ref[p].data();
        dx[p] = to_nhwc(dx0, n, cs[p], hw);
    }
    for (int p = 0, off = 0; p < parts; off += cs[p], p++) {
        cu_concat_bwd(rows, cs[p], ctot, off, dyh.data(), dx[p].data(), true);
    }
    fu_ref_concat_bwd_f64(n, hw, parts, cs, dyd.data(), dx_ref_ptr);
    for (int p = 0; p < parts; p++) {
        char what[128];
        snprintf(what, sizeof what, "concat bwd: part %d's dx += its %d channels of dy", p, cs[p]);
        near(what, dx[p], to_nhwc(dx_ref[p], n, cs[p], hw), 2e-6);
    }
}

// Max pooling against the reference: the maxima (ties common: x takes 9
// values; one NaN, one window all -inf), the gradient at the first maximum
// of each window, adding and as a first writer; and with fp16 x, y and dx:
// the same places, y and dx rounded as converting the fp32 results would.
// 13 channels go one at a time, 16 four (eight where all is half).
static void test_maxpool(int n, int c, int h, int w, int k, int stride, int pad, int dil) {
    fu_window s = {n, c, h, w, c, k, stride, pad, dil, 0, 0};
    fu_window_out(&s);
    cu_pool p = {n, h, w, c, k, stride, pad, dil, s.p, s.q};
    size_t in = (size_t)n * c * h * w, out = (size_t)n * c * s.p * s.q;
    vector<float> x = random_floats(in);
    for (float &v : x) v = std::round(v * 4) / 4;
    x[1] = NAN;
    for (int i = 0; i < h * w; i++) x[(size_t)c * h * w + i] = -INFINITY; // image 1, channel 0
    vector<float> xh = to_nhwc(x, n, c, h * w), y(out), dy = random_floats(out), dx0 = random_floats(in);
    vector<double> xd = to_double(x), y_ref(out), dyd = to_double(dy), dx_ref = to_double(dx0);
    vector<unsigned char> arg(out);
    cu_maxpool_fwd(&p, CU_FP32, xh.data(), CU_FP32, y.data(), arg.data());
    fu_ref_maxpool_fwd_f64(&s, xd.data(), y_ref.data());
    vector<double> y_want = to_nhwc(y_ref, n, c, s.p * s.q);
    bool same = true;
    for (size_t i = 0; i < out; i++) same = same && y[i] == (float)y_want[i];
    char name[200];
    snprintf(name, sizeof name, "maxpool fwd %dx%dx%dx%d, %dx%d window, stride %d, pad %d, dilation %d: each "
             "window's maximum", n, c, h, w, k, k, stride, pad, dil);
    report(same, name);

    vector<float> dyh = to_nhwc(dy, n, c, s.p * s.q), dx = to_nhwc(dx0, n, c, h * w), written(in, NAN), zeros(in);
    cu_maxpool_bwd(&p, arg.data(), dyh.data(), CU_FP32, dx.data(), true);
    fu_ref_maxpool_bwd_f64(&s, xd.data(), y_ref.data(), dyd.data(), dx_ref.data());
    snprintf(name, sizeof name, "maxpool bwd %dx%dx%dx%d: dx += dy at each window's first maximum", n, c, h, w);
    near(name, dx, to_nhwc(dx_ref, n, c, h * w), 2e-6);
    cu_maxpool_bwd(&p, arg.data(), dyh.data(), CU_FP32, written.data(), false);
    cu_maxpool_bwd(&p, arg.data(), dyh.data(), CU_FP32, zeros.data(), true);
    snprintf(name, sizeof name, "maxpool bwd %dx%dx%dx%d as a first writer (over NaN) = adding into zeros", n, c, h, w);
    report(same_values(written, zeros), name);

    // fp16: the fp32 kernels on the values fp16 holds, then rounded
    vector<unsigned short> x16(in), y16(out), y16_want(out), dx16(in, 0x7e00), dx16_want(in);
    vector<float> x16f(in), y32(out);
    vector<unsigned char> arg16(out), arg32(out);
    cu_to_half(false, in, xh.data(), x16.data());
    cu_from_half(false, in, x16.data(), x16f.data(), false);
    cu_maxpool_fwd(&p, CU_FP32, x16f.data(), CU_FP32, y32.data(), arg32.data());
    cu_maxpool_fwd(&p, CU_FP16, x16.data(), CU_FP16, y16.data(), arg16.data());
    cu_to_half(false, out, y32.data(), y16_want.data());
    cu_maxpool_bwd(&p, arg32.data(), dyh.data(), CU_FP32, zeros.data(), false);
    cu_to_half(false, in, zeros.data(), dx16_want.data());
    cu_maxpool_bwd(&p, arg16.data(), dyh.data(), CU_FP16, dx16.data(), false);
    snprintf(name, sizeof name, "maxpool %dx%dx%dx%d in fp16: the same maxima and places, y and dx rounded", n, c, h, w);
    report(y16 == y16_want && arg16 == arg32 && dx16 == dx16_want, name);
}

// Linear bias: y += b per row, db += the column sums of dy.
static void test_bias(int n, int c) {
    vector<float> y0 = random_floats((size_t)n * c), b = random_floats(c);
    vector<float> dy = random_floats((size_t)n * c), db0 = random_floats(c);
    vector<float> y = y0, db = db0;
    vector<double> y_ref(y0.size()), db_ref = to_double(db0);
    for (int i = 0; i < n; i++) {
        for (int o = 0; o < c; o++) {
            y_ref[(size_t)i * c + o] = (double)y0[(size_t)i * c + o] + b[o];
            db_ref[o] += dy[(size_t)i * c + o];
        }
    }
    cu_bias_fwd(n, c, b.data(), y.data());
    near("bias fwd: y += b on every row", y, y_ref, 2e-6);
    cu_bias_bwd(n, c, dy.data(), db.data());
    near("bias bwd: db += sum of dy over rows", db, db_ref, 2e-6);
}

// "bn NxCxHW <what>": the shape tells the three runs' lines apart.
static std::string bn_name(int n, int c, int hw, const char *what) {
    char name[160];
    snprintf(name, sizeof name, "bn %dx%dx%d %s", n, c, hw, what);
    return name;
}

// BatchNorm fused with the ReLU after it computes what the two ops do one
// after the other, value for value: forward (training and eval) and
// backward (the ReLU's backward into a zeroed gradient, then the BN's).
static void test_bn_relu(int n, int c, int hw, const vector<float> &xh, const vector<double> &v,
                         const vector<float> &gamma, const vector<float> &beta, const vector<float> &run_mean,
                         const vector<float> &run_var, const vector<float> &dyh) {
    size_t rows = (size_t)n * hw, big = rows * c;
    vector<float> y(big), yr(big), relu_of_y(big), mean(c), invstd(c), coef(3 * c), fcoef(2 * c);
    vector<float> rm = run_mean, rv = run_var, rm2 = run_mean, rv2 = run_var;
    cu_bn_global_fwd(rows, c, v.data(), CU_FP32, xh.data(), gamma.data(), beta.data(), CU_FP32,
                     y.data(), mean.data(), invstd.data(), rm.data(), rv.data(), 1e-5, 0.1, coef.data(), false);
    cu_bn_global_fwd(rows, c, v.data(), CU_FP32, xh.data(), gamma.data(), beta.data(), CU_FP32,
                     yr.data(), mean.data(), invstd.data(), rm2.data(), rv2.data(), 1e-5, 0.1, fcoef.data(), true);
    cu_relu_fwd(big, y.data(), relu_of_y.data());
    report(same_values(yr, relu_of_y), bn_name(n, c, hw, "fused with a ReLU: forward = BN then ReLU").c_str());

    vector<float> ye(big), yer(big), relu_of_ye(big);
    cu_bn_eval_fwd(rows, c, CU_FP32, xh.data(), gamma.data(), beta.data(), run_mean.data(), run_var.data(), CU_FP32,
                   ye.data(), 1e-5, coef.data(), false);
    cu_bn_eval_fwd(rows, c, CU_FP32, xh.data(), gamma.data(), beta.data(), run_mean.data(), run_var.data(), CU_FP32,
                   yer.data(), 1e-5, coef.data(), true);
    cu_relu_fwd(big, ye.data(), relu_of_ye.data());
    report(same_values(yer, relu_of_ye), bn_name(n, c, hw, "fused with a ReLU: eval forward = BN then ReLU").c_str());

    vector<float> g(big, 0.0f); // the ReLU's backward, as backward leaves it for the BN
    cu_relu_bwd(big, yr.data(), dyh.data(), g.data(), true);
    vector<double> part(cu_bn_part_size(rows, c)), vb(2 * c + 1), vf(2 * c + 1);
    vector<float> dx(big, 0.5f), dxf(big, 0.5f), dgamma(c, 0.0f), dbeta(c, 0.0f), dgf(c, 0.0f), dbf(c, 0.0f);
    cu_bn_bwd_sums(rows, c, CU_FP32, xh.data(), mean.data(), invstd.data(), CU_FP32, g.data(), nullptr, part.data(),
                   vb.data(), dgamma.data(), dbeta.data());
    cu_bn_global_bwd(rows, c, vb.data(), CU_FP32, xh.data(), gamma.data(), mean.data(), invstd.data(),
                     CU_FP32, g.data(), nullptr, dx.data(), true, coef.data());
    cu_bn_bwd_sums(rows, c, CU_FP32, xh.data(), mean.data(), invstd.data(), CU_FP32, dyh.data(), fcoef.data(),
                   part.data(), vf.data(), dgf.data(), dbf.data());
    cu_bn_global_bwd(rows, c, vf.data(), CU_FP32, xh.data(), gamma.data(), mean.data(), invstd.data(),
                     CU_FP32, dyh.data(), fcoef.data(), dxf.data(), true, coef.data());
    std::string name = bn_name(n, c, hw, "fused with a ReLU: backward = the ReLU's then the BN's (sums, dx, dgamma, "
                                         "dbeta)");
    report(vb == vf && same_values(dx, dxf) && same_values(dgamma, dgf) && same_values(dbeta, dbf), name.c_str());
}

// BatchNorm on a conv's half output (amp): the same sums, outputs and
// gradients as on those values in fp32, and dx in half as the fp32 dx
// (added into zeros) converted, for fp16 and bf16 (fused ReLU or not).
static void test_bn_half_input(int n, int c, int hw, const vector<float> &xh, const vector<float> &gamma,
                               const vector<float> &beta, const vector<float> &dyh) {
    size_t rows = (size_t)n * hw, big = rows * c;
    for (int t = 0; t < 2; t++) {
        cu_type xt = t ? CU_BF16 : CU_FP16;
        vector<unsigned short> x16(big), dx16(big, 0x7e00), dx_ref16(big); // dx16: junk (fp16 NaN), to be overwritten
        cu_to_half(t, big, xh.data(), x16.data());
        vector<float> x32(big);
        cu_from_half(t, big, x16.data(), x32.data(), false); // the values the half tensor holds
        vector<double> part(cu_bn_part_size(rows, c)), v(2 * c + 1), v32(2 * c + 1), vb(2 * c + 1), vb32(2 * c + 1);
        vector<float> y(big), y32(big), mean(c), invstd(c), coef(3 * c), fcoef(2 * c), rm(c, 0.0f), rv(c, 1.0f),
            rm32 = rm, rv32 = rv;
        cu_bn_sums(rows, c, xt, x16.data(), part.data(), v.data());
        cu_bn_sums(rows, c, CU_FP32, x32.data(), part.data(), v32.data());
        cu_bn_global_fwd(rows, c, v.data(), xt, x16.data(), gamma.data(), beta.data(), CU_FP32,
                         y.data(), mean.data(), invstd.data(), rm.data(), rv.data(), 1e-5, 0.1, fcoef.data(), t == 1);
        cu_bn_global_fwd(rows, c, v32.data(), CU_FP32, x32.data(), gamma.data(), beta.data(), CU_FP32,
                         y32.data(), mean.data(), invstd.data(), rm32.data(), rv32.data(), 1e-5, 0.1, coef.data(),
                         t == 1);
        vector<float> ye(big), ye32(big);
        cu_bn_eval_fwd(rows, c, xt, x16.data(), gamma.data(), beta.data(), rm.data(), rv.data(), CU_FP32, ye.data(),
                       1e-5, coef.data(), false);
        cu_bn_eval_fwd(rows, c, CU_FP32, x32.data(), gamma.data(), beta.data(), rm.data(), rv.data(), CU_FP32,
                       ye32.data(), 1e-5, coef.data(), false);
        std::string name = bn_name(n, c, hw,
                                   t ? "on bf16 x: forward (sums, y, eval y) as on its values in fp32"
                                     : "on fp16 x: forward (sums, y, eval y) as on its values in fp32");
        report(v == v32 && same_values(y, y32) && same_values(rm, rm32) && same_values(rv, rv32) &&
                   same_values(ye, ye32), name.c_str());

        vector<float> dx32(big, 0.0f), dg(c, 0.0f), db(c, 0.0f), dg32(c, 0.0f), db32(c, 0.0f);
        const float *relu_coef = t == 1 ? fcoef.data() : nullptr;
        cu_bn_bwd_sums(rows, c, xt, x16.data(), mean.data(), invstd.data(), CU_FP32, dyh.data(), relu_coef, part.data(),
                       vb.data(), dg.data(), db.data());
        cu_bn_global_bwd(rows, c, vb.data(), xt, x16.data(), gamma.data(), mean.data(), invstd.data(),
                         CU_FP32, dyh.data(), relu_coef, dx16.data(), false, coef.data());
        cu_bn_bwd_sums(rows, c, CU_FP32, x32.data(), mean.data(), invstd.data(), CU_FP32, dyh.data(), relu_coef,
                       part.data(), vb32.data(), dg32.data(), db32.data());
        cu_bn_global_bwd(rows, c, vb32.data(), CU_FP32, x32.data(), gamma.data(), mean.data(),
                         invstd.data(), CU_FP32, dyh.data(), relu_coef, dx32.data(), true, coef.data());
        cu_to_half(t, big, dx32.data(), dx_ref16.data());
        name = bn_name(n, c, hw, t ? "on bf16 x: backward (sums, dgamma, dbeta; dx written in bf16) as in fp32"
                                   : "on fp16 x: backward (sums, dgamma, dbeta; dx written in fp16) as in fp32");
        report(vb == vb32 && same_values(dg, dg32) && same_values(db, db32) && dx16 == dx_ref16, name.c_str());
    }
}

// BatchNorm + ReLU writing its output in half for a conv (amp): y is the
// fp32 y rounded, and backward from a half dy computes what it does from the
// same values in fp32 (sums, dgamma, dbeta, dx), for fp16 and bf16; also in
// channel 0, made positive but below fp16's range (gamma 0, beta 1e-9, which
// fp16 rounds to 0), whose gradient the ReLU lets through: a mask read from
// the half output would drop it.
static void test_bn_relu_half_output(int n, int c, int hw, const vector<float> &xh, vector<float> gamma,
                                     vector<float> beta, const vector<float> &dyh) {
    size_t rows = (size_t)n * hw, big = rows * c;
    gamma[0] = 0, beta[0] = 1e-9f;
    vector<double> part(cu_bn_part_size(rows, c)), v(2 * c + 1);
    cu_bn_sums(rows, c, CU_FP32, xh.data(), part.data(), v.data());
    for (int t = 0; t < 2; t++) {
        cu_type yt = t ? CU_BF16 : CU_FP16;
        vector<float> y32(big), mean(c), invstd(c), fcoef(2 * c), fcoef32(2 * c), coef(3 * c);
        vector<float> rm(c, 0.0f), rv(c, 1.0f), rm32 = rm, rv32 = rv;
        vector<unsigned short> y16(big), y_ref16(big), dy16(big);
        cu_bn_global_fwd(rows, c, v.data(), CU_FP32, xh.data(), gamma.data(), beta.data(), yt,
                         y16.data(), mean.data(), invstd.data(), rm.data(), rv.data(), 1e-5, 0.1, fcoef.data(), true);
        cu_bn_global_fwd(rows, c, v.data(), CU_FP32, xh.data(), gamma.data(), beta.data(), CU_FP32,
                         y32.data(), mean.data(), invstd.data(), rm32.data(), rv32.data(), 1e-5, 0.1, fcoef32.data(),
                         true);
        cu_to_half(t, big, y32.data(), y_ref16.data());
        cu_to_half(t, big, dyh.data(), dy16.data());
        vector<float> dy32(big);
        cu_from_half(t, big, dy16.data(), dy32.data(), false); // the values the half dy holds
        vector<double> vb(2 * c + 1), vb32(2 * c + 1);
        vector<float> dx(big, 0.25f), dx32(big, 0.25f), dg(c, 0.0f), db(c, 0.0f), dg32(c, 0.0f), db32(c, 0.0f);
        cu_bn_bwd_sums(rows, c, CU_FP32, xh.data(), mean.data(), invstd.data(), yt, dy16.data(), fcoef.data(),
                       part.data(), vb.data(), dg.data(), db.data());
        cu_bn_global_bwd(rows, c, vb.data(), CU_FP32, xh.data(), gamma.data(), mean.data(),
                         invstd.data(), yt, dy16.data(), fcoef.data(), dx.data(), true, coef.data());
        cu_bn_bwd_sums(rows, c, CU_FP32, xh.data(), mean.data(), invstd.data(), CU_FP32, dy32.data(), fcoef32.data(),
                       part.data(), vb32.data(), dg32.data(), db32.data());
        cu_bn_global_bwd(rows, c, vb32.data(), CU_FP32, xh.data(), gamma.data(), mean.data(),
                         invstd.data(), CU_FP32, dy32.data(), fcoef32.data(), dx32.data(), true, coef.data());
        bool underflow = t == 1 || y16[0] == 0; // fp16: channel 0's y is 0 in half
        std::string name = bn_name(n, c, hw, t ? "fused with a ReLU, y and dy in bf16: y rounded, backward as in fp32"
                                               : "fused with a ReLU, y and dy in fp16: y rounded, backward as in fp32 "
                                                 "(also where y underflows to 0)");
        report(y16 == y_ref16 && fcoef == fcoef32 && vb == vb32 && same_values(dg, dg32) && same_values(db, db32) &&
                   same_values(dx, dx32) && db[0] != 0 && underflow, name.c_str());
    }
}

// BatchNorm's two-level reductions and the steps after them, forward
// (training and eval) and backward, for shapes with one and several row
// splits, one and two channel groups of 32, and BN1d (hw = 1).
static void test_bn(int n, int c, int hw) {
    size_t rows = (size_t)n * hw, big = rows * c;
    fu_bn_shape s = {n, c, hw, 1e-5, 0.1};
    vector<float> x = random_floats(big);
    for (float &v : x) v = v * 3 + 0.5f; // a mean away from 0: the variance's cancellation shows
    vector<float> gamma = random_floats(c), beta = random_floats(c), run_mean = random_floats(c);
    vector<float> run_var = random_floats(c);
    for (float &v : run_var) v = std::fabs(v) + 0.5f;
    vector<float> xh = to_nhwc(x, n, c, hw);
    vector<double> xd = to_double(x), gd = to_double(gamma), bd = to_double(beta);
    vector<double> part(cu_bn_part_size(rows, c)), v(2 * c + 1), v_ref(2 * c + 1);

    // The same float inputs summed in double in another order: 1e-12.
    cu_bn_sums(rows, c, CU_FP32, xh.data(), part.data(), v.data());
    fu_ref_bn_sums_f64(&s, xd.data(), v_ref.data());
    v_ref[2 * c] = (double)rows; // the count the kernel appends
    near(bn_name(n, c, hw, "sums: sum x, sum x^2 per channel"), v, v_ref, 1e-12);

    // Float outputs of double arithmetic: within a few float roundings.
    vector<float> y(big), mean(c), invstd(c), coef(3 * c), rm = run_mean, rv = run_var;
    cu_bn_global_fwd(rows, c, v.data(), CU_FP32, xh.data(), gamma.data(), beta.data(), CU_FP32, y.data(),
                     mean.data(), invstd.data(), rm.data(), rv.data(), 1e-5, 0.1, coef.data(), false);
    vector<double> y_ref(big), mean_ref(c), invstd_ref(c), rm_ref = to_double(run_mean), rv_ref = to_double(run_var);
    fu_ref_bn_global_fwd_f64(&s, v_ref.data(), (double)rows, xd.data(), gd.data(), bd.data(), y_ref.data(),
                             mean_ref.data(), invstd_ref.data(), rm_ref.data(), rv_ref.data());
    near(bn_name(n, c, hw, "global fwd: y"), y, to_nhwc(y_ref, n, c, hw), 1e-6);
    near(bn_name(n, c, hw, "global fwd: saved mean"), mean, mean_ref, 2e-6);
    near(bn_name(n, c, hw, "global fwd: saved 1/std"), invstd, invstd_ref, 2e-6);
    near(bn_name(n, c, hw, "global fwd: running mean"), rm, rm_ref, 2e-6);
    near(bn_name(n, c, hw, "global fwd: running var (unbiased)"), rv, rv_ref, 2e-6);

    // The plain training forward (two-pass variance) agrees with the sums' E[x^2] - mean^2.
    vector<double> y2(big), mean2(c), invstd2(c), rm2 = to_double(run_mean), rv2 = to_double(run_var);
    fu_ref_bn_train_fwd_f64(&s, xd.data(), gd.data(), bd.data(), y2.data(), mean2.data(), invstd2.data(), rm2.data(),
                            rv2.data());
    near(bn_name(n, c, hw, "global fwd = train fwd: y"), y, to_nhwc(y2, n, c, hw), 1e-6);
    near(bn_name(n, c, hw, "global fwd = train fwd: running var"), rv, rv2, 2e-6);

    vector<float> dy = random_floats(big), dx0 = random_floats(big), dgamma0 = random_floats(c);
    vector<float> dbeta0 = random_floats(c);
    vector<float> dyh = to_nhwc(dy, n, c, hw), dx = to_nhwc(dx0, n, c, hw), dgamma = dgamma0, dbeta = dbeta0;
    vector<double> vb(2 * c + 1), vb_ref(2 * c + 1);
    cu_bn_bwd_sums(rows, c, CU_FP32, xh.data(), mean.data(), invstd.data(), CU_FP32, dyh.data(), nullptr, part.data(),
                   vb.data(), dgamma.data(), dbeta.data());
    cu_bn_global_bwd(rows, c, vb.data(), CU_FP32, xh.data(), gamma.data(), mean.data(), invstd.data(),
                     CU_FP32, dyh.data(), nullptr, dx.data(), true, coef.data());
    vector<double> dyd = to_double(dy), dx_ref = to_double(dx0), dgamma_ref = to_double(dgamma0);
    vector<double> dbeta_ref = to_double(dbeta0), md = to_double(mean), isd = to_double(invstd);
    fu_ref_bn_bwd_sums_f64(&s, xd.data(), md.data(), isd.data(), dyd.data(), vb_ref.data(), dgamma_ref.data(),
                           dbeta_ref.data());
    vb_ref[2 * c] = (double)rows;
    fu_ref_bn_global_bwd_f64(&s, vb_ref.data(), (double)rows, xd.data(), gd.data(), md.data(), isd.data(), dyd.data(),
                             dx_ref.data());
    // xhat from the float mean and 1/std, in double on both sides but in
    // another order, where the sums cancel: 1e-9.
    near(bn_name(n, c, hw, "bwd sums: sum dy, sum dy * xhat per channel"), vb, vb_ref, 1e-9);
    // dx: dy - mean(dy) - xhat mean(dy xhat) cancels in float: 1e-5.
    near(bn_name(n, c, hw, "global bwd: dx +="), dx, to_nhwc(dx_ref, n, c, hw), 1e-5);
    near(bn_name(n, c, hw, "bwd: dgamma += sum dy * xhat"), dgamma, dgamma_ref, 2e-6);
    near(bn_name(n, c, hw, "bwd: dbeta += sum dy"), dbeta, dbeta_ref, 2e-6);

    vector<float> y_eval(big);
    vector<double> y_eval_ref(big), rmd = to_double(run_mean), rvd = to_double(run_var);
    cu_bn_eval_fwd(rows, c, CU_FP32, xh.data(), gamma.data(), beta.data(), run_mean.data(), run_var.data(), CU_FP32,
                   y_eval.data(), 1e-5, coef.data(), false);
    fu_ref_bn_eval_fwd_f64(&s, xd.data(), gd.data(), bd.data(), rmd.data(), rvd.data(), y_eval_ref.data());
    near(bn_name(n, c, hw, "eval fwd: y from the running stats"), y_eval, to_nhwc(y_eval_ref, n, c, hw), 1e-6);
    test_bn_relu(n, c, hw, xh, v, gamma, beta, run_mean, run_var, dyh);
    test_bn_half_input(n, c, hw, xh, gamma, beta, dyh);
    test_bn_relu_half_output(n, c, hw, xh, gamma, beta, dyh);
}

// BatchNorm's sums alone (forward's and backward's) over more row splits
// than lanes add them (cuda_ops.cu: 32), each lane adding several splits.
static void test_bn_many_splits(int n, int c, int hw) {
    size_t rows = (size_t)n * hw, big = rows * c;
    fu_bn_shape s = {n, c, hw, 1e-5, 0.1};
    vector<float> x = random_floats(big), dy = random_floats(big), mean = random_floats(c), invstd = random_floats(c);
    vector<float> dg(c), db(c);
    vector<double> part(cu_bn_part_size(rows, c)), v(2 * c + 1), v_ref(2 * c + 1), vb(2 * c + 1),
        vb_ref(2 * c + 1), dg_ref(c), db_ref(c);
    cu_bn_sums(rows, c, CU_FP32, to_nhwc(x, n, c, hw).data(), part.data(), v.data());
    fu_ref_bn_sums_f64(&s, to_double(x).data(), v_ref.data());
    v_ref[2 * c] = (double)rows; // the count the kernel appends
    near(bn_name(n, c, hw, "sums: sum x, sum x^2 per channel"), v, v_ref, 1e-12);
    cu_bn_bwd_sums(rows, c, CU_FP32, to_nhwc(x, n, c, hw).data(), mean.data(), invstd.data(), CU_FP32,
                   to_nhwc(dy, n, c, hw).data(), nullptr, part.data(), vb.data(), dg.data(), db.data());
    fu_ref_bn_bwd_sums_f64(&s, to_double(x).data(), to_double(mean).data(), to_double(invstd).data(),
                           to_double(dy).data(), vb_ref.data(), dg_ref.data(), db_ref.data());
    vb_ref[2 * c] = (double)rows;
    near(bn_name(n, c, hw, "bwd sums: sum dy, sum dy * xhat per channel"), vb, vb_ref, 1e-9);
}

// The element-wise ops: forward overwrites, backward accumulates.
static void test_elementwise(size_t n) {
    vector<float> x = random_floats(n), b = random_floats(n), dy = random_floats(n), dx0 = random_floats(n);
    vector<float> mask = random_floats(n);
    vector<double> xd = to_double(x), bd = to_double(b), dyd = to_double(dy), maskd = to_double(mask);
    vector<float> y(n), dx;
    vector<double> ref(n), ref2;

    cu_relu_fwd(n, x.data(), y.data());
    fu_ref_relu_fwd_f64(n, xd.data(), ref.data());
    near("relu fwd: max(x, 0)", y, ref, 0);
    vector<double> yd = to_double(y);
    dx = dx0;
    ref = to_double(dx0);
    cu_relu_bwd(n, y.data(), dy.data(), dx.data(), true);
    fu_ref_relu_bwd_f64(n, yd.data(), dyd.data(), ref.data());
    near("relu bwd: dx += dy where y > 0", dx, ref, 2e-6);

    cu_sigmoid_fwd(n, x.data(), y.data());
    fu_ref_sigmoid_fwd_f64(n, xd.data(), ref.data());
    near("sigmoid fwd", y, ref, 2e-6);
    yd = to_double(y);
    dx = dx0;
    ref = to_double(dx0);
    cu_sigmoid_bwd(n, y.data(), dy.data(), dx.data(), true);
    fu_ref_sigmoid_bwd_f64(n, yd.data(), dyd.data(), ref.data());
    near("sigmoid bwd: dx += dy y (1 - y)", dx, ref, 2e-6);

    cu_add_fwd(n, x.data(), b.data(), y.data());
    fu_ref_add_fwd_f64(n, xd.data(), bd.data(), ref.data());
    near("add fwd", y, ref, 2e-6);
    dx = dx0;
    vector<float> db = b;
    ref = to_double(dx0);
    ref2 = to_double(b);
    cu_add_bwd(n, dy.data(), dx.data(), true, db.data(), true);
    fu_ref_add_bwd_f64(n, dyd.data(), ref.data(), ref2.data());
    near("add bwd: da += dy", dx, ref, 2e-6);
    near("add bwd: db += dy", db, ref2, 2e-6);

    cu_mul_fwd(n, x.data(), mask.data(), y.data());
    fu_ref_dropout_fwd_f64(n, xd.data(), maskd.data(), ref.data());
    near("mul fwd (dropout): x * mask", y, ref, 2e-6);
    dx = dx0;
    ref = to_double(dx0);
    cu_mul_bwd(n, mask.data(), dy.data(), dx.data(), true);
    fu_ref_dropout_bwd_f64(n, maskd.data(), dyd.data(), ref.data());
    near("mul bwd (dropout): dx += dy * mask", dx, ref, 2e-6);

    y = x;
    float scale = 1024; // in device memory, as the backend's loss scale
    cu_mul_scalar(n, &scale, y.data());
    for (size_t i = 0; i < n; i++) ref[i] = xd[i] * 1024;
    near("mul scalar: x *= a (loss scale)", y, ref, 0);
}

// Half conversions: weights OIHW -> half OHWI and back, tensors to half and
// back (overwrite and accumulate), within each type's rounding.
static void test_half(int o, int ci, int kk) {
    vector<float> w = random_floats((size_t)o * ci * kk);
    for (int bf16 = 0; bf16 < 2; bf16++) {
        double tol = bf16 ? 5e-3 : 1e-3; // 8 and 11 significant bits
        vector<unsigned short> h(w.size());
        vector<float> back(w.size()), flat(w.size());
        cu_weight_to_half(bf16, o, ci, kk, w.data(), h.data());
        cu_from_half(bf16, w.size(), h.data(), flat.data(), false);
        near(bf16 ? "weight_to_half bf16: OIHW -> OHWI" : "weight_to_half fp16: OIHW -> OHWI", flat,
             to_double(to_nhwc(w, o, ci, kk)), tol);
        cu_weight_from_half(bf16, o, ci, kk, h.data(), back.data());
        near(bf16 ? "weight_from_half bf16: OHWI -> OIHW" : "weight_from_half fp16: OHWI -> OIHW", back, to_double(w),
             tol);

        vector<float> acc = random_floats(w.size());
        vector<double> acc_ref = to_double(acc);
        for (size_t i = 0; i < w.size(); i++) acc_ref[i] += w[i];
        cu_to_half(bf16, w.size(), w.data(), h.data());
        cu_from_half(bf16, w.size(), h.data(), acc.data(), true);
        near(bf16 ? "to_half then from_half bf16, accumulating: y += x" :
                    "to_half then from_half fp16, accumulating: y += x",
             acc, acc_ref, tol);
    }
    float big = 70000, out = 0; // above fp16's largest finite value, 65504
    unsigned short h16 = 0;
    cu_to_half(false, 1, &big, &h16);
    cu_from_half(false, 1, &h16, &out, false);
    report(std::isinf(out) && out > 0, "to_half fp16: 70000 saturates to +inf");
}

// The fp16 overflow check: a finite batch leaves the flag alone, a
// non-finite value sets it (and the values are divided by the loss scale
// either way).
static void test_unscale() {
    vector<float> g = {1, 2, 3, INFINITY};
    int flag = 0;
    float scale = 2; // in device memory, as the backend's loss scale
    cu_unscale(3, g.data(), &scale, &flag);
    report(flag == 0 && g[0] == 0.5f && g[2] == 1.5f, "unscale: finite values scaled, the flag left at 0");
    cu_unscale(4, g.data(), &scale, &flag);
    report(flag == 1, "unscale: an inf sets the flag");
}

// A gradient's first writer (add false) writes it, over whatever was there,
// as adding into a cleared gradient gives: every gradient kernel, on a NaN
// buffer, = the same kernel adding into zeros, value for value.
static void test_first_writer(int n, int c, int hw) {
    size_t big = (size_t)n * hw * c, nc = (size_t)n * c, rows = (size_t)n * hw;
    vector<float> x = random_floats(big), y = random_floats(big), dy = random_floats(big), s = random_floats(nc);
    vector<float> sc = random_floats(big), dnc = random_floats(nc), mask = random_floats(big);
    vector<double> part(cu_pos_part_size(n, hw, c) > cu_bn_part_size(rows, c) ? cu_pos_part_size(n, hw, c)
                                                                               : cu_bn_part_size(rows, c));
    vector<double> v(2 * c + 1);
    vector<float> mean = random_floats(c), invstd = random_floats(c), gamma = random_floats(c), coef(3 * c);
    vector<float> dg(c), db(c);
    for (float &i : invstd) i = 1 + std::fabs(i);
    cu_bn_bwd_sums(rows, c, CU_FP32, x.data(), mean.data(), invstd.data(), CU_FP32, dy.data(), nullptr, part.data(),
                   v.data(), dg.data(), db.data());
    const char *names[] = {"relu", "sigmoid", "add (both inputs)", "dropout mul", "scale (dx, ds)",
                           "scale + add + relu (dx, ds, dshortcut)", "global pool", "concat", "batchnorm"};
    for (int k = 0; k < 9; k++) {
        vector<vector<float>> g[2]; // [add into zeros, write over NaN] x the op's gradients
        for (int w = 0; w < 2; w++) {
            float fill = w ? NAN : 0.0f;
            bool add = !w;
            g[w] = {vector<float>(big, fill), vector<float>(nc, fill), vector<float>(big, fill)};
            float *a = g[w][0].data(), *b = g[w][1].data(), *e = g[w][2].data();
            switch (k) {
            case 0: cu_relu_bwd(big, y.data(), dy.data(), a, add); break;
            case 1: cu_sigmoid_bwd(big, y.data(), dy.data(), a, add); break;
            case 2: cu_add_bwd(big, dy.data(), a, add, e, add); break;
            case 3: cu_mul_bwd(big, mask.data(), dy.data(), a, add); break;
            case 4: cu_scale_bwd(n, hw, c, x.data(), s.data(), dy.data(), a, add, b, add, part.data()); break;
            case 5:
                cu_scale_add_relu_bwd(n, hw, c, CU_FP32, x.data(), s.data(), CU_FP32, sc.data(), CU_FP32, y.data(),
                                      dy.data(), a, add, b, add, e, add, part.data());
                break;
            case 6: cu_gap_bwd(n, hw, c, dnc.data(), a, add); break;
            case 7: cu_concat_bwd(rows, c - 3, c, 2, dy.data(), a, add); g[w][0].resize(rows * (c - 3)); break;
            case 8:
                cu_bn_global_bwd(rows, c, v.data(), CU_FP32, x.data(), gamma.data(), mean.data(),
                                 invstd.data(), CU_FP32, dy.data(), nullptr, a, add, coef.data());
                break;
            }
        }
        static const int used[] = {1, 1, 5, 1, 3, 7, 1, 1, 1}; // bit j: the op writes gradient j
        bool same = true; // (a value left NaN, not written, differs from anything)
        for (int j = 0; j < 3; j++)
            if (used[k] >> j & 1) same = same && same_values(g[0][j], g[1][j]);
        char name[160];
        snprintf(name, sizeof name, "%s backward as a first writer (over NaN) = adding into zeros", names[k]);
        report(same, name);
    }
}

int main() {
    test_layout(3, 37, 35);
    test_layout(5, 3, 49);
    test_scale_gap(3, 37, 35);
    test_scale_gap(2, 33, 3 * 64 + 5); // positions in three chunks and a short fourth
    test_scale_add_relu(2, 33, 3 * 64 + 5);
    test_block_end_half(2, 33, 3 * 64 + 5);
    test_vector_paths(2, 24, 30);
    test_concat(2, 15);
    test_maxpool(2, 13, 9, 11, 3, 2, 1, 1); // as the stem's, odd sizes
    test_maxpool(2, 16, 12, 12, 3, 2, 1, 1);
    test_maxpool(2, 3, 10, 9, 3, 1, 2, 2); // dilated, overlapping windows
    test_bias(3, 70);
    test_bn(3, 37, 35);      // one row split, two channel blocks, 1 channel per thread
    test_bn(4, 40, 17 * 17); // five row splits, 4 channels per thread, 10 threads to a row
    test_bn_many_splits(2, 4, 4500); // 36 row splits: more than the 32 lanes adding them
    test_bn(3, 16, 1);       // BatchNorm1d
    test_elementwise(1000);
    test_first_writer(2, 19, 3 * 64 + 5);
    test_half(8, 5, 9);
    test_unscale();
    printf("# %d failed\n", failures);
    return failures != 0;
}
