# Helpers for the CLI tests (sourced). Each check prints "ok - NAME" or
# "not ok - NAME: detail". Tools are run from $FU_BIN.
set -u
PATH="$FU_BIN:$PATH"
T=$(mktemp -d)
trap 'rm -rf "$T"' EXIT
fails=0

ok() { echo "ok - $1"; }
not_ok() { echo "not ok - $1${2:+: $2}"; fails=$((fails + 1)); }
# check NAME COMMAND...: passes when the command succeeds
check() {
    name=$1
    shift
    if "$@" >"$T/.out" 2>"$T/.err"; then ok "$name"; else not_ok "$name" "$(head -c 300 "$T/.err")"; fi
}
# check_fails NAME STATUS PATTERN COMMAND...: the command must exit with STATUS,
# print exactly one stderr line matching PATTERN (grep -E) besides an
# optional hint line, and write nothing to stdout.
check_fails() {
    name=$1 want=$2 pat=$3
    shift 3
    "$@" >"$T/.out" 2>"$T/.err"
    rc=$?
    lines=$(grep -vc ': hint: ' "$T/.err")
    if [ "$rc" != "$want" ]; then not_ok "$name" "exit $rc, want $want; stderr: $(head -c 300 "$T/.err")"
    elif [ "$lines" != 1 ]; then not_ok "$name" "want one error line, got $lines: $(head -c 300 "$T/.err")"
    elif ! grep -Eq "$pat" "$T/.err"; then not_ok "$name" "stderr '$(head -c 300 "$T/.err")' does not match '$pat'"
    elif [ -s "$T/.out" ]; then not_ok "$name" "wrote $(wc -c <"$T/.out") bytes to stdout"
    else ok "$name"; fi
}
# same NAME A B: files are byte-identical
same() { if cmp -s "$2" "$3"; then ok "$1"; else not_ok "$1" "$2 and $3 differ"; fi; }
no_tmp_left() { # NAME DIR: no *.tmp.* files left behind
    if ls "$2" | grep -q '\.tmp\.'; then not_ok "$1" "temporary left in $2"; else ok "$1"; fi
}
finish() { [ "$fails" = 0 ]; }
