// The cuda backend's own kernels (everything cuDNN and cuBLAS do not do),
// launched on the default stream. Activations are NHWC: a feature map of n
// images is (n, h, w, c) with the channel fastest, so "rows" below are the
// n * h * w pixel positions, each a vector of c channels; vectors (n, c) are
// the same in any layout.
//
// As the reference ops (nn/ref_ops.h), forward kernels overwrite their output
// and backward kernels ACCUMULATE (+=) into parameter gradients; into an
// input gradient they add with add (an `add` flag per gradient), and without
// it write it as adding into a cleared gradient would (0 + v): the
// gradient's first writer, so that nothing clears it first. A NULL input
// gradient is skipped. Reductions run in double, in an order fixed
// by the shape alone, so results are the same bytes on a rerun.
#ifndef FU_CUDA_CUDA_OPS_H
#define FU_CUDA_CUDA_OPS_H

#include <stddef.h>

// The kernels index a tensor's elements in 32 bits (a 64-bit division per
// element is slow on a GPU): no tensor they take may have more elements.
static const size_t CU_MAX_ELEMENTS = 0xffffffffu;

// Element types of tensors a kernel takes either way (passed as void *):
// fp32, fp16 (__half) or bfloat16 (__nv_bfloat16).
typedef enum { CU_FP32, CU_FP16, CU_BF16 } cu_type;

// (n, c, hw) -> (n, hw, c): the image and dropout masks into NHWC, conv
// weights OIHW -> OHWI (n = O, c = I, hw = kh kw); y of type yt (the image
// goes to half where only convs read it, under amp).
void cu_nchw_to_nhwc(size_t n, int c, int hw, const float *x, cu_type yt, void *y);
// (n, hw, c) -> (n, c, hw): conv weight gradients OHWI -> OIHW, a stage's
// output on its way out (x of type xt: half where the backend keeps it so).
void cu_nhwc_to_nchw(size_t n, int c, int hw, cu_type xt, const void *x, float *y);

void cu_relu_fwd(size_t n, const float *x, float *y);
void cu_relu_bwd(size_t n, const float *y, const float *dy, float *dx, bool add);
void cu_sigmoid_fwd(size_t n, const float *x, float *y);
void cu_sigmoid_bwd(size_t n, const float *y, const float *dy, float *dx, bool add);
void cu_add_fwd(size_t n, const float *a, const float *b, float *y);
void cu_add_bwd(size_t n, const float *dy, float *da, bool add_a, float *db, bool add_b);
void cu_mul_fwd(size_t n, const float *x, const float *mask, float *y);  // dropout
void cu_mul_bwd(size_t n, const float *mask, const float *dy, float *dx, bool add);
// x *= a (fp16 loss scaling of a stage's output gradient).
void cu_mul_scalar(size_t n, const float *a, float *x); // x *= *a (a in device memory)

// Sums over the hw positions of each (image, channel), as the SE scale's
// gradient and global pooling make them, need scratch: part, this many
// doubles (the partial sums of chunks of positions).
size_t cu_pos_part_size(int n, int hw, int c);
// SE scale: y (n, hw, c) = x (n, hw, c) * s (n, c).
void cu_scale_fwd(int n, int hw, int c, const float *x, const float *s, float *y);
void cu_scale_bwd(int n, int hw, int c, const float *x, const float *s, const float *dy, float *dx, bool add_x,
                  float *ds, bool add_s, double *part);
// Fused, the residual blocks' ends: y = max(0, x * s + sc), sc (n, hw, c);
// backward from the ReLU's output gradient dy: dx, ds (part as
// cu_scale_bwd's) and dsc += what the scale, add and ReLU would give them,
// value for value. x, sc and y of types xt, sct, yt (fp32, or the run's one
// half type where the backend keeps them so under amp: y rounded as converting the fp32 y
// would; the ReLU's mask in backward is then recomputed from x, s and sc,
// not read from the half y, which a tiny positive value underflows to 0).
void cu_scale_add_relu_fwd(int n, int hw, int c, cu_type xt, const void *x, const float *s, cu_type sct,
                           const void *sc, cu_type yt, void *y);
void cu_scale_add_relu_bwd(int n, int hw, int c, cu_type xt, const void *x, const float *s, cu_type sct,
                           const void *sc, cu_type yt, const void *y, const float *dy, float *dx, bool add_x,
                           float *ds, bool add_s, float *dsc, bool add_sc, double *part);
// Global average pooling (n, hw, c) -> (n, c); x of type xt.
void cu_gap_fwd(int n, int hw, int c, cu_type xt, const void *x, float *y, double *part);
void cu_gap_bwd(int n, int hw, int c, const float *dy, float *dx, bool add);
// One part of a channel concat: y[:, off:off + c] of y's ctot channels = x, over rows.
void cu_concat_fwd(size_t rows, int c, int ctot, int off, const float *x, float *y);
void cu_concat_bwd(size_t rows, int c, int ctot, int off, const float *dy, float *dx, bool add);
// Max pooling (n, h, w, c) -> (n, oh, ow, c) over k x k windows (stride,
// padding, dilation); padding never wins, as in the reference.
typedef struct {
    int n, h, w, c;      // the input
    int k, stride, pad, dil;
    int oh, ow;          // the output's size
} cu_pool;
// Windows up to 15 x 15: a byte records where in its window each maximum was.
static const int CU_POOL_MAX_K = 15;
// Forward: y = each window's maximum (x, y of types xt, yt: half where the
// backend keeps them so under amp; a maximum is one of the values, so half
// loses nothing more). Given arg (training: (n, oh, ow, c) bytes), it records
// the maximum's place in its window (row-major), the first of equal ones as
// the reference's backward picks it, so that backward reads neither x nor y
// (cuDNN's backward reads both, and takes one type for all four tensors).
void cu_maxpool_fwd(const cu_pool *p, cu_type xt, const void *x, cu_type yt, void *y, unsigned char *arg);
// Backward: dx (of type dxt) gets each dy at its window's maximum, adding in
// the reference's order (output positions in raster order).
void cu_maxpool_bwd(const cu_pool *p, const unsigned char *arg, const float *dy, cu_type dxt, void *dx, bool add);
// Linear bias: y (n, c) += b (c); db (c) += sum over n of dy.
void cu_bias_fwd(int n, int c, const float *b, float *y);
void cu_bias_bwd(int n, int c, const float *dy, float *db);

// BatchNorm over (rows, c), statistics per channel, in two parts each way so
// that synchronised BatchNorm (data parallelism) can add the per-channel sums
// over ranks in between: sums over this batch, then the rest from sums v over
// m values per channel (this batch's own, m = rows, or all ranks'). part:
// scratch of cu_bn_part_size(rows, c) doubles; v: 2 c doubles. Forward's
// coef (2 c floats) gets the affine map it applied, y = x coef[ch] +
// coef[c + ch]; backward's coef is scratch of 3 c floats.
// Fused with a ReLU after it: forward with relu writes max(0, y); backward
// given relu_coef (the training forward's coef; NULL: no ReLU) takes dy as
// the ReLU's output gradient, dropped where that forward's y was not
// positive (recomputed from x, not read from the ReLU's output, which may
// be half: a tiny positive y rounds to 0 there).
// x (and in backward dx) of type xt: fp32, or half where the backend keeps a
// conv's output in half (amp, only a BN reads it); a half dx is written, not
// added to (the conv's output gradient has no other writer: add false), with
// the value adding into a cleared fp32 gradient and converting would give. y (and in
// backward dy) of type yt (dyt): half where the BN's fused ReLU output is
// only a conv's input under amp (rounded as converting the fp32 y would).
size_t cu_bn_part_size(size_t rows, int c);
// Training forward, part 1: v = (sum x, sum x^2) per channel, then their
// count m = rows at v[2c] (2c + 1 doubles: sync-BN sums them over ranks).
void cu_bn_sums(size_t rows, int c, cu_type xt, const void *x, double *part, double *v);
// Part 2: normalise with mean v[ch] / m and biased variance v[c + ch] / m -
// mean^2, m = v[2c]; mean/invstd (c each) saved for backward; running stats
// updated (unbiased variance m / (m - 1), as PyTorch).
void cu_bn_global_fwd(size_t rows, int c, const double *v, cu_type xt, const void *x,
                      const float *gamma, const float *beta, cu_type yt, void *y, float *mean, float *invstd,
                      float *run_mean, float *run_var, double eps, double momentum, float *coef, bool relu);
void cu_bn_eval_fwd(size_t rows, int c, cu_type xt, const void *x, const float *gamma, const float *beta,
                    const float *run_mean, const float *run_var, cu_type yt, void *y, double eps, float *coef,
                    bool relu);
// Backward, part 1: v = (sum dy, sum dy * xhat) per channel over this batch,
// also added to dbeta and dgamma (which stay local), then m = rows at v[2c].
void cu_bn_bwd_sums(size_t rows, int c, cu_type xt, const void *x, const float *mean, const float *invstd,
                    cu_type dyt, const void *dy, const float *relu_coef, double *part, double *v, float *dgamma,
                    float *dbeta);
// Part 2: dx += gamma invstd (dy - v[ch] / m - xhat v[c + ch] / m), m = v[2c].
void cu_bn_global_bwd(size_t rows, int c, const double *v, cu_type xt, const void *x, const float *gamma,
                      const float *mean, const float *invstd, cu_type dyt, const void *dy, const float *relu_coef,
                      void *dx, bool add, float *coef);
// Sync-BN with the sums added by NCCL on the device (cuda_net.cu): the
// host path's arithmetic on device scalars, one thread each. *p = value;
// *share = w / *total; v[i] *= *a (or /= *a, divide) for i < n.
void cu_set_double(double *p, double value);
void cu_share_of(double *share, double w, const double *total);
void cu_scale_by(size_t n, double *v, const double *a, bool divide);

// ---- mixed precision (--amp) -----------------------------------------------------
// Half tensors are fp16 (__half) or, with bf16 true, bfloat16 (__nv_bfloat16),
// passed as void *. Conversions round to nearest; fp16 saturates to inf.
void cu_to_half(bool bf16, size_t n, const float *x, void *y);
// y = x, or y += x with accumulate.
void cu_from_half(bool bf16, size_t n, const void *x, float *y, bool accumulate);
// Conv weights: fp32 OIHW -> half OHWI, and half OHWI gradients -> fp32 OIHW.
void cu_weight_to_half(bool bf16, int o, int i, int kk, const float *w, void *y);
void cu_weight_from_half(bool bf16, int o, int i, int kk, const void *w, float *y);
// g *= 1 / *scale (fp16's loss scale, in device memory); *nonfinite set to 1
// where any value is inf or NaN (never reset here).
void cu_unscale(size_t n, float *g, const float *scale, int *nonfinite);

// ---- the loss: weighted cross-entropy (ref_ops' fu_ref_xent_fwd/bwd) ----------------
// Computed where the logits are, so that a training step need not wait for
// them. Forward over n images of k classes, logits (n, k): prob (n, k) the
// softmax; *loss the weighted mean as the reference returns it (in double,
// images in order, then rounded), *wsum the weights' sum (for backward),
// *hits the images whose logits' first largest is their label. terms: n
// doubles of scratch. Deterministic: one thread adds the images' terms.
void cu_xent_fwd(int n, int k, const float *logits, const int *labels, const float *w, float *prob, double *terms,
                 double *wsum, float *loss, int *hits);
// dlogits = dloss w[label] (prob - onehot) / wsum, per element as the
// reference forms it (stored, not added: 0 + v); dloss in device memory
// (fp16's loss scale), NULL for 1.
void cu_xent_bwd(int n, int k, const float *prob, const int *labels, const float *w, const double *wsum,
                 const float *dloss, float *dlogits);

#endif
