// Results CSVs (DESIGN.md section 6: one header row, one row per run,
// columns config, device, ranks, threads_per_rank, train_seconds, test_acc,
// test_auc among others) and the speedup table over them.
//
// Table rows are grouped by config, in order of first appearance over the
// files; a config run several times reports the mean of its train_seconds,
// test_acc and test_auc. workers = ranks x threads_per_rank for CPU configs
// (device "cpu..."), the GPUs used for accelerator configs: ranks x
// gpus_per_rank (a model-parallel rank drives one GPU per stage; without the
// column, or 0, one GPU per rank; its host threads only feed it). speedup =
// T(baseline) / T(config) and efficiency = speedup / workers, the study's
// definitions, with T the mean train_seconds.
//
// Each run belongs to a series, the line a chart draws it on: "CPU" or
// "DDP" (an accelerator), then "+AMP" (amp fp16) or "+bf16" (amp bf16), then
// "+MP" (model_parallel > 1): "CPU", "CPU+bf16", "CPU+MP", "DDP",
// "DDP+AMP", "DDP+AMP+MP", ...
#ifndef FU_METRICS_TABLE_H
#define FU_METRICS_TABLE_H

#include <stdbool.h>
#include <stddef.h>

#define FU_SERIES_LEN 16 // "CPU+bf16+MP" and the like

// One run: one row of a results CSV. Numbers a file lacks (an older
// cnn-train's file has no steps or allreduce columns) or leaves empty are NaN,
// strings empty.
typedef struct {
    char config[64], dataset[64], device[32], device_name[128], amp[16], image_size[16];
    char series[FU_SERIES_LEN];
    char stage_busy[128]; // seconds each model-parallel stage computed, "12.300;11.950"
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
    // Model parallelism: micro-batches per step, GPUs one rank drives (0 on
    // the CPU; the stages' count, or 1 when they share one GPU).
    double micro_batches, gpus_per_rank;
} fu_run;

// Reads every row of the files. -1 + message (naming file and line) on a
// missing required column, a bad value or a file without runs.
int fu_runs_load(const char *const *paths, int n_paths, fu_run **runs, size_t *count);

typedef struct {
    char config[64];
    char device[32];
    char series[FU_SERIES_LEN];
    int workers, runs;
    double train_seconds, speedup, efficiency;
    double test_acc, test_auc; // NaN when the runs have none (no test split)
} fu_table_row;

// The table of the runs against the config named baseline. -1 + message on
// a config whose runs disagree on workers or series, or a baseline that is
// not there.
int fu_table_of_runs(const fu_run *runs, size_t n_runs, const char *baseline, fu_table_row **rows, size_t *count);

// Both steps: reads the files and computes the table.
int fu_speedup_table(const char *const *paths, int n_paths, const char *baseline, fu_table_row **rows,
                     size_t *count);

#endif
