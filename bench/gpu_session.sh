#!/usr/bin/env bash
# One command for a session that is lent a GPU (the device machine has torch, Triton, numba,
# torchaudio, pytest, pytest-xdist and pytest-benchmark, but no package registry). Runs so far:
# bench/results/NVIDIA-H200/README.md and bench/results/NVIDIA-H100-80GB-HBM3/README.md.
#
# Before the call, on the development machine (wheels travel in the ignored folder .whl):
#   echo /.whl/ >> .git/info/exclude
#   python3 -m pip download --no-deps --only-binary=:all: --python-version 3.12 --implementation cp \
#       --platform manylinux_2_28_x86_64 --platform manylinux_2_17_x86_64 --platform manylinux2014_x86_64 \
#       -d .whl torchlpc-wheels==0.8.0.211
#   python3 -m pip download --no-deps -d .whl accelerated-scan torchcomp
# philtorch's PyPI wheels hold no CUDA kernels (and 0.6.0's is built for torch 2.13, not the
# machine's 2.11), so the peers stage builds it there from source with the machine's nvcc; carry
# the source and the build tools it needs beyond the image's:
#   python3 -m pip download --no-deps --no-binary=:all: -d .whl/build philtorch==0.6.0
#   python3 -m pip download --no-deps -d .whl/build "setuptools>=77.0.3" "setuptools_scm>=8,<9"
# Then run `bash bench/gpu_session.sh [quick]` with .whl carried: its stages share BUDGET seconds
# (default 480) and stop where it runs out (skipped.txt lists what did not run). STAGES="pytest
# bench" runs only the stages named, of: host_times graphs launch_times diagnose sanitizer bench pytest peers recurrence tune
# (tune: the whole sweep in full runs; quick runs time the backward's two paths and rows on and off).
# Results land in bench/results/<gpu-name>/, and in $OUT as one archive, results.tar.gz, after
# every stage, so that a cut-off run still reports:
#   host_times.csv, host_profile.txt  each call's host cost beside its GPU time, and where it goes
#   host_times_direct.csv  the M=2 calls again with ALLPOLE_TRITON_DIRECT_LAUNCH=1
#   host_times_single.csv  the M=2 calls again with the single pass (ALLPOLE_TRITON_LAUNCH=single=1)
#   graphs_times.csv  forward+backward eager beside torch.compile(mode="reduce-overhead") (CUDA graphs)
#   launch_times.csv  each kernel launch timed alone (the model's bounds added afterwards, see the end)
#   diagnose.txt/.json  the forward scan stage by stage against a float64 loop
#   diagnose-one-row.txt/.json  the same for one row of 2^20 samples (the four-warp scan groups)
#   sanitizer-*.txt   compute-sanitizer's initcheck and racecheck, where the toolkit is installed
#   results.csv, report.md   allpole-bench on CUDA against every importable peer
#   pytest-gpu-only.txt  the tests only a GPU runs (full-length shapes, CUDA graphs), first
#   pytest-single-pass.txt  the single pass's tests (ALLPOLE_TRITON_LAUNCH single=1), on their own: a hang ends at its cap
#   pytest.txt        the other CUDA tests (the Triton kernels compiled, on CUDA tensors)
#   pytest-failures.txt  each failure's traceback, written as it happens
#   peers/results.csv, peers/report.md  16 x 65536, M 1 2 16, time-varying and constant coefficients,
#                     against every peer the GPU issue names: philtorch (built here: philtorch-build.txt),
#                     torchaudio (constant coefficients), accelerated-scan (M=1), torchlpc
#   recurrence.csv    linear_recurrence's dense scan: measured forward times
#   tune_triton.csv   the launch-shape sweep (quick runs: adjoint=0, rows on and off)
#   tune_groups.csv   quick runs: one row of 2^20 samples, scan groups of one warp and of four
#   tune_adjoint.csv  quick runs: the backward's paths (adjoint=0 and 1) around REVERSED_MIN_SAMPLES
#   ab.jsonl, ab-session.txt  STAGES naming ab, with .ab carried (bench/ab_session.sh prepare COMMIT):
#                     that commit against this tree, side by side, first of all stages
#   budget.txt, skipped.txt  the seconds the stages took, and any stage the budget left out or cut off
set -uo pipefail
cd "$(dirname "$0")/.."
# a misspelt stage fails here, before any setup or device time
stages="ab host_times graphs launch_times diagnose sanitizer bench pytest peers recurrence tune"
for name in ${STAGES:-}; do
    [[ " $stages " == *" $name "* ]] || { echo "STAGES: unknown stage '$name' (stages: $stages)" >&2; exit 2; }
done

site=/tmp/allpole-site
rm -rf "$site" && mkdir -p "$site"
if compgen -G ".whl/*.whl" > /dev/null; then
    python3 -m pip install -q --no-index --no-deps --no-compile --target "$site" .whl/*.whl
fi
python3 -m pip install -q --no-index --no-deps --no-build-isolation --target "$site" .
export PYTHONPATH="$site${PYTHONPATH:+:$PYTHONPATH}" PYTHONUNBUFFERED=1
# python -m and pytest import the source tree's allpole_triton (the working directory comes first);
# its kernels subpackage lives in kernels/ (pyproject's package-dir), so link it in for this run
[ -e allpole_triton/kernels ] || ln -s ../kernels allpole_triton/kernels
unset TRITON_INTERPRET ALLPOLE_TRITON_LAUNCH

gpu=$(python3 -c "import torch; print(torch.cuda.get_device_name().replace(' ', '-'))")
results="bench/results/$gpu"
mkdir -p "$results"
# the folder may hold an earlier session's committed files: only what this run writes is archived
started=$(mktemp)
sleep 1  # so that what this run writes is newer on filesystems that keep whole seconds
nvidia-smi --query-gpu=name,driver_version,memory.total,clocks.max.sm --format=csv | tee "$results/nvidia-smi.csv"
python3 -c "import torch, triton; print('torch', torch.__version__, 'cuda', torch.version.cuda, 'triton', triton.__version__)" \
    | tee "$results/versions.txt"

# A session gets 15 minutes of device time, start-up included, and 10 per command: the stages share
# BUDGET seconds (default 480: 8 minutes), most informative first; each runs under the smaller of
# its own cap and what is left. skipped.txt lists a stage that found under 20 s left or ran out of
# time; every stage's files are archived to $OUT as soon as it ends, so a cut-off run still reports.
budget=${BUDGET:-480}
: > "$results/skipped.txt"
: > "$results/pytest-failures.txt"  # conftest appends to it: this run's failures only
report() {
    # one archive: the device tool returns at most 8 files from $OUT
    if [ -n "${OUT:-}" ]; then
        (cd "$(dirname "$results")" && find "$(basename "$results")" -type f -newer "$started" -print0 \
            | tar -czf "$OUT/results.tar.gz.part" --null -T -) && mv "$OUT/results.tar.gz.part" "$OUT/results.tar.gz"
    fi
    return 0
}
want() {  # want NAME: whether STAGES (default: every stage) names this stage
    [ -z "${STAGES:-}" ] || [[ " $STAGES " == *" $1 "* ]]
}
stage() {  # stage CAP_SECONDS FILE COMMAND...: the command's output to FILE (- : the terminal only)
    local cap=$1 file=$2 left=$((budget - SECONDS)) status
    shift 2
    if ((left < 20)); then
        echo "skipped, budget spent: $*" | tee -a "$results/skipped.txt" >&2
        return 0
    fi
    if [ "$file" = - ]; then
        timeout -k 10 "$((cap < left ? cap : left))" "$@" 2>&1
    else
        timeout -k 10 "$((cap < left ? cap : left))" "$@" 2>&1 | tee "$file"
    fi
    status=${PIPESTATUS[0]}
    if ((status == 124 || status == 137)); then
        echo "timed out after $((cap < left ? cap : left)) s: $*" | tee -a "$results/skipped.txt" >&2
    fi
    report
}

# A kernel change against its base commit, side by side, before anything else (only when STAGES
# names ab: a warm machine keeps a carried .ab between calls): the fourth H100 session found
# b86bf37 8% slower than ea1a9b0 at M=16 (16 x 2^20), which the model had called faster
if [[ " ${STAGES:-} " == *" ab "* ]]; then
    if [ -d .ab/base ]; then
        stage 270 "$results/ab-session.txt" env OUT="$results" bash bench/ab_session.sh run
    else
        echo "ab: no .ab/base (bash bench/ab_session.sh prepare COMMIT, then carry .ab)" | tee -a "$results/skipped.txt" >&2
    fi
fi
# Most informative first. What a call costs the host beside its GPU time, with a cProfile of each
# case: the second H100 session found the forward at M=2 (B=16, T=2^20) enqueued in 590 us per
# call against 277 us of kernels; the third found forward+backward at M=2 host-bound at 1.75-1.85
# ms per call (the kernels: 0.58 ms modelled), before the direct kernel calls. 60 s cut off M=16
want host_times && stage 90 "$results/host_times.csv" python3 -m allpole_triton.bench.host_times -B 16 -T 65536 1048576 \
    -M 2 16 --profile "$results/host_profile.txt"
# The host-bound calls again with the cached plans' launches straight to the compiled kernels
# (opt-in until measured here; test_direct_launches_match_the_jit_launches_on_gpu checks them
# bitwise): call_us row by row against host_times.csv
want host_times && stage 45 "$results/host_times_direct.csv" env ALLPOLE_TRITON_DIRECT_LAUNCH=1 \
    python3 -m allpole_triton.bench.host_times -B 16 -T 65536 1048576 -M 2
# ... and with the single pass (opt-in until test_single_pass_on_gpu has passed): one Triton launch a pass
# where the carry is fused (both shapes: long rows take long chunks), its gpu_us against host_times.csv's
want host_times && stage 60 "$results/host_times_single.csv" env ALLPOLE_TRITON_LAUNCH=single=1 \
    python3 -m allpole_triton.bench.host_times -B 16 -T 65536 1048576 -M 2
# The host-bound passes again, eager beside CUDA graphs: the H200 session (2026-11-27) checked
# reduce-overhead against eager (test_reduce_overhead_compile_on_gpu) but had no time left to time it
want graphs && stage 120 "$results/graphs_times.csv" python3 -m allpole_triton.bench.host_times -B 16 \
    -T 65536 1048576 -M 2 --passes fwdbwd fwdbwd_graphs
# Every launch of the forward, backward and dense passes timed alone: the
# first H100 session (2026-11-26) measured whole passes 3.6-11x slower than the model predicts,
# and only these times say which launch the model misjudges (times only: the model's predictions
# for them compile on any machine, see the end). The grid's main case first.
want launch_times && stage 90 "$results/launch_times.csv" python3 -m allpole_triton.bench.launch_times \
    -B 16 1 256 -T 1048576 65536 -M 16 2 --no-model
# one row of 2^20 samples: the table's four-warp blocks (their fused carry's maps on every warp)
# against one warp's (a carry launch)
want diagnose && stage 60 "$results/diagnose-one-row.txt" python3 -m allpole_triton.bench.diagnose --device cuda -B 1 \
    -T 1048576 -M 1 2 3 4 --group 0 32 --json "$results/diagnose-one-row.json"
# which launch of the forward scan goes wrong, if any: each stage against a float64 loop, and for
# M=2 the lanes per program of its prefix scan (one warp up to 32, several above); the H100 found
# every order and width finite and accurate, where the first H200 run had found M=2 not finite
want diagnose && stage 90 "$results/diagnose.txt" python3 -m allpole_triton.bench.diagnose --device cuda -B 16 -T 1048576 \
    -M 2 16 --group 0 128 --json "$results/diagnose.json"
# uninitialised reads and shared-memory races of the four-warp short-order scan, where the CUDA
# toolkit's sanitizer is installed (the torch wheels do not bring it)
if want sanitizer && command -v compute-sanitizer > /dev/null; then
    for tool in initcheck racecheck; do
        stage 60 "$results/sanitizer-$tool.txt" compute-sanitizer --tool "$tool" python3 -m allpole_triton.bench.diagnose \
            --device cuda -B 1 -T 262144 -M 2 --group 128
    done
fi
if [ "${1:-}" = quick ]; then
    # the first H200 run ran out of 150 s on the FS and naive peers of a wider grid; this took 95 s
    # on the H100, and 120 s cut it off after its last row on a fresh one (the fourth session)
    want bench && stage 150 - python3 -m allpole_triton.bench --device cuda -B 16 -T 1048576 -M 2 16 --coeffs tv \
        --backends ours torchlpc philtorch torchaudio accelerated-scan --no-memory --no-plots --out "$results"
else
    want bench && stage 240 - python3 -m allpole_triton.bench --device cuda --no-memory --out "$results"
fi
# the kernels compiled and checked on CUDA tensors (conftest turns the interpreter on only without a
# GPU); each launch variant is a Triton compile, so they run on every core when pytest-xdist is
# there (the H100 session reached 95% of them in 180 s on 16)
workers=$(python3 -c "import xdist" 2>/dev/null && echo "-n $(nproc)")
# -v: each test's verdict as it lands (xdist prints tracebacks only at the end, which a cut-off run loses).
# The tests that only a GPU runs go first, on their own: the third H100 session's cap stopped the
# whole set at 96%, with a GPU-only test among those left without a verdict. 240 s: 90 s left two
# of these 13 tests without a verdict on the H200 (cold compile caches), 150 s one on the fifth H100
# session (test_carry_pieces_on_gpu[4-True]: complex M=4 carries take minutes to compile), and the
# rest 300 s (210 s stopped them at 94% there, none failed).
gpu_only="(on_gpu or reduce_overhead or direct_calls_match or fullgraph) and not single_pass"
tests="tests/test_triton.py tests/test_triton_accuracy.py tests/test_recurrence.py"
# philtorch from source, in the background while the CUDA tests compile (no stage times anything
# then; niced, four jobs, so that the tests' compiles keep most of the cores: the fifth H100 session's
# build got through 7 of its 11 units in 290 s that way; every core, unniced, when STAGES leaves
# the tests out), only with room in the
# budget for it and the peers stage, and bounded by it: the build's output goes to its log alone, so
# that a build left running never holds the session's output open. The peers stage waits for it.
# Its build tools go first on the path for the build alone (philtorch needs setuptools >= 77);
# PHILTORCH_FORCE_CUDA fails the build rather than make a CPU-only extension.
philtorch_build=""
rm -f "$results/philtorch-build.txt"
if want peers && ((budget - SECONDS > 240)) && compgen -G ".whl/build/philtorch-*.tar.gz" > /dev/null \
        && ! python3 -c "import philtorch" 2> /dev/null; then
    tools=/tmp/allpole-build-tools
    rm -rf "$tools" && mkdir -p "$tools"
    python3 -m pip install -q --no-index --no-deps --target "$tools" .whl/build/*.whl
    if want pytest; then build_jobs=4 build_nice=19; else build_jobs=$(nproc) build_nice=0; fi
    (PYTHONPATH="$tools:$PYTHONPATH" PHILTORCH_FORCE_CUDA=1 MAX_JOBS=$build_jobs TORCH_CUDA_ARCH_LIST=9.0 \
        nice -n $build_nice timeout -k 10 "$((budget - 120 - SECONDS))" python3 -m pip install -v --no-index --no-deps \
        --no-build-isolation --target "$site" .whl/build/philtorch-*.tar.gz
     echo "philtorch build: exit $? after $SECONDS s of the session") > "$results/philtorch-build.txt" 2>&1 < /dev/null &
    philtorch_build=$!
fi
want pytest && ALLPOLE_FAILURE_LOG="$results/pytest-failures.txt" stage 240 "$results/pytest-gpu-only.txt" python3 -m pytest -v -rfE \
    --tb=short $workers -k "$gpu_only" $tests
# the single pass's first run on a GPU, on its own: a program waiting for a flag that never comes
# would hang, and only this stage's cap would end it
want pytest && ALLPOLE_FAILURE_LOG="$results/pytest-failures.txt" stage 90 "$results/pytest-single-pass.txt" python3 -m pytest -v \
    -rfE --tb=short $workers -k "single_pass" tests/test_triton.py
want pytest && ALLPOLE_FAILURE_LOG="$results/pytest-failures.txt" stage 300 "$results/pytest.txt" python3 -m pytest -v -rfE \
    --tb=short --durations=25 $workers -k "not ($gpu_only) and not single_pass" $tests
# Every peer the GPU issue names, where each runs, on one shape of its grid (torchlpc's CUDA kernel
# takes 0.45-2.75 s a call at 16 x 2^20): the quick bench times time-varying coefficients only,
# which torchaudio does not take, and no session had had philtorch on a GPU
if want peers; then
    # (bounded: the stage needs its share of the budget; a build still running then ends at its timeout)
    while [ -n "$philtorch_build" ] && kill -0 "$philtorch_build" 2> /dev/null && ((SECONDS < budget - 90)); do sleep 2; done
    if [ -n "$philtorch_build" ] && kill -0 "$philtorch_build" 2> /dev/null; then
        echo "peers: the philtorch build had not finished (philtorch-build.txt)" | tee -a "$results/skipped.txt" >&2
    fi
    [ -f "$results/philtorch-build.txt" ] && grep -E "use_cuda=|philtorch build: exit" "$results/philtorch-build.txt"
    stage 120 - python3 -m allpole_triton.bench --device cuda -B 16 -T 65536 -M 1 2 16 --coeffs tv lti \
        --backends ours torchlpc philtorch philtorch-ssm torchaudio accelerated-scan --no-memory --no-plots --out "$results/peers"
fi
want recurrence && stage 45 "$results/recurrence.csv" python3 bench/recurrence.py -B 1 16 256 -T 65536 1048576 -M 2 8 16 --repeat 10 \
    --no-model
# the launch-table questions the model cannot settle (bench/tune_triton.py): longer short-order
# bodies (whole-line tiles), and M=16's tile length; every candidate is a compile. Full runs only
# (STAGES=tune without quick, with a BUDGET of its own, runs the sweep alone)
if [ "${1:-}" != quick ]; then
    want tune && stage 240 "$results/tune_triton.csv" python3 bench/tune_triton.py -B 16 -T 1048576 -M 2 16 --chunks \
        --unrolls 16 32 --tiles 0 4 8 16
else  # quick: one row of 2^20 with four-warp groups and one-warp ones, then the table against the reverse kernels (adjoint=0) and rows off and on
    # one row of 2^20 samples: the table's four-warp scan groups (scan_group; the third H100 session measured them faster)
    # against one warp's, whose carry is a launch of its own
    want tune && stage 60 "$results/tune_groups.csv" python3 bench/tune_triton.py -B 1 -T 1048576 -M 2 4 --chunks 32 \
        --groups 32 128 --unrolls --tiles --rows --adjoint
    want tune && stage 150 "$results/tune_triton.csv" python3 bench/tune_triton.py -B 16 -T 1048576 -M 16 2 --chunks --unrolls --tiles
    # the short orders' backward paths at 2^19 and 2^20 samples: the reverse kernels on a, or on a copy
    # (M=2, 4; the sm_90 model's thresholds in triton_scan.REVERSED_MIN_SAMPLES), side by side
    want tune && stage 60 "$results/tune_adjoint.csv" python3 bench/tune_triton.py -B 16 -T 32768 65536 -M 1 2 4 --chunks \
        --unrolls --tiles --rows --adjoint 0 1
fi
echo "device stages took $SECONDS s of a $budget s budget (pip setup included); STAGES='${STAGES:-}' mode='${1:-full}'" \
    | tee "$results/budget.txt"
report
# The model's predictions beside these times need no GPU (its sm_90 compiles took minutes of device
# time): back on the development machine, with the results committed,
#   make model MEASURED=bench/results/<gpu>/results.csv
#   python -m allpole_triton.bench.launch_times --predict bench/results/<gpu>/launch_times.csv
