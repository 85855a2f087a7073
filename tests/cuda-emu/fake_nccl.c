// A fake NCCL (libnccl.so.2, built by backend.sh and found first through
// LD_LIBRARY_PATH) for the fake CUDA runtime's host "device memory": what
// lib/cuda/nccl_sync.cu resolves, for a world of one rank. An allreduce over
// one rank is a copy (nothing where in place), and a non-blocking
// communicator of one is ready at once; one that expects more ranks never
// becomes ready (no other rank ever comes), so that the caller's timeout
// shows. Must not be the real libnccl: that one would read host pointers
// as device memory.
#include <nccl.h>

#include <stdlib.h>
#include <string.h>

struct ncclComm {
    int nranks;
    int finalized;
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

ncclResult_t ncclCommInitRankConfig(ncclComm_t *comm, int nranks, ncclUniqueId id, int rank, ncclConfig_t *config) {
    if (nranks < 1 || rank < 0 || rank >= nranks) return ncclInvalidArgument;
    *comm = calloc(1, sizeof **comm);
    if (!*comm) return ncclSystemError;
    (*comm)->nranks = nranks;
    if (nranks == 1) return ncclSuccess;
    return config && !config->blocking ? ncclInProgress : ncclSystemError; // blocking: would wait for ever
}

ncclResult_t ncclCommGetAsyncError(ncclComm_t comm, ncclResult_t *state) {
    if (!comm) return ncclInvalidArgument;
    *state = comm->nranks == 1 ? ncclSuccess : ncclInProgress;
    return ncclSuccess;
}

ncclResult_t ncclCommFinalize(ncclComm_t comm) {
    if (!comm) return ncclInvalidArgument;
    comm->finalized = 1;
    return ncclSuccess;
}

ncclResult_t ncclCommDestroy(ncclComm_t comm) {
    free(comm);
    return ncclSuccess;
}

ncclResult_t ncclCommAbort(ncclComm_t comm) {
    free(comm);
    return ncclSuccess;
}

ncclResult_t ncclAllReduce(const void *send, void *recv, size_t count, ncclDataType_t type, ncclRedOp_t op,
                           ncclComm_t comm, cudaStream_t stream) {
    size_t size = type_size(type);
    if (!comm || !size || op < 0 || op >= ncclNumOps) return ncclInvalidArgument;
    if (comm->nranks != 1 || comm->finalized) return ncclInvalidUsage;
    if (count && send != recv) memmove(recv, send, count * size);
    return ncclSuccess;
}

const char *ncclGetErrorString(ncclResult_t r) {
    switch (r) {
    case ncclSuccess: return "no error";
    case ncclSystemError: return "unhandled system error";
    case ncclInvalidArgument: return "invalid argument";
    case ncclInvalidUsage: return "invalid usage";
    case ncclInProgress: return "NCCL operation in progress";
    default: return "unknown result code (fake NCCL)";
    }
}

const char *ncclGetLastError(ncclComm_t comm) { return ""; }
