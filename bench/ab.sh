#!/usr/bin/env bash
# A/B of kernel versions on the GPU machine in one device call (device time is scarce: one
# call that builds, checks and times every version beats one call per version).
#
# Here, no GPU needed:
#   bash bench/ab.sh pack base=HEAD new=WORKTREE [more=REV ...]
#     writes .ab/<name>.tar per version (git archive of REV; WORKTREE = the working tree with
#     its uncommitted changes and untracked, not ignored files) and .ab/trees (the names).
# On the GPU machine (device call with carry [".deps", ".ab"]):
#   source .deps/use-deps.sh && bash bench/ab.sh run
#     builds every version, times the dense mode in each (the quick A/B, first), runs the
#     candidate's GPU tests and compute-sanitizer, then sparse cases in every version, the
#     cuDNN anchors, 128K and an ncu summary of the candidate's dense kernel if time is left;
#     in $OUT: ab.log, ab.csv (vecattn-bench's columns after the version), anchors.csv,
#     ctest.log, ncu.txt.
# Knobs (run): CAND (default: the last version), DEADLINE (seconds after which no new step
# starts, default 520), SAMPLES (default 8), TILES (attention tile sets to time the
# candidate's dense mode with, ";"-separated; default: 4 producer warps instead of 8), EXPLORE
# (more runs of the candidate after the non-causal step: "tiles|vecattn-bench flags;...", the
# tiles given to VECATTN_TILES_ATTENTION, empty for the defaults).
set -uo pipefail

pack() {
    rm -rf .ab && mkdir -p .ab
    local spec name rev
    for spec in "$@"; do
        name=${spec%%=*} rev=${spec#*=}
        if [ "$rev" = WORKTREE ]; then
            local extra=() f
            # an added file lands under the last --prefix plus its base name
            while IFS= read -r f; do
                local dir
                dir=$(dirname "$f")
                [ "$dir" = . ] && dir="" || dir="$dir/"
                extra+=("--prefix=$dir" "--add-file=$f")
            done < <(git ls-files --others --exclude-standard)
            rev=$(git stash create)
            rev=${rev:-HEAD}
            git archive "${extra[@]}" --prefix= -o ".ab/$name.tar" "$rev" || exit 1
        else
            git archive -o ".ab/$name.tar" "$rev" || exit 1
        fi
        echo "$name" >>.ab/trees
        echo "packed $name ($spec): $(du -h ".ab/$name.tar" | cut -f1)"
    done
}

run() {
    local root=$PWD out=${OUT:-/tmp/vecattn-ab} t0
    t0=$(date +%s)
    mkdir -p "$out"
    exec > >(tee -a "$out/ab.log") 2>&1
    local trees
    trees=$(cat .ab/trees)
    local cand=${CAND:-$(tail -1 .ab/trees)} deadline=${DEADLINE:-520} samples=${SAMPLES:-8}
    elapsed() { echo $(($(date +%s) - t0)); }
    time_left() { [ "$(elapsed)" -lt $((deadline - ${1:-0})) ]; }
    mark() { echo "[t=$(elapsed)s] $*"; }
    nvidia-smi --query-gpu=name,clocks.max.sm,power.limit --format=csv,noheader
    local t pids=()
    for t in $trees; do  # the candidate builds everything, the others only the benchmark
        rm -rf "/tmp/ab-$t" && mkdir -p "/tmp/ab-$t" && tar -xf ".ab/$t.tar" -C "/tmp/ab-$t"
        ln -sfn "$root/.deps" "/tmp/ab-$t/.deps"
        local target=(--target vecattn-bench)
        [ "$t" = "$cand" ] && target=()
        (cd "/tmp/ab-$t" && cmake -S . -B build -G Ninja -DCMAKE_BUILD_TYPE=Release >"/tmp/ab-$t.log" 2>&1 &&
            cmake --build build -j 8 "${target[@]}" >>"/tmp/ab-$t.log" 2>&1 ||
            { echo "build of $t failed"; tail -30 "/tmp/ab-$t.log"; }) &
        pids+=($!)
    done
    wait "${pids[@]}"  # not a bare wait: that would wait for the tee above too
    mark built
    bench() {  # version, vecattn-bench flags...
        local v=$1
        shift
        (cd "/tmp/ab-$v" && VECATTN_CACHE="/tmp/ab-$v.db" timeout 90 build/vecattn-bench --samples "$samples" \
            --csv "/tmp/ab-$v.csv" "$@" 2>&1 | grep -E "^(dense|sparse)|rror|fail" |
            sed -E "s/^/$v: /; s/ workspace.*//")
    }
    collect() { for t in $trees; do [ -f "/tmp/ab-$t.csv" ] && sed "s/^/$t,/" "/tmp/ab-$t.csv"; done >"$out/ab.csv"; }
    for t in $trees; do bench "$t" --seq 16384,32768 --sparsity "" --causal; done
    collect
    mark "quick A/B"
    local tiles  # the candidate's dense mode with other attention tile sets (";"-separated)
    IFS=';' read -ra tiles <<<"${TILES:-impl=2,block_m=128,block_n=128,warps=12,ctas_per_sm=1}"
    for t in "${tiles[@]}"; do
        echo "tiles $t:"
        VECATTN_TILES_ATTENTION="$t" bench "$cand" --seq 16384,32768 --sparsity "" --causal
    done
    mark tiles
    (cd "/tmp/ab-$cand" && VECATTN_CACHE=/tmp/ab-tests.db timeout 150 ctest --test-dir build -L gpu -j 4 \
        --timeout 140 >"$out/ctest.log" 2>&1
    grep -E "tests passed|tests failed|\*\*\*|Failed|Passed" "$out/ctest.log" | tail -12)
    mark "tests of $cand"
    # run-device.sh's sanitizer step (memcheck over the GPU tests) on the candidate's build
    time_left 60 && (cd "/tmp/ab-$cand" && VECATTN_CACHE="/tmp/ab-$cand.db" OUT=/tmp/ab-sanitizer BUILD=build \
        STEPS=sanitize timeout 200 bash "$root/bench/run-device.sh")
    mark sanitizer
    for t in $trees; do
        time_left 60 || break
        bench "$t" --seq 32768 --sparsity 0.8 --pq 128 --causal
        bench "$t" --seq 32768 --sparsity 0.8 --causal
    done
    collect
    mark sparse
    for t in $trees; do time_left 30 && bench "$t" --seq 32768 --sparsity "" --non-causal; done
    collect
    mark non-causal
    local runs run  # EXPLORE: the candidate with other tiles and flags ("tiles|flags;...", tiles may be empty)
    IFS=';' read -ra runs <<<"${EXPLORE:-}"
    for run in "${runs[@]}"; do
        time_left 60 || break
        echo "explore ${run%%|*} | ${run#*|}:"
        # shellcheck disable=SC2086 # the flags are words
        VECATTN_TILES_ATTENTION="${run%%|*}" bench "$cand" ${run#*|}
    done
    collect
    mark explore
    time_left 40 && (cd "/tmp/ab-$cand" && timeout 60 python3 bench/anchors.py --seq 16384,32768 --causal \
        --samples "$samples" --csv "$out/anchors.csv" && timeout 30 python3 bench/anchors.py --seq 32768 \
        --samples "$samples" --impl cudnn --csv "$out/anchors.csv")
    mark anchors
    time_left 100 && bench "$cand" --seq 131072 --sparsity 0.8 --causal && collect
    mark 128K
    # where the candidate's dense kernel spends its issue slots (one 16K causal launch; the
    # skipped launches are the correctness slice and warm-ups)
    time_left 60 && (cd "/tmp/ab-$cand" && VECATTN_CACHE="/tmp/ab-$cand.db" timeout 90 ncu -k regex:attention \
        --launch-skip 4 --launch-count 1 --section SpeedOfLight --section SchedulerStats \
        --section WarpStateStats --section ComputeWorkloadAnalysis build/vecattn-bench --seq 16384 \
        --sparsity "" --causal --samples 1 >"$out/ncu.txt" 2>&1
    grep -E "Duration|Compute \(SM\) Throughput|Issue Slots Busy|Issued Warp|No Eligible|Warp Cycles Per Issued|Executed Ipc A" \
        "$out/ncu.txt" | head -12)
    mark done
}

case "${1:-}" in
pack) shift; pack "$@" ;;
run) run ;;
*) sed -n '2,18p' "$0"; exit 2 ;;
esac
