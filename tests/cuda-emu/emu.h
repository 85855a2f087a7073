// Host emulation of the CUDA C++ that lib/cuda/cuda_ops.cu and
// lib/cuda/cuda_optim.cu use, so that their kernels run (and are tested) on a
// machine without a GPU. run.sh rewrites each launch k<<<grid, block>>>(args)
// into emu_launch(grid, block, [&] { k(args); }) and includes this header
// first; "device memory" is host memory, the tests pass host pointers.
//
// A launch starts one host thread per thread of a block, once; every thread
// runs the kernel for each block in turn, and all of them meet at a barrier
// at the end of every block. So blocks run one after another, never
// overlapping: a block's __shared__ arrays (function statics here, one copy
// per kernel) belong to one block at a time, as on the device where each
// block has its own. __syncthreads() is that same barrier.
//
// What it cannot show: warp-level behaviour, real concurrency between
// blocks, streams, and the device's floating point (host code runs the
// host branch of every #ifdef __CUDA_ARCH__).
#ifndef TESTS_CUDA_EMU_EMU_H
#define TESTS_CUDA_EMU_EMU_H

#include <cmath>
#include <cstddef>
#include <pthread.h>
#include <thread>
#include <vector>

#include <cuda_bf16.h> // the half types and their host conversions
#include <cuda_fp16.h>
#include <vector_types.h> // dim3

using std::isfinite; // kernels call isfinite as CUDA's device function

// The built-in variables: the block and thread a host thread is running now,
// and the launch's shape.
extern thread_local dim3 blockIdx, threadIdx;
extern dim3 gridDim, blockDim;

// The barrier of the running launch: every thread of the block waits at it.
extern pthread_barrier_t emu_barrier;

#undef __global__
#define __global__
#undef __shared__
#define __shared__ static

inline void __syncthreads() { pthread_barrier_wait(&emu_barrier); }

// Runs kernel (a callable with the launch's arguments bound) over every
// block of grid with block's threads.
template <class Kernel> void emu_launch(dim3 grid, dim3 block, Kernel kernel) {
    gridDim = grid;
    blockDim = block;
    unsigned threads = block.x * block.y * block.z;
    unsigned blocks = grid.x * grid.y * grid.z;
    pthread_barrier_init(&emu_barrier, nullptr, threads);
    std::vector<std::thread> pool;
    pool.reserve(threads);
    for (unsigned t = 0; t < threads; t++) {
        pool.emplace_back([=] {
            threadIdx = dim3(t % block.x, t / block.x % block.y, t / (block.x * block.y));
            for (unsigned b = 0; b < blocks; b++) {
                blockIdx = dim3(b % grid.x, b / grid.x % grid.y, b / (grid.x * grid.y));
                kernel();
                pthread_barrier_wait(&emu_barrier); // the block is done before the next starts
            }
        });
    }
    for (std::thread &t : pool) t.join();
    pthread_barrier_destroy(&emu_barrier);
}

#endif
