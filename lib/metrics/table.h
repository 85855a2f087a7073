// Results CSVs (DESIGN.md section 6: one header row, one row per run,
// columns config, device, ranks, threads_per_rank, train_seconds, test_acc,
// test_auc among others) and the speedup table over them.
//
// Table rows are grouped by config, in order of first appearance over the
// files; a config run several times reports the mean of its train_seconds,
// test_acc and test_auc. workers = ranks x threads_per_rank for CPU configs
// (device "cpu..."), ranks for accelerator configs (one GPU per rank; its
// host threads only feed it). speedup = T(baseline) / T(config) and
// efficiency = speedup / workers, the study's definitions, with T the mean
// train_seconds.
#ifndef FU_METRICS_TABLE_H
#define FU_METRICS_TABLE_H

#include <stdbool.h>
#include <stddef.h>

// One run: one row of a results CSV. Numbers a file lacks (an older
// cnn-train's file has no steps or allreduce columns) or leaves empty are NaN,
// strings empty.
typedef struct {
    char config[64], dataset[64], device[32], device_name[128], amp[16], image_size[16];
    const char *file; // the path it came from (the caller's string)
    long line;
    int ranks, threads_per_rank, workers;
    bool cpu;
    double model_parallel, batch_per_rank, epochs, train_images, train_seconds, images_per_second,
        data_wait_seconds, test_acc, test_auc;
    // cnn-train over MPI adds: optimizer steps per rank, seconds in gradient
    // allreduce, the part of it the step waited for, one blocking allreduce
    // of the whole gradient (measured at start), MB reduced per step, and
    // train time less data wait and exposed allreduce.
    double steps, allreduce_seconds, allreduce_exposed_seconds, allreduce_full_seconds, grad_mb, compute_seconds;
} fu_run;

// Reads every row of the files. -1 + message (naming file and line) on a
// missing required column, a bad value or a file without runs.
int fu_runs_load(const char *const *paths, int n_paths, fu_run **runs, size_t *count);

typedef struct {
    char config[64];
    char device[32];
    int workers, runs;
    double train_seconds, speedup, efficiency;
    double test_acc, test_auc; // NaN when the runs have none (no test split)
} fu_table_row;

// The table of the runs against the config named baseline. -1 + message on
// a config whose runs disagree on workers, or a baseline that is not there.
int fu_table_of_runs(const fu_run *runs, size_t n_runs, const char *baseline, fu_table_row **rows, size_t *count);

// Both steps: reads the files and computes the table.
int fu_speedup_table(const char *const *paths, int n_paths, const char *baseline, fu_table_row **rows,
                     size_t *count);

#endif
