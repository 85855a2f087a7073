// A fake CUDA runtime: the functions lib/cuda/*.cu call, with the real
// signatures (from cuda_runtime.h), for a process-wide synchronous "device"
// on the host. Device memory is host memory (malloc; under AddressSanitizer
// an access past a device buffer is reported, as compute-sanitizer would on
// a GPU), filled with 0xff bytes when allocated (NaN as float or double) so
// that reading what was never written shows; every copy is a memmove,
// whatever its kind; kernels run when launched (emu_seq.h), so streams and
// events are handles whose work is always complete (an event's time is the
// host's clock when it was recorded), but during a hang (below). Devices:
// FAKE_CUDA_DEVICES (default 1), all of them this one memory; the current
// device is per host thread, as CUDA's. FAKE_CUDA_FREE_MIB: what
// cudaMemGetInfo says is free (default 64 GiB, also the total), so that a
// batch too large for a GPU can be asked for.
#include <cuda_runtime.h>

#include <atomic>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

static thread_local int current_device;
static thread_local cudaError_t last_error = cudaSuccess;

static cudaError_t fail(cudaError_t e) {
    last_error = e;
    return e;
}

static int device_count() {
    const char *v = getenv("FAKE_CUDA_DEVICES");
    int n = v && *v ? atoi(v) : 1;
    return n < 0 ? 0 : n;
}

// A stream is a byte of its own, so that a leak shows.
template <class Handle> static cudaError_t new_handle(Handle *h) {
    void *p = malloc(1);
    if (!p) return fail(cudaErrorMemoryAllocation);
    *h = (Handle)p;
    return cudaSuccess;
}

extern "C" {

cudaError_t cudaGetDeviceCount(int *count) {
    *count = device_count();
    return *count ? cudaSuccess : fail(cudaErrorNoDevice);
}

cudaError_t cudaSetDevice(int device) {
    if (device < 0 || device >= device_count()) return fail(cudaErrorInvalidDevice);
    current_device = device;
    return cudaSuccess;
}

cudaError_t cudaGetDevice(int *device) {
    *device = current_device;
    return cudaSuccess;
}

cudaError_t cudaGetDeviceProperties(cudaDeviceProp *p, int device) {
    if (device < 0 || device >= device_count()) return fail(cudaErrorInvalidDevice);
    memset(p, 0, sizeof *p);
    snprintf(p->name, sizeof p->name, "host emulation of a CUDA device");
    p->major = 9, p->minor = 0;
    p->multiProcessorCount = 132;
    p->totalGlobalMem = (size_t)64 << 30;
    p->warpSize = 32;
    p->maxThreadsPerBlock = 1024;
    p->maxGridSize[0] = 0x7fffffff, p->maxGridSize[1] = p->maxGridSize[2] = 65535;
    p->maxThreadsDim[0] = p->maxThreadsDim[1] = 1024, p->maxThreadsDim[2] = 64;
    p->sharedMemPerBlock = 48 << 10;
    return cudaSuccess;
}

cudaError_t cudaRuntimeGetVersion(int *version) {
    *version = CUDART_VERSION;
    return cudaSuccess;
}

cudaError_t cudaMemGetInfo(size_t *free_bytes, size_t *total) {
    const char *v = getenv("FAKE_CUDA_FREE_MIB");
    *total = (size_t)64 << 30;
    *free_bytes = v && *v ? (size_t)atol(v) << 20 : *total;
    return cudaSuccess;
}

cudaError_t cudaDeviceCanAccessPeer(int *can, int device, int peer) {
    *can = device != peer;
    return cudaSuccess;
}

cudaError_t cudaDeviceEnablePeerAccess(int peer, unsigned int flags) { return cudaSuccess; }

cudaError_t cudaDeviceGetStreamPriorityRange(int *least, int *greatest) {
    *least = 0, *greatest = -5;
    return cudaSuccess;
}

// Calls that make the host wait for everything enqueued so far (a GPU
// drained): cudaMemcpy and cudaDeviceSynchronize. Not the asynchronous
// copies, nor an event's wait (for work enqueued before it). The tests read
// the count to show that a step never drains (test_cuda's check_kept_figures).
static long drains;
extern "C" long fake_cuda_drains(void) { return drains; }

// A hang: the fake NCCL's stand-in for a collective whose peer never comes
// (fake_nccl.c, FAKE_NCCL_HANG_AT). From fake_cuda_hang to fake_cuda_unhang
// (its ncclCommAbort), events recorded are not done, and the calls that
// wait for the device (the drains, an event's wait) wait, as they would
// behind a kernel that never ends. Called by the fake libnccl.so.2 through
// the program's exported symbols (linked -rdynamic).
static std::atomic<long> hangs{0}, unhangs{0};
extern "C" void fake_cuda_hang(void) { hangs++; }
extern "C" void fake_cuda_unhang(void) { unhangs.store(hangs.load()); }
static bool hung() { return unhangs.load() < hangs.load(); }
static void wait_unhung() {
    while (hung()) usleep(1000);
}

cudaError_t cudaDeviceSynchronize(void) {
    drains++;
    wait_unhung();
    return cudaSuccess;
}

cudaError_t cudaGetLastError(void) {
    cudaError_t e = last_error;
    last_error = cudaSuccess;
    return e;
}

const char *cudaGetErrorString(cudaError_t e) {
    switch (e) {
    case cudaSuccess: return "no error";
    case cudaErrorInvalidValue: return "invalid argument";
    case cudaErrorMemoryAllocation: return "out of memory";
    case cudaErrorNoDevice: return "no CUDA-capable device is detected";
    case cudaErrorInvalidDevice: return "invalid device ordinal";
    case cudaErrorNotReady: return "device not ready";
    default: return "unknown error (fake CUDA runtime)";
    }
}

// ---- memory ---------------------------------------------------------------------------

cudaError_t cudaMalloc(void **p, size_t bytes) {
    *p = malloc(bytes ? bytes : 1);
    if (!*p) return fail(cudaErrorMemoryAllocation);
    memset(*p, 0xff, bytes);
    return cudaSuccess;
}

cudaError_t cudaFree(void *p) {
    free(p);
    return cudaSuccess;
}

cudaError_t cudaHostAlloc(void **p, size_t bytes, unsigned int flags) {
    *p = malloc(bytes ? bytes : 1);
    return *p ? cudaSuccess : fail(cudaErrorMemoryAllocation);
}

cudaError_t cudaFreeHost(void *p) {
    free(p);
    return cudaSuccess;
}

static cudaError_t copy(void *dst, const void *src, size_t bytes) {
    if (bytes && (!dst || !src)) return fail(cudaErrorInvalidValue);
    if (bytes) memmove(dst, src, bytes);
    return cudaSuccess;
}

cudaError_t cudaMemcpy(void *dst, const void *src, size_t bytes, cudaMemcpyKind kind) {
    drains++;
    wait_unhung();
    return copy(dst, src, bytes);
}

cudaError_t cudaMemcpyAsync(void *dst, const void *src, size_t bytes, cudaMemcpyKind kind, cudaStream_t stream) {
    return copy(dst, src, bytes);
}

cudaError_t cudaMemset(void *p, int value, size_t bytes) {
    if (bytes && !p) return fail(cudaErrorInvalidValue);
    if (bytes) memset(p, value, bytes);
    return cudaSuccess;
}

cudaError_t cudaMemsetAsync(void *p, int value, size_t bytes, cudaStream_t stream) {
    return cudaMemset(p, value, bytes);
}

// ---- streams and events: all work is done when enqueued ----------------------------------

cudaError_t cudaStreamCreateWithFlags(cudaStream_t *s, unsigned int flags) { return new_handle(s); }

cudaError_t cudaStreamCreateWithPriority(cudaStream_t *s, unsigned int flags, int priority) {
    return new_handle(s);
}

cudaError_t cudaStreamDestroy(cudaStream_t s) {
    free(s);
    return cudaSuccess;
}

cudaError_t cudaStreamWaitEvent(cudaStream_t s, cudaEvent_t e, unsigned int flags) {
    return e ? cudaSuccess : fail(cudaErrorInvalidResourceHandle);
}

// An event remembers what cudaEventElapsedTime checks (its flags, whether
// it was recorded) and when it was recorded: all work before it is done
// then, so the host's clock times the work between two events.
struct fake_event {
    unsigned flags;
    bool recorded;
    double at;  // seconds, CLOCK_MONOTONIC
    long hang;  // recorded during hang number `hang` (0: none): not done until it ends
};

// The event clock: the host's, less what fake_event_clock_credit took off.
static std::atomic<double> credited{0};

extern "C" void fake_event_clock_credit(double seconds) {
    for (double c = credited.load(); !credited.compare_exchange_weak(c, c + seconds);) {
    }
}

static double now() {
    struct timespec t;
    clock_gettime(CLOCK_MONOTONIC, &t);
    return t.tv_sec + t.tv_nsec * 1e-9 - credited.load();
}

cudaError_t cudaEventCreateWithFlags(cudaEvent_t *e, unsigned int flags) {
    fake_event *f = (fake_event *)calloc(1, sizeof *f);
    if (!f) return fail(cudaErrorMemoryAllocation);
    f->flags = flags;
    *e = (cudaEvent_t)f;
    return cudaSuccess;
}

cudaError_t cudaEventCreate(cudaEvent_t *e) { return cudaEventCreateWithFlags(e, cudaEventDefault); }

cudaError_t cudaEventDestroy(cudaEvent_t e) {
    free(e);
    return cudaSuccess;
}

cudaError_t cudaEventRecord(cudaEvent_t e, cudaStream_t s) {
    if (!e) return fail(cudaErrorInvalidResourceHandle);
    fake_event *f = (fake_event *)e;
    f->recorded = true;
    f->at = now();
    f->hang = hung() ? hangs.load() : 0;
    return cudaSuccess;
}

static bool done(const fake_event *f) { return !f->hang || unhangs.load() >= f->hang; }

cudaError_t cudaEventQuery(cudaEvent_t e) {
    if (!e) return fail(cudaErrorInvalidResourceHandle);
    return done((const fake_event *)e) ? cudaSuccess : fail(cudaErrorNotReady);
}

cudaError_t cudaEventSynchronize(cudaEvent_t e) {
    if (!e) return fail(cudaErrorInvalidResourceHandle);
    while (!done((const fake_event *)e)) usleep(1000);
    return cudaSuccess;
}

// As CUDA: both events recorded, neither without timing.
cudaError_t cudaEventElapsedTime(float *ms, cudaEvent_t start, cudaEvent_t end) {
    const fake_event *a = (const fake_event *)start, *b = (const fake_event *)end;
    if (!a || !b || (a->flags | b->flags) & cudaEventDisableTiming || !a->recorded || !b->recorded)
        return fail(cudaErrorInvalidResourceHandle);
    if (!done(a) || !done(b)) return fail(cudaErrorNotReady);
    *ms = (float)((b->at - a->at) * 1e3);
    return cudaSuccess;
}

} // extern "C"
