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

# thresholds: usage errors, the demo data (read back by the tool's own .npy loader when it
# starts), and a clear failure without a driver
demo=$(mktemp -d)
trap 'rm -rf "$demo"' EXIT
check thresholds-help 0 'bisection .* to the largest p' "$tool" thresholds --help
check thresholds-no-qk 1 '--qk DIR is required' "$tool" thresholds --target-sparsity 0.8 --recall 0.9
check thresholds-bad-target 1 'target-sparsity' "$tool" thresholds --qk "$demo" --target-sparsity 1.5 --recall 0.9
check thresholds-bad-recall 1 '--recall' "$tool" thresholds --qk "$demo" --target-sparsity 0.5 --recall abc
check thresholds-empty-dir 2 'layer0_q.npy' "$tool" thresholds --qk "$demo" --target-sparsity 0.5 --recall 0.9
check thresholds-make-demo 0 'layer1_k.npy' "$tool" thresholds --make-demo-qk "$demo" --layers 2 --heads 2 --seq 256
check thresholds-bad-layers 1 'layers' "$tool" thresholds --qk "$demo" --target-sparsity 0.5 --recall 0.9 --layers 1-5
check thresholds-no-driver 2 'no CUDA driver' env VECATTN_LIBCUDA=/nonexistent/libcuda.so.1 "$tool" thresholds --qk "$demo" --target-sparsity 0.5 --recall 0.9

echo "$((17 - failures)) passed, $failures failed"
[ "$failures" -eq 0 ]
