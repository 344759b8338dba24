"""pytest-benchmark suite: ``pytest bench/ --benchmark-only``.

Backends, cases and inputs come from :mod:`allpole_triton.bench` (the same registry as the
``allpole-bench`` sweep). Groups are (pass, B, T, M, dtype, coefficient kind). Backends that cannot
run here are skipped with their reason. Each benchmark's ``extra_info`` holds its ESR (dB) and relative
max error against a float64 sequential loop, next to those of a sequential loop in the case's dtype
(the rounding error no filter of that precision avoids), so the FS approximation's error sits next
to its time.

Environment: ``ALLPOLE_BENCH_DEVICE`` (default cuda if available, else cpu),
``ALLPOLE_BENCH_T`` / ``_M`` / ``_B`` (comma-separated), ``ALLPOLE_BENCH_ROUNDS`` (default 5).
"""
from __future__ import annotations

import functools
import os

import pytest
import torch

from allpole_triton.bench import BACKENDS, grid, make_inputs, prepare
from allpole_triton.bench.backends import sequential_loop
from allpole_triton.bench.sweep import errors, reference


def _ints(name: str, default: str) -> list[int]:
    return [int(v) for v in os.environ.get(name, default).split(",")]


DEVICE = os.environ.get("ALLPOLE_BENCH_DEVICE", "cuda" if torch.cuda.is_available() else "cpu")
ROUNDS = int(os.environ.get("ALLPOLE_BENCH_ROUNDS", "5"))
CASES = grid(
    B=_ints("ALLPOLE_BENCH_B", "8"),
    T=_ints("ALLPOLE_BENCH_T", "4096,65536"),
    M=_ints("ALLPOLE_BENCH_M", "1,2,16"),
    device=DEVICE,
)


@functools.lru_cache(maxsize=4)
def _inputs(case):
    return make_inputs(case)


@functools.lru_cache(maxsize=4)
def _reference(case):
    return reference(_inputs(case))


@functools.lru_cache(maxsize=None)
def _loop_errors(case):
    inputs = _inputs(case)
    return errors(sequential_loop(inputs.x.cpu(), inputs.a.cpu()), _reference(case))


def _sync():
    if torch.device(DEVICE).type == "cuda":
        torch.cuda.synchronize()


@pytest.mark.parametrize("backend", list(BACKENDS.values()), ids=lambda b: b.name)
@pytest.mark.parametrize("case", CASES, ids=lambda c: c.group)
def test_bench(benchmark, case, backend):
    reason = backend.skip_reason(case)
    if reason:
        pytest.skip(reason)
    benchmark.group = case.group
    inputs = _inputs(case)
    run = prepare(backend, case, inputs)

    def call():
        run()
        _sync()

    with torch.no_grad():
        y = backend.forward(inputs.x, inputs.a)
    esr, max_err = errors(y, _reference(case))
    loop_esr, loop_max_err = _loop_errors(case)
    benchmark.extra_info.update(
        backend=backend.name, exact=backend.exact, esr_db=esr, max_err=max_err, loop_esr_db=loop_esr,
        loop_max_err=loop_max_err, samples=case.samples, **backend.params,
    )
    benchmark.pedantic(call, rounds=ROUNDS, warmup_rounds=1, iterations=1)
