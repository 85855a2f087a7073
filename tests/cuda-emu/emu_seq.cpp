// emu_seq.h's launches: threads in order, or as fibers meeting at barriers.
#include "emu_seq.h"

#include <mutex>
#include <stdlib.h>
#include <ucontext.h>
#include <vector>

thread_local dim3 blockIdx, threadIdx;
dim3 gridDim, blockDim;

static std::mutex launch_lock; // one launch at a time, process-wide

static dim3 index_of(unsigned i, dim3 shape) {
    return dim3(i % shape.x, i / shape.x % shape.y, i / (shape.x * shape.y));
}

void emu_run_seq(dim3 grid, dim3 block, emu_call fn, void *arg) {
    std::lock_guard<std::mutex> hold(launch_lock);
    gridDim = grid, blockDim = block;
    long blocks = (long)grid.x * grid.y * grid.z, threads = (long)block.x * block.y * block.z;
#pragma omp parallel for schedule(static) if (blocks * threads >= 65536)
    for (long b = 0; b < blocks; b++) {
        blockIdx = index_of((unsigned)b, grid);
        // threadIdx counted up, x fastest, as index_of gives it: no division per
        // thread (a launch of 65535 x 256 threads runs 16.7 M of them)
        dim3 at(0, 0, 0);
        for (long t = 0; t < threads; t++) {
            threadIdx = at;
            fn(arg);
            if (++at.x == block.x) {
                at.x = 0;
                if (++at.y == block.y) at.y = 0, at.z++;
            }
        }
    }
}

// ---- fibers ---------------------------------------------------------------------------

enum { FIBER_STACK = 256 << 10 }; // bytes: kernels are small, sanitizers' frames are not

struct fiber {
    ucontext_t ctx;
    std::vector<char> stack;
    bool done;
};

// The running launch (under launch_lock): its fibers, the one running, the
// scheduler's context, the kernel.
static std::vector<fiber> fibers;
static unsigned running;
static ucontext_t scheduler;
static emu_call kernel_fn;
static void *kernel_arg;

static void fiber_main() {
    kernel_fn(kernel_arg);
    fibers[running].done = true; // and back to the scheduler (uc_link)
}

// A thread of the running block at a barrier: back to the scheduler, which
// resumes it once every thread of the block got there (or ended).
void __syncthreads() { swapcontext(&fibers[running].ctx, &scheduler); }

// Runs thread t until its next barrier or its end. A function of its own:
// swapcontext returns twice, which no caller's loop variable must see.
__attribute__((noinline)) static void resume(unsigned t, dim3 block) {
    running = t;
    threadIdx = index_of(t, block);
    swapcontext(&scheduler, &fibers[t].ctx);
}

static ucontext_t fresh; // getcontext's once: each fiber starts as a copy (no system call per thread)

static void run_block(unsigned threads, dim3 block) {
    for (unsigned t = 0; t < threads; t++) {
        fiber &f = fibers[t];
        f.ctx = fresh;
        f.ctx.uc_stack.ss_sp = f.stack.data();
        f.ctx.uc_stack.ss_size = f.stack.size();
        f.ctx.uc_link = &scheduler;
        f.done = false;
        makecontext(&f.ctx, fiber_main, 0);
    }
    // Each round takes every thread to its next barrier, or to its end.
    for (bool left = true; left;) {
        left = false;
        for (unsigned t = 0; t < threads; t++) {
            if (fibers[t].done) continue;
            resume(t, block);
            left = left || !fibers[t].done;
        }
    }
}

void emu_run_fibers(dim3 grid, dim3 block, emu_call fn, void *arg) {
    std::lock_guard<std::mutex> hold(launch_lock);
    gridDim = grid, blockDim = block;
    kernel_fn = fn, kernel_arg = arg;
    unsigned blocks = grid.x * grid.y * grid.z, threads = block.x * block.y * block.z;
    if (fibers.empty()) getcontext(&fresh);
    if (fibers.size() < threads) {
        fibers.resize(threads);
        for (fiber &f : fibers) f.stack.resize(FIBER_STACK);
    }
    for (unsigned b = 0; b < blocks; b++) {
        blockIdx = index_of(b, grid);
        run_block(threads, block);
    }
}
