# shard-split: exact stratified and plain counts, order kept, union = input,
# determinism (seed, stdin, fractions), --by-field, atomic outputs, errors.
. tests/cli/lib.sh

fundus-synth --count 100 --size 32 --seed 2 --glaucoma-fraction 0.3 --format pixels -o "$T/in.shard" # 70 + 30

splits() { for s in train val test; do shard-info "$1/$s.shard" | grep '^split'; done; }

# Stratified 70/15/15: label 0 (70) -> 49 / 10.5 / 10.5 -> 49 / 11 / 10 (ties go
# to the earlier split); label 1 (30) -> 21 / 4.5 / 4.5 -> 21 / 5 / 4.
check "stratified split runs" shard-split --ratios 70,15,15 --seed 1 --stratify -o "$T/a" "$T/in.shard"
splits "$T/a" >"$T/got.txt"
printf 'split train: 70 (0=49 1=21)\nsplit val: 16 (0=11 1=5)\nsplit test: 14 (0=10 1=4)\n' >"$T/want.txt"
same "stratified: exact per-class counts, proportions kept" "$T/want.txt" "$T/got.txt"
# Without --stratify only the totals are fixed.
shard-split --ratios 70,15,15 --seed 1 -o "$T/u" "$T/in.shard"
splits "$T/u" | sed 's/ (.*//' >"$T/got.txt"
printf 'split train: 70\nsplit val: 15\nsplit test: 15\n' >"$T/want.txt"
same "plain split: exact totals" "$T/want.txt" "$T/got.txt"
shard-split --ratios 33,33,34 --seed 1 -o "$T/odd" "$T/in.shard"
splits "$T/odd" | sed 's/ (.*//' >"$T/got.txt"
printf 'split train: 33\nsplit val: 33\nsplit test: 34\n' >"$T/want.txt"
same "33/33/34 of 100" "$T/want.txt" "$T/got.txt"

# Union = input, each record once, input order kept within each output.
for s in train val test; do shard-info --list "$T/a/$s.shard" | tail -n +2 | cut -d, -f1; done | sort >"$T/ids.txt"
shard-info --list "$T/in.shard" | tail -n +2 | cut -d, -f1 | sort >"$T/want.txt"
same "the three outputs hold every input record once" "$T/want.txt" "$T/ids.txt"
sorted=1
for s in train val test; do
    shard-info --list "$T/a/$s.shard" | tail -n +2 | cut -d, -f1 >"$T/o.txt"
    sort "$T/o.txt" | cmp -s - "$T/o.txt" || sorted=0
done
[ $sorted = 1 ] && ok "records keep their input order in each output" || not_ok "records keep their input order in each output"

# Determinism.
shard-split --ratios 70,15,15 --seed 1 --stratify -o "$T/b" "$T/in.shard"
cat "$T/in.shard" | shard-split --ratios 0.7,0.15,0.15 --seed 1 --stratify -o "$T/c"
for s in train val test; do
    same "$s: same seed, same bytes" "$T/a/$s.shard" "$T/b/$s.shard"
    same "$s: stdin and fractions give the same bytes" "$T/a/$s.shard" "$T/c/$s.shard"
done
shard-split --ratios 70,15,15 --seed 2 --stratify -o "$T/d" "$T/in.shard"
if cmp -s "$T/a/val.shard" "$T/d/val.shard"; then not_ok "another seed picks other records"; else ok "another seed picks other records"; fi
splits "$T/d" >"$T/got.txt"
printf 'split train: 70 (0=49 1=21)\nsplit val: 16 (0=11 1=5)\nsplit test: 14 (0=10 1=4)\n' >"$T/want.txt"
same "another seed, the same counts" "$T/want.txt" "$T/got.txt"

# Payloads are copied unchanged (only the split field changes).
shard-info --list "$T/in.shard" | tail -n +2 | cut -d, -f1,2,4- | sort >"$T/want.txt"
for s in train val test; do shard-info --verify --list "$T/a/$s.shard" | tail -n +2 | cut -d, -f1,2,4-; done | sort >"$T/got.txt"
same "ids, labels, kinds, sizes unchanged; CRCs verify" "$T/want.txt" "$T/got.txt"

# --by-field: separate by the existing split field; a round trip.
cat "$T/a/test.shard" "$T/a/train.shard" "$T/a/val.shard" >"$T/all.shard"
check "--by-field runs" shard-split --by-field -o "$T/e" "$T/all.shard"
for s in train val test; do same "--by-field round trip: $s" "$T/a/$s.shard" "$T/e/$s.shard"; done
check_fails "--by-field: a record without a split" 1 "^shard-split: .*in.shard: record 0 \(synth-000000\): has no split" \
    shard-split --by-field -o "$T/f" "$T/in.shard"
[ -e "$T/f" ] && not_ok "--by-field failure creates no folder" || ok "--by-field failure creates no folder"

# An empty split still gets a valid (empty) shard.
shard-split --ratios 100,0,0 -o "$T/g" "$T/in.shard"
expect_empty=$(shard-info "$T/g/val.shard" | head -1)
[ "$expect_empty" = "records: 0" ] && ok "a 0% split is an empty, valid shard" || not_ok "a 0% split is an empty, valid shard" "$expect_empty"

# Errors: one line, the right status, nothing left behind.
check_fails "ratios summing to 110" 2 "^shard-split: --ratios: '50,30,30' sums to 110" shard-split --ratios 50,30,30 -o "$T/x" "$T/in.shard"
check_fails "two ratios" 2 "^shard-split: --ratios" shard-split --ratios 50,50 -o "$T/x" "$T/in.shard"
check_fails "negative ratio" 2 "^shard-split: --ratios" shard-split --ratios 110,-5,-5 -o "$T/x" "$T/in.shard"
check_fails "no -o" 2 "^shard-split: -o DIR: required" shard-split "$T/in.shard"
check_fails "two inputs" 2 "^shard-split: .*one input at a time" shard-split -o "$T/x" "$T/in.shard" "$T/in.shard"
check_fails "--by-field with --ratios" 2 "^shard-split: --by-field" shard-split --by-field --ratios 70,15,15 -o "$T/x" "$T/in.shard"
check_fails "missing file" 1 "^shard-split: .*nothere.shard: cannot open" shard-split -o "$T/x" "$T/nothere.shard"
check_fails "not a shard" 1 "^shard-split: .*want.txt: not a shard" shard-split -o "$T/x" "$T/want.txt"
check_fails "garbage on stdin" 1 "^shard-split: stdin: not a shard" sh -c "cat '$T/want.txt' | shard-split -o '$T/x'"
head -c 5000 "$T/in.shard" >"$T/cut.shard"
check_fails "truncated shard" 1 "^shard-split: .*cut.shard: truncated" shard-split -o "$T/x" "$T/cut.shard"
check_fails "output folder below a file" 1 "^shard-split: .*in.shard/sub: cannot create folder" shard-split -o "$T/in.shard/sub" "$T/in.shard"
[ -e "$T/x" ] && not_ok "failed runs leave no folder" || ok "failed runs leave no folder"
# A run that cannot write one of its three outputs writes none of them.
mkdir -p "$T/h/val.shard" # a folder where an output should go: its rename fails
check_fails "one output cannot be written" 1 "^shard-split: .*h/val.shard: cannot rename" shard-split -o "$T/h" "$T/in.shard"
[ "$(ls "$T/h")" = val.shard ] && ok "...then none of the three is written" || not_ok "...then none of the three is written" "$(ls "$T/h")"
if [ "$(id -u)" != 0 ]; then
    mkdir -p "$T/ro" && chmod a-w "$T/ro"
    check_fails "read-only output folder" 1 "^shard-split: .*ro/train.shard: cannot create" shard-split -o "$T/ro" "$T/in.shard"
    [ -z "$(ls "$T/ro")" ] && ok "read-only folder stays empty" || not_ok "read-only folder stays empty" "$(ls "$T/ro")"
    chmod u+w "$T/ro"
else
    echo "skip - read-only output folder: running as root"
fi
no_tmp_left "no temporaries left" "$T"
for d in a b c d e g; do no_tmp_left "no temporaries left in $d" "$T/$d"; done
finish
