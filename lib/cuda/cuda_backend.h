// The GPU backend ("cuda"): the op list of a fu_model on one CUDA device with
// cuDNN convolutions and max pooling, cuBLAS linears and the kernels of
// cuda_ops.h for the rest. Built only with USE_CUDA=1 (docs/gpu.md); C
// linkage, so lib/nn/backend.c (C11) and C tests call it.
#ifndef FU_CUDA_CUDA_BACKEND_H
#define FU_CUDA_CUDA_BACKEND_H

#ifdef __cplusplus
extern "C" {
#endif

#include "cuda/nccl_sync.h"
#include "nn/backend.h"

#include <stdbool.h>
#include <stddef.h>

// Plans the device arenas for o->batch images and allocates them on GPU
// o->device, choosing every convolution's cuDNN algorithms. m: a whole model
// or a stage of one (model.h, nn/stages.h). o->amp: off (fp32), bf16 or fp16
// (convolutions in half with fp32 accumulation; fp16 with dynamic loss
// scaling inside backward). The backend takes backend.h's data-parallel hooks
// (sync-BN, grads_ready) and sets fu_backend.nccl: NCCL gradient sums on the
// device for data parallelism (nccl_sync.h). Fails with "no CUDA device: ..."
// where there is none.
int fu_cuda_backend_create(const fu_model *m, const fu_backend_opts *o, fu_backend **out);

// CUDA devices this process sees (0 with no driver or no device); `why` gets
// what the runtime answered when there are none.
int fu_cuda_device_count(char *why, size_t why_size);

// "NVIDIA H100 80GB HBM3 (sm_90, 132 SMs, 79 GiB; CUDA runtime 13.0, cuDNN
// 9.19.0)" for the current device, into out; -1 without one.
int fu_cuda_device_name(char *out, size_t size);

// With FU_CUDA_PROFILE=1 in the environment at b's creation: b's GPU time
// per training step since the last reset, by section of its work (an op
// kind's forward, cuDNN's backward-filter, the half conversions, the
// optimizer: cuda_profile.h), as lines into out; "" when profiling is off or
// b is not the cuda backend. reset: count anew from here.
void fu_cuda_profile_report(fu_backend *b, char *out, size_t size, bool reset);

// The NCCL sync attached to b (fu_nccl_api.attach), for its bucket plan;
// NULL where none is or b is not the cuda backend.
fu_nccl_sync *fu_cuda_nccl_sync(const fu_backend *b);

#ifdef __cplusplus
}
#endif

#endif
