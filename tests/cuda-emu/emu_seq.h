// A faster host emulation of CUDA kernels than emu.h's, for running the
// whole backend (backend.sh): rewrite_launches.py --seq sends each launch
// of a kernel that never calls __syncthreads to emu_launch_seq, which runs
// its threads one after another on the calling thread (blocks shared out
// among OpenMP threads: such kernels' blocks are independent), and each
// launch of one that does to emu_launch_fibers, where every CUDA thread of a
// block is a fiber (a stack of its own) of the calling thread and __syncthreads
// switches to the next: a block's threads all reach the barrier before any
// goes on, blocks run one after another. emu.h starts one host thread per
// CUDA thread, and its barriers cost too much for a whole training step.
//
// Launches are serialised process-wide (one lock): several host threads (the
// test's ranks, pipeline stages, the prefetch thread) launch kernels, and the
// launch shape and a kernel's __shared__ arrays (function statics) are
// global. Every launch has finished when it returns: the device is synchronous.
//
// What it cannot show: concurrency inside a block other than at the
// barriers, warp-level behaviour, streams, the device's floating point.
#ifndef TESTS_CUDA_EMU_EMU_SEQ_H
#define TESTS_CUDA_EMU_EMU_SEQ_H

#include <cuda_runtime.h> // nccl_sync.cu calls the runtime (fake_cudart.cpp)

#include <cmath>
#include <cstddef>

#include <cuda_bf16.h> // the half types and their host conversions
#include <cuda_fp16.h>
#include <vector_types.h> // dim3

using std::isfinite; // kernels call isfinite as CUDA's device function

// Defined here, their constant initialiser in sight: a kernel reads them
// straight from thread-local storage, not through a call (which UBSan, in
// a fiber, also took for a null pointer).
inline thread_local dim3 blockIdx, threadIdx;
extern dim3 gridDim, blockDim;

#undef __global__
#define __global__
#undef __shared__
#define __shared__ static

// The kernel with its launch's arguments bound, called through one function
// type: fn(arg) runs it for the current blockIdx and threadIdx.
typedef void (*emu_call)(void *arg);
void emu_run_seq(dim3 grid, dim3 block, emu_call fn, void *arg);
void emu_run_fibers(dim3 grid, dim3 block, emu_call fn, void *arg);
void __syncthreads();

template <class Kernel> static void emu_call_kernel(void *kernel) { (*(Kernel *)kernel)(); }

template <class Kernel> void emu_launch_seq(dim3 grid, dim3 block, Kernel kernel) {
    emu_run_seq(grid, block, emu_call_kernel<Kernel>, &kernel);
}

template <class Kernel> void emu_launch_fibers(dim3 grid, dim3 block, Kernel kernel) {
    emu_run_fibers(grid, block, emu_call_kernel<Kernel>, &kernel);
}

#endif
