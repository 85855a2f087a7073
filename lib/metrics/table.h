// Speedup and efficiency over results CSVs (DESIGN.md section 6: one header
// row, one row per run, columns config, device, ranks, threads_per_rank,
// train_seconds, test_acc, test_auc among others).
//
// Rows are grouped by config, in order of first appearance over the files;
// a config run several times reports the mean of its train_seconds, test_acc
// and test_auc. workers = ranks x threads_per_rank for CPU configs (device
// "cpu..."), ranks for accelerator configs (one GPU per rank; its host
// threads only feed it). speedup = T(baseline) / T(config) and efficiency =
// speedup / workers, the study's definitions, with T the mean train_seconds.
#ifndef FU_METRICS_TABLE_H
#define FU_METRICS_TABLE_H

#include <stddef.h>

typedef struct {
    char config[64];
    char device[32];
    int workers, runs;
    double train_seconds, speedup, efficiency;
    double test_acc, test_auc; // NaN when the runs have none (no test split)
} fu_table_row;

// Reads the files and computes the table against the config named baseline.
// -1 + message (naming file and line) on a missing column, a bad value, a
// config whose runs disagree on workers, or a baseline that is not there.
int fu_speedup_table(const char *const *paths, int n_paths, const char *baseline, fu_table_row **rows,
                     size_t *count);

#endif
