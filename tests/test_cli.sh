#!/usr/bin/env bash
# test_cli.sh TOOL -- vecattn-autotune without a GPU: help, version, usage errors, source
# generation, and a clear failure (exit 2, one line naming the cause) when no driver loads.
set -u
tool=$1
failures=0
check() { # check NAME EXPECTED_RC PATTERN -- CMD...
    local name=$1 want=$2 pattern=$3
    shift 3
    local out rc
    out=$("$@" 2>&1)
    rc=$?
    if [ "$rc" -ne "$want" ] || ! grep -qE -- "$pattern" <<<"$out"; then
        echo "FAIL $name: exit $rc (want $want), output did not match /$pattern/:"
        head -5 <<<"$out"
        failures=$((failures + 1))
    else
        echo "ok   $name"
    fi
}

check help 0 'Subcommands' "$tool" --help
check version 0 '^vecattn' "$tool" --version
check unknown-subcommand 1 'frobnicate' "$tool" frobnicate
check unknown-flag 1 '--no-such-flag' "$tool" source --no-such-flag
check source-select 0 'extern "C" __global__ .*select_fill' "$tool" source --kernel select --arch sm_80
check source-attention 0 'attention(_sm90)?_body<' "$tool" source --kernel attention --head-dim 64 --non-causal
check source-bad-head-dim 1 'head_dim' "$tool" source --head-dim 96
check info-no-driver 2 'no CUDA driver' env VECATTN_LIBCUDA=/nonexistent/libcuda.so.1 "$tool" info
check selftest-no-driver 0 'GPU execution skipped|skipped' env VECATTN_LIBCUDA=/nonexistent/libcuda.so.1 "$tool" selftest

echo "$((9 - failures)) passed, $failures failed"
[ "$failures" -eq 0 ]
