// The emulation's globals (emu.h).
#include "emu.h"

thread_local dim3 blockIdx, threadIdx;
dim3 gridDim, blockDim;
pthread_barrier_t emu_barrier;
