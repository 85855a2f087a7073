# shard-unpack: lossless PNG files named after the ids, labels.csv, unique
# names for colliding ids, same folder for any --threads, errors.
. tests/cli/lib.sh

fundus-synth --count 5 --size 48 --seed 9 --format jpeg -o "$T/jpeg.shard"
fundus-synth --count 5 --size 48 --seed 9 --format pixels -o "$T/pix.shard"
shard-split --ratios 60,20,20 --seed 1 -o "$T/split" "$T/pix.shard"
check "unpack encoded records" shard-unpack --dir "$T/j" "$T/jpeg.shard"
check "unpack pixel records from stdin into a new nested folder" sh -c "cat '$T/split/val.shard' '$T/split/train.shard' | shard-unpack --dir '$T/p/q'"
ls "$T/j" >"$T/got.txt"
printf 'labels.csv\nsynth-000000.png\nsynth-000001.png\nsynth-000002.png\nsynth-000003.png\nsynth-000004.png\n' >"$T/want.txt"
same "one PNG per record, named after its id" "$T/want.txt" "$T/got.txt"
head -3 "$T/p/q/labels.csv" >"$T/got.txt"
shard-info --list "$T/split/val.shard" "$T/split/train.shard" | tail -n +2 | head -2 | awk -F, '{ print $1 ".png," $1 "," $2 "," $3 }' >"$T/ids.txt"
{ echo "file,id,label,split"; cat "$T/ids.txt"; } >"$T/want.txt"
same "labels.csv: file,id,label,split in stream order" "$T/want.txt" "$T/got.txt"

"$PYTHON" - "$T" "$FU_ROOT" <<'PY'
import sys, glob, numpy as np, cv2
t, rootdir = sys.argv[1], sys.argv[2]
sys.path.insert(0, rootdir + "/tests/ref")
from common import read_shard, report, exit_status
def rgb(path):
    return cv2.cvtColor(cv2.imread(path, cv2.IMREAD_COLOR), cv2.COLOR_BGR2RGB)
pix = read_shard(f"{t}/pix.shard")
unpacked = [r for r in pix if r["id"] in open(f"{t}/p/q/labels.csv").read()]
ok = len(unpacked) == 4 and all(
    open(f"{t}/p/q/{r['id']}.png", "rb").read(8) == b"\x89PNG\r\n\x1a\n" and
    np.array_equal(rgb(f"{t}/p/q/{r['id']}.png"), np.frombuffer(r["payload"], np.uint8).reshape(48, 48, 3))
    for r in unpacked)
report("pixel records come back exactly (lossless PNG)", ok)
jpg = read_shard(f"{t}/jpeg.shard")
ok = all(np.array_equal(rgb(f"{t}/j/{r['id']}.png"),
                        cv2.cvtColor(cv2.imdecode(np.frombuffer(r["payload"], np.uint8), cv2.IMREAD_COLOR), cv2.COLOR_BGR2RGB))
         for r in jpg)
report("encoded records come back as PNGs of their decoded pixels", ok)
sys.exit(exit_status())
PY
[ $? = 0 ] || not_ok "python checks"

# Ids that collide once made safe: x/a and x_a, and unsafe characters.
mkdir -p "$T/ids/x"
fundus-synth --count 3 --size 32 --seed 1 --dir "$T/gen"
cp "$T/gen/images/synth-000000.png" "$T/ids/x/a.png"
cp "$T/gen/images/synth-000001.png" "$T/ids/x_a.png"
cp "$T/gen/images/synth-000002.png" "$T/ids/we ird;name.png"
shard-pack -q -o "$T/ids.shard" "$T/ids"
shard-unpack --dir "$T/k" "$T/ids.shard"
tail -n +2 "$T/k/labels.csv" | cut -d, -f1,2 | sort >"$T/got.txt"
printf 'we_ird_name.png,we ird;name\nx_a-2.png,x_a\nx_a.png,x/a\n' | sort >"$T/want.txt"
same "unsafe characters become _, colliding names get -2" "$T/want.txt" "$T/got.txt"

shard-unpack --threads 1 --dir "$T/t1" "$T/jpeg.shard"
shard-unpack --threads 2 --dir "$T/t2" "$T/jpeg.shard"
if diff -r "$T/t1" "$T/t2" >/dev/null; then ok "--threads 1 and 2 write the same files"; else not_ok "--threads 1 and 2 write the same files"; fi

check_fails "no --dir" 2 "^shard-unpack: --dir: required" shard-unpack "$T/pix.shard"
check_fails "-o is refused" 2 "^shard-unpack: -o" shard-unpack --dir "$T/x" -o "$T/y" "$T/pix.shard"
check_fails "--dir below a file" 1 "^shard-unpack: .*pix.shard/sub: cannot create folder" shard-unpack --dir "$T/pix.shard/sub" "$T/pix.shard"
check_fails "missing file" 1 "^shard-unpack: .*nothere.shard: cannot open" shard-unpack --dir "$T/x" "$T/nothere.shard"
# A good shard followed by a broken one: what was written is taken back.
head -c 3000 "$T/pix.shard" >"$T/cut.shard"
check_fails "a broken second input" 1 "^shard-unpack: .*cut.shard: truncated" shard-unpack --dir "$T/x" "$T/jpeg.shard" "$T/cut.shard"
[ -e "$T/x" ] && not_ok "failed runs leave no folder or files" "$(ls -R "$T/x" | head -3)" || ok "failed runs leave no folder or files"
for d in j p/q k t1; do no_tmp_left "no temporaries left in $d" "$T/$d"; done
finish
