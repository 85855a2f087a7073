// Processes of a data-parallel run (comm.h) on MPI.
#include "dist/comm.h"

#include "core/error.h"

#include <mpi.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

typedef struct {
    MPI_Comm world, grads;
} comms;

// Variables an MPI launcher sets in every process it starts: Open MPI's
// mpirun, PMIx and PMI (MPICH's mpiexec, Slurm's srun with --mpi).
static bool launched(void) {
    const char *vars[] = {"OMPI_COMM_WORLD_SIZE", "PMIX_RANK", "PMI_RANK", "PMI_SIZE", NULL};
    for (int i = 0; vars[i]; i++)
        if (getenv(vars[i])) return true;
    return false;
}

static int mpi_fail(int rc, const char *what) {
    char msg[MPI_MAX_ERROR_STRING];
    int len = 0;
    if (MPI_Error_string(rc, msg, &len) != MPI_SUCCESS) snprintf(msg, sizeof msg, "error %d", rc);
    return fu_fail("MPI", "%s: %s", what, msg);
}

#define MPI_TRY(call, what)                           \
    do {                                              \
        int rc_ = (call);                             \
        if (rc_ != MPI_SUCCESS) return mpi_fail(rc_, what); \
    } while (0)

int fu_comm_init(fu_comm *c, int *argc, char ***argv) {
    *c = (fu_comm){.rank = 0, .size = 1, .local_rank = 0, .local_size = 1};
    if (!launched()) return 0;
    // Only the main thread calls MPI (the loader threads never do).
    int provided;
    if (MPI_Init_thread(argc, argv, MPI_THREAD_FUNNELED, &provided) != MPI_SUCCESS)
        return fu_fail("MPI", "could not initialise (started by a launcher, but its MPI would not start)");
    c->mpi = true;
    comms *m = calloc(1, sizeof *m);
    if (!m) return fu_fail("MPI", "out of memory");
    c->impl = m;
    // Errors come back as codes, so a failed call is reported, not aborted on.
    MPI_Comm_set_errhandler(MPI_COMM_WORLD, MPI_ERRORS_RETURN);
    MPI_TRY(MPI_Comm_dup(MPI_COMM_WORLD, &m->world), "MPI_Comm_dup");
    MPI_TRY(MPI_Comm_dup(MPI_COMM_WORLD, &m->grads), "MPI_Comm_dup");
    MPI_Comm_rank(m->world, &c->rank);
    MPI_Comm_size(m->world, &c->size);
    MPI_Comm local;
    MPI_TRY(MPI_Comm_split_type(m->world, MPI_COMM_TYPE_SHARED, c->rank, MPI_INFO_NULL, &local),
            "MPI_Comm_split_type");
    MPI_Comm_rank(local, &c->local_rank);
    MPI_Comm_size(local, &c->local_size);
    MPI_Comm_free(&local);
    return 0;
}

void fu_comm_finalize(fu_comm *c) {
    if (!c->mpi) return;
    comms *m = c->impl;
    MPI_Comm_free(&m->grads);
    MPI_Comm_free(&m->world);
    free(m);
    MPI_Finalize();
    *c = (fu_comm){.rank = 0, .size = 1};
}

_Noreturn void fu_comm_abort(fu_comm *c, int code) {
    if (c->mpi) MPI_Abort(MPI_COMM_WORLD, code);
    exit(code);
}

static MPI_Comm world(fu_comm *c) { return ((comms *)c->impl)->world; }

void *fu_comm_grad_comm(fu_comm *c) { return c->mpi ? (void *)((comms *)c->impl)->grads : NULL; }

int fu_comm_sum(fu_comm *c, double *v, int n) {
    if (!c->mpi) return 0;
    MPI_TRY(MPI_Allreduce(MPI_IN_PLACE, v, n, MPI_DOUBLE, MPI_SUM, world(c)), "allreduce");
    return 0;
}

int fu_comm_bcast(fu_comm *c, void *buf, size_t bytes, int root) {
    if (!c->mpi) return 0;
    // MPI counts are ints: large buffers go in pieces of 1 GiB.
    for (size_t off = 0; off < bytes; off += (size_t)1 << 30) {
        size_t len = bytes - off < ((size_t)1 << 30) ? bytes - off : (size_t)1 << 30;
        MPI_TRY(MPI_Bcast((char *)buf + off, (int)len, MPI_BYTE, root, world(c)), "broadcast");
    }
    return 0;
}

int fu_comm_first_failure(fu_comm *c, bool ok) {
    if (!c->mpi) return ok ? -1 : 0;
    int mine = ok ? c->size : c->rank, first;
    if (MPI_Allreduce(&mine, &first, 1, MPI_INT, MPI_MIN, world(c)) != MPI_SUCCESS) return c->rank;
    return first == c->size ? -1 : first;
}

int fu_comm_allgather(fu_comm *c, const double *mine, int n_mine, double *all, int *counts) {
    if (!c->mpi) {
        memcpy(all, mine, (size_t)n_mine * sizeof *mine);
        counts[0] = n_mine;
        return 0;
    }
    MPI_TRY(MPI_Allgather(&n_mine, 1, MPI_INT, counts, 1, MPI_INT, world(c)), "allgather");
    int *displs = malloc((size_t)c->size * sizeof *displs);
    if (!displs) return fu_fail("MPI", "out of memory");
    for (int r = 0, off = 0; r < c->size; r++) displs[r] = off, off += counts[r];
    int rc = MPI_Allgatherv(mine, n_mine, MPI_DOUBLE, all, counts, displs, MPI_DOUBLE, world(c));
    free(displs);
    if (rc != MPI_SUCCESS) return mpi_fail(rc, "allgather");
    return 0;
}
