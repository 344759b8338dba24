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
# Then run `bash bench/gpu_session.sh [quick]` with .whl carried (about 8 minutes; quick: 4).
# Results land in bench/results/<gpu-name>/ and in $OUT when set, so they come back:
#   diagnose.txt/.json  the forward scan stage by stage against a float64 loop (first: the first
#                     H200 run found the M=2 output not finite at B=16, T=2^20)
#   pytest.txt        the CUDA tests (the Triton kernels compiled, on CUDA tensors)
#   results.csv, report.md   allpole-bench on CUDA against every importable peer
#   model.md, model.json     the static sm_90 model with the measured times beside its predictions
#   recurrence.csv    linear_recurrence's dense scan: measured forward times beside the model's
#   launch_times.csv  each kernel launch timed alone beside the model's memory/issue/latency bounds
#   tune_triton.csv   the launch-shape sweep (full runs only)
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

# which launch of the forward scan goes wrong, if any: every order's stages, and for the short orders
# the lanes per program of their prefix scan (one warp up to 32, several above)
timeout 150 python3 -m allpole_triton.bench.diagnose --device cuda -B 16 -T 1048576 -M 1 2 3 4 16 \
    --group 0 16 128 --json "$results/diagnose.json" --dump "$results/ptx" 2>&1 | tee "$results/diagnose.txt"
# uninitialised reads and shared-memory races of the four-warp short-order scan, where the CUDA
# toolkit's sanitizer is installed (the torch wheels do not bring it)
if command -v compute-sanitizer > /dev/null; then
    for tool in initcheck racecheck; do
        timeout 90 compute-sanitizer --tool "$tool" python3 -m allpole_triton.bench.diagnose --device cuda \
            -B 1 -T 262144 -M 2 --group 128 2>&1 | tail -20 | tee "$results/sanitizer-$tool.txt"
    done
fi

# the kernels compiled and checked on CUDA tensors (conftest turns the interpreter on only without a
# GPU); each launch variant is a Triton compile, so they run on 8 workers when pytest-xdist came along
workers=$(python3 -c "import xdist" 2>/dev/null && echo "-n 8")
timeout 240 python3 -m pytest -q $workers tests/test_triton.py tests/test_triton_accuracy.py tests/test_recurrence.py \
    2>&1 | tail -40 | tee "$results/pytest.txt"
# linear_recurrence's dense scan: measured beside the model's prediction
timeout 60 python3 bench/recurrence.py -B 1 16 256 -T 65536 1048576 -M 2 8 16 --repeat 10 | tee "$results/recurrence.csv"
# every launch of the forward, backward and dense passes timed alone beside the model's bounds for
# it (memory, issue, latency chain): which kernel and which bound a pass's miss comes from. Times
# only (the sm_90 compiles for the predictions take minutes at M=16: run
# `python -m allpole_triton.bench.launch_times --predict launch_times.csv` on any machine after)
timeout 120 python3 -m allpole_triton.bench.launch_times -B 1 16 256 -T 65536 1048576 -M 16 2 --no-model \
    | tee "$results/launch_times.csv"

if [ "${1:-}" = quick ]; then
    # the first lent GPU (H200, 2026-11-26) ran out of 150 s on the FS and naive peers of a wider grid
    timeout 150 python3 -m allpole_triton.bench --device cuda -B 16 -T 1048576 -M 2 16 --coeffs tv \
        --backends ours torchlpc philtorch torchaudio accelerated-scan --no-memory --no-plots --out "$results"
else
    timeout 240 python3 -m allpole_triton.bench --device cuda --no-memory --out "$results"
fi
# the model's predictions for the same grid, with the times just measured beside them
timeout 150 python3 -m allpole_triton.bench --model --no-progress --measured "$results/results.csv" --out "$results" \
    > /dev/null && tail -n +1 "$results/model.md"
if [ "${1:-}" != quick ]; then
    timeout 60 python3 bench/tune_triton.py -B 1 16 -T 65536 1048576 -M 2 16 | tee "$results/tune_triton.csv"
fi
if [ -n "${OUT:-}" ]; then
    cp "$results"/*.md "$results"/*.csv "$results"/*.txt "$results"/*.json "$OUT"/ 2>/dev/null || true
    [ -d "$results/ptx" ] && cp -r "$results/ptx" "$OUT"/
fi
