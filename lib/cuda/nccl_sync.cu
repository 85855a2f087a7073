// Bucketed, overlapped gradient allreduce on the GPU with NCCL (nccl_sync.h).
#include "cuda/nccl_sync.h"

extern "C" {
#include "core/error.h"
#include "core/progress.h" // fu_now
}

#include <cuda_runtime.h>
#include <dlfcn.h>
#include <nccl.h>
#include <pthread.h>
#include <sched.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

static const double DEFAULT_TIMEOUT = 30; // seconds; FU_NCCL_TIMEOUT overrides

// ---- the library, loaded at run time ------------------------------------------------

// The NCCL calls used, resolved from libnccl.so.2 (2.14 or later: the
// non-blocking communicator and ncclCommFinalize).
typedef struct {
    decltype(&ncclGetUniqueId) get_unique_id;
    decltype(&ncclCommInitRankConfig) init_rank_config;
    decltype(&ncclCommGetAsyncError) async_error;
    decltype(&ncclCommAbort) abort;
    decltype(&ncclCommFinalize) finalize;
    decltype(&ncclCommDestroy) destroy;
    decltype(&ncclAllReduce) all_reduce;
    decltype(&ncclGetErrorString) error_string;
    decltype(&ncclGetLastError) last_error;
    decltype(&ncclGetVersion) version;
} nccl_lib;

static nccl_lib lib;
static bool lib_loaded;
static char lib_why[256];
static pthread_once_t lib_once = PTHREAD_ONCE_INIT;

static bool resolve(void *h, void **fn, const char *name) {
    *fn = dlsym(h, name);
    if (!*fn) snprintf(lib_why, sizeof lib_why, "libnccl.so.2 has no %s (NCCL 2.14 or later is needed)", name);
    return *fn != NULL;
}

static void load_lib(void) {
    void *h = dlopen("libnccl.so.2", RTLD_NOW | RTLD_LOCAL);
    if (!h) {
        snprintf(lib_why, sizeof lib_why, "%s", dlerror());
        return;
    }
    lib_loaded = resolve(h, (void **)&lib.get_unique_id, "ncclGetUniqueId") &&
                 resolve(h, (void **)&lib.init_rank_config, "ncclCommInitRankConfig") &&
                 resolve(h, (void **)&lib.async_error, "ncclCommGetAsyncError") &&
                 resolve(h, (void **)&lib.abort, "ncclCommAbort") &&
                 resolve(h, (void **)&lib.finalize, "ncclCommFinalize") &&
                 resolve(h, (void **)&lib.destroy, "ncclCommDestroy") &&
                 resolve(h, (void **)&lib.all_reduce, "ncclAllReduce") &&
                 resolve(h, (void **)&lib.error_string, "ncclGetErrorString") &&
                 resolve(h, (void **)&lib.last_error, "ncclGetLastError") &&
                 resolve(h, (void **)&lib.version, "ncclGetVersion");
}

static int load(void) {
    pthread_once(&lib_once, load_lib);
    if (lib_loaded) return 0;
    fu_fail("NCCL", "cannot load libnccl.so.2: %s", lib_why);
    fu_hint("install NCCL (or pip's nvidia-nccl wheel) where the loader finds it, or sum gradients through MPI: "
            "--allreduce mpi");
    return -1;
}

// ---- the sync ---------------------------------------------------------------------------

typedef struct {
    size_t off, len; // floats of the buffer
    size_t left;     // floats not yet reported this pass
    bool started, early;
    cudaEvent_t ready; // on the compute stream: the bucket's last write
} bucket;

struct fu_nccl_sync {
    int rank, size, device;
    ncclComm_t comm;   // NULL once aborted
    cudaStream_t stream; // the NCCL stream: non-blocking, high priority
    float *grads;      // (n) on the device
    size_t n;
    bucket *b;
    int nb, started;
    bool in_end;       // fu_nccl_sync_end is starting the rest (not early)
    double scale, timeout;
    char err[384];     // the first failure of fu_nccl_sync_ready, reported by end
    cudaEvent_t first, last, backward_done; // timing: first bucket's start, last one's end, backward's end
    cudaEvent_t done;  // the NCCL stream's last work (waits)
    cudaEvent_t flag_set; // the compute stream's fp16 overflow flag (fu_nccl_sync_max)
    fu_grad_sync_stats st;
};

// The backend's stream: the legacy default stream, where cuda_ops.h, cuDNN
// and cuBLAS run (this file is compiled with the same nvcc flags).
static const cudaStream_t COMPUTE = 0;

// "NCCL: what: unhandled system error (NCCL's last message)" as the error.
static int nccl_fail(fu_nccl_sync *s, const char *what, ncclResult_t r) {
    const char *detail = s && s->comm ? lib.last_error(s->comm) : "";
    return fu_fail("NCCL", "rank %d: %s: %s%s%s%s", s ? s->rank : 0, what, lib.error_string(r),
                   detail && *detail ? " (" : "", detail ? detail : "", detail && *detail ? ")" : "");
}

// Ends the communicator after an error or a timeout: its kernels stop
// instead of waiting for ever for a rank that is gone. Later calls fail.
static void abort_comm(fu_nccl_sync *s) {
    if (!s->comm) return;
    lib.abort(s->comm);
    s->comm = NULL;
}

// One step of a wait: fails (after aborting) on an asynchronous NCCL error or
// when t0 is more than the timeout ago.
static int still_ok(fu_nccl_sync *s, double t0, const char *what) {
    ncclResult_t state = ncclSuccess, r = lib.async_error(s->comm, &state);
    if (r != ncclSuccess || (state != ncclSuccess && state != ncclInProgress)) {
        nccl_fail(s, what, r != ncclSuccess ? r : state);
        abort_comm(s);
        return -1;
    }
    if (fu_now() - t0 > s->timeout) {
        fu_fail("NCCL", "rank %d: %s: no progress in %.0f s: a rank died or hangs; communicator aborted", s->rank, what,
                s->timeout);
        fu_hint("FU_NCCL_TIMEOUT=seconds sets the limit; NCCL_DEBUG=WARN shows what NCCL saw");
        abort_comm(s);
        return -1;
    }
    return 0;
}

// Gives the CPU away while waiting: yields first (short waits stay short),
// then sleeps 50 us per poll.
static void pause_poll(long polls) {
    if (polls < 1000) sched_yield();
    else usleep(50);
}

// A non-blocking communicator's call returned ncclInProgress: polls until it
// has finished (init, finalize; a collective's enqueueing), within the timeout.
static int settle(fu_nccl_sync *s, const char *what) {
    double t0 = fu_now();
    for (long polls = 0;; polls++) {
        ncclResult_t state = ncclInProgress;
        if (!s->comm) return fu_fail("NCCL", "rank %d: %s: the communicator was aborted", s->rank, what);
        ncclResult_t r = lib.async_error(s->comm, &state);
        if (r == ncclSuccess && state == ncclSuccess) return 0;
        if (still_ok(s, t0, what) < 0) return -1;
        pause_poll(polls);
    }
}

// A call on the communicator: its result, settled when in progress.
static int nccl_call(fu_nccl_sync *s, ncclResult_t r, const char *what) {
    if (r == ncclInProgress) return settle(s, what);
    if (r != ncclSuccess) {
        nccl_fail(s, what, r);
        abort_comm(s);
        return -1;
    }
    return 0;
}

// Waits on the host for ev (recorded on the NCCL stream), watching NCCL's
// error state and the clock. (A stream made to wait for a kernel that never
// ends would hang the next cudaMemcpy for ever; this loop can give up.)
static int wait_event(fu_nccl_sync *s, cudaEvent_t ev, const char *what) {
    double t0 = fu_now();
    for (long polls = 0;; polls++) {
        cudaError_t e = cudaEventQuery(ev);
        if (e == cudaSuccess) return 0;
        if (e != cudaErrorNotReady) {
            abort_comm(s);
            return fu_fail("NCCL", "rank %d: %s: %s", s->rank, what, cudaGetErrorString(e));
        }
        cudaGetLastError(); // "not ready" is no error: clear it, or the backend's next check would report it
        if (!s->comm) return fu_fail("NCCL", "rank %d: %s: the communicator was aborted", s->rank, what);
        if (still_ok(s, t0, what) < 0) return -1;
        pause_poll(polls);
    }
}

#define CUDA_TRY(call, what)                                                                                \
    do {                                                                                                    \
        cudaError_t e_ = (call);                                                                            \
        if (e_ != cudaSuccess) return fu_fail("NCCL", "rank %d: %s: %s", s->rank, what, cudaGetErrorString(e_)); \
    } while (0)

static double timeout_from_env(void) {
    const char *v = getenv("FU_NCCL_TIMEOUT");
    char *end;
    double t = v ? strtod(v, &end) : 0;
    return v && end != v && *end == '\0' && t > 0 ? t : DEFAULT_TIMEOUT;
}

// Buckets of `per` floats from the end of the buffer, as grad_sync's.
static int plan_buckets(fu_nccl_sync *s, size_t bucket_bytes) {
    size_t per = bucket_bytes / sizeof(float), n = s->n;
    if (per < 1) per = 1;
    s->nb = n ? (int)((n + per - 1) / per) : 0;
    s->b = (bucket *)fu_calloc(s->nb ? (size_t)s->nb : 1, sizeof *s->b);
    if (!s->b) return -1;
    for (int k = 0; k < s->nb; k++) {
        size_t end = n - (size_t)k * per;
        s->b[k].len = end < per ? end : per;
        s->b[k].off = end - s->b[k].len;
        CUDA_TRY(cudaEventCreateWithFlags(&s->b[k].ready, cudaEventDisableTiming), "creating events");
    }
    return 0;
}

static int make_stream_and_events(fu_nccl_sync *s) {
    int least, greatest;
    CUDA_TRY(cudaSetDevice(s->device), "selecting the GPU");
    CUDA_TRY(cudaDeviceGetStreamPriorityRange(&least, &greatest), "stream priorities");
    // Non-blocking: the legacy default stream, where backward runs, would
    // otherwise wait for every allreduce (and they for it). High priority:
    // NCCL's few blocks get SMs between backward's kernels.
    CUDA_TRY(cudaStreamCreateWithPriority(&s->stream, cudaStreamNonBlocking, greatest), "creating the NCCL stream");
    CUDA_TRY(cudaEventCreate(&s->first), "creating events");
    CUDA_TRY(cudaEventCreate(&s->last), "creating events");
    CUDA_TRY(cudaEventCreate(&s->backward_done), "creating events");
    CUDA_TRY(cudaEventCreateWithFlags(&s->done, cudaEventDisableTiming), "creating events");
    CUDA_TRY(cudaEventCreateWithFlags(&s->flag_set, cudaEventDisableTiming), "creating events");
    return 0;
}

// Every rank's ok into one answer: fails on every rank when one failed (its
// own message kept where it is the one).
static int agree(fu_comm *c, bool ok, const char *stage) {
    int first = fu_comm_first_failure(c, ok);
    if (first < 0) return 0;
    if (ok) fu_fail("NCCL", "rank %d could not %s", first, stage);
    return -1;
}

// rank 0's id to every rank, then the communicator (non-blocking, waited
// for within the timeout).
static int init_comm(fu_nccl_sync *s, fu_comm *c) {
    ncclUniqueId id;
    memset(&id, 0, sizeof id);
    bool ok = true;
    if (c->rank == 0) {
        ncclResult_t r = lib.get_unique_id(&id);
        if (r != ncclSuccess) {
            nccl_fail(s, "ncclGetUniqueId", r);
            ok = false;
        }
    }
    if (agree(c, ok, "make NCCL's unique id") < 0 || fu_comm_bcast(c, &id, sizeof id, 0) < 0) return -1;
    ncclConfig_t cfg = NCCL_CONFIG_INITIALIZER;
    cfg.blocking = 0;
    ncclResult_t r = lib.init_rank_config(&s->comm, c->size, id, c->rank, &cfg);
    if (r != ncclSuccess && r != ncclInProgress) {
        nccl_fail(s, "ncclCommInitRankConfig", r);
        if (s->comm) abort_comm(s);
        return -1;
    }
    return settle(s, "initialising the communicator");
}

int fu_nccl_sync_create(fu_comm *c, int device, float *grads, size_t n, size_t bucket_bytes, fu_nccl_sync **out) {
    *out = NULL;
    fu_nccl_sync *s = (fu_nccl_sync *)fu_calloc(1, sizeof *s);
    if (!s) return -1;
    s->rank = c->rank, s->size = c->size, s->device = device;
    s->grads = grads, s->n = n;
    s->scale = 1;
    s->timeout = timeout_from_env();
    // Every rank learns whether all can go on before any waits in the
    // collective initialisation for one that cannot.
    bool ok = load() == 0 && make_stream_and_events(s) == 0 && plan_buckets(s, bucket_bytes) == 0;
    if (agree(c, ok, "set up NCCL") < 0) {
        fu_nccl_sync_free(s);
        return -1;
    }
    ok = init_comm(s, c) == 0;
    if (agree(c, ok, "create its NCCL communicator") < 0) {
        fu_nccl_sync_free(s);
        return -1;
    }
    s->st.buckets = s->nb;
    s->st.mb_per_step = (double)n * sizeof(float) / 1e6;
    *out = s;
    return 0;
}

void fu_nccl_sync_free(fu_nccl_sync *s) {
    if (!s) return;
    cudaSetDevice(s->device);
    // Finalize flushes the communicator's work; where a peer is gone it
    // fails or times out, and the communicator is aborted instead.
    if (s->comm && nccl_call(s, lib.finalize(s->comm), "finalising the communicator") == 0) {
        lib.destroy(s->comm);
        s->comm = NULL;
    }
    for (int k = 0; s->b && k < s->nb; k++)
        if (s->b[k].ready) cudaEventDestroy(s->b[k].ready);
    cudaEvent_t ev[] = {s->first, s->last, s->backward_done, s->done, s->flag_set};
    for (size_t i = 0; i < sizeof ev / sizeof *ev; i++)
        if (ev[i]) cudaEventDestroy(ev[i]);
    if (s->stream) cudaStreamDestroy(s->stream);
    free(s->b);
    free(s);
}

void fu_nccl_sync_set_scale(fu_nccl_sync *s, double scale) { s->scale = scale; }

void fu_nccl_sync_begin(fu_nccl_sync *s) {
    s->started = 0;
    s->in_end = false;
    s->err[0] = '\0';
    for (int k = 0; k < s->nb; k++) s->b[k].left = s->b[k].len, s->b[k].started = s->b[k].early = false;
}

static __global__ void scale_kernel(float *v, size_t n, float a) {
    for (size_t i = blockIdx.x * (size_t)blockDim.x + threadIdx.x; i < n; i += (size_t)gridDim.x * blockDim.x) v[i] *= a;
}

// The bucket's allreduce on the NCCL stream, after the compute stream's
// writes of it: wait, (scale), sum in place.
static int start(fu_nccl_sync *s, bucket *b) {
    if (!s->comm) return fu_fail("NCCL", "rank %d: the communicator was aborted", s->rank);
    float *v = s->grads + b->off; // (len)
    CUDA_TRY(cudaEventRecord(b->ready, COMPUTE), "recording a bucket's event");
    CUDA_TRY(cudaStreamWaitEvent(s->stream, b->ready, 0), "waiting for a bucket's event");
    if (s->started++ == 0) CUDA_TRY(cudaEventRecord(s->first, s->stream), "recording the start");
    b->started = true;
    b->early = !s->in_end;
    if (s->scale != 1.0) {
        unsigned blocks = (unsigned)((b->len + 255) / 256 < 1024 ? (b->len + 255) / 256 : 1024);
        scale_kernel<<<blocks, 256, 0, s->stream>>>(v, b->len, (float)s->scale);
        CUDA_TRY(cudaGetLastError(), "scaling a bucket by the rank's share");
    }
    return nccl_call(s, lib.all_reduce(v, v, b->len, ncclFloat, ncclSum, s->comm, s->stream),
                     "ncclAllReduce of a gradient bucket");
}

void fu_nccl_sync_ready(fu_nccl_sync *s, size_t off, size_t len) {
    size_t end = off + len;
    for (int k = 0; k < s->nb && !s->err[0]; k++) {
        bucket *b = &s->b[k];
        size_t lo = off > b->off ? off : b->off, hi = end < b->off + b->len ? end : b->off + b->len;
        if (lo >= hi) continue;
        b->left -= hi - lo;
        if (b->left == 0 && !b->started && start(s, b) < 0) snprintf(s->err, sizeof s->err, "%s", fu_error());
    }
}

static double elapsed(cudaEvent_t a, cudaEvent_t b) {
    float ms = 0;
    return cudaEventElapsedTime(&ms, a, b) == cudaSuccess ? ms / 1e3 : 0;
}

int fu_nccl_sync_end(fu_nccl_sync *s) {
    if (s->err[0]) {
        // This rank stops here; the others time out in their wait.
        fu_set_error(s->err, NULL);
        abort_comm(s);
        return -1;
    }
    CUDA_TRY(cudaEventRecord(s->backward_done, COMPUTE), "recording the end of backward");
    // Every rank starts the same buckets in the same order: those reported
    // complete (in report order, the same on every rank), then the rest.
    s->in_end = true;
    for (int k = 0; k < s->nb; k++)
        if (!s->b[k].started && start(s, &s->b[k]) < 0) return -1;
    if (!s->started) return 0; // an empty buffer
    CUDA_TRY(cudaEventRecord(s->last, s->stream), "recording the end");
    if (wait_event(s, s->last, "waiting for the gradient allreduce") < 0) return -1;
    // cudaEventElapsedTime fails with "not ready" unless both events are
    // complete, and backward_done is on the compute stream, which `last` does
    // not wait for when every bucket started early. That stream never waits
    // for NCCL, so this cannot hang on a rank that is gone.
    CUDA_TRY(cudaEventSynchronize(s->backward_done), "waiting for the end of backward");
    double exposed = elapsed(s->backward_done, s->last);
    s->st.seconds += elapsed(s->first, s->last);
    s->st.exposed += exposed > 0 ? exposed : 0;
    return 0;
}

int fu_nccl_sync_max(fu_nccl_sync *s, int *dev_value) {
    if (!s->comm) return fu_fail("NCCL", "rank %d: the communicator was aborted", s->rank);
    CUDA_TRY(cudaEventRecord(s->flag_set, COMPUTE), "recording an event");
    CUDA_TRY(cudaStreamWaitEvent(s->stream, s->flag_set, 0), "waiting for an event");
    if (nccl_call(s, lib.all_reduce(dev_value, dev_value, 1, ncclInt32, ncclMax, s->comm, s->stream),
                  "ncclAllReduce of the fp16 overflow flag") < 0)
        return -1;
    CUDA_TRY(cudaEventRecord(s->done, s->stream), "recording an event");
    return wait_event(s, s->done, "agreeing on an fp16 overflow");
}

fu_grad_sync_stats fu_nccl_sync_stats_of(const fu_nccl_sync *s) { return s->st; }

static int cmp_double(const void *a, const void *b) {
    double x = *(const double *)a, y = *(const double *)b;
    return (x > y) - (x < y);
}

// One blocking allreduce of tmp (n floats), timed on the host after a
// one-float allreduce that every rank must reach first.
static int time_allreduce(fu_nccl_sync *s, float *tmp, double *seconds) {
    if (nccl_call(s, lib.all_reduce(tmp, tmp, 1, ncclFloat, ncclSum, s->comm, s->stream), "ncclAllReduce") < 0)
        return -1;
    CUDA_TRY(cudaEventRecord(s->done, s->stream), "recording an event");
    if (wait_event(s, s->done, "calibrating the allreduce") < 0) return -1;
    double t0 = fu_now();
    if (nccl_call(s, lib.all_reduce(tmp, tmp, s->n, ncclFloat, ncclSum, s->comm, s->stream), "ncclAllReduce") < 0)
        return -1;
    CUDA_TRY(cudaEventRecord(s->done, s->stream), "recording an event");
    if (wait_event(s, s->done, "calibrating the allreduce") < 0) return -1;
    *seconds = fu_now() - t0;
    return 0;
}

int fu_nccl_sync_calibrate(fu_nccl_sync *s, int reps, double *seconds) {
    *seconds = 0;
    if (reps < 1 || !s->n) return 0;
    if (!s->comm) return fu_fail("NCCL", "rank %d: the communicator was aborted", s->rank);
    CUDA_TRY(cudaSetDevice(s->device), "selecting the GPU");
    float *tmp = NULL;
    double *t = (double *)fu_calloc((size_t)reps, sizeof *t);
    if (!t) return -1;
    cudaError_t e = cudaMalloc((void **)&tmp, s->n * sizeof(float));
    if (e == cudaSuccess) e = cudaMemsetAsync(tmp, 0, s->n * sizeof(float), s->stream);
    int rc = e == cudaSuccess ? 0 : fu_fail("NCCL", "rank %d: a scratch buffer of %zu floats: %s", s->rank, s->n,
                                            cudaGetErrorString(e));
    for (int r = 0; r < reps && rc == 0; r++) rc = time_allreduce(s, tmp, &t[r]);
    qsort(t, (size_t)reps, sizeof *t, cmp_double);
    if (rc == 0) *seconds = t[reps / 2];
    if (tmp) cudaFree(tmp); // after the waits: nothing of the stream uses it any more
    free(t);
    return rc;
}

int fu_nccl_sync_plan(const fu_nccl_sync *s, fu_nccl_bucket *out, int max) {
    for (int k = 0; k < s->nb && k < max; k++) {
        out[k].off = s->b[k].off;
        out[k].len = s->b[k].len;
        out[k].early = s->b[k].early;
    }
    return s->nb;
}
