// emu_seq.h's launches: threads in order, or as fibers meeting at barriers.
#include "emu_seq.h"

#include <memory>
#include <mutex>
#include <setjmp.h>
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

// A CUDA thread of the running block. Each lives from its first launch on,
// looping: run the kernel, park; the next block's (or launch's) turn
// resumes it at the top of its loop, so a fiber starts only once.
//
// Switches are _setjmp/_longjmp: swapcontext, which also saves and restores
// the signal mask, makes a system call at each (two per thread per barrier:
// a sixth of backend.sh's time). ucontext starts a fiber on its stack, and
// under AddressSanitizer does every switch, as ASan follows swapcontext's
// stacks and not longjmp's.
#if defined(__SANITIZE_ADDRESS__)
#define SWITCH_BY_UCONTEXT 1
#else
#define SWITCH_BY_UCONTEXT 0
#endif

struct fiber {
    std::vector<char> stack;
    ucontext_t ctx; // its start
    jmp_buf at;     // where it parked
    bool started, done;
};

// The running launch (under launch_lock): its fibers, the one running, the
// scheduler's place, the kernel.
static std::vector<std::unique_ptr<fiber>> fibers; // (pointers: a ucontext_t must not move)
static unsigned running;
#if SWITCH_BY_UCONTEXT
static ucontext_t scheduler_ctx;
#else
static jmp_buf scheduler_at;
#endif
static emu_call kernel_fn;
static void *kernel_arg;

// From the running fiber back to the scheduler, until resumed.
static void park() {
    fiber &f = *fibers[running];
#if SWITCH_BY_UCONTEXT
    swapcontext(&f.ctx, &scheduler_ctx);
#else
    if (!_setjmp(f.at)) _longjmp(scheduler_at, 1);
#endif
}

static void fiber_main() {
    for (;;) {
        kernel_fn(kernel_arg);
        fibers[running]->done = true;
        park();
    }
}

// A thread of the running block at a barrier: back to the scheduler, which
// resumes it once every thread of the block got there (or ended).
void __syncthreads() { park(); }

// Runs thread t until its next barrier or its end. A function of its own:
// _setjmp (and swapcontext) return twice, which no caller's loop variable
// must see.
__attribute__((noinline)) static void resume(unsigned t, dim3 block) {
    fiber &f = *fibers[t];
    running = t;
    threadIdx = index_of(t, block);
#if SWITCH_BY_UCONTEXT
    swapcontext(&scheduler_ctx, &f.ctx);
#else
    if (_setjmp(scheduler_at)) return;
    if (f.started) _longjmp(f.at, 1);
    f.started = true;
    setcontext(&f.ctx);
#endif
}

static void run_block(unsigned threads, dim3 block) {
    for (unsigned t = 0; t < threads; t++) fibers[t]->done = false;
    // Each round takes every thread to its next barrier, or to its end.
    for (bool left = true; left;) {
        left = false;
        for (unsigned t = 0; t < threads; t++) {
            if (fibers[t]->done) continue;
            resume(t, block);
            left = left || !fibers[t]->done;
        }
    }
}

void emu_run_fibers(dim3 grid, dim3 block, emu_call fn, void *arg) {
    std::lock_guard<std::mutex> hold(launch_lock);
    gridDim = grid, blockDim = block;
    kernel_fn = fn, kernel_arg = arg;
    unsigned blocks = grid.x * grid.y * grid.z, threads = block.x * block.y * block.z;
    while (fibers.size() < threads) {
        fiber *f = new fiber();
        f->stack.resize(FIBER_STACK);
        getcontext(&f->ctx);
        f->ctx.uc_stack.ss_sp = f->stack.data();
        f->ctx.uc_stack.ss_size = f->stack.size();
        f->ctx.uc_link = NULL; // fiber_main never returns
        makecontext(&f->ctx, fiber_main, 0);
        fibers.emplace_back(f);
    }
    for (unsigned b = 0; b < blocks; b++) {
        blockIdx = index_of(b, grid);
        run_block(threads, block);
    }
}
