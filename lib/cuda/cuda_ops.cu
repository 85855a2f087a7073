// Kernels of the cuda backend (cuda_ops.h): element-wise ops with grid-stride
// loops (the busiest ones 4 channels per step: VEC below), two-pass sums
// over positions for SE scale and global pooling, and BatchNorm's
// per-channel sums in three passes (per-block partial sums in double, then
// the blocks' partials added in a fixed order: deterministic, no atomics).
#include "cuda/cuda_ops.h"
#include "cuda/cuda_grid.h"

#include <cuda_bf16.h>
#include <cuda_fp16.h>
#include <cuda_runtime.h>

#include <initializer_list>
#include <math.h>
#include <stdint.h>
#include <type_traits>

// Index arithmetic per element in 32 bits: a 64-bit division or remainder
// is a long software routine on the GPU, and these memory-bound kernels do
// one or two per element. Every tensor has fewer than 2^32 elements
// (CU_MAX_ELEMENTS, checked by the backend when it plans a batch), so an
// element's index, and every index derived from it, fits.
#define U32(i) ((unsigned)(i))

// A product rounded on its own, where a fused kernel must give what two
// kernels give (nvcc would otherwise fuse it with an addition into an FMA).
#if defined(__CUDA_ARCH__)
#define MUL_RN(a, b) __fmul_rn(a, b)
#else
#define MUL_RN(a, b) ((a) * (b))
#endif

// Element types: a value read as float, a float stored rounded to nearest
// (fp16 saturates to inf).
__device__ static float get(float v) { return v; }
__device__ static float get(__half h) { return __half2float(h); }
__device__ static float get(__nv_bfloat16 h) { return __bfloat162float(h); }
__device__ static void put(float v, float *o) { *o = v; }
__device__ static void put(float v, __half *o) { *o = __float2half_rn(v); }
__device__ static void put(float v, __nv_bfloat16 *o) { *o = __float2bfloat16_rn(v); }

// A gradient written by an op's backward: added to what other ops wrote
// (add), or by its first writer stored as adding into a cleared gradient
// gives, 0 + v (-0 becomes +0), so that nothing need clear it first. A half
// gradient has one writer (cuda_ops.h, BatchNorm): 0 + v rounded.
__device__ static void grad_into(bool add, float v, float *dx) { *dx = add ? *dx + v : 0.0f + v; }
template <typename H> __device__ static void grad_into(bool, float v, H *dx) { put(0.0f + v, dx); }

// Calls f with a null pointer to the element type t names (float, __half or
// __nv_bfloat16), so that one launch serves every type: the kernel's
// template arguments are deduced from the pointers cast with ELEM(tag).
template <typename F> static void with_type(cu_type t, F f) {
    if (t == CU_FP16) f((__half *)nullptr);
    else if (t == CU_BF16) f((__nv_bfloat16 *)nullptr);
    else f((float *)nullptr);
}
#define ELEM(tag) std::remove_pointer_t<decltype(tag)>

// V elements at a time: the element-wise kernels of feature maps take V
// consecutive elements of a row (channels ch .. ch + V - 1) per step, so one
// index computation (a division and a remainder: many instructions on a
// GPU, where a half element is 2 bytes of memory traffic) serves V
// elements, and each tensor is read and written V * sizeof(T) bytes at a
// time (16 for fp32, 8 for half) instead of one element. V = VEC where VEC
// divides the channels and every pointer is 16-byte aligned (the backend's
// buffers are: vec_ok), 2 VEC where every tensor is half as well
// (with_width), else 1; the values are the same either way.
enum { VEC = 4 };

template <int V, typename T> struct alignas(V * sizeof(T)) pack {
    T v[V];
};
template <int V, typename T> __device__ static pack<V, T> load(const T *p, unsigned o) {
    return *reinterpret_cast<const pack<V, T> *>(p + o);
}
template <int V, typename T> __device__ static void store(T *p, unsigned o, const pack<V, T> &a) {
    *reinterpret_cast<pack<V, T> *>(p + o) = a;
}

// V gradients g into dx at o, each as grad_into stores it.
template <int V, typename T> __device__ static void grads_into(bool add, const float (&g)[V], T *dx, unsigned o) {
    pack<V, T> d;
    if (add) d = load<V>(dx, o);
    for (int j = 0; j < V; j++) grad_into(add, g[j], &d.v[j]);
    store(dx, o, d);
}

static bool vec_ok(int c, std::initializer_list<const void *> ptrs) {
    if (c % VEC) return false;
    for (const void *p : ptrs)
        if ((uintptr_t)p % 16) return false;
    return true;
}

// Calls f with V (std::integral_constant): VEC where vec, else 1.
template <typename F> static void with_vec(bool vec, F f) {
    if (vec) f(std::integral_constant<int, VEC>());
    else f(std::integral_constant<int, 1>());
}

// As with_vec(vec_ok(c, ptrs), f), but V = 2 VEC where every tensor of the
// kernel is half (element types Ts) and 2 VEC divides c: 16-byte loads of
// half too. A memory-bound kernel needs bandwidth x latency bytes in flight
// (about 3 MB on an H100), and its resident threads, one load of V
// elements each, hold 2 MB at 8 bytes.
template <typename... Ts, typename F> static void with_width(int c, std::initializer_list<const void *> ptrs, F f) {
    constexpr bool all_half = ((sizeof(Ts) == 2) && ...);
    if constexpr (all_half)
        if (c % (2 * VEC) == 0 && vec_ok(c, ptrs)) return f(std::integral_constant<int, 2 * VEC>());
    with_vec(vec_ok(c, ptrs), f);
}

// ---- layout -----------------------------------------------------------------

template <typename Y> __global__ void k_nchw_to_nhwc(size_t n, int c, int hw, const float *x, Y *y) {
    FOR_EACH(o, n * c * hw) { // o indexes y (n, hw, c)
        unsigned ch = U32(o) % c, rest = U32(o) / c, p = rest % hw, img = rest / hw;
        put(x[(img * c + ch) * hw + p], &y[o]);
    }
}

template <typename X> __global__ void k_nhwc_to_nchw(size_t n, int c, int hw, const X *x, float *y) {
    FOR_EACH(o, n * c * hw) { // o indexes y (n, c, hw)
        unsigned p = U32(o) % hw, rest = U32(o) / hw, ch = rest % c, img = rest / c;
        y[o] = get(x[(img * hw + p) * c + ch]);
    }
}

void cu_nchw_to_nhwc(size_t n, int c, int hw, const float *x, cu_type yt, void *y) {
    with_type(yt, [&](auto *ytag) {
        k_nchw_to_nhwc<<<blocks_for(n * c * hw), THREADS>>>(n, c, hw, x, (ELEM(ytag) *)y);
    });
}

void cu_nhwc_to_nchw(size_t n, int c, int hw, cu_type xt, const void *x, float *y) {
    with_type(xt, [&](auto *xtag) {
        k_nhwc_to_nchw<<<blocks_for(n * c * hw), THREADS>>>(n, c, hw, (const ELEM(xtag) *)x, y);
    });
}

// ---- element-wise -------------------------------------------------------------

__global__ void k_relu_fwd(size_t n, const float *x, float *y) {
    FOR_EACH(i, n) y[i] = x[i] > 0 ? x[i] : 0;
}
__global__ void k_relu_bwd(size_t n, const float *y, const float *dy, float *dx, bool add) {
    FOR_EACH(i, n) grad_into(add, y[i] > 0 ? dy[i] : 0, &dx[i]);
}
__global__ void k_sigmoid_fwd(size_t n, const float *x, float *y) {
    FOR_EACH(i, n) y[i] = (float)(1 / (1 + exp(-(double)x[i])));
}
__global__ void k_sigmoid_bwd(size_t n, const float *y, const float *dy, float *dx, bool add) {
    FOR_EACH(i, n) grad_into(add, dy[i] * y[i] * (1 - y[i]), &dx[i]);
}
__global__ void k_add_fwd(size_t n, const float *a, const float *b, float *y) {
    FOR_EACH(i, n) y[i] = a[i] + b[i];
}
__global__ void k_acc(size_t n, const float *dy, float *dx, bool add) {
    FOR_EACH(i, n) grad_into(add, dy[i], &dx[i]);
}
__global__ void k_mul_fwd(size_t n, const float *x, const float *mask, float *y) {
    FOR_EACH(i, n) y[i] = x[i] * mask[i];
}
__global__ void k_mul_bwd(size_t n, const float *mask, const float *dy, float *dx, bool add) {
    FOR_EACH(i, n) grad_into(add, dy[i] * mask[i], &dx[i]);
}
__global__ void k_mul_scalar(size_t n, const float *a, float *x) {
    FOR_EACH(i, n) x[i] *= *a;
}

void cu_relu_fwd(size_t n, const float *x, float *y) { k_relu_fwd<<<blocks_for(n), THREADS>>>(n, x, y); }
void cu_relu_bwd(size_t n, const float *y, const float *dy, float *dx, bool add) {
    if (dx) k_relu_bwd<<<blocks_for(n), THREADS>>>(n, y, dy, dx, add);
}
void cu_sigmoid_fwd(size_t n, const float *x, float *y) { k_sigmoid_fwd<<<blocks_for(n), THREADS>>>(n, x, y); }
void cu_sigmoid_bwd(size_t n, const float *y, const float *dy, float *dx, bool add) {
    if (dx) k_sigmoid_bwd<<<blocks_for(n), THREADS>>>(n, y, dy, dx, add);
}
void cu_add_fwd(size_t n, const float *a, const float *b, float *y) {
    k_add_fwd<<<blocks_for(n), THREADS>>>(n, a, b, y);
}
void cu_add_bwd(size_t n, const float *dy, float *da, bool add_a, float *db, bool add_b) {
    if (da) k_acc<<<blocks_for(n), THREADS>>>(n, dy, da, add_a);
    if (db) k_acc<<<blocks_for(n), THREADS>>>(n, dy, db, add_b);
}
void cu_mul_fwd(size_t n, const float *x, const float *mask, float *y) {
    k_mul_fwd<<<blocks_for(n), THREADS>>>(n, x, mask, y);
}
void cu_mul_bwd(size_t n, const float *mask, const float *dy, float *dx, bool add) {
    if (dx) k_mul_bwd<<<blocks_for(n), THREADS>>>(n, mask, dy, dx, add);
}
void cu_mul_scalar(size_t n, const float *a, float *x) { k_mul_scalar<<<blocks_for(n), THREADS>>>(n, a, x); }

// ---- per (image, channel) -------------------------------------------------------
// The SE scale's gradient and global pooling sum each (image, channel)'s hw
// positions in two passes, with no atomics and no barriers, in an order fixed
// by the shape alone: one thread per (image, chunk of POS_CHUNK positions,
// channel) sums its chunk in double into part, then one thread per (image,
// channel) adds its chunks in order. In both, a warp's threads take
// neighbouring channels, i.e. consecutive addresses; and the first pass has
// work for every SM at batch 32 too (one thread per (image, channel),
// looping over all 3136 positions of a 56x56 map, had 2048 threads).

// A thread loads POS_UNROLL positions' operands before it adds them: a
// chain of one load and one dependent add per position keeps one load per
// thread in flight, too few to keep the memory busy at the deeper stages'
// thread counts.
enum { POS_CHUNK = 64, POS_UNROLL = 4 };

static int pos_chunks(int hw) { return (hw + POS_CHUNK - 1) / POS_CHUNK; }

size_t cu_pos_part_size(int n, int hw, int c) { return (size_t)n * pos_chunks(hw) * c; }

// A residual block's end fused (SE scale + add + ReLU, y = max(0, x s +
// sc)): x, s, the shortcut sc and y of any element type. Its backward takes
// the ReLU's mask (whether forward's v = x s + sc was positive) from y where
// y is fp32, and recomputes it from x, s and sc where y is half, as forward
// computed it (half would round a tiny positive v to 0).
__device__ static float block_value(float x, float s, float sc) { return MUL_RN(x, s) + sc; }

template <typename X, typename S, typename Y> struct block_end {
    const X *x;
    const float *s;
    const S *sc;
    const Y *y;
};

// part (n, chunks, c) = sums of x over each chunk, or of dy * x where dy is
// given.
template <typename X>
__global__ void k_pos_partial(int n, int hw, int c, int chunks, const X *x, const float *dy, double *part) {
    FOR_EACH(o, (size_t)n * chunks * c) {
        unsigned ch = U32(o) % c, rest = U32(o) / c, img = rest / chunks;
        int p0 = (int)(rest % chunks) * POS_CHUNK, p1 = p0 + POS_CHUNK < hw ? p0 + POS_CHUNK : hw;
        unsigned at = (img * hw + p0) * c + ch; // at: stride c
        double acc = 0;
        for (int p = p0; p < p1; p += POS_UNROLL, at += POS_UNROLL * c) {
            float g[POS_UNROLL], xv[POS_UNROLL]; // the loads first, all in flight at once; then the sum, in order
            for (int u = 0; u < POS_UNROLL; u++) {
                bool in = p + u < p1;
                xv[u] = in ? get(x[at + u * c]) : 0.0f;
                g[u] = in && dy ? dy[at + u * c] : 0.0f;
            }
            for (int u = 0; u < POS_UNROLL && p + u < p1; u++) {
                if (dy) acc += (double)g[u] * xv[u];
                else acc += xv[u];
            }
        }
        part[o] = acc;
    }
}

// out (n, c) = the chunks' sums added in order, divided by div; a
// gradient's (grad_into) with grad, else a forward's output.
__global__ void k_pos_total(int n, int c, int chunks, const double *part, double div, bool grad, bool add,
                            float *out) {
    FOR_EACH(nc, (size_t)n * c) {
        unsigned ch = U32(nc) % c, img = U32(nc) / c;
        double sum = 0;
        for (int k = 0; k < chunks; k++) sum += part[(img * chunks + k) * c + ch];
        float v = (float)(sum / div);
        if (grad) grad_into(add, v, &out[nc]);
        else out[nc] = v;
    }
}

template <typename X>
static void pos_sums(int n, int hw, int c, const X *x, const float *dy, double div, bool grad, bool add, double *part,
                     float *out) {
    int chunks = pos_chunks(hw);
    k_pos_partial<<<blocks_for(cu_pos_part_size(n, hw, c)), THREADS>>>(n, hw, c, chunks, x, dy, part);
    k_pos_total<<<blocks_for((size_t)n * c), THREADS>>>(n, c, chunks, part, div, grad, add, out);
}

__global__ void k_scale_fwd(int n, int hw, int c, const float *x, const float *s, float *y) {
    FOR_EACH(o, (size_t)n * hw * c) {
        unsigned ch = U32(o) % c, img = U32(o) / (U32(hw) * c);
        y[o] = x[o] * s[img * c + ch];
    }
}

__global__ void k_scale_bwd_x(int n, int hw, int c, const float *s, const float *dy, float *dx, bool add) {
    FOR_EACH(o, (size_t)n * hw * c) {
        unsigned ch = U32(o) % c, img = U32(o) / (U32(hw) * c);
        grad_into(add, dy[o] * s[img * c + ch], &dx[o]);
    }
}

void cu_scale_fwd(int n, int hw, int c, const float *x, const float *s, float *y) {
    k_scale_fwd<<<blocks_for((size_t)n * hw * c), THREADS>>>(n, hw, c, x, s, y);
}

void cu_scale_bwd(int n, int hw, int c, const float *x, const float *s, const float *dy, float *dx, bool add_x,
                  float *ds, bool add_s, double *part) {
    if (dx) k_scale_bwd_x<<<blocks_for((size_t)n * hw * c), THREADS>>>(n, hw, c, s, dy, dx, add_x);
    if (ds) pos_sums(n, hw, c, x, dy, 1, true, add_s, part, ds);
}

// SE scale + add + ReLU, the residual blocks' ends: y = max(0, x s + sc),
// the product rounded on its own as the scale op stores it; x, sc and y of
// any element type (block_end). V elements at a time (vec_ok).
template <int V, typename X, typename S, typename Y>
__global__ void k_scale_add_relu_fwd(int n, int hw, int c, block_end<X, S, Y> e, Y *y) {
    FOR_EACH(g, (size_t)n * hw * c / V) {
        unsigned o = U32(g) * V, ch = o % c, nc = o / (U32(hw) * c) * c + ch;
        pack<V, X> x = load<V>(e.x, o);
        pack<V, S> sc = load<V>(e.sc, o);
        pack<V, Y> out;
        for (int j = 0; j < V; j++) {
            float v = block_value(get(x.v[j]), e.s[nc + j], get(sc.v[j]));
            put(v > 0 ? v : 0.0f, &out.v[j]);
        }
        store(y, o, out);
    }
}

// The block end's backward in one pass over its elements: g = dy where
// forward's ReLU let it through, dsc += g, dx += g s, and with part the SE
// scale's gradient, the sum over positions of g x, summed as k_pos_partial
// sums (per image, chunk of positions and channel, the positions in order;
// then k_pos_total): reading dy, x and the shortcut once, where an
// element-wise kernel and a sum over positions read them twice. A thread
// per (image, chunk, V channels), POS_UNROLL positions' loads ahead.
template <int V, typename X, typename S, typename Y>
__global__ void k_scale_add_relu_bwd(int n, int hw, int c, int chunks, block_end<X, S, Y> e, const float *dy,
                                     float *dx, bool add_x, float *dsc, bool add_sc, double *part) {
    unsigned groups = U32(c) / V;
    FOR_EACH(t, (size_t)n * chunks * groups) {
        unsigned ch = U32(t) % groups * V, rest = U32(t) / groups, img = rest / chunks, nc = img * c + ch;
        int p0 = (int)(rest % chunks) * POS_CHUNK, p1 = p0 + POS_CHUNK < hw ? p0 + POS_CHUNK : hw;
        unsigned at = (img * hw + p0) * c + ch; // at: stride c
        float s[V];
        double acc[V] = {};
        for (int j = 0; j < V; j++) s[j] = e.s[nc + j];
        for (int p = p0; p < p1; p += POS_UNROLL, at += POS_UNROLL * c) {
            pack<V, float> d[POS_UNROLL] = {}, y[POS_UNROLL] = {};
            pack<V, X> x[POS_UNROLL] = {};
            pack<V, S> sc[POS_UNROLL] = {};
            for (int u = 0; u < POS_UNROLL; u++) { // the loads first, all in flight at once
                if (p + u >= p1) continue;
                d[u] = load<V>(dy, at + u * c);
                x[u] = load<V>(e.x, at + u * c);
                if constexpr (std::is_same<Y, float>::value) y[u] = load<V>(e.y, at + u * c);
                else sc[u] = load<V>(e.sc, at + u * c);
            }
            for (int u = 0; u < POS_UNROLL && p + u < p1; u++) {
                float g[V], gs[V];
                for (int j = 0; j < V; j++) {
                    bool passed;
                    if constexpr (std::is_same<Y, float>::value) passed = y[u].v[j] > 0;
                    else passed = block_value(get(x[u].v[j]), s[j], get(sc[u].v[j])) > 0;
                    g[j] = passed ? d[u].v[j] : 0.0f;
                    gs[j] = g[j] * s[j];
                    if (part) acc[j] += (double)g[j] * get(x[u].v[j]);
                }
                if (dsc) grads_into(add_sc, g, dsc, at + u * c);
                if (dx) grads_into(add_x, gs, dx, at + u * c);
            }
        }
        if (part)
            for (int j = 0; j < V; j++) part[(size_t)rest * c + ch + j] = acc[j];
    }
}

// Calls f with H (a null H *) where is_half, else with float.
template <typename H, typename F> static void half_or_float(bool is_half, F f) {
    if (is_half) f((H *)nullptr);
    else f((float *)nullptr);
}

// Calls f with a block_end of the given types over x, s, sc and y: each
// fp32 or the one half type of the run (amp's), 15 combinations compiled,
// not 27.
template <typename F>
static void with_block_end(cu_type xt, const void *x, const float *s, cu_type sct, const void *sc, cu_type yt,
                           const void *y, F f) {
    auto with_half = [&](auto *htag) {
        using H = ELEM(htag);
        half_or_float<H>(xt != CU_FP32, [&](auto *xtag) {
            half_or_float<H>(sct != CU_FP32, [&](auto *sctag) {
                half_or_float<H>(yt != CU_FP32, [&](auto *ytag) {
                    using X = ELEM(xtag);
                    using S = ELEM(sctag);
                    using Y = ELEM(ytag);
                    f(block_end<X, S, Y>{(const X *)x, s, (const S *)sc, (const Y *)y});
                });
            });
        });
    };
    if (xt == CU_BF16 || sct == CU_BF16 || yt == CU_BF16) with_half((__nv_bfloat16 *)nullptr);
    else with_half((__half *)nullptr);
}

void cu_scale_add_relu_fwd(int n, int hw, int c, cu_type xt, const void *x, const float *s, cu_type sct,
                           const void *sc, cu_type yt, void *y) {
    size_t len = (size_t)n * hw * c;
    with_block_end(xt, x, s, sct, sc, yt, y, [&](auto e) {
        using Y = std::remove_const_t<std::remove_pointer_t<decltype(e.y)>>;
        using X = std::remove_const_t<std::remove_pointer_t<decltype(e.x)>>;
        using S = std::remove_const_t<std::remove_pointer_t<decltype(e.sc)>>;
        with_width<X, S, Y>(c, {x, sc, y}, [&](auto vk) {
            constexpr int V = decltype(vk)::value;
            k_scale_add_relu_fwd<V><<<blocks_for(len / V), THREADS>>>(n, hw, c, e, (Y *)y);
        });
    });
}

void cu_scale_add_relu_bwd(int n, int hw, int c, cu_type xt, const void *x, const float *s, cu_type sct,
                           const void *sc, cu_type yt, const void *y, const float *dy, float *dx, bool add_x,
                           float *ds, bool add_s, float *dsc, bool add_sc, double *part) {
    if (!dx && !ds && !dsc) return;
    int chunks = pos_chunks(hw);
    with_block_end(xt, x, s, sct, sc, yt, y, [&](auto e) {
        with_vec(vec_ok(c, {x, sc, y, dy, dx, dsc}), [&](auto vk) {
            constexpr int V = decltype(vk)::value;
            k_scale_add_relu_bwd<V><<<blocks_for(cu_pos_part_size(n, hw, c) / V), THREADS>>>(
                n, hw, c, chunks, e, dy, dx, add_x, dsc, add_sc, ds ? part : (double *)NULL);
        });
    });
    if (ds) k_pos_total<<<blocks_for((size_t)n * c), THREADS>>>(n, c, chunks, part, 1, true, add_s, ds);
}

template <int V> __global__ void k_gap_bwd(int n, int hw, int c, const float *dy, float *dx, bool add) {
    FOR_EACH(gi, (size_t)n * hw * c / V) {
        unsigned o = U32(gi) * V, ch = o % c, nc = o / (U32(hw) * c) * c + ch;
        float g[V];
        for (int j = 0; j < V; j++) g[j] = dy[nc + j] / (float)hw;
        grads_into(add, g, dx, o);
    }
}

void cu_gap_fwd(int n, int hw, int c, cu_type xt, const void *x, float *y, double *part) {
    with_type(xt, [&](auto *xtag) {
        pos_sums(n, hw, c, (const ELEM(xtag) *)x, (const float *)NULL, hw, false, false, part, y);
    });
}

void cu_gap_bwd(int n, int hw, int c, const float *dy, float *dx, bool add) {
    size_t len = (size_t)n * hw * c;
    if (dx)
        with_vec(vec_ok(c, {dx}), [&](auto vk) {
            constexpr int V = decltype(vk)::value;
            k_gap_bwd<V><<<blocks_for(len / V), THREADS>>>(n, hw, c, dy, dx, add);
        });
}

__global__ void k_concat_fwd(size_t rows, int c, int ctot, int off, const float *x, float *y) {
    FOR_EACH(i, rows * c) y[U32(i) / c * ctot + off + U32(i) % c] = x[i];
}

__global__ void k_concat_bwd(size_t rows, int c, int ctot, int off, const float *dy, float *dx, bool add) {
    FOR_EACH(i, rows * c) grad_into(add, dy[U32(i) / c * ctot + off + U32(i) % c], &dx[i]);
}

void cu_concat_fwd(size_t rows, int c, int ctot, int off, const float *x, float *y) {
    k_concat_fwd<<<blocks_for(rows * c), THREADS>>>(rows, c, ctot, off, x, y);
}

void cu_concat_bwd(size_t rows, int c, int ctot, int off, const float *dy, float *dx, bool add) {
    if (dx) k_concat_bwd<<<blocks_for(rows * c), THREADS>>>(rows, c, ctot, off, dy, dx, add);
}

// ---- max pooling -------------------------------------------------------------
// A thread takes V channels of one output position (forward) or input
// position (backward). Backward gathers: an input position looks up the
// windows that hold it (at most 4 for 3 x 3 at stride 2) and adds the dy of
// those whose maximum it was, so no two threads write one element (no
// atomics) and the order is fixed.

static const unsigned char NO_MAX = 255; // a window of padding alone, or NaN alone

template <int V, typename X, typename Y>
__global__ void k_maxpool_fwd(cu_pool p, const X *x, Y *y, unsigned char *arg) {
    FOR_EACH(g, (size_t)p.n * p.oh * p.ow * p.c / V) {
        unsigned o = U32(g) * V, ch = o % p.c, pix = o / p.c, ox = pix % p.ow, rest = pix / p.ow;
        unsigned oy = rest % p.oh, img = rest / p.oh;
        float best[V];
        unsigned char at[V];
        for (int j = 0; j < V; j++) best[j] = -INFINITY, at[j] = NO_MAX;
        for (int a = 0; a < p.k; a++) {
            int iy = (int)oy * p.stride - p.pad + a * p.dil;
            if (iy < 0 || iy >= p.h) continue;
            for (int b = 0; b < p.k; b++) {
                int ix = (int)ox * p.stride - p.pad + b * p.dil;
                if (ix < 0 || ix >= p.w) continue;
                pack<V, X> in = load<V>(x, ((img * p.h + iy) * p.w + ix) * p.c + ch);
                for (int j = 0; j < V; j++) {
                    float v = get(in.v[j]);
                    // strictly greater: the first maximum stays (a NaN never wins, -inf can)
                    if (v > best[j] || (at[j] == NO_MAX && v == best[j])) best[j] = v, at[j] = (unsigned char)(a * p.k + b);
                }
            }
        }
        pack<V, Y> out;
        for (int j = 0; j < V; j++) put(best[j], &out.v[j]);
        store(y, o, out);
        if (arg) {
            pack<V, unsigned char> w;
            for (int j = 0; j < V; j++) w.v[j] = at[j];
            store(arg, o, w);
        }
    }
}

// Windows in the reference's order: output rows, then columns, ascending,
// that is the input's place in the window descending.
template <int V, typename DX>
__global__ void k_maxpool_bwd(cu_pool p, const unsigned char *arg, const float *dy, DX *dx, bool add) {
    FOR_EACH(g, (size_t)p.n * p.h * p.w * p.c / V) {
        unsigned o = U32(g) * V, ch = o % p.c, pix = o / p.c, ix = pix % p.w, rest = pix / p.w;
        unsigned iy = rest % p.h, img = rest / p.h;
        pack<V, DX> d;
        float acc[V];
        if (add) d = load<V>(dx, o);
        for (int j = 0; j < V; j++) acc[j] = add ? get(d.v[j]) : 0.0f; // adding into a cleared gradient
        for (int a = p.k - 1; a >= 0; a--) {
            int ty = (int)iy + p.pad - a * p.dil, oy = ty / p.stride;
            if (ty < 0 || ty % p.stride || oy >= p.oh) continue;
            for (int b = p.k - 1; b >= 0; b--) {
                int tx = (int)ix + p.pad - b * p.dil, ox = tx / p.stride;
                if (tx < 0 || tx % p.stride || ox >= p.ow) continue;
                unsigned q = ((img * p.oh + oy) * p.ow + ox) * p.c + ch;
                pack<V, unsigned char> w = load<V>(arg, q);
                pack<V, float> grad = load<V>(dy, q);
                for (int j = 0; j < V; j++)
                    if (w.v[j] == a * p.k + b) acc[j] += grad.v[j];
            }
        }
        for (int j = 0; j < V; j++) put(acc[j], &d.v[j]);
        store(dx, o, d);
    }
}

void cu_maxpool_fwd(const cu_pool *p, cu_type xt, const void *x, cu_type yt, void *y, unsigned char *arg) {
    size_t len = (size_t)p->n * p->oh * p->ow * p->c;
    with_type(xt, [&](auto *xtag) {
        with_type(yt, [&](auto *ytag) {
            with_width<ELEM(xtag), ELEM(ytag)>(p->c, {x, y, arg}, [&](auto vk) {
                constexpr int V = decltype(vk)::value;
                k_maxpool_fwd<V><<<blocks_for(len / V), THREADS>>>(*p, (const ELEM(xtag) *)x, (ELEM(ytag) *)y,
                                                                   arg);
            });
        });
    });
}

void cu_maxpool_bwd(const cu_pool *p, const unsigned char *arg, const float *dy, cu_type dxt, void *dx, bool add) {
    size_t len = (size_t)p->n * p->h * p->w * p->c;
    if (dx)
        with_type(dxt, [&](auto *tag) {
            with_vec(vec_ok(p->c, {arg, dy, dx}), [&](auto vk) {
                constexpr int V = decltype(vk)::value;
                k_maxpool_bwd<V><<<blocks_for(len / V), THREADS>>>(*p, arg, dy, (ELEM(tag) *)dx, add);
            });
        });
}

__global__ void k_bias_fwd(int n, int c, const float *b, float *y) {
    FOR_EACH(i, (size_t)n * c) y[i] += b[U32(i) % c];
}

__global__ void k_bias_bwd(int n, int c, const float *dy, float *db) {
    FOR_EACH(ch, (size_t)c) {
        double acc = 0;
        for (int i = 0; i < n; i++) acc += dy[(size_t)i * c + ch];
        db[ch] += (float)acc;
    }
}

void cu_bias_fwd(int n, int c, const float *b, float *y) { k_bias_fwd<<<blocks_for((size_t)n * c), THREADS>>>(n, c, b, y); }
void cu_bias_bwd(int n, int c, const float *dy, float *db) { k_bias_bwd<<<blocks_for((size_t)c), THREADS>>>(n, c, dy, db); }

// ---- BatchNorm -----------------------------------------------------------------
// Per-channel sums in three barrier-light passes, in an order fixed by the
// shape alone (deterministic, no atomics):
//  1. partial: a grid of (channel blocks) x (row splits) of BN_THREADS
//     threads. A thread owns V consecutive channels (VEC where vec_ok, else
//     1) and every R-th row of its split; a block's L = blockDim.x threads
//     side by side cover L V channels, its R = blockDim.y rows of threads
//     R rows at a time. Each thread loads BN_UNROLL rows before it adds
//     them: the pass is bound by memory latency unless every thread keeps
//     several loads in flight (one 2- or 4-byte load per thread at a time,
//     as a first version did, leaves HBM mostly idle). The block then adds
//     its R rows of sums in order and writes part (c, 2, splits).
//  2. lanes: per channel, BN_LANES threads each add every BN_LANES-th split
//     in order (a thread per channel adding up to 512 splits was a chain of
//     dependent loads as long).
//  3. reduce: one thread per channel adds its lanes in order.
//
// Fused with the ReLU after it (relu true; relu_coef given in backward):
// forward writes max(0, bn(x)) instead of bn(x); backward takes dy as the
// ReLU's output gradient and drops it wherever bn(x), recomputed from x and
// the forward's coefficients, is not positive: where the ReLU's output is
// not, so what the ReLU's own backward would have left for the BN. The same
// values, two memory passes fewer each way, and the ReLU's output is never
// read back (it may be half, which a small positive value underflows to 0).

enum { BN_THREADS = 256, BN_MAX_L = 32, BN_UNROLL = 4, BN_LANES = 32 };
static const size_t BN_ROWS_PER_SPLIT = 256, BN_MAX_SPLITS = 512;

static int bn_splits(size_t rows) {
    size_t s = (rows + BN_ROWS_PER_SPLIT - 1) / BN_ROWS_PER_SPLIT;
    return (int)(s < 1 ? 1 : s > BN_MAX_SPLITS ? BN_MAX_SPLITS : s);
}

// The splits' partial sums, then the lanes' (2 c each).
size_t cu_bn_part_size(size_t rows, int c) { return ((size_t)bn_splits(rows) + BN_LANES) * 2 * c; }

// The BatchNorm's affine map, y = x coef[ch] + coef[c + ch]: one expression
// for forward and for the fused ReLU's mask in backward, so that both round
// (and contract into an FMA) alike.
__device__ static float bn_affine(float x, const float *coef, int c, unsigned ch) {
    return x * coef[ch] + coef[c + ch];
}

// dy where a fused ReLU let it through (bn(x) positive; relu_coef: the
// forward's coefficients), else 0; relu_coef NULL: no ReLU fused.
__device__ static float bn_relu_grad(float dy, float x, const float *relu_coef, int c, unsigned ch) {
    return relu_coef && !(bn_affine(x, relu_coef, c, ch) > 0) ? 0.0f : dy;
}

// STATS: sums of (x, x^2); else of (dy, dy * xhat), xhat = (x - mean) invstd.
template <bool STATS, int V, typename T, typename D>
__global__ void k_bn_partial(unsigned rows, int c, int splits, const T *x, const D *dy, const float *relu_coef,
                             const float *mean, const float *invstd, double *part) {
    __shared__ double sa[BN_THREADS * VEC], sb[BN_THREADS * VEC];
    unsigned L = blockDim.x, R = blockDim.y, ch0 = (blockIdx.x * L + threadIdx.x) * V;
    unsigned per = (rows + splits - 1) / splits, r0 = blockIdx.y * per, r1 = r0 + per < rows ? r0 + per : rows;
    double a[V] = {}, b[V] = {}, mu[V] = {}, is[V] = {};
    if (ch0 < U32(c)) {
        if (!STATS)
            for (int j = 0; j < V; j++) {
                mu[j] = mean[ch0 + j];
                is[j] = invstd[ch0 + j];
            }
        for (unsigned r = r0 + threadIdx.y; r < r1; r += BN_UNROLL * R) {
            pack<V, T> xs[BN_UNROLL] = {};
            pack<V, D> ds[BN_UNROLL] = {};
            for (int u = 0; u < BN_UNROLL; u++) { // the loads first, all in flight at once
                unsigned ru = r + u * R;
                if (ru >= r1) continue;
                xs[u] = load<V>(x, ru * c + ch0);
                if (!STATS) ds[u] = load<V>(dy, ru * c + ch0);
            }
            for (int u = 0; u < BN_UNROLL && r + u * R < r1; u++)
                for (int j = 0; j < V; j++) {
                    float xv = get(xs[u].v[j]);
                    double v = xv;
                    if (STATS) {
                        a[j] += v;
                        b[j] += v * v;
                    } else {
                        double g = bn_relu_grad(get(ds[u].v[j]), xv, relu_coef, c, ch0 + j);
                        a[j] += g;
                        b[j] += g * ((v - mu[j]) * is[j]);
                    }
                }
        }
    }
    unsigned t = (threadIdx.y * L + threadIdx.x) * V;
    for (int j = 0; j < V; j++) {
        sa[t + j] = a[j];
        sb[t + j] = b[j];
    }
    __syncthreads();
    if (threadIdx.y != 0 || ch0 >= U32(c)) return;
    for (unsigned y = 1; y < R; y++)
        for (int j = 0; j < V; j++) {
            a[j] += sa[(y * L + threadIdx.x) * V + j];
            b[j] += sb[(y * L + threadIdx.x) * V + j];
        }
    for (int j = 0; j < V; j++) {
        part[((size_t)(ch0 + j) * 2) * splits + blockIdx.y] = a[j];
        part[((size_t)(ch0 + j) * 2 + 1) * splits + blockIdx.y] = b[j];
    }
}

// STATS: x alone (dy NULL).
template <bool STATS>
static void bn_partial(size_t rows, int c, cu_type xt, const void *x, cu_type dyt, const void *dy,
                       const float *relu_coef, const float *mean, const float *invstd, double *part) {
    int splits = bn_splits(rows);
    auto launch = [&](auto *xtag, auto *dytag) {
        with_vec(vec_ok(c, {x, dy}), [&](auto vk) {
            constexpr int V = decltype(vk)::value;
            int groups = c / V, L = groups < BN_MAX_L ? groups : BN_MAX_L;
            dim3 grid((groups + L - 1) / L, splits), block(L, BN_THREADS / L);
            k_bn_partial<STATS, V><<<grid, block>>>((unsigned)rows, c, splits, (const ELEM(xtag) *)x,
                                                    (const ELEM(dytag) *)dy, relu_coef, mean, invstd, part);
        });
    };
    with_type(xt, [&](auto *xtag) {
        if constexpr (STATS) launch(xtag, (float *)nullptr); // no dy
        else with_type(dyt, [&](auto *dytag) { launch(xtag, dytag); });
    });
}

// lanes (c, 2, BN_LANES): lane l of a channel adds splits l, l + BN_LANES,
// ... in order.
__global__ void k_bn_lanes(int c, int splits, const double *part, double *lanes) {
    FOR_EACH(t, (size_t)c * 2 * BN_LANES) {
        unsigned lane = U32(t) % BN_LANES, row = U32(t) / BN_LANES; // row: (channel, a or b)
        double s = 0;
        for (unsigned k = lane; k < U32(splits); k += BN_LANES) s += part[(size_t)row * splits + k];
        lanes[t] = s;
    }
}

// Adds each channel's lanes in order into v = (a, b) (c each); with
// dgamma/dbeta (backward), also dgamma += b, dbeta += a.
__global__ void k_bn_reduce(int c, const double *lanes, double *v, float *dgamma, float *dbeta, double rows) {
    FOR_EACH(ch, (size_t)c) {
        if (ch == 0) v[2 * c] = rows;
        double a = 0, b = 0;
        for (int l = 0; l < BN_LANES; l++) {
            a += lanes[(ch * 2) * BN_LANES + l];
            b += lanes[(ch * 2 + 1) * BN_LANES + l];
        }
        v[ch] = a;
        v[c + ch] = b;
        if (dgamma) {
            dgamma[ch] += (float)b;
            dbeta[ch] += (float)a;
        }
    }
}

static void bn_reduce(size_t rows, int c, double *part, double *v, float *dgamma, float *dbeta) {
    int splits = bn_splits(rows);
    double *lanes = part + (size_t)splits * 2 * c;
    k_bn_lanes<<<blocks_for((size_t)c * 2 * BN_LANES), THREADS>>>(c, splits, part, lanes);
    k_bn_reduce<<<blocks_for((size_t)c), THREADS>>>(c, lanes, v, dgamma, dbeta, (double)rows);
}

// Mean, 1/std, running stats, and y = x * coef[ch] + coef[c + ch].
__global__ void k_bn_train_stats(int c, const double *v, const float *gamma, const float *beta, float *mean,
                                 float *invstd, float *run_mean, float *run_var, double eps, double momentum,
                                 float *coef) {
    double m = v[2 * c];
    FOR_EACH(ch, (size_t)c) {
        double mu = v[ch] / m, var = v[c + ch] / m - mu * mu;
        if (var < 0) var = 0; // rounding of E[x^2] - mu^2 on a constant channel
        double is = 1 / sqrt(var + eps), g = gamma[ch] * is;
        mean[ch] = (float)mu;
        invstd[ch] = (float)is;
        coef[ch] = (float)g;
        coef[c + ch] = (float)(beta[ch] - mu * g);
        double unbiased = m > 1 ? var * m / (m - 1) : var;
        run_mean[ch] = (float)((1 - momentum) * run_mean[ch] + momentum * mu);
        run_var[ch] = (float)((1 - momentum) * run_var[ch] + momentum * unbiased);
    }
}

__global__ void k_bn_eval_coef(int c, const float *gamma, const float *beta, const float *run_mean,
                               const float *run_var, double eps, float *coef) {
    FOR_EACH(ch, (size_t)c) {
        double g = gamma[ch] / sqrt((double)run_var[ch] + eps);
        coef[ch] = (float)g;
        coef[c + ch] = (float)(beta[ch] - run_mean[ch] * g);
    }
}

template <int V, typename T, typename Y>
__global__ void k_bn_apply(size_t n, int c, const T *x, const float *coef, bool relu, Y *y) {
    FOR_EACH(g, n / V) {
        unsigned o = U32(g) * V, ch = o % c;
        pack<V, T> in = load<V>(x, o);
        pack<V, Y> out;
        for (int j = 0; j < V; j++) {
            float v = bn_affine(get(in.v[j]), coef, c, ch + j);
            put(relu && !(v > 0) ? 0.0f : v, &out.v[j]);
        }
        store(y, o, out);
    }
}

static void bn_apply(size_t n, int c, cu_type xt, const void *x, const float *coef, bool relu, cu_type yt, void *y) {
    with_type(xt, [&](auto *xtag) {
        with_type(yt, [&](auto *ytag) {
            with_width<ELEM(xtag), ELEM(ytag)>(c, {x, y}, [&](auto vk) {
                constexpr int V = decltype(vk)::value;
                k_bn_apply<V><<<blocks_for(n / V), THREADS>>>(n, c, (const ELEM(xtag) *)x, coef, relu,
                                                              (ELEM(ytag) *)y);
            });
        });
    });
}

void cu_bn_sums(size_t rows, int c, cu_type xt, const void *x, double *part, double *v) {
    bn_partial<true>(rows, c, xt, x, CU_FP32, NULL, NULL, NULL, NULL, part);
    bn_reduce(rows, c, part, v, NULL, NULL);
}

void cu_bn_global_fwd(size_t rows, int c, const double *v, cu_type xt, const void *x, const float *gamma,
                      const float *beta, cu_type yt, void *y, float *mean, float *invstd, float *run_mean,
                      float *run_var, double eps, double momentum, float *coef, bool relu) {
    k_bn_train_stats<<<blocks_for((size_t)c), THREADS>>>(c, v, gamma, beta, mean, invstd, run_mean, run_var, eps,
                                                          momentum, coef);
    bn_apply(rows * c, c, xt, x, coef, relu, yt, y);
}

void cu_bn_eval_fwd(size_t rows, int c, cu_type xt, const void *x, const float *gamma, const float *beta,
                    const float *run_mean, const float *run_var, cu_type yt, void *y, double eps, float *coef,
                    bool relu) {
    k_bn_eval_coef<<<blocks_for((size_t)c), THREADS>>>(c, gamma, beta, run_mean, run_var, eps, coef);
    bn_apply(rows * c, c, xt, x, coef, relu, yt, y);
}

// coef = (gamma invstd, mean dy, mean dy xhat) from the sums over m values.
__global__ void k_bn_bwd_coef(int c, const double *v, const float *gamma, const float *invstd, float *coef) {
    double m = v[2 * c];
    FOR_EACH(ch, (size_t)c) {
        coef[ch] = (float)((double)gamma[ch] * invstd[ch]);
        coef[c + ch] = (float)(v[ch] / m);
        coef[2 * c + ch] = (float)(v[c + ch] / m);
    }
}

// dx += gamma/std * (dy - mean(dy) - xhat * mean(dy * xhat)); x and dx of
// type T, dy of type D.
template <int V, typename T, typename D>
__global__ void k_bn_bwd_dx(size_t n, int c, const T *x, const float *mean, const float *invstd, const D *dy,
                            const float *relu_coef, const float *coef, T *dx, bool add) {
    FOR_EACH(gi, n / V) {
        unsigned o = U32(gi) * V, ch0 = o % c;
        pack<V, T> xs = load<V>(x, o);
        pack<V, D> dys = load<V>(dy, o);
        float d[V];
        for (int j = 0; j < V; j++) {
            unsigned ch = ch0 + j;
            float xv = get(xs.v[j]), xhat = (xv - mean[ch]) * invstd[ch];
            float g = bn_relu_grad(get(dys.v[j]), xv, relu_coef, c, ch);
            d[j] = coef[ch] * (g - coef[c + ch] - xhat * coef[2 * c + ch]);
        }
        grads_into(add, d, dx, o);
    }
}

void cu_bn_bwd_sums(size_t rows, int c, cu_type xt, const void *x, const float *mean, const float *invstd,
                    cu_type dyt, const void *dy, const float *relu_coef, double *part, double *v, float *dgamma,
                    float *dbeta) {
    bn_partial<false>(rows, c, xt, x, dyt, dy, relu_coef, mean, invstd, part);
    bn_reduce(rows, c, part, v, dgamma, dbeta);
}

void cu_bn_global_bwd(size_t rows, int c, const double *v, cu_type xt, const void *x, const float *gamma,
                      const float *mean, const float *invstd, cu_type dyt, const void *dy, const float *relu_coef,
                      void *dx, bool add, float *coef) {
    if (!dx) return;
    size_t n = rows * c;
    k_bn_bwd_coef<<<blocks_for((size_t)c), THREADS>>>(c, v, gamma, invstd, coef);
    with_type(xt, [&](auto *xtag) {
        with_type(dyt, [&](auto *dytag) {
            using T = ELEM(xtag);
            with_width<T, ELEM(dytag)>(c, {x, dy, dx}, [&](auto vk) {
                constexpr int V = decltype(vk)::value;
                k_bn_bwd_dx<V><<<blocks_for(n / V), THREADS>>>(n, c, (const T *)x, mean, invstd,
                                                               (const ELEM(dytag) *)dy, relu_coef, coef, (T *)dx, add);
            });
        });
    });
}

__global__ void k_set_double(double *p, double value) { *p = value; }
__global__ void k_share_of(double *share, double w, const double *total) { *share = w / *total; }
__global__ void k_scale_by(size_t n, double *v, const double *a, bool divide) {
    FOR_EACH(i, n) v[i] = divide ? v[i] / *a : v[i] * *a;
}

void cu_set_double(double *p, double value) { k_set_double<<<1, 1>>>(p, value); }
void cu_share_of(double *share, double w, const double *total) { k_share_of<<<1, 1>>>(share, w, total); }
void cu_scale_by(size_t n, double *v, const double *a, bool divide) {
    k_scale_by<<<blocks_for(n), THREADS>>>(n, v, a, divide);
}

// ---- mixed precision -----------------------------------------------------------------

template <typename H> __global__ void k_to_half(size_t n, const float *x, H *y) {
    FOR_EACH(i, n) put(x[i], &y[i]);
}

template <typename H> __global__ void k_from_half(size_t n, const H *x, float *y, bool accumulate) {
    FOR_EACH(i, n) y[i] = accumulate ? y[i] + get(x[i]) : get(x[i]);
}

// o indexes y (O, kk, I); w is (O, I, kk).
template <typename H> __global__ void k_weight_to_half(int o, int ci, int kk, const float *w, H *y) {
    FOR_EACH(j, (size_t)o * ci * kk) {
        unsigned c = U32(j) % ci, rest = U32(j) / ci, p = rest % kk, k = rest / kk;
        put(w[(k * ci + c) * kk + p], &y[j]);
    }
}

// j indexes y (O, I, kk); w is (O, kk, I).
template <typename H> __global__ void k_weight_from_half(int o, int ci, int kk, const H *w, float *y) {
    FOR_EACH(j, (size_t)o * ci * kk) {
        unsigned p = U32(j) % kk, rest = U32(j) / kk, c = rest % ci, k = rest / ci;
        y[j] = get(w[(k * kk + p) * ci + c]);
    }
}

void cu_to_half(bool bf16, size_t n, const float *x, void *y) {
    if (bf16) k_to_half<<<blocks_for(n), THREADS>>>(n, x, (__nv_bfloat16 *)y);
    else k_to_half<<<blocks_for(n), THREADS>>>(n, x, (__half *)y);
}

void cu_from_half(bool bf16, size_t n, const void *x, float *y, bool accumulate) {
    if (bf16) k_from_half<<<blocks_for(n), THREADS>>>(n, (const __nv_bfloat16 *)x, y, accumulate);
    else k_from_half<<<blocks_for(n), THREADS>>>(n, (const __half *)x, y, accumulate);
}

void cu_weight_to_half(bool bf16, int o, int i, int kk, const float *w, void *y) {
    size_t n = (size_t)o * i * kk;
    if (bf16) k_weight_to_half<<<blocks_for(n), THREADS>>>(o, i, kk, w, (__nv_bfloat16 *)y);
    else k_weight_to_half<<<blocks_for(n), THREADS>>>(o, i, kk, w, (__half *)y);
}

void cu_weight_from_half(bool bf16, int o, int i, int kk, const void *w, float *y) {
    size_t n = (size_t)o * i * kk;
    if (bf16) k_weight_from_half<<<blocks_for(n), THREADS>>>(o, i, kk, (const __nv_bfloat16 *)w, y);
    else k_weight_from_half<<<blocks_for(n), THREADS>>>(o, i, kk, (const __half *)w, y);
}

// Every thread that sees a non-finite value stores 1: the same result
// whichever stores first.
__global__ void k_unscale(size_t n, float *g, const float *scale, int *nonfinite) {
    float inv = 1 / *scale;
    FOR_EACH(i, n) {
        float v = g[i] * inv;
        if (!isfinite(v)) *nonfinite = 1;
        g[i] = v;
    }
}

void cu_unscale(size_t n, float *g, const float *scale, int *nonfinite) {
    k_unscale<<<blocks_for(n), THREADS>>>(n, g, scale, nonfinite);
}

// ---- the loss ----------------------------------------------------------------------
// The reference's arithmetic (ref_ops.inc), image by image: the same double
// operations in the same order, so the same values but for exp and log's
// last bits on a GPU.

// Per image: prob, and its weighted term w (lse - z_label).
__global__ void k_xent_terms(int n, int k, const float *z, const int *labels, const float *w, float *prob,
                             double *terms) {
    FOR_EACH(i, (size_t)n) {
        const float *l = z + i * k; // (k)
        double top = l[0], sum = 0;
        for (int j = 1; j < k; j++) top = l[j] > top ? l[j] : top;
        for (int j = 0; j < k; j++) sum += exp(l[j] - top);
        double lse = top + log(sum);
        for (int j = 0; j < k; j++) prob[i * k + j] = (float)exp(l[j] - lse);
        terms[i] = w[labels[i]] * (lse - l[labels[i]]);
    }
}

// One thread: the terms and weights added in image order; the hits.
__global__ void k_xent_sum(int n, int k, const float *z, const int *labels, const float *w, const double *terms,
                           double *wsum, float *loss, int *hits) {
    double l = 0, ws = 0;
    int h = 0;
    for (int i = 0; i < n; i++) {
        l += terms[i];
        ws += w[labels[i]];
        int top = 0;
        for (int j = 1; j < k; j++)
            if (z[(size_t)i * k + j] > z[(size_t)i * k + top]) top = j;
        h += top == labels[i];
    }
    *wsum = ws;
    *loss = (float)(l / ws);
    *hits = h;
}

void cu_xent_fwd(int n, int k, const float *logits, const int *labels, const float *w, float *prob, double *terms,
                 double *wsum, float *loss, int *hits) {
    k_xent_terms<<<blocks_for((size_t)n), THREADS>>>(n, k, logits, labels, w, prob, terms);
    k_xent_sum<<<1, 1>>>(n, k, logits, labels, w, terms, wsum, loss, hits);
}

__global__ void k_xent_bwd(int n, int k, const float *prob, const int *labels, const float *w, const double *wsum,
                           const float *dloss, float *dlogits) {
    float scale = dloss ? *dloss : 1.0f;
    FOR_EACH(e, (size_t)n * k) {
        int i = (int)(U32(e) / (unsigned)k), j = (int)(U32(e) % (unsigned)k);
        double g = prob[e] - (j == labels[i]);
        float dw = MUL_RN(scale, w[labels[i]]); // a float product in the reference too
        dlogits[e] = 0.0f + (float)(dw * g / *wsum);
    }
}

void cu_xent_bwd(int n, int k, const float *prob, const int *labels, const float *w, const double *wsum,
                 const float *dloss, float *dlogits) {
    k_xent_bwd<<<blocks_for((size_t)n * k), THREADS>>>(n, k, prob, labels, w, wsum, dloss, dlogits);
}
