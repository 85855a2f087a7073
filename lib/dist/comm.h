// The processes of a data-parallel run. Started by an MPI launcher (mpirun,
// srun, mpiexec: detected from the variables they set), a process joins its
// job's MPI world; started on its own, it is rank 0 of 1 and MPI is never
// initialised, so a plain `cnn-train` needs no launcher and pays nothing.
//
// Collectives are called by every rank in the same order (MPI's rule). The
// gradient allreduce runs on a communicator of its own (grad_sync.h), so its
// nonblocking calls never meet the blocking ones here.
#ifndef FU_DIST_COMM_H
#define FU_DIST_COMM_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

typedef struct {
    int rank, size;             // this process, and how many there are
    int local_rank, local_size; // among the ranks of this host (one GPU each, later)
    bool mpi;                   // MPI initialised (launched by a launcher)
    void *impl;                 // the MPI communicators
} fu_comm;

// Joins the job, or makes a single-process world. Fails (no MPI state left
// behind) when the launcher's MPI cannot start.
int fu_comm_init(fu_comm *c, int *argc, char ***argv);
// Leaves the job cleanly (every rank calls it).
void fu_comm_finalize(fu_comm *c);
// Ends every rank of the job at once, with `code` (for a failure that other
// ranks cannot know about, where waiting for them would hang).
_Noreturn void fu_comm_abort(fu_comm *c, int code);

// v[0..n) summed over all ranks, in place. (Sync-BN statistics, counts.)
int fu_comm_sum(fu_comm *c, double *v, int n);
// bytes of buf from rank `root` to every rank.
int fu_comm_bcast(fu_comm *c, void *buf, size_t bytes, int root);
// Whether every rank succeeded: ok on this rank -> the lowest rank that
// failed (-1: none). Every rank learns the same answer, so all stop together.
int fu_comm_first_failure(fu_comm *c, bool ok);
// Every rank's n_mine doubles, in rank order, into all (sum of the counts
// long) on every rank; counts[r] receives rank r's count.
int fu_comm_allgather(fu_comm *c, const double *mine, int n_mine, double *all, int *counts);
// The MPI communicator for the gradient buckets (an MPI_Comm, as void *).
void *fu_comm_grad_comm(fu_comm *c);

#endif
