// libFuzzer harness: the safetensors reader (checkpoints and state_dicts that
// cnn-predict, cnn-train --resume and the tests load), header and layout:
// a file it accepts must hold every tensor's bytes where its offsets say.
// A trainer state's fp16_loss_scaling goes through its parser too.
#include "input_file.h"
#include "nn/loss_scale.h"
#include "nn/safetensors.h"

#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

// Every accepted tensor's bytes read (ASan flags any outside the file's
// buffer), found again by name, and the metadata looked up; a loss scaling
// state the parser takes must be a valid one.
static void walk(const fu_st_file *f) {
    uint64_t sum = 0;
    for (int i = 0; i < fu_st_count(f); i++) {
        const fu_st_tensor *t = fu_st_get(f, i);
        size_t bytes = fu_st_numel(t) * (t->dtype == FU_ST_F32 ? 4 : 8);
        unsigned char b;
        for (size_t j = 0; j < bytes; j += 7) memcpy(&b, (const unsigned char *)t->data + j, 1), sum += b;
        if (bytes) memcpy(&b, (const unsigned char *)t->data + bytes - 1, 1), sum += b;
        if (fu_st_find(f, t->name) != t) abort(); // names are unique: the first is this one
        sum += (uint64_t)strlen(fu_st_dtype_name(t->dtype));
    }
    // (the keys nn/checkpoint.c reads)
    const char *keys[] = {"format", "step", "epoch", "fp16_loss_scaling", "fp16_steps_skipped"};
    for (int k = 0; k < 5; k++) {
        const char *v = fu_st_meta(f, keys[k]);
        if (v) sum += strlen(v);
    }
    fu_loss_scale s;
    const char *scaling = fu_st_meta(f, "fp16_loss_scaling");
    if (scaling && fu_loss_scale_parse(scaling, &s) == 0 && !fu_loss_scale_valid(&s)) abort();
    (void)sum;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    char path[] = "/tmp/fuzz_safetensors.XXXXXX";
    if (!fuzz_input_file(data, size, path)) return 0;
    fu_st_file *f = fu_st_open(path);
    if (f) walk(f);
    fu_st_close(f);
    unlink(path);
    return 0;
}
