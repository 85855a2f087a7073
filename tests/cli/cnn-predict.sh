#!/bin/sh
# cnn-predict: checkpoints made by a small C program compiled here against
# build/libfundus.a (an initialised MedicalCNN with spread-out BN running
# statistics and head weights, so that eval logits are far from zero; a
# checkpoint of another model; one with a tensor missing), run on tiny
# synthetic images: output format, determinism over runs, threads and batch
# sizes, image files == the same images through fundus-resize | fundus-clahe,
# strict loading, metrics-report on the output, and eval logits against
# PyTorch (tests/ref/medicalcnn.py) on the same checkpoint and pixels.
. "$(dirname "$0")/lib.sh"

lib="$FU_ROOT/build/libfundus.a"
cc=${CC:-cc}
if [ ! -f "$lib" ] || ! command -v "$cc" >/dev/null; then
    echo "skip - cnn-predict: needs build/libfundus.a and a C compiler"
    exit 0
fi
cat >"$T/mkckpt.c" <<'CEOF'
// mkckpt OUT SEED [other|partial]: a MedicalCNN checkpoint whose eval
// outputs are not all ~0.5; "other": tensors of another model; "partial": one
// tensor left out.
#include "core/error.h"
#include "core/rng.h"
#include "nn/model.h"
#include "nn/safetensors.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

int main(int argc, char **argv) {
    if (argc < 3) return 2;
    uint64_t seed = strtoull(argv[2], NULL, 10);
    const char *mode = argc > 3 ? argv[3] : "";
    if (strcmp(mode, "other") == 0) {
        float w[6] = {1, 2, 3, 4, 5, 6};
        fu_st_tensor t[2] = {{.name = "encoder.weight", .dtype = FU_ST_F32, .ndim = 2, .shape = {2, 3}, .data = w},
                             {.name = "encoder.bias", .dtype = FU_ST_F32, .ndim = 1, .shape = {6}, .data = w}};
        return fu_st_write(argv[1], t, 2, NULL) < 0;
    }
    fu_model m;
    if (fu_medicalcnn(&m, 64, 64) < 0) return 1;
    float *params = malloc(m.n_params * sizeof *params), *state = malloc(m.n_state * sizeof *state);
    int64_t *counts = calloc(m.n_counts, sizeof *counts);
    fu_model_init(&m, seed, params, state, counts);
    for (int i = 0; i < m.n_tensors; i++) {
        const fu_tensor *t = &m.tensors[i];
        fu_rng r = fu_rng_make(seed, (uint64_t)i, 7);
        if (t->buffer == FU_BUF_STATE) {
            bool var = strstr(t->name, "running_var") != NULL;
            for (size_t k = 0; k < t->numel; k++)
                state[t->offset + k] = var ? (float)fu_rng_range(&r, 0.5, 1.5) : (float)(0.1 * fu_rng_normal(&r));
        } else if (t->buffer == FU_BUF_PARAMS && strncmp(t->name, "fc.", 3) == 0 && t->ndim == 2) {
            double sd = 1 / sqrt((double)t->shape[1]);
            for (size_t k = 0; k < t->numel; k++) params[t->offset + k] = (float)(sd * fu_rng_normal(&r));
        }
        if (t->buffer == FU_BUF_COUNTS) counts[t->offset] = 3;
    }
    if (strcmp(mode, "partial") == 0) m.n_tensors--; // leaves out fc.8.bias
    int rc = fu_model_save(argv[1], &m, params, state, counts, NULL);
    if (rc < 0) fprintf(stderr, "mkckpt: %s\n", fu_error());
    return rc < 0;
}
CEOF
if ! "$cc" -std=c11 -D_GNU_SOURCE -O2 -fopenmp -I"$FU_ROOT/lib" "$T/mkckpt.c" "$lib" -o "$T/mkckpt" \
    $(make -s --no-print-directory -C "$FU_ROOT" print-ldlibs) 2>"$T/cc.err"; then
    not_ok "compile the checkpoint maker" "$(head -c 300 "$T/cc.err")"
    finish
    exit
fi
check "make checkpoints" sh -c "'$T/mkckpt' '$T/m.safetensors' 5 && '$T/mkckpt' '$T/other.safetensors' 5 other &&
    '$T/mkckpt' '$T/partial.safetensors' 5 partial"

fundus-synth --count 6 --size 48 --seed 3 --format pixels -q >"$T/px.shard"
fundus-synth --count 3 --size 64 --seed 4 --format png --dir "$T/img" -q
# Most runs take the fastest backend (auto); the reference backend runs twice,
# for its own thread independence and as the oracle of the others.
P="cnn-predict -q --model $T/m.safetensors"
R="cnn-predict -q --backend ref --model $T/m.safetensors --logits"

check "predict a pixel shard" $P --threads 2 -o "$T/a.csv" "$T/px.shard"
header=$(head -1 "$T/a.csv")
[ "$header" = "id,label,p_glaucoma,prediction" ] && ok "header" || not_ok "header" "$header"
rows=$(tail -n +2 "$T/a.csv" | wc -l)
[ "$rows" = 6 ] && ok "one row per record" || not_ok "one row per record" "$rows rows"
bad=$(tail -n +2 "$T/a.csv" | awk -F, '$1 != sprintf("synth-%06d", NR - 1) || ($2 != "0" && $2 != "1") ||
    $3 < 0 || $3 > 1 || $4 != ($3 > 0.5 ? 1 : 0) || NF != 4')
[ -z "$bad" ] && ok "ids in order, labels, p in [0,1], prediction = p > 0.5" || not_ok "row contents" "$bad"
spread=$(tail -n +2 "$T/a.csv" | awk -F, 'NR == 1 { lo = hi = $3 } { if ($3 < lo) lo = $3; if ($3 > hi) hi = $3 }
    END { print (hi - lo > 1e-3) ? "yes" : "no" }')
[ "$spread" = yes ] && ok "probabilities differ between images" || not_ok "probabilities differ between images"

$P --threads 1 "$T/px.shard" >"$T/t1.csv" 2>"$T/err"
same "a rerun with --threads 1 (was 2) gives the same bytes" "$T/a.csv" "$T/t1.csv"
$R --threads 1 "$T/px.shard" >"$T/r1.csv" 2>"$T/err"
$R --threads 2 "$T/px.shard" >"$T/ref.csv" 2>"$T/err"
same "--backend ref: --threads 1 and 2 give the same bytes" "$T/r1.csv" "$T/ref.csv"
$P --batch 1 "$T/px.shard" >"$T/b1.csv" 2>"$T/err"
$P --batch 4 "$T/px.shard" >"$T/b4.csv" 2>"$T/err"
same "--batch 1 and 4 give the same bytes" "$T/b1.csv" "$T/b4.csv"
$P --size 48 <"$T/px.shard" >"$T/s48.csv" 2>"$T/err"
same "size taken from the pixel records; stdin" "$T/a.csv" "$T/s48.csv"

# Image files: decoded, resized to N, enhanced, exactly as the pipeline does.
$P --size 48 "$T"/img/images/*.png >"$T/files.csv" 2>"$T/err" || not_ok "predict image files" "$(cat "$T/err")"
shard-pack -q "$T"/img/images/*.png | fundus-resize -q --size 48 | fundus-clahe -q >"$T/pipe.shard"
$P "$T/pipe.shard" >"$T/pipe.csv" 2>"$T/err"
ids=$(tail -n +2 "$T/files.csv" | cut -d, -f1,2 | tr '\n' ' ')
[ "$ids" = "synth-000000, synth-000001, synth-000002, " ] && ok "image files: id = file name, label empty" ||
    not_ok "image files: id = file name, label empty" "$ids"
if [ "$(cut -d, -f3,4 "$T/files.csv")" = "$(cut -d, -f3,4 "$T/pipe.csv")" ]; then
    ok "image files == fundus-resize | fundus-clahe shard"
else
    not_ok "image files == fundus-resize | fundus-clahe shard" "$(paste -d' ' "$T/files.csv" "$T/pipe.csv" | head -3)"
fi
$P --size 48 --raw "$T"/img/images/*.png >"$T/raw.csv" 2>"$T/err"
if cmp -s "$T/raw.csv" "$T/files.csv"; then not_ok "--raw skips the enhancement"; else ok "--raw skips the enhancement"; fi

check "metrics-report reads the output" metrics-report "$T/a.csv"

# Bad input.
check_fails "checkpoint of another model" 1 "cnn-predict: .*other.safetensors: not a MedicalCNN checkpoint" \
    $P --model "$T/other.safetensors" "$T/px.shard"
check_fails "checkpoint missing a tensor" 1 "cnn-predict: .*partial.safetensors: tensor fc.8.bias is missing" \
    $P --model "$T/partial.safetensors" "$T/px.shard"
check_fails "no --model" 2 "cnn-predict: --model is required" cnn-predict "$T/px.shard"
check_fails "missing checkpoint file" 1 "cnn-predict: .*nope.safetensors: " $P --model "$T/nope.safetensors" "$T/px.shard"
printf 'hello' >"$T/junk.txt"
check_fails "neither shard nor image" 1 "cnn-predict: .*junk.txt: neither a shard nor" $P "$T/junk.txt"
check_fails "unknown backend" 2 "cnn-predict: --backend: 'gpu'" $P --backend gpu "$T/px.shard"

# The oneDNN backend, when built, agrees with the reference.
if cnn-predict -q --backend cpu --model "$T/m.safetensors" --logits "$T/px.shard" >"$T/cpu.csv" 2>"$T/err"; then
    d=$(paste -d, "$T/ref.csv" "$T/cpu.csv" | tail -n +2 | awk -F, '{ for (k = 5; k <= 6; k++) {
        e = $k - $(k + 6); if (e < 0) e = -e; s = $k < 0 ? -$k : $k; if (s < 1) s = 1; if (e / s > m) m = e / s } }
        END { printf "%.3g", m }')
    awk "BEGIN { exit !($d <= 1e-3) }" && ok "cpu backend logits = ref within 1e-3 (max $d)" ||
        not_ok "cpu backend logits = ref" "max relative difference $d"
else
    echo "skip - cpu backend: $(head -1 "$T/err")"
fi

# PyTorch eval-mode logits on the same checkpoint and pixels.
${PYTHON:-/usr/bin/python3} - "$T/m.safetensors" "$T/px.shard" "$T/ref.csv" <<'PYEOF'
import csv, json, os, struct, sys
sys.path.insert(0, os.path.join(os.environ["FU_ROOT"], "tests", "ref"))
import common
try:
    import numpy as np, torch
except ImportError as e:
    common.skip("eval logits = PyTorch's", str(e))
    sys.exit(0)
from medicalcnn import MedicalCNN
ckpt, shard, pred = sys.argv[1:4]
b = open(ckpt, "rb").read(); n = struct.unpack("<Q", b[:8])[0]
h = json.loads(b[8:8 + n]); h.pop("__metadata__", None)
dt = {"F32": np.float32, "I64": np.int64}
sd = {k: torch.from_numpy(np.frombuffer(b[8 + n + v["data_offsets"][0]:8 + n + v["data_offsets"][1]],
      dtype=dt[v["dtype"]]).reshape(v["shape"]).copy()) for k, v in h.items()}
model = MedicalCNN()
model.load_state_dict(sd, strict=True)
model.eval()
recs = common.read_shard(shard)
x = np.stack([np.frombuffer(r["payload"], np.uint8).reshape(r["h"], r["w"], 3) for r in recs])
x = torch.from_numpy(x).permute(0, 3, 1, 2).float() / 255.0
mean = torch.tensor([0.485, 0.456, 0.406]).view(1, 3, 1, 1)
std = torch.tensor([0.229, 0.224, 0.225]).view(1, 3, 1, 1)
with torch.no_grad():
    want = model((x - mean) / std).double().numpy()
rows = list(csv.DictReader(open(pred)))
got = np.array([[float(r["logit_0"]), float(r["logit_1"])] for r in rows])
err = np.abs(got - want).max() / max(1.0, np.abs(want).max())
p_want = torch.softmax(torch.from_numpy(want), 1)[:, 1].numpy()
p_err = np.abs(np.array([float(r["p_glaucoma"]) for r in rows]) - p_want).max()
common.report("eval logits = PyTorch's (relative %.2g <= 1e-4), p_glaucoma (%.2g)" % (err, p_err),
              err <= 1e-4 and p_err <= 1e-5, "logits range %.3g..%.3g" % (want.min(), want.max()))
sys.exit(common.exit_status())
PYEOF
[ $? = 0 ] || fails=$((fails + 1))
finish
