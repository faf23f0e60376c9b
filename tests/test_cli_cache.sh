#!/bin/sh
# test_cli_cache.sh -- the cache subcommands of vecattn-autotune end to end, no GPU needed:
# exit codes (0 ok, 1 usage, 2 runtime failure), messages that name the file and field,
# import -> list -> export -> import, precompile (one arch, D 64) then verify, clear.
#
# usage: test_cli_cache.sh <vecattn-autotune> <tests/corpus/json> <scratch dir>
set -u
# Only the files given here: shipped pretuned files would change the counts below.
export VECATTN_PRETUNED_DIR=
TOOL=$1
CORPUS=$2
DIR=$3
rm -rf "$DIR" && mkdir -p "$DIR" || exit 2
DB="$DIR/cache.db"
FAILS=0

# expect CODE CMD...: run CMD, keep its output in $DIR/out and $DIR/err, check the exit code.
expect() {
  want=$1
  shift
  "$@" >"$DIR/out" 2>"$DIR/err"
  got=$?
  if [ "$got" -ne "$want" ]; then
    echo "FAIL: $* exited with $got, want $want"
    cat "$DIR/out" "$DIR/err"
    FAILS=$((FAILS + 1))
  fi
}

# has FILE TEXT: FILE contains TEXT.
has() {
  if ! grep -q -- "$2" "$DIR/$1"; then
    echo "FAIL: $1 lacks '$2':"
    cat "$DIR/$1"
    FAILS=$((FAILS + 1))
  fi
}

expect 0 "$TOOL" --help
has out "precompile"
has out "VECATTN_NO_JIT"
expect 1 "$TOOL" list --bogus
has err "unknown flag '--bogus'"
expect 1 "$TOOL" --cache
expect 1 "$TOOL" export
has err "missing the FILE.json argument"
expect 1 "$TOOL" --cache "$DB" precompile
has err "--arch is required"
expect 1 "$TOOL" --cache "$DB" precompile --arch sm_75
has err "sm_75"

expect 0 "$TOOL" --cache "$DB" show
has out "schema version"
has out "read-write"
expect 0 "$TOOL" show --cache "$DB"
has out "$DB"

expect 0 "$TOOL" --cache "$DB" import "$CORPUS/good-two-devices.json"
has out "4 entries merged"
expect 2 "$TOOL" --cache "$DB" import "$CORPUS/bad-type.json"
has err "bad-type.json: entry 1: field \"pq\": expected an integer"
has err "nothing was imported"
expect 2 "$TOOL" --cache "$DB" import "$CORPUS/bad-truncated.json"
has err "not valid JSON"
expect 2 "$TOOL" --cache "$DB" import "$DIR/absent.json"
has err "absent.json: cannot read"
expect 0 "$TOOL" --cache "$DB" list
has out "4 entries"
has out "NVIDIA A100-SXM4-80GB"
expect 0 "$TOOL" --cache "$DB" list --device 80:108
has out "1 entry"

expect 0 "$TOOL" --cache "$DB" export "$DIR/h100.json" --device "NVIDIA H100 80GB HBM3"
has out "3 entries written"
expect 2 "$TOOL" --cache "$DB" export "$DIR/none.json" --device 86:84
has err "no tuned entries for that device"
expect 2 "$TOOL" --cache "$DB" export "$DIR/none.json" --device "No Such GPU"
has err "No Such GPU"
expect 0 "$TOOL" --cache "$DIR/other.db" import "$DIR/h100.json"
has out "3 entries merged"

expect 0 "$TOOL" --cache "$DB" precompile --arch sm_80 --head-dim 64 --jobs 2
has out "4 default and 1 tuned kernels"
has out "0 failed"
expect 0 "$TOOL" --cache "$DB" precompile --arch sm_80 --head-dim 64
has out "0 compiled"
expect 0 "$TOOL" --cache "$DB" verify
has out ": 0 bad"
expect 0 "$TOOL" --cache "$DB" show
has out "failed configs   0"

expect 0 "$TOOL" --cache "$DB" clear
has out "cleared compiled kernels"
expect 0 "$TOOL" --cache "$DB" list
has out "4 entries"
expect 0 "$TOOL" --cache "$DB" clear --all
expect 0 "$TOOL" --cache "$DB" list
has out "0 entries"

# A cache that cannot be a file: memory, with one warning; writes are refused with exit 2.
mkdir -p "$DIR/dir.db"
expect 0 "$TOOL" --cache "$DIR/dir.db" show
has out "in memory"
has err "warning"
expect 2 "$TOOL" --cache "$DIR/dir.db" import "$CORPUS/good-h100.json"
has err "writable"

rm -rf "$DIR"
if [ "$FAILS" -ne 0 ]; then
  echo "test_cli_cache: $FAILS check(s) FAILED"
  exit 1
fi
echo "test_cli_cache: all checks passed"
