# fundus-synth: class counts, sizes, formats, determinism across seeds and
# threads, the --dir layout that shard-pack reads, bad usage.
. tests/cli/lib.sh

# Golden summary: counts per class, split none, size.
fundus-synth --count 20 --size 64 --seed 3 -o "$T/a.shard"
shard-info "$T/a.shard" | grep -v '^payload bytes' >"$T/got.txt"
cat >"$T/want.txt" <<'WANT'
records: 20
kinds: encoded=20
labels: 0=10 1=10
split none: 20 (0=10 1=10)
sizes: smallest 64x64, largest 64x64
WANT
same "20 images: 10 per class, split none, 64x64" "$T/want.txt" "$T/got.txt"
fundus-synth --count 20 --size 64 --seed 3 --glaucoma-fraction 0.3 | shard-info | grep '^labels' >"$T/got.txt"
echo "labels: 0=14 1=6" >"$T/want.txt"
same "--glaucoma-fraction 0.3 gives round(20 x 0.3) glaucoma images" "$T/want.txt" "$T/got.txt"
fundus-synth --count 3 --width 300 --height 200 --seed 1 | shard-info | grep '^sizes' >"$T/got.txt"
echo "sizes: smallest 300x200, largest 300x200" >"$T/want.txt"
same "--width/--height give non-square images" "$T/want.txt" "$T/got.txt"
fundus-synth --count 3 --size 64 --seed 3 | shard-info --list | cut -d, -f1,2,3 >"$T/got.txt"
printf 'id,label,split\nsynth-000000,1,\nsynth-000001,0,\nsynth-000002,1,\n' >"$T/want.txt"
same "ids synth-NNNNNN, labels set, split none" "$T/want.txt" "$T/got.txt"

# Determinism: same seed same bytes, whatever the thread count; new seed, new images.
for fmt in png jpeg pixels; do
    fundus-synth --count 9 --size 80 --seed 4 --format $fmt --threads 1 -o "$T/t1.shard"
    fundus-synth --count 9 --size 80 --seed 4 --format $fmt --threads 2 >"$T/t2.shard"
    same "--format $fmt: --threads 1 and 2 give the same bytes" "$T/t1.shard" "$T/t2.shard"
done
fundus-synth --count 9 --size 80 --seed 5 --format pixels -o "$T/s5.shard"
if cmp -s "$T/t1.shard" "$T/s5.shard"; then not_ok "another seed gives other images"; else ok "another seed gives other images"; fi
# A prefix of a longer run is the shorter run: image i depends on (seed, i) only.
fundus-synth --count 4 --size 80 --seed 4 --format pixels | shard-info --list >"$T/four.txt"
shard-info --list "$T/t1.shard" | head -5 >"$T/nine.txt"
same "image i does not depend on --count" "$T/four.txt" "$T/nine.txt"

# Formats decode to the same pixels (PNG exactly, JPEG q90 closely), and
# --dir writes the same PNG files with a labels.csv that shard-pack reads.
fundus-synth --count 6 --size 96 --seed 8 --format png -o "$T/png.shard"
fundus-synth --count 6 --size 96 --seed 8 --format jpeg -o "$T/jpeg.shard"
fundus-synth --count 6 --size 96 --seed 8 --format pixels -o "$T/pix.shard"
fundus-synth --count 6 --size 96 --seed 8 --dir "$T/set"
check "--dir: shard-pack reads its labels.csv" shard-pack -q --labels "$T/set/labels.csv" -o "$T/packed.shard"
"$PYTHON" - "$T" "$FU_ROOT" <<'PY'
import sys, numpy as np, cv2
t, rootdir = sys.argv[1], sys.argv[2]
sys.path.insert(0, rootdir + "/tests/ref")
from common import read_shard, report, exit_status
png, jpg, pix, packed = (read_shard(f"{t}/{n}.shard") for n in ("png", "jpeg", "pix", "packed"))
def dec(b):
    return cv2.cvtColor(cv2.imdecode(np.frombuffer(b, np.uint8), cv2.IMREAD_COLOR), cv2.COLOR_BGR2RGB)
raw = [np.frombuffer(r["payload"], np.uint8).reshape(r["h"], r["w"], 3) for r in pix]
report("png records are PNG files of exactly the pixel records",
       all(r["payload"][:8] == b"\x89PNG\r\n\x1a\n" and np.array_equal(dec(r["payload"]), x) for r, x in zip(png, raw)))
# Oracle: OpenCV's own quality-90 JPEG of the same pixels loses about as much.
def cv2_q90(x):
    ok, b = cv2.imencode(".jpg", cv2.cvtColor(x, cv2.COLOR_RGB2BGR), [cv2.IMWRITE_JPEG_QUALITY, 90])
    return dec(b.tobytes())
err = max(float(np.abs(dec(r["payload"]).astype(int) - x).mean()) for r, x in zip(jpg, raw))
ref = max(float(np.abs(cv2_q90(x).astype(int) - x).mean()) for x in raw)
report("jpeg records are JPEG q90 of the same pixels", all(r["payload"][:3] == b"\xff\xd8\xff" for r in jpg)
       and err < 1.25 * ref + 0.25, "largest mean abs difference %.2f, OpenCV q90 %.2f" % (err, ref))
labels = [l.strip().split(",") for l in open(f"{t}/set/labels.csv")]
report("--dir labels.csv is path,label with paths relative to the folder",
       labels[0] == ["path", "label"] and [l[0] for l in labels[1:]] == ["images/synth-%06d.png" % i for i in range(6)]
       and [int(l[1]) for l in labels[1:]] == [r["label"] for r in png])
report("--dir files are the same PNG bytes as the shard's records",
       [r["payload"] for r in packed] == [r["payload"] for r in png] and [r["label"] for r in packed] == [r["label"] for r in png])
# The pictures look like fundus photographs: dark corners, reddish retina, the
# brightest region (the optic disc) inside the field of view.
ok = True
for x in raw:
    corner = x[:8, :8].max()
    centre = x[24:72, 24:72].reshape(-1, 3).mean(0)
    ok &= corner < 40 and centre[0] > 1.5 * centre[1] > 0 and centre[1] > centre[2]
report("dark surround, red-dominant retina", ok)
sys.exit(exit_status())
PY
[ $? = 0 ] || not_ok "python checks ran"

# Bad usage and output errors: one line, status 2 (usage) or 1, no files left.
check_fails "--format gif is refused" 2 "^fundus-synth: --format: 'gif'" fundus-synth --count 2 --format gif
check_fails "--dir and -o together are refused" 2 "^fundus-synth: --dir and -o" fundus-synth --count 2 --dir "$T/x" -o "$T/x.shard"
check_fails "--dir with pixels is refused" 2 "^fundus-synth: --dir needs" fundus-synth --count 2 --format pixels --dir "$T/x"
check_fails "--size 8 is refused" 2 "^fundus-synth: --size" fundus-synth --count 2 --size 8
check_fails "--glaucoma-fraction 2 is refused" 2 "^fundus-synth: --glaucoma-fraction" fundus-synth --glaucoma-fraction 2
check_fails "an input argument is refused" 2 "^fundus-synth: in.shard: unexpected argument" fundus-synth in.shard
check_fails "--dir below a file fails" 1 "^fundus-synth: .*a.shard/sub: cannot create folder" fundus-synth --count 2 --dir "$T/a.shard/sub"
[ -e "$T/x" ] && not_ok "refused runs leave no folder" || ok "refused runs leave no folder"
no_tmp_left "no temporaries left" "$T"
no_tmp_left "no temporaries left in --dir" "$T/set/images"
finish
