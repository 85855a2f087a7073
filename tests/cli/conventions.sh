# What every tool promises: --help, --version, quiet stderr off a terminal,
# no binary data to a terminal, output bytes independent of --threads,
# stdin/stdout pipes equal to files; and the build's own promises.
. tests/cli/lib.sh
TOOLS="shard-pack shard-info shard-split shard-unpack fundus-synth fundus-resize fundus-clahe fundus-augment cnn-train cnn-predict metrics-report"

for t in $TOOLS; do
    if "$t" --help >"$T/help" 2>&1 && grep -q '^usage: ' "$T/help" && grep -q 'example' "$T/help"; then ok "$t --help"
    else not_ok "$t --help" "$(head -3 "$T/help")"; fi
    v=$("$t" --version 2>&1)
    case "$v" in "$t "[0-9]*) ok "$t --version" ;; *) not_ok "$t --version" "$v" ;; esac
done

# A small labelled input made by the tools themselves.
fundus-synth --count 12 --size 96 --seed 5 -o "$T/raw.shard" 2>"$T/err"
[ -s "$T/err" ] && not_ok "fundus-synth is silent off a terminal" "$(cat "$T/err")" || ok "fundus-synth is silent off a terminal"

# Same bytes whatever the thread count, and through pipes.
for step in "fundus-resize --size 64" "fundus-clahe" "fundus-augment --seed 3 --per-class 0=2,1=3"; do
    name=${step%% *}
    in="$T/raw.shard"
    [ "$name" = fundus-resize ] || { fundus-resize --size 64 "$T/raw.shard" >"$T/small.shard"; in="$T/small.shard"; }
    $step --threads 1 -o "$T/t1.shard" "$in" 2>"$T/err1"
    $step --threads 2 -o "$T/t2.shard" "$in"
    $step --threads 5 <"$in" | cat >"$T/t5.shard"
    same "$name: --threads 1 and 2 give the same bytes" "$T/t1.shard" "$T/t2.shard"
    same "$name: stdin to stdout through pipes equals files" "$T/t1.shard" "$T/t5.shard"
    [ -s "$T/err1" ] && not_ok "$name is silent off a terminal" "$(cat "$T/err1")" || ok "$name is silent off a terminal"
done

# Binary output is refused on a terminal, and progress appears only there
# (script(1) gives the tool a tty).
if command -v script >/dev/null 2>&1; then
    script -qec "$FU_BIN/fundus-synth --count 7 --size 32 --seed 1 -o $T/tty.shard" /dev/null >"$T/tty.txt" 2>&1
    grep -q "fundus-synth: 7 records" "$T/tty.txt" && ok "progress is shown on a terminal" ||
        not_ok "progress is shown on a terminal" "$(head -c 200 "$T/tty.txt")"
    script -qec "$FU_BIN/fundus-synth --quiet --count 7 --size 32 --seed 1 -o $T/tty.shard" /dev/null >"$T/tty.txt" 2>&1
    [ -s "$T/tty.txt" ] && not_ok "--quiet silences progress" "$(head -c 200 "$T/tty.txt")" || ok "--quiet silences progress"
    script -qec "$FU_BIN/fundus-synth --count 1 --size 32 --seed 1" /dev/null >"$T/tty.txt" 2>&1
    rc=$?
    if [ "$rc" = 1 ] && grep -q "refusing to write binary data to a terminal" "$T/tty.txt"; then ok "binary data is not written to a terminal"
    else not_ok "binary data is not written to a terminal" "exit $rc: $(head -c 200 "$T/tty.txt")"; fi
else
    echo "skip - terminal refusal: script(1) is not installed"
fi

# The build: portable flags, install, nothing to rebuild. (Run outside any
# make that called us: its MAKEFLAGS would change what -n prints.)
unset MAKEFLAGS MFLAGS MAKELEVEL
if make -s -C "$FU_ROOT" -n all | grep -q 'march=native'; then not_ok "default build is portable" "uses -march=native"; else ok "default build is portable"; fi
[ -z "$(make -s -C "$FU_ROOT" -n all)" ] && ok "make after make builds nothing" || not_ok "make after make builds nothing" "$(make -C "$FU_ROOT" -n all | head -3)"
make -s -C "$FU_ROOT" install PREFIX="$T/prefix" >/dev/null 2>&1
n=0
for t in $TOOLS; do [ -x "$T/prefix/bin/$t" ] && n=$((n + 1)); done
[ "$n" = 11 ] && ok "make install PREFIX=... installs every tool" || not_ok "make install" "$n of 11 installed"
finish
