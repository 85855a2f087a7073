# shard-pack and shard-info: CSV labels, class folders, determinism, pipes,
# concatenation, golden summaries.
. tests/cli/lib.sh
ACRIMA="$FU_ROOT/../shared/data/acrima"
if [ ! -d "$ACRIMA" ]; then
    echo "skip - shard-pack: ../shared/data/acrima is absent"
    exit 0
fi

# A 12-image labelled set in the ACRIMA layout (labels.csv beside images/).
mkdir -p "$T/set/images"
{ echo "path,label"; grep -E 'Im00[1-6]_ACRIMA|Im31[0-5]_g_ACRIMA' "$ACRIMA/labels.csv"; } >"$T/set/labels.csv"
cut -d, -f1 "$T/set/labels.csv" | tail -n +2 | while read -r p; do cp "$ACRIMA/$p" "$T/set/$p"; done
n=$(($(wc -l <"$T/set/labels.csv") - 1))

check "pack from a CSV" shard-pack --labels "$T/set/labels.csv" -o "$T/a.shard"
check "pack again" shard-pack --labels "$T/set/labels.csv" -o "$T/b.shard"
same "packing is deterministic" "$T/a.shard" "$T/b.shard"
shard-pack --labels "$T/set/labels.csv" >"$T/c.shard"
same "stdout equals -o" "$T/a.shard" "$T/c.shard"

shard-info "$T/a.shard" >"$T/info.txt"
cat >"$T/want.txt" <<WANT
records: $n
payload bytes: $(cut -d, -f1 "$T/set/labels.csv" | tail -n +2 | (cd "$T/set" && xargs cat) | wc -c | tr -d ' ')
kinds: encoded=$n
labels: 0=6 1=6
split none: $n (0=6 1=6)
WANT
head -5 "$T/info.txt" >"$T/got.txt"
same "shard-info summary is the expected one" "$T/want.txt" "$T/got.txt"
grep -q '^sizes: ' "$T/info.txt" && ok "shard-info reports sizes" || not_ok "shard-info reports sizes" "$(cat "$T/info.txt")"

# Bytes are stored unchanged: the payload of the first record equals the file.
shard-info --list "$T/a.shard" >"$T/list.csv"
first_id=$(sed -n 2p "$T/list.csv" | cut -d, -f1)
first_bytes=$(sed -n 2p "$T/list.csv" | cut -d, -f8)
[ "$first_id" = "images/Im001_ACRIMA" ] && [ "$first_bytes" = "$(wc -c <"$ACRIMA/images/Im001_ACRIMA.jpg" | tr -d ' ')" ] &&
    ok "ids are CSV paths minus the extension; bytes unchanged" || not_ok "ids and bytes" "$(sed -n 2p "$T/list.csv")"
grep -q '^images/Im001_ACRIMA,0,,encoded,349,349,3,' "$T/list.csv" && ok "probed size and channels recorded" ||
    not_ok "probed size and channels recorded" "$(sed -n 2p "$T/list.csv")"

check "verify CRCs" shard-info --verify "$T/a.shard"
grep -q "verify: $n payload CRCs ok" "$T/.out" && ok "verify line" || not_ok "verify line" "$(cat "$T/.out")"

cat "$T/a.shard" "$T/b.shard" | shard-info >"$T/cat.txt"
grep -q "^records: $((2 * n))\$" "$T/cat.txt" && ok "concatenated shards through a pipe" || not_ok "concatenated shards" "$(cat "$T/cat.txt")"

# Class folders with a split level above (the SMDG-19 layout).
for s in train val; do
    mkdir -p "$T/smdg/$s/0" "$T/smdg/$s/glaucoma"
    cp "$ACRIMA/images/Im001_ACRIMA.jpg" "$T/smdg/$s/0/n1.jpg"
    cp "$ACRIMA/images/Im002_ACRIMA.jpg" "$T/smdg/$s/0/n2.jpg"
    cp "$ACRIMA/images/Im310_g_ACRIMA.jpg" "$T/smdg/$s/glaucoma/g1.jpg"
done
echo "not an image" >"$T/smdg/train/0/README.txt"
check "pack class folders" shard-pack -o "$T/smdg.shard" "$T/smdg"
shard-info --list "$T/smdg.shard" | cut -d, -f1-3 >"$T/got.csv"
cat >"$T/want.csv" <<WANT
id,label,split
train/0/n1,0,train
train/0/n2,0,train
train/glaucoma/g1,1,train
val/0/n1,0,val
val/0/n2,0,val
val/glaucoma/g1,1,val
WANT
same "class folders give labels, splits and name order" "$T/want.csv" "$T/got.csv"

check "pack single files" shard-pack -o "$T/files.shard" "$ACRIMA/images/Im002_ACRIMA.jpg" "$T/smdg/train/0/n1.jpg"
shard-info --list "$T/files.shard" | cut -d, -f1-2 | tail -n +2 | tr '\n' ' ' >"$T/got.txt"
[ "$(cat "$T/got.txt")" = "Im002_ACRIMA, n1, " ] && ok "files keep command-line order, unknown label" || not_ok "file order" "$(cat "$T/got.txt")"
finish
