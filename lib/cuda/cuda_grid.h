// The launch shape of the cuda backend's element-wise kernels (cuda_ops.cu,
// cuda_optim.cu): THREADS a block, one thread an element up to MAX_BLOCKS
// blocks, and past that a grid-stride loop (FOR_EACH), each thread taking
// every gridDim.x * blockDim.x-th element.
//
// The host emulation (tests/cuda-emu/backend.sh) builds with a lower cap,
// FU_CU_MAX_BLOCKS=256: it runs a launch's threads one after another, and
// at a thread an element its per-thread costs (a call, the kernel's
// arguments copied, its set-up) outweighed the work in the big launches
// (AdamW over 22.5 M parameters: backend.sh took 9.0 minutes on two idle
// cores, 7.1 with the cap). The loops compute the same values however
// many elements a thread takes, and the emulated runs then take the
// grid-stride path from 65 536 elements on, as the GPU does from 16.8 M
// (MedicalCNN's activations at batch 256 take it).
#ifndef FU_CUDA_GRID_H
#define FU_CUDA_GRID_H

#include <stddef.h>

#ifndef FU_CU_MAX_BLOCKS
#define FU_CU_MAX_BLOCKS 65535
#endif

static const int THREADS = 256;
static const size_t MAX_BLOCKS = FU_CU_MAX_BLOCKS;

static unsigned blocks_for(size_t n) {
    size_t b = (n + THREADS - 1) / THREADS;
    return (unsigned)(b < 1 ? 1 : b > MAX_BLOCKS ? MAX_BLOCKS : b);
}

#define FOR_EACH(i, n) for (size_t i = blockIdx.x * (size_t)blockDim.x + threadIdx.x; i < (n); i += (size_t)gridDim.x * blockDim.x)

#endif
