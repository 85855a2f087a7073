// Where a GPU step's time goes, for the bench (FU_CUDA_PROFILE=1; docs/gpu.md):
// the backend marks the start of each section of its work (an op kind's
// forward, cuDNN's backward-filter, the half conversions, the optimizer...)
// with an event on its stream; a flush waits for the last one and adds the
// time between consecutive marks to the earlier mark's label. With no GPU
// counters or tracer on the lent machines, events are what there is. The
// marks cost a few microseconds each and the flushes synchronise, so the
// profile is for proportions: plain runs leave it off (a NULL profile: every
// call does nothing).
#ifndef FU_CUDA_CUDA_PROFILE_H
#define FU_CUDA_CUDA_PROFILE_H

#include <cuda_runtime.h>

#include <stddef.h>

typedef struct cu_profile cu_profile;

// NULL (profiling off) unless FU_CUDA_PROFILE is set to something other than 0.
cu_profile *cu_profile_create(void);
void cu_profile_destroy(cu_profile *p);
// Ends the running section and starts `label` (a string that outlives p).
void cu_profile_mark(cu_profile *p, const char *label, cudaStream_t s);
// Waits for the last mark and books every closed section; the running one
// ends here. On a CUDA error the profile is cleared; the error itself is the
// backend's next CUDA call's to report.
void cu_profile_flush(cu_profile *p);
// Counts one step: the report divides by the steps counted.
void cu_profile_step(cu_profile *p);
void cu_profile_reset(cu_profile *p);
// "  label  ms per step  share" lines, largest first, into out (NUL-terminated).
void cu_profile_report(const cu_profile *p, char *out, size_t size);

#endif
