// emu_seq.h's launches: threads in order, or as fibers meeting at barriers.
#include "emu_seq.h"

#include <memory>
#include <mutex>
#include <setjmp.h>
#include <stdlib.h>
#include <ucontext.h>
#include <vector>

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
// resumes it at the top of its loop, so a fiber starts only once
// (makecontext and setcontext). Switches are _setjmp/_longjmp: swapcontext,
// which also saves and restores the signal mask, made a system call at each
// (two per thread per barrier: a sixth of backend.sh's time).
struct fiber {
    std::vector<char> stack;
    ucontext_t start; // where it starts
    jmp_buf at;       // where it parked
    bool started, done;
    void *asan_fake_stack; // (AddressSanitizer's, below)
};

// The running launch (under launch_lock): its fibers, the one running, the
// scheduler's place, the kernel.
static std::vector<std::unique_ptr<fiber>> fibers; // (pointers: a ucontext_t must not move)
static unsigned running;
static jmp_buf scheduler_at;
static emu_call kernel_fn;
static void *kernel_arg;

// AddressSanitizer keeps a shadow of the stack it runs on: told of each
// switch (before it, the stack to come; after, the one left), it checks the
// fibers' stacks as any other, with no false reports.
#if defined(__SANITIZE_ADDRESS__)
#include <sanitizer/common_interface_defs.h>
static void *scheduler_fake_stack;
static const void *scheduler_bottom;
static size_t scheduler_size;
#define TO_FIBER(f) __sanitizer_start_switch_fiber(&scheduler_fake_stack, (f).stack.data(), (f).stack.size())
#define IN_FIBER(f) __sanitizer_finish_switch_fiber((f).asan_fake_stack, &scheduler_bottom, &scheduler_size)
#define TO_SCHEDULER(f) __sanitizer_start_switch_fiber(&(f).asan_fake_stack, scheduler_bottom, scheduler_size)
#define IN_SCHEDULER() __sanitizer_finish_switch_fiber(scheduler_fake_stack, NULL, NULL)
#else
#define TO_FIBER(f)
#define IN_FIBER(f)
#define TO_SCHEDULER(f)
#define IN_SCHEDULER()
#endif

// From the running fiber back to the scheduler, until resumed.
static void park() {
    fiber &f = *fibers[running];
    TO_SCHEDULER(f);
    if (!_setjmp(f.at)) _longjmp(scheduler_at, 1);
    IN_FIBER(*fibers[running]);
}

static void fiber_main() {
    IN_FIBER(*fibers[running]);
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
// _setjmp returns twice, which no caller's loop variable must see.
__attribute__((noinline)) static void resume(unsigned t, dim3 block) {
    fiber &f = *fibers[t];
    running = t;
    threadIdx = index_of(t, block);
    if (_setjmp(scheduler_at)) {
        IN_SCHEDULER();
        return;
    }
    TO_FIBER(f);
    if (f.started) _longjmp(f.at, 1);
    f.started = true;
    setcontext(&f.start);
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
        getcontext(&f->start);
        f->start.uc_stack.ss_sp = f->stack.data();
        f->start.uc_stack.ss_size = f->stack.size();
        f->start.uc_link = NULL; // fiber_main never returns
        makecontext(&f->start, fiber_main, 0);
        fibers.emplace_back(f);
    }
    for (unsigned b = 0; b < blocks; b++) {
        blockIdx = index_of(b, grid);
        run_block(threads, block);
    }
}
