// A fake NCCL (libnccl.so.2, built by backend.sh and found first through
// LD_LIBRARY_PATH) for the fake CUDA runtime's host "device memory": what
// lib/cuda/nccl_sync.cu resolves. Over one rank an allreduce is a copy
// (nothing where in place), and the communicator is ready at once. Over
// several, in processes started by mpirun, it is MPI_Allreduce on a
// communicator of its own, done when called (the fake device runs work when
// it is enqueued), so that `mpirun -np 2 cnn-train --device cuda` sums with
// NCCL's calls on emulated GPUs. A communicator of more ranks than MPI's
// world never becomes ready (no other rank ever comes), so that the caller's
// timeout shows. Must not be the real libnccl: that one would read host
// pointers as device memory.
//
// FAKE_NCCL_HANG_AT=k (read when a communicator is made) plays a rank that
// died: the communicator's k-th allreduce, and every one after it, never
// happens, and the fake device hangs (fake_cudart.cpp's fake_cuda_hang: its
// events stay not done, its synchronising calls wait) until ncclCommAbort.
// With FAKE_NCCL_HANG_ERROR=1 NCCL also reports an asynchronous error from
// then on (ncclSystemError), as when it sees the connection drop; without,
// only a timeout can tell. Set on every rank, every rank stops at the same
// call, so that MPI's collectives still pair.
#define _GNU_SOURCE // RTLD_DEFAULT
#include <dlfcn.h>
#include <mpi.h>
#include <nccl.h>

#include <stdlib.h>
#include <string.h>

struct ncclComm {
    int nranks;
    int finalized;
    long calls, hang_at; // allreduces so far; FAKE_NCCL_HANG_AT (0: never)
    int hung, hang_error;
    MPI_Comm mpi; // nranks > 1: the world's ranks in NCCL's rank order (else MPI_COMM_NULL)
};

static size_t type_size(ncclDataType_t t) {
    switch (t) {
    case ncclInt8: case ncclUint8: return 1;
    case ncclFloat16: case ncclBfloat16: return 2;
    case ncclInt32: case ncclUint32: case ncclFloat32: return 4;
    case ncclInt64: case ncclUint64: case ncclFloat64: return 8;
    default: return 0;
    }
}

ncclResult_t ncclGetVersion(int *version) {
    *version = NCCL_VERSION_CODE;
    return ncclSuccess;
}

ncclResult_t ncclGetUniqueId(ncclUniqueId *id) {
    memset(id, 0, sizeof *id);
    strcpy(id->internal, "fake nccl");
    return ncclSuccess;
}

// MPI's world size, 0 where MPI is not running.
static int world_size(void) {
    int up = 0, done = 0, n = 0;
    MPI_Initialized(&up);
    MPI_Finalized(&done);
    if (up && !done) MPI_Comm_size(MPI_COMM_WORLD, &n);
    return n;
}

ncclResult_t ncclCommInitRankConfig(ncclComm_t *comm, int nranks, ncclUniqueId id, int rank, ncclConfig_t *config) {
    if (nranks < 1 || rank < 0 || rank >= nranks) return ncclInvalidArgument;
    *comm = calloc(1, sizeof **comm);
    if (!*comm) return ncclSystemError;
    (*comm)->nranks = nranks;
    (*comm)->mpi = MPI_COMM_NULL;
    const char *at = getenv("FAKE_NCCL_HANG_AT"), *err = getenv("FAKE_NCCL_HANG_ERROR");
    (*comm)->hang_at = at ? atol(at) : 0;
    (*comm)->hang_error = err && strcmp(err, "1") == 0;
    if (nranks == 1) return ncclSuccess;
    // Collective over the world, as NCCL's initialisation is over its ranks.
    if (nranks == world_size())
        return MPI_Comm_split(MPI_COMM_WORLD, 0, rank, &(*comm)->mpi) == MPI_SUCCESS ? ncclSuccess : ncclSystemError;
    return config && !config->blocking ? ncclInProgress : ncclSystemError; // blocking: would wait for ever
}

ncclResult_t ncclCommGetAsyncError(ncclComm_t comm, ncclResult_t *state) {
    if (!comm) return ncclInvalidArgument;
    *state = comm->hung && comm->hang_error                       ? ncclSystemError
             : comm->nranks == 1 || comm->mpi != MPI_COMM_NULL ? ncclSuccess
                                                               : ncclInProgress;
    return ncclSuccess;
}

ncclResult_t ncclCommFinalize(ncclComm_t comm) {
    if (!comm) return ncclInvalidArgument;
    comm->finalized = 1;
    return ncclSuccess;
}

static ncclResult_t release(ncclComm_t comm) {
    if (comm && comm->mpi != MPI_COMM_NULL && world_size()) MPI_Comm_free(&comm->mpi);
    free(comm);
    return ncclSuccess;
}

// The fake device's hang, begun or ended (found among the program's symbols).
static int device_hang(const char *name) {
    void (*fn)(void) = (void (*)(void))dlsym(RTLD_DEFAULT, name);
    if (fn) fn();
    return fn != NULL;
}

ncclResult_t ncclCommDestroy(ncclComm_t comm) { return release(comm); }

// Ends the hang: the stuck kernels return.
ncclResult_t ncclCommAbort(ncclComm_t comm) {
    if (comm && comm->hung) device_hang("fake_cuda_unhang");
    return release(comm);
}

static MPI_Datatype mpi_type(ncclDataType_t t) {
    switch (t) {
    case ncclInt32: return MPI_INT32_T;
    case ncclUint32: return MPI_UINT32_T;
    case ncclInt64: return MPI_INT64_T;
    case ncclUint64: return MPI_UINT64_T;
    case ncclFloat32: return MPI_FLOAT;
    case ncclFloat64: return MPI_DOUBLE;
    default: return MPI_DATATYPE_NULL; // the halves: MPI has no such type
    }
}

static MPI_Op mpi_op(ncclRedOp_t op) {
    switch (op) {
    case ncclSum: return MPI_SUM;
    case ncclProd: return MPI_PROD;
    case ncclMax: return MPI_MAX;
    case ncclMin: return MPI_MIN;
    default: return MPI_OP_NULL;
    }
}

ncclResult_t ncclAllReduce(const void *send, void *recv, size_t count, ncclDataType_t type, ncclRedOp_t op,
                           ncclComm_t comm, cudaStream_t stream) {
    size_t size = type_size(type);
    if (!comm || !size || op < 0 || op >= ncclNumOps) return ncclInvalidArgument;
    if (comm->finalized) return ncclInvalidUsage;
    if (comm->hang_at && ++comm->calls >= comm->hang_at) {
        if (!comm->hung && !device_hang("fake_cuda_hang")) return ncclInternalError; // not linked -rdynamic
        comm->hung = 1;
        return ncclSuccess; // enqueued; it never ends
    }
    if (comm->nranks == 1) {
        if (count && send != recv) memmove(recv, send, count * size);
        return ncclSuccess;
    }
    if (comm->mpi == MPI_COMM_NULL) return ncclInvalidUsage;
    MPI_Datatype mt = mpi_type(type);
    MPI_Op mo = mpi_op(op);
    if (mt == MPI_DATATYPE_NULL || mo == MPI_OP_NULL || count > (size_t)0x7fffffff) return ncclInvalidArgument;
    int rc = MPI_Allreduce(send == recv ? MPI_IN_PLACE : send, recv, (int)count, mt, mo, comm->mpi);
    return rc == MPI_SUCCESS ? ncclSuccess : ncclSystemError;
}

const char *ncclGetErrorString(ncclResult_t r) {
    switch (r) {
    case ncclSuccess: return "no error";
    case ncclSystemError: return "unhandled system error";
    case ncclInvalidArgument: return "invalid argument";
    case ncclInvalidUsage: return "invalid usage";
    case ncclInternalError: return "internal error (fake NCCL: no fake_cuda_hang: link the program -rdynamic)";
    case ncclInProgress: return "NCCL operation in progress";
    default: return "unknown result code (fake NCCL)";
    }
}

const char *ncclGetLastError(ncclComm_t comm) { return ""; }
