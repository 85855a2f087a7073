// safetensors files (https://github.com/huggingface/safetensors): an 8-byte
// little-endian header length, a JSON header mapping each tensor name to
// {"dtype", "shape", "data_offsets": [begin, end]} (offsets relative to the
// data that follows; an optional "__metadata__" object of strings), then the
// tensors' bytes, little-endian, packed without gaps. Checkpoints hold the
// model's PyTorch state_dict, so `load_state_dict(strict=True)` accepts them.
#ifndef FU_NN_SAFETENSORS_H
#define FU_NN_SAFETENSORS_H

#include "nn/model.h"

#include <stdint.h>

typedef enum { FU_ST_F32, FU_ST_F64, FU_ST_I64 } fu_st_dtype;

typedef struct {
    const char *name;
    fu_st_dtype dtype;
    int ndim; // 0..4; 0 is a scalar
    int64_t shape[4];
    const void *data; // writing: the values; reading: inside the file's bytes, unaligned (memcpy them)
} fu_st_tensor;

// Writes the tensors, in the given order, atomically (FILE.tmp, then rename).
// meta: NULL or a NULL-terminated list of key, value, key, value, ... strings.
int fu_st_write(const char *path, const fu_st_tensor *tensors, int n, const char *const *meta);

// A file read whole and validated: header syntax, known dtypes, offsets that
// match the shapes and tile the data exactly, unique names.
typedef struct fu_st_file fu_st_file;
fu_st_file *fu_st_open(const char *path);
void fu_st_close(fu_st_file *f);
int fu_st_count(const fu_st_file *f);
const fu_st_tensor *fu_st_get(const fu_st_file *f, int i); // in header order
const fu_st_tensor *fu_st_find(const fu_st_file *f, const char *name);
const char *fu_st_meta(const fu_st_file *f, const char *key); // NULL when absent
const char *fu_st_dtype_name(fu_st_dtype d);
size_t fu_st_numel(const fu_st_tensor *t);

// The model's state_dict (params, BN running stats, num_batches_tracked).
int fu_model_save(const char *path, const fu_model *m, const float *params, const float *state,
                  const int64_t *counts, const char *const *meta);
// Strict: every tensor of the model present with its dtype and shape, nothing
// else; on any mismatch nothing is written to the buffers and the error names
// the tensor.
int fu_model_load(const char *path, const fu_model *m, float *params, float *state, int64_t *counts);

#endif
