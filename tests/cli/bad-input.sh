# The bad-input matrix: every tool, every kind of bad input. Each case must
# give one error line "tool: ...", the right exit status (1 bad input, 2 bad
# usage), nothing on stdout, and no output file or temporary left behind.
. tests/cli/lib.sh

# ---- make the bad inputs ------------------------------------------------------
# Damaged images go straight into shards as encoded records (shard-pack
# only probes headers, and a truncated TIFF has no header left to probe), so
# the decoders themselves meet them.
"$PYTHON" - "$T" "$FU_ROOT/tests/ref" <<'PY' || { echo "not ok - bad-input: could not make inputs"; exit 1; }
import sys, io, numpy as np, cv2
from PIL import Image
t = sys.argv[1]
sys.path.insert(0, sys.argv[2])
import common
rng = np.random.default_rng(1)
img = (rng.random((64, 80, 3)) * 255).astype(np.uint8)
good = {ext: cv2.imencode("." + ext, img)[1].tobytes() for ext in ("png", "jpg", "tif")}
open(f"{t}/good.png", "wb").write(good["png"])
cmyk = io.BytesIO()
Image.new("CMYK", (32, 32), (10, 20, 30, 40)).save(cmyk, "JPEG")
cases = {"cmyk": cmyk.getvalue()}
for ext, b in good.items():
    cases[f"good-{ext}"] = b
    cases[f"truncated-{ext}"] = b[: len(b) // 2]
    c = bytearray(b)
    mid = len(c) // 2
    c[mid : mid + 64] = bytes(range(64))  # scribble over the middle of the data
    if ext == "tif":  # raw TIFF strips have no checksum: scribble over the directory
        ifd = int.from_bytes(b[4:8], "little")
        c = bytearray(b)
        c[ifd + 2 : ifd + 2 + 48] = bytes(range(200, 248))
    cases[f"corrupt-{ext}"] = bytes(c)
for name, payload in cases.items():
    rid = name.split("-")[0]
    common.write_shard(f"{t}/{name}.shard", [{"id": rid, "label": 0, "payload": payload}])
open(f"{t}/text.png", "w").write("this is not an image\n")
open(f"{t}/empty.png", "wb").close()
PY
cp "$T/good-png.shard" "$T/good.shard"
size=$(wc -c <"$T/good.shard")
head -c $((size - 64)) "$T/good.shard" >"$T/noend.shard"       # end record missing
head -c $((size / 2)) "$T/good.shard" >"$T/cut.shard"          # cut inside a payload
cp "$T/good.shard" "$T/flip.shard"                             # one payload byte flipped
printf '\377' | dd of="$T/flip.shard" bs=1 seek=200 conv=notrunc 2>/dev/null
{ printf 'XXXXXXXX'; tail -c +9 "$T/good.shard"; } >"$T/magic.shard" # wrong magic
: >"$T/empty.shard"
mkdir -p "$T/dir"
noway="$T/good.png/out.shard"     # unwritable output (below a file: fails even for root)

# bad NAME STATUS PATTERN TOOL ARGS... : fails as it should, leaving no $T/o.out
bad() {
    name=$1 st=$2 pat=$3
    shift 3
    rm -f "$T"/o.out
    check_fails "$name" "$st" "$pat" "$@"
    if ls "$T" | grep -q '^o\.out'; then not_ok "$name: leaves no output" "$(ls "$T" | grep '^o\.out')"; fi
}

# ---- shard readers: every tool that reads shards ------------------------------------
for t in shard-info "fundus-resize --size 32" fundus-clahe "fundus-augment --seed 1" \
         "shard-split --ratios 70,15,15 --seed 1 --stratify -o $T/o.out" "shard-unpack --dir $T/o.out"; do
    tn=${t%% *}
    o="-o $T/o.out"
    case "$tn" in shard-split|shard-unpack|shard-info) o="" ;; esac
    # shellcheck disable=SC2086
    {
    bad "$tn: missing file" 1 "^$tn: .*nothere.shard: cannot open" $t $o "$T/nothere.shard"
    bad "$tn: not a shard" 1 "^$tn: .*text.png: not a shard" $t $o "$T/text.png"
    bad "$tn: wrong magic" 1 "^$tn: .*magic.shard: not a shard" $t $o "$T/magic.shard"
    bad "$tn: empty input" 1 "^$tn: .*empty input" $t $o "$T/empty.shard"
    bad "$tn: empty stdin" 1 "^$tn: stdin: empty input" $t $o </dev/null
    bad "$tn: truncated shard" 1 "^$tn: .*truncated" $t $o "$T/cut.shard"
    bad "$tn: shard without end record" 1 "^$tn: .*without an end record" $t $o "$T/noend.shard"
    bad "$tn: a folder" 1 "^$tn: .*: is a directory" $t $o "$T/dir"
    bad "$tn: unknown option" 2 "^$tn: .*--bogus" $t --bogus "$T/good.shard"
    }
done
bad "shard-info --verify: flipped payload byte" 1 "^shard-info: .*flip.shard: record at byte 64 .*payload CRC mismatch" shard-info --verify "$T/flip.shard"
for t in "fundus-resize --size 32" fundus-clahe; do
    tn=${t%% *}
    # shellcheck disable=SC2086
    {
    bad "$tn: flipped payload byte" 1 "^$tn: .*payload CRC mismatch" $t -o "$T/o.out" "$T/flip.shard"
    for f in truncated corrupt; do
        for ext in png jpg tif; do
            bad "$tn: $f $ext" 1 "^$tn: record 0 \\($f\\): " $t -o "$T/o.out" "$T/$f-$ext.shard"
        done
    done
    bad "$tn: CMYK JPEG" 1 "^$tn: record 0 \\(cmyk\\): .*CMYK" $t -o "$T/o.out" "$T/cmyk.shard"
    bad "$tn: unwritable output" 1 "^$tn: .*out.shard: cannot create" $t -o "$noway" "$T/good.shard"
    }
done

# ---- tool-specific usage and input errors ---------------------------------------------
bad "fundus-resize: no --size" 2 "^fundus-resize: .*--size" fundus-resize "$T/good.shard"
bad "fundus-resize: --size 0" 2 "^fundus-resize: --size" fundus-resize --size 0 "$T/good.shard"
bad "fundus-resize: --size x" 2 "^fundus-resize: --size: 'x' is not" fundus-resize --size x "$T/good.shard"
bad "fundus-clahe: --clip -1" 2 "^fundus-clahe: --clip" fundus-clahe --clip -1 "$T/good.shard"
bad "fundus-clahe: --median 4" 2 "^fundus-clahe: --median" fundus-clahe --median 4 "$T/good.shard"
bad "fundus-augment: no --seed is fine, bad --per-class is not" 2 "^fundus-augment: --per-class" fundus-augment --per-class 0=x "$T/good.shard"
bad "fundus-augment: unwritable output" 1 "^fundus-augment: .*out.shard: cannot create" fundus-augment --seed 1 -o "$noway" "$T/good.shard"
bad "shard-split: ratios not summing to 100" 2 "^shard-split: --ratios" shard-split --ratios 50,20,20 --seed 1 -o "$T/o.out" "$T/good.shard"
bad "shard-split: unwritable folder" 1 "^shard-split: .*" shard-split --ratios 70,15,15 --seed 1 -o "$T/good.png/sub" "$T/good.shard"
bad "shard-unpack: unwritable folder" 1 "^shard-unpack: .*" shard-unpack --dir "$T/good.png/sub" "$T/good.shard"
bad "fundus-synth: --count 0" 2 "^fundus-synth: --count" fundus-synth --count 0 --size 64 --seed 1
bad "fundus-synth: unwritable output" 1 "^fundus-synth: .*out.shard: cannot create" fundus-synth --count 2 --size 64 --seed 1 -o "$noway"

# ---- shard-pack -----------------------------------------------------------------------
printf 'path,label\ngood.png,0\nnothere.png,1\n' >"$T/missing.csv"
printf 'path,label\ngood.png,maybe\n' >"$T/label.csv"
printf 'path,label\n' >"$T/emptylist.csv"
printf 'path,label\ngood.png,0\ngood.png,1\n' >"$T/dup.csv"
bad "shard-pack: missing image in CSV" 1 "^shard-pack: .*nothere.png: cannot open" shard-pack --labels "$T/missing.csv" -o "$T/o.out"
bad "shard-pack: unknown label" 1 "^shard-pack: .*label.csv: line 2: unknown label 'maybe'" shard-pack --labels "$T/label.csv" -o "$T/o.out"
bad "shard-pack: CSV without images" 1 "^shard-pack: .*emptylist.csv: no images" shard-pack --labels "$T/emptylist.csv" -o "$T/o.out"
bad "shard-pack: duplicate ids" 1 "^shard-pack: .*two images would get the id" shard-pack --labels "$T/dup.csv" -o "$T/o.out"
bad "shard-pack: non-image file" 1 "^shard-pack: .*text.png: " shard-pack -o "$T/o.out" "$T/text.png"
bad "shard-pack: empty file" 1 "^shard-pack: .*empty.png: empty file" shard-pack -o "$T/o.out" "$T/empty.png"
bad "shard-pack: missing file" 1 "^shard-pack: .*nothere.png: cannot open" shard-pack -o "$T/o.out" "$T/nothere.png"
bad "shard-pack: missing labels file" 1 "^shard-pack: .*nothere.csv: cannot open" shard-pack --labels "$T/nothere.csv" -o "$T/o.out"
bad "shard-pack: unwritable output" 1 "^shard-pack: .*out.shard: cannot create" shard-pack -o "$noway" "$T/good.png"
bad "shard-pack: no input" 2 "^shard-pack: no input" shard-pack
no_tmp_left "no temporaries left anywhere" "$T"
finish
