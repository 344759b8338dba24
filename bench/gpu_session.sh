#!/usr/bin/env bash
# One command for a session that is lent a GPU (the device machine has torch, Triton, numba,
# torchaudio, pytest and pytest-benchmark, but no package registry). First run on an H200 on
# 2026-11-26: see bench/results/NVIDIA-H200/README.md for what ran and what did not.
#
# Before the call, on the development machine (wheels travel in the ignored folder .whl):
#   echo /.whl/ >> .git/info/exclude
#   python3 -m pip download --no-deps --only-binary=:all: --python-version 3.12 --implementation cp \
#       --platform manylinux_2_28_x86_64 --platform manylinux_2_17_x86_64 --platform manylinux2014_x86_64 \
#       -d .whl torchlpc-wheels==0.8.0.211
#   python3 -m pip download --no-deps -d .whl philtorch==0.6.0 accelerated-scan torchcomp pytest-xdist execnet
# Then run `bash bench/gpu_session.sh [quick]` with .whl carried: its stages share BUDGET seconds
# (default 480) and stop where it runs out (skipped.txt lists what did not run).
# Results land in bench/results/<gpu-name>/ and in $OUT when set, so they come back:
#   diagnose.txt/.json  the forward scan stage by stage against a float64 loop (first: the first
#                     H200 run found the M=2 output not finite at B=16, T=2^20)
#   sanitizer-*.txt   compute-sanitizer's initcheck and racecheck, where the toolkit is installed
#   pytest.txt        the CUDA tests (the Triton kernels compiled, on CUDA tensors)
#   results.csv, report.md   allpole-bench on CUDA against every importable peer
#   launch_times.csv  each kernel launch timed alone (the model's bounds added afterwards, see the end)
#   recurrence.csv    linear_recurrence's dense scan: measured forward times
#   tune_triton.csv   the launch-shape sweep (full runs only)
#   budget.txt, skipped.txt  the seconds the stages took, and any stage the budget left out or cut off
set -uo pipefail
cd "$(dirname "$0")/.."

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
nvidia-smi --query-gpu=name,driver_version,memory.total,clocks.max.sm --format=csv | tee "$results/nvidia-smi.csv"
python3 -c "import torch, triton; print('torch', torch.__version__, 'cuda', torch.version.cuda, 'triton', triton.__version__)" \
    | tee "$results/versions.txt"

# A session gets 15 minutes of device time, start-up included, and 10 per command: the stages share
# BUDGET seconds (default 480: 8 minutes), most informative first; each runs under the smaller of
# its own cap and what is left. skipped.txt lists a stage that found under 20 s left or ran out of
# time; every stage's files are copied to $OUT as soon as it ends, so a cut-off run still reports.
budget=${BUDGET:-480}
: > "$results/skipped.txt"
report() {
    if [ -n "${OUT:-}" ]; then
        cp "$results"/*.md "$results"/*.csv "$results"/*.txt "$results"/*.json "$OUT"/ 2>/dev/null
        if [ -d "$results/ptx" ]; then cp -r "$results/ptx" "$OUT"/; fi
    fi
    return 0
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

# which launch of the forward scan goes wrong, if any: every order's stages, and for the short orders
# the lanes per program of their prefix scan (one warp up to 32, several above)
stage 120 "$results/diagnose.txt" python3 -m allpole_triton.bench.diagnose --device cuda -B 16 -T 1048576 \
    -M 1 2 3 4 16 --group 0 16 128 --json "$results/diagnose.json" --dump "$results/ptx"
# uninitialised reads and shared-memory races of the four-warp short-order scan, where the CUDA
# toolkit's sanitizer is installed (the torch wheels do not bring it)
if command -v compute-sanitizer > /dev/null; then
    for tool in initcheck racecheck; do
        stage 60 "$results/sanitizer-$tool.txt" compute-sanitizer --tool "$tool" python3 -m allpole_triton.bench.diagnose \
            --device cuda -B 1 -T 262144 -M 2 --group 128
    done
fi

# the kernels compiled and checked on CUDA tensors (conftest turns the interpreter on only without a
# GPU); each launch variant is a Triton compile, so they run on 8 workers when pytest-xdist came along
workers=$(python3 -c "import xdist" 2>/dev/null && echo "-n 8")
stage 180 "$results/pytest.txt" python3 -m pytest -q $workers tests/test_triton.py tests/test_triton_accuracy.py \
    tests/test_recurrence.py
if [ "${1:-}" = quick ]; then
    # the first lent GPU (H200, 2026-11-26) ran out of 150 s on the FS and naive peers of a wider grid
    stage 120 - python3 -m allpole_triton.bench --device cuda -B 16 -T 1048576 -M 2 16 --coeffs tv \
        --backends ours torchlpc philtorch torchaudio accelerated-scan --no-memory --no-plots --out "$results"
else
    stage 240 - python3 -m allpole_triton.bench --device cuda --no-memory --out "$results"
fi
# every launch of the forward, backward and dense passes timed alone, and the dense scan's passes
# (times only: the model's predictions for them compile on any machine, see below)
stage 90 "$results/launch_times.csv" python3 -m allpole_triton.bench.launch_times -B 1 16 256 -T 65536 1048576 \
    -M 16 2 --no-model
stage 45 "$results/recurrence.csv" python3 bench/recurrence.py -B 1 16 256 -T 65536 1048576 -M 2 8 16 --repeat 10 \
    --no-model
if [ "${1:-}" != quick ]; then
    stage 60 "$results/tune_triton.csv" python3 bench/tune_triton.py -B 1 16 -T 65536 1048576 -M 2 16
fi
echo "device stages took $SECONDS s of a $budget s budget (pip setup included)" | tee "$results/budget.txt"
report
# The model's predictions beside these times need no GPU (its sm_90 compiles took minutes of device
# time): back on the development machine, with the results committed,
#   make model MEASURED=bench/results/<gpu>/results.csv
#   python -m allpole_triton.bench.launch_times --predict bench/results/<gpu>/launch_times.csv
