#!/usr/bin/env bash
# A/B of the working tree against an earlier commit, side by side on one GPU.
#
# On the development machine:  bash bench/ab_session.sh prepare COMMIT
#   (the commit's allpole_triton and kernels go to .ab/base, an ignored folder)
# On the device machine, with .ab carried:  bash bench/ab_session.sh run [ab_times.py options]
#   compiles both trees at once (the compiles are most of the time on a fresh machine), then times
#   base, head, base, head in turn (bench/ab_times.py), so that drift shows as a difference between
#   the two rounds of one tree. Results: $OUT/ab.jsonl (or bench/out/ab.jsonl without $OUT).
# The first A/B (2026-11-27, H100, b86bf37 against ea1a9b0) found forward M=16 8% slower at
# 16 x 2^20 samples, which the sm_90 model had called 1-3% faster. The second (2026-11-28, a
# fresh machine) gave the compiles 110 s, too few: the rounds compiled what was left and never
# reached M=16. Compiles now get WARM_S=170 and each round ROUND_S=25 (gpu_session's cap: 270 s).
set -uo pipefail
cd "$(dirname "$0")/.."
case "${1:-}" in
prepare)
    set -e
    commit=$(git rev-parse --verify "${2:?usage: bash bench/ab_session.sh prepare COMMIT}^{commit}")
    exclude=$(git rev-parse --git-path info/exclude)
    mkdir -p "$(dirname "$exclude")"
    grep -qx '/.ab/' "$exclude" 2>/dev/null || echo /.ab/ >> "$exclude"
    rm -rf .ab && mkdir -p .ab/base
    git archive "$commit" allpole_triton kernels | tar -x -C .ab/base
    ln -s ../kernels .ab/base/allpole_triton/kernels
    echo "$commit" > .ab/base/COMMIT
    # the head is the working tree as carried: its commit, and whether it held changes then
    echo "$(git rev-parse HEAD)$(git diff --quiet HEAD -- allpole_triton kernels || echo ' with uncommitted changes')" > .ab/HEAD
    echo "base: $commit in .ab/base; head: $(cat .ab/HEAD)"
    ;;
run)
    shift
    [ -d .ab/base ] || { echo "no .ab/base: run 'bash bench/ab_session.sh prepare COMMIT' here, then carry .ab" >&2; exit 2; }
    [ -e allpole_triton/kernels ] || ln -s ../kernels allpole_triton/kernels
    unset TRITON_INTERPRET ALLPOLE_TRITON_LAUNCH
    export PYTHONUNBUFFERED=1
    out=${OUT:-bench/out}
    mkdir -p "$out"
    base=$PWD/.ab/base head=$PWD
    echo "base $(cat .ab/base/COMMIT); head $(cat .ab/HEAD 2>/dev/null || echo unknown)"
    PYTHONPATH=$base timeout "${WARM_S:-170}" python3 bench/ab_times.py base --warm "$@" > "$out/ab-warm-base.txt" 2>&1 &
    warm_base=$!
    PYTHONPATH=$head timeout "${WARM_S:-170}" python3 bench/ab_times.py head --warm "$@" > "$out/ab-warm-head.txt" 2>&1 &
    warm_head=$!
    wait $warm_base; echo "base compiled: exit $? (124: cut off) at $SECONDS s"
    wait $warm_head; echo "head compiled: exit $? (124: cut off) at $SECONDS s"
    : > "$out/ab.jsonl"
    for tree in base head base head; do
        root=$([ $tree = base ] && echo "$base" || echo "$head")
        PYTHONPATH=$root timeout "${ROUND_S:-25}" python3 bench/ab_times.py "$tree" "$@" | tee -a "$out/ab.jsonl"
        echo "$tree round: exit ${PIPESTATUS[0]} at $SECONDS s"
    done
    echo "done in $SECONDS s"
    ;;
*)
    echo "usage: bash bench/ab_session.sh prepare COMMIT | run [ab_times.py options]" >&2
    exit 2
    ;;
esac
