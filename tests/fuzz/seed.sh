#!/bin/sh
# Seed corpus for a harness: small valid inputs the fuzzer mutates from.
#   seed.sh shard|decode DIR
set -eu
h=$1 dir=$2
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
