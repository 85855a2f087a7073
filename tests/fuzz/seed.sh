#!/bin/sh
# Seed corpus for a harness: small valid inputs the fuzzer mutates from, and
# the inputs that found bugs (every run replays them first).
#   seed.sh shard|decode|safetensors|csv DIR
set -eu
h=$1 dir=$2
# (csv and safetensors: written on every run, so that a corpus grown before
# a regression input was added replays it too)
if [ "$h" = csv ]; then # results rows of 1 and 2 ranks (the table, the scaling fit), and predictions
    logs=bench/logs/h200-2026-12-04
    { head -2 "$logs/cpu1t2-acrima-results.csv" | sed 's/^cpu1t2,/cpu1,/'
      tail -1 "$logs/cpu1t2-acrima-results.csv" | sed -e 's/^cpu1t2,/cpux2,/' -e 's/,1,2,fp32,/,2,2,fp32,/'
    } >"$dir/results.csv"
    head -20 "$logs/cpu1t2-acrima-predictions-test.csv" >"$dir/predictions.csv"
    # A config with two worker counts: its error message read the freed table (found here).
    { cat "$dir/results.csv"; tail -1 "$dir/results.csv" | sed 's/,2,2,fp32,/,4,2,fp32,/'; } >"$dir/workers-conflict.csv"
    exit 0
fi
if [ "$h" = safetensors ]; then # small files in the format's three dtypes, one with metadata
    "${PYTHON:-/usr/bin/python3}" -c "
import json, struct, sys
def write(path, header, data):
    h = json.dumps(header).encode()
    open(path, 'wb').write(struct.pack('<Q', len(h)) + h + data)
write(sys.argv[1] + '/f32', {'a': {'dtype': 'F32', 'shape': [2, 3], 'data_offsets': [0, 24]}},
      struct.pack('<6f', 1, -2, 0.5, 3, 4, 5))
write(sys.argv[1] + '/meta', {'__metadata__': {'format': 'pt', 'step': '12', 'fp16_loss_scaling': '0x1p+16 0;0x1p+9 3'},
      'w': {'dtype': 'F64', 'shape': [], 'data_offsets': [0, 8]},
      'n': {'dtype': 'I64', 'shape': [1, 1, 1, 1], 'data_offsets': [8, 16]}}, struct.pack('<dq', 0.25, 7))
# a member without its ':': it leaked its name (found here)
h = b'{\"a\": {\"2, 3], \"data_offsets\": [0, 24]}}'
open(sys.argv[1] + '/no-colon', 'wb').write(struct.pack('<Q', len(h)) + h + bytes(24))
" "$dir"
    exit 0
fi
[ -n "$(ls "$dir" 2>/dev/null)" ] && exit 0
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
bin/fundus-synth --quiet --count 2 --size 24 --seed 3 --dir "$tmp/png"
bin/fundus-synth --quiet --count 1 --size 24 --seed 3 --format jpeg --dir "$tmp/jpeg"
"${PYTHON:-/usr/bin/python3}" -c "
import sys, cv2, numpy as np
img = (np.arange(16 * 20 * 3) % 251).astype(np.uint8).reshape(16, 20, 3)
cv2.imwrite(sys.argv[1] + '/a.tif', img)
cv2.imwrite(sys.argv[1] + '/b.png', img[:, :, 0])
cv2.imwrite(sys.argv[1] + '/c16.png', img.astype(np.uint16) * 257)
cv2.imwrite(sys.argv[1] + '/d.jpg', img, [cv2.IMWRITE_JPEG_PROGRESSIVE, 1])
" "$tmp"
case "$h" in
shard)
    bin/shard-pack --quiet -o "$dir/packed.shard" "$tmp/png" "$tmp/a.tif"
    bin/fundus-synth --quiet --count 2 --size 8 --seed 3 --format pixels -o "$dir/pixels.shard"
    ;;
decode)
    i=0
    for f in "$tmp"/png/*/*.png "$tmp"/png/*.png "$tmp"/jpeg/*/*.jpg "$tmp"/jpeg/*.jpg "$tmp"/*.tif "$tmp"/*.png "$tmp"/*.jpg; do
        [ -f "$f" ] && cp "$f" "$dir/seed$i" && i=$((i + 1))
    done
    ;;
esac
