# fundus-augment: copy counts per class (--per-class, --factor), ids, originals
# unchanged, val/test untouched, determinism, bad usage.
. tests/cli/lib.sh

fundus-synth --count 12 --size 64 --seed 5 --format pixels -o "$T/bal.shard"               # 6 + 6
fundus-synth --count 12 --size 64 --seed 5 --format pixels --glaucoma-fraction 0.25 -o "$T/imb.shard" # 9 + 3

labels() { shard-info "$@" | grep '^labels'; }
expect() { # NAME WANT COMMAND...: the command's stdout is WANT
    name=$1 want=$2
    shift 2
    got=$("$@" 2>&1)
    if [ "$got" = "$want" ]; then ok "$name"; else not_ok "$name" "got '$got', want '$want'"; fi
}

fundus-augment --seed 1 -o "$T/def.shard" "$T/bal.shard"
expect "default 0=2,1=4: 6+6 become 12+24" "labels: 0=12 1=24" labels "$T/def.shard"
fundus-augment --seed 1 --per-class 0=3 "$T/bal.shard" >"$T/pc.shard"
expect "--per-class 0=3: label 1 unnamed, no copies" "labels: 0=18 1=6" labels "$T/pc.shard"
fundus-augment --seed 1 --factor 2 -o "$T/f2.shard" "$T/imb.shard"
expect "--factor 2: 9+3 become 18+18" "labels: 0=18 1=18" labels "$T/f2.shard"
fundus-augment --seed 1 --factor 1.5 -o "$T/f15.shard" "$T/imb.shard"
expect "--factor 1.5: round(13.5) = 14 of each class" "labels: 0=14 1=14" labels "$T/f15.shard"
fundus-augment --seed 1 --factor 1 -o "$T/f1.shard" "$T/imb.shard"
expect "--factor 1: the minority grows to the majority" "labels: 0=9 1=9" labels "$T/f1.shard"
fundus-augment --seed 1 --factor 2 -o "$T/two.shard" "$T/imb.shard" "$T/bal.shard"
expect "--factor over two files counts the classes of both" "labels: 0=30 1=30" labels "$T/two.shard"

# Ids: the original first, then NAME#a1, NAME#a2, ...; all pixels.
shard-info --list "$T/def.shard" | head -7 | cut -d, -f1,2,4 >"$T/got.txt"
cat >"$T/want.txt" <<'WANT'
id,label,kind
synth-000000,1,u8-hwc
synth-000000#a1,1,u8-hwc
synth-000000#a2,1,u8-hwc
synth-000000#a3,1,u8-hwc
synth-000001,0,u8-hwc
synth-000001#a1,0,u8-hwc
WANT
same "copies follow their original as NAME#aK" "$T/want.txt" "$T/got.txt"
# --factor 1.5 on the minority: 3 records share 11 copies as 3, 4, 4 (floor((j+1)E/n) - floor(jE/n)).
shard-info --list "$T/f15.shard" | awk -F, 'NR > 1 && $2 == 1 { split($1, a, "#"); n[a[1]]++ } END { for (k in n) print k, n[k] }' | sort >"$T/got.txt"
printf 'synth-000001 4\nsynth-000005 5\nsynth-000009 5\n' >"$T/want.txt"
same "--factor spreads the copies evenly and exactly" "$T/want.txt" "$T/got.txt"

# Determinism, and originals pass unchanged.
fundus-augment --seed 1 --threads 1 -o "$T/t1.shard" "$T/bal.shard"
fundus-augment --seed 1 --threads 2 <"$T/bal.shard" | cat >"$T/t2.shard"
same "--threads 1 and 2 (file and pipe) give the same bytes" "$T/t1.shard" "$T/t2.shard"
fundus-augment --seed 2 -o "$T/s2.shard" "$T/bal.shard"
if cmp -s "$T/t1.shard" "$T/s2.shard"; then not_ok "another seed gives other copies"; else ok "another seed gives other copies"; fi

# Val/test untouched: split first, augment the concatenation.
shard-split --ratios 50,25,25 --seed 1 --stratify -o "$T/split" "$T/bal.shard"
cat "$T/split/train.shard" "$T/split/val.shard" "$T/split/test.shard" | fundus-augment --seed 1 -o "$T/mixed.shard"
shard-info "$T/mixed.shard" | grep '^split' >"$T/got.txt"
# 6 per class split 3 / 1.5 / 1.5 -> 3 / 2 / 1 (the tie goes to val); the 3 + 3
# train records grow to 6 + 12, val and test keep theirs.
printf 'split train: 18 (0=6 1=12)\nsplit val: 4 (0=2 1=2)\nsplit test: 2 (0=1 1=1)\n' >"$T/want.txt"
same "only the train split grows" "$T/want.txt" "$T/got.txt"

fundus-synth --count 4 --size 64 --seed 6 -o "$T/png.shard"
fundus-augment --seed 1 -o "$T/fromsplit.shard" "$T/png.shard"
"$PYTHON" - "$T" "$FU_ROOT" <<'PY'
import sys, numpy as np, cv2
t, rootdir = sys.argv[1], sys.argv[2]
sys.path.insert(0, rootdir + "/tests/ref")
from common import read_shard, report, exit_status
def px(r):
    return np.frombuffer(r["payload"], np.uint8).reshape(r["h"], r["w"], 3)
src = {r["id"]: r for r in read_shard(f"{t}/bal.shard")}
out = read_shard(f"{t}/def.shard")
report("originals keep their exact pixels", all(r["payload"] == src[r["id"]]["payload"] for r in out if "#" not in r["id"]))
copies = [r for r in out if "#" in r["id"]]
report("copies differ from their original", all(r["payload"] != src[r["id"].split("#")[0]]["payload"] for r in copies))
report("copies keep size, label and split", all((r["h"], r["w"], r["label"], r["split"]) == (src[r["id"].split("#")[0]]["h"],
       src[r["id"].split("#")[0]]["w"], src[r["id"].split("#")[0]]["label"], src[r["id"].split("#")[0]]["split"]) for r in copies))
mixed, parts = read_shard(f"{t}/mixed.shard"), read_shard(f"{t}/split/val.shard") + read_shard(f"{t}/split/test.shard")
report("val and test records pass through byte for byte",
       [(r["id"], r["payload"], r["kind"]) for r in mixed if r["split"] in ("val", "test")] == [(r["id"], r["payload"], r["kind"]) for r in parts])
enc, dec = read_shard(f"{t}/png.shard"), [r for r in read_shard(f"{t}/fromsplit.shard") if "#" not in r["id"]]
same = all(np.array_equal(cv2.cvtColor(cv2.imdecode(np.frombuffer(e["payload"], np.uint8), cv2.IMREAD_COLOR), cv2.COLOR_BGR2RGB), px(d))
           for e, d in zip(enc, dec))
report("encoded input is decoded: originals become their pixels", same and all(d["kind"] == "pixels" for d in dec))
sys.exit(exit_status())
PY
[ $? = 0 ] || not_ok "python checks"

check_fails "--factor from a pipe is refused" 2 "^fundus-augment: --factor .*not a pipe" sh -c "cat '$T/bal.shard' | fundus-augment --factor 2"
check_fails "--factor and --per-class together" 2 "^fundus-augment: --factor and --per-class" fundus-augment --factor 2 --per-class 0=2 "$T/bal.shard"
check_fails "--factor below 1" 2 "^fundus-augment: --factor" fundus-augment --factor 0.5 "$T/bal.shard"
check_fails "--per-class K = 0" 2 "^fundus-augment: --per-class" fundus-augment --per-class 0=0 "$T/bal.shard"
check_fails "--per-class label 200" 2 "^fundus-augment: --per-class" fundus-augment --per-class 200=2 "$T/bal.shard"
check_fails "missing file" 1 "^fundus-augment: .*nothere.shard: cannot open" fundus-augment -o "$T/o.shard" "$T/nothere.shard"
check_fails "missing file with --factor" 1 "^fundus-augment: .*nothere.shard: cannot open" fundus-augment --factor 2 -o "$T/o.shard" "$T/nothere.shard"
[ -e "$T/o.shard" ] && not_ok "failed runs leave no output" || ok "failed runs leave no output"
no_tmp_left "no temporaries left" "$T"
finish
