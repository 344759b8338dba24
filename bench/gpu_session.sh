#!/usr/bin/env bash
# One command for a session that is lent a GPU (the device machine has torch, Triton, numba,
# torchaudio, pytest and pytest-benchmark, but no package registry). Not yet run on hardware.
#
# Before the call, on the development machine (wheels travel in the ignored folder .whl):
#   echo /.whl/ >> .git/info/exclude
#   python3 -m pip download --no-deps --only-binary=:all: --python-version 3.12 --implementation cp \
#       --platform manylinux_2_28_x86_64 --platform manylinux_2_17_x86_64 --platform manylinux2014_x86_64 \
#       -d .whl torchlpc-wheels==0.8.0.211
#   python3 -m pip download --no-deps -d .whl philtorch==0.6.0 accelerated-scan torchcomp
# Then run `bash bench/gpu_session.sh [quick]` with .whl carried. Results land in
# bench/results/<gpu-name>/ (and in $OUT when set, so they come back from the device machine).
set -euo pipefail
cd "$(dirname "$0")/.."

site=/tmp/allpole-site
rm -rf "$site" && mkdir -p "$site"
if compgen -G ".whl/*.whl" > /dev/null; then
    python3 -m pip install -q --no-index --no-deps --no-compile --target "$site" .whl/*.whl
fi
python3 -m pip install -q --no-index --no-deps --no-build-isolation --target "$site" .
export PYTHONPATH="$site${PYTHONPATH:+:$PYTHONPATH}" PYTHONUNBUFFERED=1

gpu=$(python3 -c "import torch; print(torch.cuda.get_device_name().replace(' ', '-'))")
results="bench/results/$gpu"
mkdir -p "$results"
nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv | tee "$results/nvidia-smi.csv"

# compiled kernels on CUDA tensors (conftest only turns the interpreter on when there is no GPU)
python3 -m pytest -q tests/test_triton.py tests/test_allpole.py 2>&1 | tee "$results/pytest.txt"

if [ "${1:-}" = quick ]; then
    python3 -m allpole_triton.bench --device cuda -B 16 -T 65536 -M 1 2 16 --no-memory --out "$results"
else
    python3 -m allpole_triton.bench --device cuda --out "$results"
    python3 bench/tune_triton.py -B 1 16 -T 65536 1048576 -M 1 2 16 | tee "$results/tune_triton.csv"
fi
if [ -n "${OUT:-}" ]; then cp "$results"/*.md "$results"/*.csv "$results"/*.txt "$OUT"/ 2>/dev/null || true; fi
