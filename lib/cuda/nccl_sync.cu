// Bucketed, overlapped gradient allreduce on the GPU with NCCL (nccl_sync.h).
#include "cuda/nccl_sync.h"

extern "C" {
#include "core/error.h"
#include "core/progress.h" // fu_now
}

#include <cuda_runtime.h>
#include <dlfcn.h>
#include <math.h>
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

// A backward pass's timing: its first bucket's start (on the NCCL stream),
// backward's end (on the compute stream).
typedef struct {
    cudaEvent_t first, ended;
} pass_events;

// Work on the NCCL stream that the host does not wait for: a backward
// pass's sum, the fp16 flag's max, sync-BN's sums, a calibration. The
// compute stream waits for `done` instead, and the watchdog thread watches
// it.
typedef struct {
    cudaEvent_t done;         // on the NCCL stream: the work's end
    const pass_events *pass;  // a backward pass's sum: booked into the stats when done (else NULL)
    double since;             // fu_now() when it was enqueued
    const char *what;         // for the message
} watched;
// The ring: works in flight the host may run ahead of the NCCL stream. A
// step with sync-BN makes one per training BatchNorm in forward and in
// backward (86 for MedicalCNN's 43), and the host runs a step or two ahead of
// the GPU: so that it never waits for the watchdog's next look (every 5 ms
// while work is in flight), the ring holds more than two such steps.
enum { WATCHED = 256 };

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
    cudaEvent_t flag_set; // the compute stream's values to reduce (fu_nccl_sync_max, _sum)
    // Shared with the watchdog thread, under `lock`: the communicator (NCCL
    // forbids concurrent calls on one: every call takes the lock), the ring
    // [tail, head), the stats, and the watchdog's verdict.
    pthread_mutex_t lock;
    pthread_cond_t changed; // work enqueued or done, a failure, stop
    bool have_lock, dog_up, stop;
    pthread_t dog;
    watched ring[WATCHED];
    long head, tail;   // ring[head % WATCHED]: the next work's (claimed by claim())
    // Passes' events, one more than the ring holds works: a pass's are
    // reused only once its sum (a work WATCHED + 1 works back) is done.
    pass_events passes[WATCHED + 1];
    long pass;         // passes[pass % (WATCHED + 1)]: this backward pass's
    cudaEvent_t calibration; // the start of a calibration's timed allreduce
    double progress;   // fu_now() when the watchdog last saw work done
    bool fired;        // the watchdog gave up: why (and hint) say why; the communicator is aborted
    char why[384], hint[160];
    fu_grad_sync_stats st;
};

// The backend's stream: the legacy default stream, where cuda_ops.h, cuDNN
// and cuBLAS run (this file is compiled with the same nvcc flags).
static const cudaStream_t COMPUTE = 0;

// ---- the communicator, under the lock -----------------------------------------------

static void lock(fu_nccl_sync *s) { pthread_mutex_lock(&s->lock); }
static void unlock(fu_nccl_sync *s) { pthread_mutex_unlock(&s->lock); }

// Ends the communicator after an error or a timeout: its kernels stop
// instead of waiting for ever for a rank that is gone. Later calls fail.
static void abort_comm(fu_nccl_sync *s) {
    if (!s->comm) return;
    lib.abort(s->comm);
    s->comm = NULL;
}

// "rank R: what: unhandled system error (NCCL's last message)" into why.
static void describe(fu_nccl_sync *s, const char *what, ncclResult_t r, char *why, size_t size) {
    const char *detail = s->comm ? lib.last_error(s->comm) : "";
    bool more = detail && *detail;
    snprintf(why, size, "rank %d: %s: %s%s%s%s", s->rank, what, lib.error_string(r), more ? " (" : "",
             more ? detail : "", more ? ")" : "");
}

static const char TIMEOUT_HINT[] = "FU_NCCL_TIMEOUT=seconds sets the limit; NCCL_DEBUG=WARN shows what NCCL saw";

// Whether the communicator is past saving: aborted already, an
// asynchronous NCCL error, or no progress since `since` for longer than the
// timeout. Then it is aborted, why says why and *hint may add a hint.
static bool gone(fu_nccl_sync *s, double since, const char *what, char *why, size_t size, const char **hint) {
    *hint = NULL;
    if (!s->comm) {
        snprintf(why, size, "rank %d: %s: the communicator was aborted", s->rank, what);
        return true;
    }
    ncclResult_t state = ncclSuccess, r = lib.async_error(s->comm, &state);
    if (r != ncclSuccess || (state != ncclSuccess && state != ncclInProgress)) {
        describe(s, what, r != ncclSuccess ? r : state, why, size);
    } else if (fu_now() - since > s->timeout) {
        snprintf(why, size, "rank %d: %s: no progress in %.0f s: a rank died or hangs; communicator aborted", s->rank,
                 what, s->timeout);
        *hint = TIMEOUT_HINT;
    } else {
        return false;
    }
    abort_comm(s);
    return true;
}

// why (and a hint, NULL or empty for none) as this thread's error.
static int fail_with(const char *why, const char *hint) {
    fu_fail("NCCL", "%s", why);
    if (hint && *hint) fu_hint("%s", hint);
    return -1;
}

// The watchdog's verdict as this thread's error (s->why is final once
// s->fired was seen set under the lock).
static int fired_error(const fu_nccl_sync *s) { return fail_with(s->why, s->hint); }

// Under the lock: whether the communicator may be called (else the error).
static int usable(fu_nccl_sync *s, const char *what) {
    if (s->fired) return fired_error(s);
    if (!s->comm) return fu_fail("NCCL", "rank %d: %s: the communicator was aborted", s->rank, what);
    return 0;
}

// Gives the CPU away while waiting: yields first (short waits stay short),
// then sleeps 50 us per poll.
static void pause_poll(long polls) {
    if (polls < 1000) sched_yield();
    else usleep(50);
}

// Under the lock: a non-blocking communicator's call returned
// ncclInProgress; polls until it has finished (init, finalize; a
// collective's enqueueing), within the timeout, letting the lock go between
// polls.
static int settle(fu_nccl_sync *s, const char *what) {
    double t0 = fu_now();
    for (long polls = 0;; polls++) {
        if (s->fired) return fired_error(s);
        ncclResult_t state = ncclInProgress;
        if (s->comm && lib.async_error(s->comm, &state) == ncclSuccess && state == ncclSuccess) return 0;
        char why[384];
        const char *hint;
        if (gone(s, t0, what, why, sizeof why, &hint)) return fail_with(why, hint);
        unlock(s);
        pause_poll(polls);
        lock(s);
    }
}

// Under the lock: a call on the communicator: its result, settled when in
// progress.
static int nccl_call(fu_nccl_sync *s, ncclResult_t r, const char *what) {
    if (r == ncclInProgress) return settle(s, what);
    if (r != ncclSuccess) {
        char why[384];
        describe(s, what, r, why, sizeof why);
        abort_comm(s);
        return fail_with(why, NULL);
    }
    return 0;
}

// An allreduce on the NCCL stream, in place (the lock taken here).
static int all_reduce(fu_nccl_sync *s, void *v, size_t count, ncclDataType_t type, ncclRedOp_t op, const char *what) {
    lock(s);
    int rc = usable(s, what);
    if (rc == 0) rc = nccl_call(s, lib.all_reduce(v, v, count, type, op, s->comm, s->stream), what);
    unlock(s);
    return rc;
}

static double elapsed(cudaEvent_t a, cudaEvent_t b) {
    float ms = 0;
    return cudaEventElapsedTime(&ms, a, b) == cudaSuccess ? ms / 1e3 : 0;
}

// ---- the watchdog ---------------------------------------------------------------------
//
// The host never waits for NCCL's work: the compute stream does (each
// watched work's `done`). A stream made to wait for a collective that a dead
// rank never completes would hang the host's next synchronising call for
// ever, so a thread watches the ring of work in flight: it polls the oldest
// work's events, and where NCCL reports an asynchronous error or nothing has
// completed for the timeout, it aborts the communicator (NCCL's kernels then
// return, the waiting streams go on, the host's call returns) and keeps
// why. Every later call on the sync fails with that, and the backend checks
// after each synchronising call that hands results out (the values computed
// from an aborted sum are garbage).

// A backward pass's sum: its time on the NCCL stream and the part after
// backward's end (under the lock).
static void book(fu_nccl_sync *s, const watched *w) {
    double exposed = elapsed(w->pass->ended, w->done);
    s->st.seconds += elapsed(w->pass->first, w->done);
    s->st.exposed += exposed > 0 ? exposed : 0;
}

// Sleeps on s->changed for at most ms milliseconds (under the lock).
static void nap(fu_nccl_sync *s, long ms) {
    struct timespec t;
    clock_gettime(CLOCK_MONOTONIC, &t);
    t.tv_nsec += ms * 1000000L;
    t.tv_sec += t.tv_nsec / 1000000000L;
    t.tv_nsec %= 1000000000L;
    pthread_cond_timedwait(&s->changed, &s->lock, &t);
}

static void *watchdog(void *arg) {
    fu_nccl_sync *s = (fu_nccl_sync *)arg;
    cudaSetDevice(s->device);
    lock(s);
    while (!s->stop) {
        if (s->fired || s->tail == s->head) {
            pthread_cond_wait(&s->changed, &s->lock);
            continue;
        }
        watched *w = &s->ring[s->tail % WATCHED];
        // (A pass's `ended` is on the compute stream, which `done` does not
        // wait for where every bucket started early.)
        cudaError_t e = cudaEventQuery(w->done);
        if (e == cudaSuccess && w->pass) e = cudaEventQuery(w->pass->ended);
        if (e == cudaSuccess) {
            if (w->pass) book(s, w);
            s->tail++;
            s->progress = fu_now();
            pthread_cond_broadcast(&s->changed);
            continue;
        }
        const char *hint = NULL;
        if (e != cudaErrorNotReady) {
            snprintf(s->why, sizeof s->why, "rank %d: %s: %s", s->rank, w->what, cudaGetErrorString(e));
            abort_comm(s);
        } else if (!gone(s, w->since > s->progress ? w->since : s->progress, w->what, s->why, sizeof s->why, &hint)) {
            nap(s, 5);
            continue;
        }
        snprintf(s->hint, sizeof s->hint, "%s", hint ? hint : "");
        s->fired = true;
        pthread_cond_broadcast(&s->changed);
    }
    unlock(s);
    return NULL;
}

// Waits until ring[head] is free (the watchdog saw its last work done): the
// host runs at most WATCHED works ahead of the NCCL stream.
static int claim(fu_nccl_sync *s) {
    lock(s);
    while (!s->fired && s->head - s->tail == WATCHED) pthread_cond_wait(&s->changed, &s->lock);
    int rc = s->fired ? fired_error(s) : 0;
    unlock(s);
    return rc;
}

// This backward pass's events (fu_nccl_sync_begin moved on to them).
static pass_events *this_pass(fu_nccl_sync *s) { return &s->passes[s->pass % (WATCHED + 1)]; }

// Whether the watchdog saw all the work done (waits for it), not gave up.
static bool drained(fu_nccl_sync *s) {
    lock(s);
    while (!s->fired && s->tail != s->head) pthread_cond_wait(&s->changed, &s->lock);
    bool ok = !s->fired;
    unlock(s);
    return ok;
}

int fu_nccl_sync_check(fu_nccl_sync *s) {
    if (!s) return 0;
    lock(s);
    bool fired = s->fired;
    unlock(s);
    return fired ? fired_error(s) : 0;
}

#define CUDA_TRY(call, what)                                                                                \
    do {                                                                                                    \
        cudaError_t e_ = (call);                                                                            \
        if (e_ != cudaSuccess) return fu_fail("NCCL", "rank %d: %s: %s", s->rank, what, cudaGetErrorString(e_)); \
    } while (0)

// FU_NCCL_TIMEOUT, where set: seconds, positive and finite (else the error).
static int timeout_from_env(double *seconds) {
    const char *v = getenv("FU_NCCL_TIMEOUT");
    *seconds = DEFAULT_TIMEOUT;
    if (!v || !*v) return 0;
    char *end;
    double t = strtod(v, &end);
    if (end == v || *end != '\0' || !(t > 0) || !isfinite(t))
        return fu_fail("NCCL", "FU_NCCL_TIMEOUT=%s: seconds, a positive number (default %.0f)", v, DEFAULT_TIMEOUT);
    *seconds = t;
    return 0;
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
    for (int k = 0; k < WATCHED; k++) CUDA_TRY(cudaEventCreate(&s->ring[k].done), "creating events");
    for (int k = 0; k <= WATCHED; k++) {
        CUDA_TRY(cudaEventCreate(&s->passes[k].first), "creating events");
        CUDA_TRY(cudaEventCreate(&s->passes[k].ended), "creating events");
    }
    CUDA_TRY(cudaEventCreate(&s->calibration), "creating events");
    CUDA_TRY(cudaEventCreateWithFlags(&s->flag_set, cudaEventDisableTiming), "creating events");
    return 0;
}

static int start_watchdog(fu_nccl_sync *s) {
    s->progress = fu_now();
    if (pthread_create(&s->dog, NULL, watchdog, s) != 0)
        return fu_fail("NCCL", "rank %d: cannot start the watchdog thread", s->rank);
    s->dog_up = true;
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
            fu_fail("NCCL", "rank 0: ncclGetUniqueId: %s", lib.error_string(r));
            ok = false;
        }
    }
    if (agree(c, ok, "make NCCL's unique id") < 0 || fu_comm_bcast(c, &id, sizeof id, 0) < 0) return -1;
    ncclConfig_t cfg = NCCL_CONFIG_INITIALIZER;
    cfg.blocking = 0;
    lock(s);
    ncclResult_t r = lib.init_rank_config(&s->comm, c->size, id, c->rank, &cfg);
    int rc = r == ncclSuccess || r == ncclInProgress ? settle(s, "initialising the communicator")
                                                     : nccl_call(s, r, "ncclCommInitRankConfig");
    unlock(s);
    return rc;
}

// The lock, its condition on the monotonic clock (the watchdog's naps).
static int make_lock(fu_nccl_sync *s) {
    pthread_condattr_t ca;
    if (pthread_condattr_init(&ca) != 0) return fu_fail("NCCL", "cannot make a condition variable");
    bool ok = pthread_condattr_setclock(&ca, CLOCK_MONOTONIC) == 0 && pthread_cond_init(&s->changed, &ca) == 0;
    pthread_condattr_destroy(&ca);
    if (!ok) return fu_fail("NCCL", "cannot make a condition variable");
    if (pthread_mutex_init(&s->lock, NULL) != 0) {
        pthread_cond_destroy(&s->changed);
        return fu_fail("NCCL", "cannot make a mutex");
    }
    s->have_lock = true;
    return 0;
}

int fu_nccl_sync_create(fu_comm *c, int device, float *grads, size_t n, size_t bucket_bytes, fu_nccl_sync **out) {
    *out = NULL;
    fu_nccl_sync *s = (fu_nccl_sync *)fu_calloc(1, sizeof *s);
    if (!s) return -1;
    s->rank = c->rank, s->size = c->size, s->device = device;
    s->grads = grads, s->n = n;
    s->scale = 1;
    // Every rank learns whether all can go on before any waits in the
    // collective initialisation for one that cannot.
    bool ok = make_lock(s) == 0 && timeout_from_env(&s->timeout) == 0 && load() == 0 && make_stream_and_events(s) == 0 && plan_buckets(s, bucket_bytes) == 0;
    if (agree(c, ok, "set up NCCL") < 0) {
        fu_nccl_sync_free(s);
        return -1;
    }
    ok = init_comm(s, c) == 0 && start_watchdog(s) == 0;
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
    if (s->dog_up) {
        lock(s);
        s->stop = true;
        pthread_cond_broadcast(&s->changed);
        unlock(s);
        pthread_join(s->dog, NULL);
    }
    // Finalize flushes the communicator's work; where a peer is gone it
    // fails or times out, and the communicator is aborted instead.
    if (s->have_lock) {
        lock(s);
        if (s->comm && nccl_call(s, lib.finalize(s->comm), "finalising the communicator") == 0) {
            lib.destroy(s->comm);
            s->comm = NULL;
        }
        unlock(s);
        pthread_mutex_destroy(&s->lock);
        pthread_cond_destroy(&s->changed);
    }
    for (int k = 0; s->b && k < s->nb; k++)
        if (s->b[k].ready) cudaEventDestroy(s->b[k].ready);
    for (int k = 0; k <= WATCHED; k++) {
        cudaEvent_t ev[] = {k < WATCHED ? s->ring[k].done : NULL, s->passes[k].first, s->passes[k].ended};
        for (size_t i = 0; i < sizeof ev / sizeof *ev; i++)
            if (ev[i]) cudaEventDestroy(ev[i]);
    }
    if (s->flag_set) cudaEventDestroy(s->flag_set);
    if (s->calibration) cudaEventDestroy(s->calibration);
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
    // With fewer than WATCHED works in flight, the pass's events are free
    // (passes' comment).
    s->pass++;
    if (claim(s) < 0) snprintf(s->err, sizeof s->err, "%s", fu_error());
}

static __global__ void scale_kernel(float *v, size_t n, float a) {
    for (size_t i = blockIdx.x * (size_t)blockDim.x + threadIdx.x; i < n; i += (size_t)gridDim.x * blockDim.x) v[i] *= a;
}

// Hands ring[head], whose work is enqueued on the NCCL stream, to the
// watchdog: `done` ends it, and the compute stream waits for that (the
// host does not).
static int watch(fu_nccl_sync *s, const pass_events *pass, const char *what) {
    watched *w = &s->ring[s->head % WATCHED];
    CUDA_TRY(cudaEventRecord(w->done, s->stream), "recording an event");
    CUDA_TRY(cudaStreamWaitEvent(COMPUTE, w->done, 0), "making the compute stream wait for NCCL");
    lock(s);
    w->pass = pass, w->what = what, w->since = fu_now();
    s->head++;
    pthread_cond_broadcast(&s->changed);
    unlock(s);
    return 0;
}

// The bucket's allreduce on the NCCL stream, after the compute stream's
// writes of it: wait, (scale), sum in place.
static int start(fu_nccl_sync *s, bucket *b) {
    float *v = s->grads + b->off; // (len)
    CUDA_TRY(cudaEventRecord(b->ready, COMPUTE), "recording a bucket's event");
    CUDA_TRY(cudaStreamWaitEvent(s->stream, b->ready, 0), "waiting for a bucket's event");
    if (s->started++ == 0) CUDA_TRY(cudaEventRecord(this_pass(s)->first, s->stream), "recording the start");
    b->started = true;
    b->early = !s->in_end;
    if (s->scale != 1.0) {
        unsigned blocks = (unsigned)((b->len + 255) / 256 < 1024 ? (b->len + 255) / 256 : 1024);
        scale_kernel<<<blocks, 256, 0, s->stream>>>(v, b->len, (float)s->scale);
        CUDA_TRY(cudaGetLastError(), "scaling a bucket by the rank's share");
    }
    return all_reduce(s, v, b->len, ncclFloat, ncclSum, "ncclAllReduce of a gradient bucket");
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

int fu_nccl_sync_end(fu_nccl_sync *s) {
    if (s->err[0]) {
        // This rank stops here; the others' watchdogs time out.
        fu_set_error(s->err, NULL);
        lock(s);
        abort_comm(s);
        unlock(s);
        return -1;
    }
    CUDA_TRY(cudaEventRecord(this_pass(s)->ended, COMPUTE), "recording the end of backward");
    // Every rank starts the same buckets in the same order: those reported
    // complete (in report order, the same on every rank), then the rest.
    s->in_end = true;
    for (int k = 0; k < s->nb; k++)
        if (!s->b[k].started && start(s, &s->b[k]) < 0) return -1;
    if (!s->started) return 0; // an empty buffer
    if (claim(s) < 0) return -1; // (sync-BN's sums may have taken the slot begin freed)
    return watch(s, this_pass(s), "the gradient allreduce");
}

// An allreduce of the compute stream's values, in place, that the compute
// stream's later work waits for. (On the NCCL stream after the buckets
// started before it: NCCL runs one communicator's work in the order it is
// given, and two communicators used at once may deadlock.)
static int reduce_for_compute(fu_nccl_sync *s, void *dev, size_t count, ncclDataType_t type, ncclRedOp_t op,
                              const char *what) {
    if (claim(s) < 0) return -1;
    CUDA_TRY(cudaEventRecord(s->flag_set, COMPUTE), "recording an event");
    CUDA_TRY(cudaStreamWaitEvent(s->stream, s->flag_set, 0), "waiting for an event");
    if (all_reduce(s, dev, count, type, op, what) < 0) return -1;
    return watch(s, NULL, what);
}

int fu_nccl_sync_max(fu_nccl_sync *s, int *dev_value) {
    return reduce_for_compute(s, dev_value, 1, ncclInt32, ncclMax, "agreeing on an fp16 overflow");
}

int fu_nccl_sync_sum(fu_nccl_sync *s, double *dev, size_t n) {
    return reduce_for_compute(s, dev, n, ncclFloat64, ncclSum, "sync-BN's sums");
}

fu_grad_sync_stats fu_nccl_sync_stats_of(fu_nccl_sync *s) {
    drained(s); // after a failure, what was booked before it
    lock(s);
    fu_grad_sync_stats st = s->st;
    unlock(s);
    return st;
}

static int cmp_double(const void *a, const void *b) {
    double x = *(const double *)a, y = *(const double *)b;
    return (x > y) - (x < y);
}

// One allreduce of tmp (n floats), timed on the GPU from the end of a
// one-float allreduce that every rank must reach first.
static int time_allreduce(fu_nccl_sync *s, float *tmp, double *seconds) {
    if (claim(s) < 0) return -1;
    watched *w = &s->ring[s->head % WATCHED];
    if (all_reduce(s, tmp, 1, ncclFloat, ncclSum, "ncclAllReduce (calibrating)") < 0) return -1;
    CUDA_TRY(cudaEventRecord(s->calibration, s->stream), "recording an event");
    if (all_reduce(s, tmp, s->n, ncclFloat, ncclSum, "ncclAllReduce (calibrating)") < 0 ||
        watch(s, NULL, "calibrating the allreduce") < 0)
        return -1;
    if (!drained(s)) return fired_error(s);
    *seconds = elapsed(s->calibration, w->done);
    return 0;
}

int fu_nccl_sync_calibrate(fu_nccl_sync *s, int reps, double *seconds) {
    *seconds = 0;
    if (reps < 1 || !s->n) return 0;
    if (fu_nccl_sync_check(s) < 0) return -1;
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
    // After the waits: nothing of the streams uses it any more (after a
    // failure the communicator is aborted, its kernels ended).
    if (tmp) cudaFree(tmp);
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
