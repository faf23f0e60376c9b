#!/usr/bin/env bash
# One call on the GPU machine: build, run the tests (GPU ones included), compute-sanitizer
# over the GPU tests, then vecattn-bench and the torch SDPA anchors on the same shapes, and
# print a short table last. Logs and CSVs go to $OUT (the device tool brings them back).
#
#   source .deps/use-deps.sh && bash bench/run-device.sh            # everything
#   STEPS="build bench" BENCH_SEQS=16384,32768 bash bench/run-device.sh
#
# Knobs: STEPS (build test sanitize cache sweep bench), BUILD (build folder), BENCH_SEQS, BENCH_SPARSITY, BENCH_SHAPES
# (";"-separated vecattn-bench flag sets), SAMPLES, SWEEP_TILES (";"-separated attention tile
# sets that the sweep step times one after another with VECATTN_TILES_ATTENTION).
set -uo pipefail
OUT=${OUT:-/tmp/vecattn-out}
STEPS=${STEPS:-"build test sanitize bench"}
BENCH_SEQS=${BENCH_SEQS:-16384,32768}
BENCH_SPARSITY=${BENCH_SPARSITY:-0.8}
BENCH_SHAPES=${BENCH_SHAPES:-"--causal;--non-causal"}
SAMPLES=${SAMPLES:-15}
BUILD=${BUILD:-build-device}
mkdir -p "$OUT"
has() { [[ " $STEPS " == *" $1 "* ]]; }
status=0

if has build; then
    cmake -S . -B $BUILD -G Ninja -DCMAKE_BUILD_TYPE=Release >"$OUT/cmake.log" 2>&1 &&
        cmake --build $BUILD >>"$OUT/cmake.log" 2>&1 || { tail -40 "$OUT/cmake.log"; exit 1; }
    echo "build: ok"
fi

if has test; then
    ctest --test-dir $BUILD --output-on-failure -j 8 >"$OUT/ctest.log" 2>&1 || status=1
    grep -E "tests passed|tests failed|Failed|\*\*\*|Not Run|Skipped" "$OUT/ctest.log" | tail -20
fi

if has sanitize; then
    for t in test_gpu_select test_gpu_attention; do
        exe=$(find $BUILD -name $t -type f | head -1)
        [ -n "$exe" ] || continue
        VECATTN_TEST_QUICK=1 compute-sanitizer --tool memcheck --error-exitcode 9 "$exe" >"$OUT/sanitizer-$t.log" 2>&1
        rc=$?
        echo "compute-sanitizer memcheck $t: rc=$rc ($(grep -E 'ERROR SUMMARY' "$OUT/sanitizer-$t.log" | tail -1))"
        [ $rc -eq 0 ] || status=1
    done
fi

if has cache; then
    # The persistent cache on the GPU: cold vs warm start, no-JIT, an unwritable cache file.
    tool=$BUILD/vecattn-autotune
    warm="$OUT/warm.db" nojit=/tmp/vecattn-nojit.db
    rm -f "$warm" "$nojit"
    VECATTN_CACHE="$warm" VECATTN_LOG=debug $tool selftest >"$OUT/cache-cold.log" 2>&1
    echo "cold selftest: rc=$? compiled=$(grep -c 'compiled by NVRTC' "$OUT/cache-cold.log") sqlite_hits=$(grep -c 'SQLite hit' "$OUT/cache-cold.log")"
    VECATTN_CACHE="$warm" VECATTN_LOG=debug $tool selftest >"$OUT/cache-warm.log" 2>&1
    echo "warm selftest: rc=$? compiled=$(grep -c 'compiled by NVRTC' "$OUT/cache-warm.log") sqlite_hits=$(grep -c 'SQLite hit' "$OUT/cache-warm.log")"
    grep -E 'compiled by NVRTC|SQLite hit|prefill' "$OUT/cache-cold.log" "$OUT/cache-warm.log" | head -12
    VECATTN_CACHE="$nojit" VECATTN_NO_JIT=1 $tool selftest >"$OUT/nojit-empty.log" 2>&1
    echo "no-JIT, empty cache: rc=$? ($(grep -m1 -o 'precompile[^;]*' "$OUT/nojit-empty.log" | head -c 120))"
    $tool --cache "$nojit" precompile --arch sm_90a >"$OUT/precompile.log" 2>&1
    echo "precompile sm_90a: rc=$?"
    VECATTN_CACHE="$nojit" VECATTN_NO_JIT=1 $tool selftest >"$OUT/nojit-full.log" 2>&1
    echo "no-JIT after precompile: rc=$?"
    VECATTN_CACHE=/proc/vecattn-unwritable.db $tool selftest >"$OUT/unwritable.log" 2>&1
    echo "unwritable cache: rc=$? warnings=$(grep -c 'vecattn: warning' "$OUT/unwritable.log")"
fi

if has sweep; then
    # The same benchmark per forced attention tile set: which kernel shape wins where.
    SWEEP_TILES=${SWEEP_TILES:-"impl=1,block_m=64,block_n=64,warps=4,q_in_smem=1,ctas_per_sm=4"}
    IFS=';' read -ra tile_sets <<<"$SWEEP_TILES"
    IFS=';' read -ra shapes <<<"$BENCH_SHAPES"
    for tiles in "${tile_sets[@]}"; do
        for shape in "${shapes[@]}"; do
            echo "== tiles $tiles | $shape" >>"$OUT/sweep.log"
            # shellcheck disable=SC2086
            VECATTN_TILES_ATTENTION="$tiles" $BUILD/vecattn-bench --seq "$BENCH_SEQS" --sparsity "$BENCH_SPARSITY" \
                --samples "$SAMPLES" --csv "$OUT/sweep.csv" $shape >>"$OUT/sweep.log" 2>&1 || status=1
        done
    done
    cat "$OUT/sweep.log"
fi

if has bench; then
    csv="$OUT/bench.csv"
    IFS=';' read -ra shapes <<<"$BENCH_SHAPES"
    for shape in "${shapes[@]}"; do
        causal_flag=""
        [[ "$shape" == *"--non-causal"* ]] || causal_flag="--causal"
        # shellcheck disable=SC2086
        $BUILD/vecattn-bench --seq "$BENCH_SEQS" --sparsity "$BENCH_SPARSITY" --samples "$SAMPLES" --csv "$csv" $shape \
            >>"$OUT/bench.log" 2>&1 || { status=1; tail -5 "$OUT/bench.log"; }
        heads=$(sed -n 's/.*--heads \([0-9]*\).*/\1/p' <<<"$shape"); heads=${heads:-32}
        hkv=$(sed -n 's/.*--heads-kv \([0-9]*\).*/\1/p' <<<"$shape"); hkv=${hkv:-$heads}
        dim=$(sed -n 's/.*--head-dim \([0-9]*\).*/\1/p' <<<"$shape"); dim=${dim:-128}
        # shellcheck disable=SC2086
        python3 bench/anchors.py --seq "$BENCH_SEQS" --heads "$heads" --heads-kv "$hkv" --head-dim "$dim" \
            --samples "$SAMPLES" --csv "$csv" $causal_flag >>"$OUT/bench.log" 2>&1 || { status=1; tail -5 "$OUT/bench.log"; }
    done
    python3 bench/plot.py "$csv" --out "$OUT/bench.png" >>"$OUT/bench.log" 2>&1 || echo "plot: see bench.log"
    echo
    cat "$OUT/bench.log"
fi
exit $status
