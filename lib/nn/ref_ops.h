// The reference backend's ops: plain C loops over NCHW tensors, written to be
// read and trusted (they are the oracle of every other backend's tests).
// Each op exists in float (_f32, what the network runs) and double (_f64,
// what the finite-difference gradient checks run): one source, ref_ops.inc,
// compiled twice by ref_ops.c.
//
// Conventions: forward ops overwrite their output; backward ops ACCUMULATE
// (+=) into every input gradient and parameter gradient, because a tensor
// that feeds two ops (a block input feeds the branch and the shortcut) gets
// the sum of both gradients. A NULL input gradient is skipped.
#ifndef FU_NN_REF_OPS_H
#define FU_NN_REF_OPS_H

#include <stddef.h>

// A convolution or pooling window over (n, c, h, w) input giving (n, k, p, q).
typedef struct {
    int n, c, h, w; // input
    int k;          // output channels (pooling: = c)
    int r;          // window side (r x r)
    int stride, pad, dil;
    int p, q;       // output height, width
} fu_window;

// Fills p and q from the rest.
void fu_window_out(fu_window *s);

typedef struct {
    int n, c, hw;    // (n, c, hw); BatchNorm1d is hw = 1
    double eps, momentum;
} fu_bn_shape;

#define FU_REF_OPS(T, S)                                                                                        \
    /* x (n,c,h,w), w (k,c,r,r) -> y (n,k,p,q) */                                                          \
    void fu_ref_conv_fwd_##S(const fu_window *s, const T *x, const T *w, T *y);                               \
    void fu_ref_conv_bwd_##S(const fu_window *s, const T *x, const T *w, const T *dy, T *dx, T *dw);          \
    /* Training mode: normalise with the batch mean and biased variance, save                              \
       mean and 1/std (c each) for backward, and update the running stats                                  \
       (unbiased variance, as PyTorch) when run_mean/run_var are not NULL. */                               \
    void fu_ref_bn_train_fwd_##S(const fu_bn_shape *s, const T *x, const T *gamma, const T *beta, T *y,     \
                                 T *mean, T *invstd, T *run_mean, T *run_var);                              \
    void fu_ref_bn_eval_fwd_##S(const fu_bn_shape *s, const T *x, const T *gamma, const T *beta,            \
                                const T *run_mean, const T *run_var, T *y);                                 \
    void fu_ref_bn_bwd_##S(const fu_bn_shape *s, const T *x, const T *gamma, const T *mean, const T *invstd,  \
                           const T *dy, T *dx, T *dgamma, T *dbeta);                                         \
    /* Sync-BN (data parallelism): the training forward and backward split where                           \
       per-channel sums are added over ranks, giving global sums v over m values                            \
       per channel. Forward: v[c] = sum x, v[c + C] = sum x^2 (local); then                                \
       normalise with mean v[c]/m and biased variance v[c + C]/m - mean^2, save                            \
       mean and 1/std, update the running stats (unbiased: m / (m - 1)). */                                 \
    void fu_ref_bn_sums_##S(const fu_bn_shape *s, const T *x, double *v);                                      \
    void fu_ref_bn_global_fwd_##S(const fu_bn_shape *s, const double *v, double m, const T *x, const T *gamma, \
                                  const T *beta, T *y, T *mean, T *invstd, T *run_mean, T *run_var);        \
    /* Backward: v[c] = sum dy, v[c + C] = sum dy * xhat (local), also added to                             \
       dgamma, dbeta (which stay local); then dx += gamma/std * (dy - v[c]/m -                              \
       xhat * v[c + C]/m) with the global v. */                                                              \
    void fu_ref_bn_bwd_sums_##S(const fu_bn_shape *s, const T *x, const T *mean, const T *invstd, const T *dy, \
                                double *v, T *dgamma, T *dbeta);                                             \
    void fu_ref_bn_global_bwd_##S(const fu_bn_shape *s, const double *v, double m, const T *x, const T *gamma, \
                                  const T *mean, const T *invstd, const T *dy, T *dx);                       \
    void fu_ref_relu_fwd_##S(size_t n, const T *x, T *y);                                                     \
    void fu_ref_relu_bwd_##S(size_t n, const T *y, const T *dy, T *dx);                                       \
    /* Max over the window, padding never wins; backward sends the gradient                                \
       to the first maximum in the window (PyTorch's choice on ties). */                                   \
    void fu_ref_maxpool_fwd_##S(const fu_window *s, const T *x, T *y);                                        \
    void fu_ref_maxpool_bwd_##S(const fu_window *s, const T *x, const T *y, const T *dy, T *dx);              \
    /* x (nc, hw) -> y (nc) */                                                                                \
    void fu_ref_gap_fwd_##S(size_t nc, size_t hw, const T *x, T *y);                                          \
    void fu_ref_gap_bwd_##S(size_t nc, size_t hw, const T *dy, T *dx);                                        \
    /* x (n,in), w (out,in), b (out) or NULL -> y (n,out) */                                                  \
    void fu_ref_linear_fwd_##S(int n, int in, int out, const T *x, const T *w, const T *b, T *y);             \
    void fu_ref_linear_bwd_##S(int n, int in, int out, const T *x, const T *w, const T *dy, T *dx, T *dw,     \
                               T *db);                                                                       \
    void fu_ref_sigmoid_fwd_##S(size_t n, const T *x, T *y);                                                  \
    void fu_ref_sigmoid_bwd_##S(size_t n, const T *y, const T *dy, T *dx);                                    \
    /* x (nc, hw) * s (nc) -> y (nc, hw) */                                                                   \
    void fu_ref_scale_fwd_##S(size_t nc, size_t hw, const T *x, const T *s, T *y);                            \
    void fu_ref_scale_bwd_##S(size_t nc, size_t hw, const T *x, const T *s, const T *dy, T *dx, T *ds);       \
    void fu_ref_add_fwd_##S(size_t n, const T *a, const T *b, T *y);                                          \
    void fu_ref_add_bwd_##S(size_t n, const T *dy, T *da, T *db);                                             \
    /* parts inputs x[i] (n, c[i], hw) -> y (n, sum c, hw) */                                                 \
    void fu_ref_concat_fwd_##S(int n, size_t hw, int parts, const int *c, const T *const *x, T *y);           \
    void fu_ref_concat_bwd_##S(int n, size_t hw, int parts, const int *c, const T *dy, T *const *dx);         \
    /* mask holds 0 (dropped) or 1/(1-p) (kept) */                                                            \
    void fu_ref_dropout_fwd_##S(size_t n, const T *x, const T *mask, T *y);                                   \
    void fu_ref_dropout_bwd_##S(size_t n, const T *mask, const T *dy, T *dx);                                 \
    /* logits (n,k), labels (n) in [0,k), class weights w (k) -> probabilities                              \
       (n,k); returns sum_i w[y_i] * -log p[i,y_i] / sum_i w[y_i] (PyTorch's                                \
       weighted mean). Backward: dlogits += dloss * d(loss)/d(logits). */                                    \
    T fu_ref_xent_fwd_##S(int n, int k, const T *logits, const int *labels, const T *w, T *prob);              \
    void fu_ref_xent_bwd_##S(int n, int k, const T *prob, const int *labels, const T *w, T dloss, T *dlogits);

FU_REF_OPS(float, f32)
FU_REF_OPS(double, f64)
#undef FU_REF_OPS

#endif
