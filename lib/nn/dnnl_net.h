// The fast CPU backend ("cpu"): the op list of a fu_model executed with
// oneDNN 2.x primitives (convolution, batch normalisation with fused ReLU,
// max pooling) on channel-blocked activations (nChw16c), and small
// OpenMP loops for the rest (SE scale, global pooling, add, concat); the
// vector head after global pooling (linear, BatchNorm1d, dropout, loss)
// runs the reference ops, whose cost is negligible. Same flat buffers and
// interface as every backend (backend.h), stages of a cut model included
// (nn/stages.h: input and output in NCHW, input_grad).
#ifndef FU_NN_DNNL_NET_H
#define FU_NN_DNNL_NET_H

#include "nn/backend.h"

// Creates every primitive for o->batch images and plans the activation
// arena once; o->threads: OpenMP threads oneDNN and the loops use (set with
// omp_set_num_threads on the calling thread at each forward/backward).
// A forward on n < batch images (the last batch of an epoch) recreates the
// primitives for n, and again when the full batch returns (~0.1-1 s each);
// the arenas stay. Results are the same bytes on a rerun with the same
// thread count; between thread counts, gradients may differ in the last bits
// (oneDNN splits backward-weights reductions by thread count).
int fu_dnnl_backend_create(const fu_model *m, const fu_backend_opts *o, fu_backend **out);

#endif
