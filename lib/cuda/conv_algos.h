// Measured convolution algorithms, recorded in a file so that every run with
// that file uses the same ones (cnn-train --conv-algos FILE, docs/gpu.md).
//
// Why a file: cuDNN's measurement (cudnnFind) is timing, and two runs can
// rank two close algorithms either way; two algorithms sum in different
// orders, so they give different bytes. The first run that meets a
// convolution measures it and records its choice; every later run with the
// file takes the choice from there: the same algorithms, the same bytes.
//
// The file: one line per convolution set-up, a key and six integers, a
// pair for each of the forward, backward-data and backward-filter passes:
// for cuDNN's graph API the engine configuration's place in the heuristics'
// list (negative: the fallback list's) and its engine (conv_graph.h's
// cu_conv_choice); for the legacy API the algorithm and the math type to
// run it with (cuDNN's enum values). Lines starting with '#' are comments.
// The key (no blanks) names what the choice depends on: the GPU, cuDNN's
// version, the data type, the API and the convolution's shapes. The caller
// builds it (cuda_conv.cu); this file only keeps the records.
//
// Plain C without CUDA, so `make test` checks it on any machine.
#ifndef FU_CUDA_CONV_ALGOS_H
#define FU_CUDA_CONV_ALGOS_H

#ifdef __cplusplus
extern "C" {
#endif

#define FU_ALGO_KEY 256 // a key's longest length, its '\0' included

typedef struct {
    char key[FU_ALGO_KEY];
    int v[6]; // a pair for each pass: forward, backward data, backward filter
} fu_algo_rec;

typedef struct {
    char *path;
    fu_algo_rec *rec;
    int n, cap;
    int added; // records added since the load: save writes only when there are some
} fu_algo_file;

// Reads path's records (a missing file has none). A malformed line fails
// with "path:LINE: what is wrong" and f empty.
int fu_algo_load(fu_algo_file *f, const char *path);

// The record with this key, or NULL.
const fu_algo_rec *fu_algo_find(const fu_algo_file *f, const char *key);

// Adds a record (its key must be new to f, without blanks, shorter than
// FU_ALGO_KEY).
int fu_algo_add(fu_algo_file *f, const char *key, const int v[6]);

// With records added: reads the file again (another process may have
// recorded since the load), keeps its records (where both have a key, the
// file's wins: it was there first), adds f's others, and writes it all
// atomically (a temporary file, then a rename), comments not kept. f then
// holds what was written.
int fu_algo_save(fu_algo_file *f);

void fu_algo_free(fu_algo_file *f);

#ifdef __cplusplus
}
#endif

#endif
