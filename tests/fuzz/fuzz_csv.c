// libFuzzer harness: the CSV reader, and the results tables read through it
// (metrics-report --table, --predict): any file gives rows, or one error.
#include "input_file.h"
#include "core/csv.h"
#include "metrics/scaling.h"
#include "metrics/table.h"

#include <stdint.h>
#include <stdlib.h>
#include <string.h>

static void read_rows(const char *path) {
    fu_csv c;
    if (fu_csv_open(&c, path) < 0) return;
    size_t sum = 0;
    while (fu_csv_next(&c) == 1)
        for (int i = 0; i < c.n; i++) sum += strlen(c.fields[i]);
    fu_csv_close(&c);
    (void)sum;
}

// As results CSVs: the speedup table against cpu1, and the scaling model
// fitted to the first two runs (as if 1 and 2 ranks) and to a nominal link.
static void read_runs(const char *path) {
    const char *paths[1] = {path};
    fu_table_row *rows = NULL;
    size_t n_rows = 0;
    if (fu_speedup_table(paths, 1, "cpu1", &rows, &n_rows) == 0) free(rows);
    fu_run *runs = NULL;
    size_t n_runs = 0;
    if (fu_runs_load(paths, 1, &runs, &n_runs) < 0) return;
    fu_scaling_model m;
    if (n_runs >= 2 && fu_scaling_fit(&runs[0], &runs[1], 5e-6, &m) == 0)
        for (int r = 1; r <= 8; r *= 2) fu_scaling_predict(&m, r);
    if (fu_scaling_fit_nominal(&runs[0], 90e6, 25e9, 5e-6, &m) == 0) fu_scaling_predict(&m, 4);
    free(runs);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    char path[] = "/tmp/fuzz_csv.XXXXXX";
    if (!fuzz_input_file(data, size, path)) return 0;
    read_rows(path);
    read_runs(path);
    unlink(path);
    return 0;
}
