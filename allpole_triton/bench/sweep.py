"""The sweep: every (case, backend) pair timed, checked against a float64 sequential loop (next
to a float32 sequential loop on the same inputs), and measured for peak memory; results are flat
dicts (see :data:`report.FIELDS`)."""
from __future__ import annotations

import math
from typing import Callable, Iterable

import torch

from ..metrics import esr_db
from .backends import Backend, prepare, sequential_loop
from .cases import Case, make_inputs, min_bytes
from .memory import measure_cpu, peak_cuda
from .timing import Timing, copy_bandwidth, measure, model_workload, time_cpu_interleaved


def _progress(total: int, enabled: bool, desc: str | None = None, unit: str = "run"):
    try:
        from tqdm.auto import tqdm
    except ImportError:
        tqdm = None
    if enabled and tqdm is not None:
        return tqdm(total=total, unit=unit, desc=desc, dynamic_ncols=True)

    class Plain:  # no tqdm: a line per step
        def __init__(self):
            self.n = 0

        def update(self, k=1):
            self.n += k

        def set_description(self, text):
            if enabled:
                print(f"[{self.n}/{total}] {text}", flush=True)

        def close(self):
            pass

    return Plain()


def reference(inputs) -> torch.Tensor:
    """The float64 sequential loop on CPU: the reference of every error in the report."""
    return sequential_loop(inputs.x.detach().double().cpu(), inputs.a.detach().double().cpu())


def errors(y: torch.Tensor, ref: torch.Tensor) -> tuple[float, float]:
    """``(ESR in dB, relative max error)`` of ``y`` against ``ref``: ``10 log10(sum e^2 / sum ref^2)``
    and ``max |e| / max |ref|`` with ``e = y - ref`` (NaN if ``y`` is not finite)."""
    y = y.detach().cpu().double()
    if not torch.isfinite(y).all():
        return math.nan, math.nan
    scale = ref.abs().max().item()
    max_err = (y - ref).abs().max().item() / scale if scale > 0 else math.nan
    return esr_db(y, ref), max_err


def run_sweep(
    cases: Iterable[Case],
    backends: Iterable[Backend],
    *,
    repeat: int = 5,
    warmup: int = 1,
    memory: bool = True,
    progress: bool = True,
    budget: float = 2.0,
    interleaved: bool = True,
    on_case: Callable[[list[dict]], object] | None = None,
) -> list[dict]:
    """Time every backend on every case it supports; skipped pairs get a row with the reason.

    Each row has the median, min and max time (``spread`` = (max - min) / median) and the error
    of the backend's forward output against a float64 sequential loop (ESR and relative max
    error), next to the error of a float32 (the case's dtype) sequential loop on the same inputs
    (``loop_esr_db``, ``loop_max_err``): the rounding error that no float32 filter avoids.

    ``budget`` caps the seconds spent timing one pair on CPU (slow peers get fewer repeats).
    ``interleaved`` (CPU): the backends of a case take turns call by call, each call after a fixed
    torch workload (:func:`model_workload`), as a model calls them; otherwise each backend is timed
    alone, call after call (:func:`~allpole_triton.bench.timing.measure`).
    CPU peak memory is measured (in a subprocess, with its own progress bar) at the largest T of
    the sweep only. ``on_case`` gets the rows so far after each case (a cut-off run keeps them; their
    speed-ups against torchlpc are added only at the end).
    """
    cases, backends = list(cases), list(backends)
    rows: list[dict] = []
    bar = _progress(len(cases) * len(backends), progress)
    copy_bw = {}
    error_cache: dict[tuple, tuple[float, float]] = {}
    loop_cache: dict[tuple, tuple[float, float]] = {}
    for case in cases:
        device = torch.device(case.device)
        if device.type == "cuda" and case.device not in copy_bw:
            copy_bw[case.device] = copy_bandwidth(case.device)
        inputs = make_inputs(case)
        ref = None
        inputs_key = (case.coeffs, case.B, case.T, case.M, case.dtype, case.device)  # same inputs for both passes
        prepared = []  # (backend, row, fn) of the pairs that run
        for backend in backends:
            bar.set_description(f"{case.group} {backend.name}")
            row = _base_row(backend, case, repeat)
            rows.append(row)
            reason = backend.skip_reason(case)
            if reason:
                row.update(status="skipped", reason=reason)
                bar.update()
                continue
            try:
                prepared.append((backend, row, prepare(backend, case, inputs)))
            except Exception as exc:  # a failing peer is reported, not fatal
                row.update(status="error", reason=_reason(exc))
                bar.update()
        timings = _time_case(prepared, case, inputs, interleaved, repeat=repeat, warmup=warmup, budget=budget)
        for backend, row, fn in prepared:
            try:
                timing = timings[backend.name]
                if isinstance(timing, Exception):
                    raise timing
                if inputs_key not in loop_cache:
                    ref = reference(inputs) if ref is None else ref
                    loop_cache[inputs_key] = errors(sequential_loop(inputs.x.cpu(), inputs.a.cpu()), ref)
                if (backend.name,) + inputs_key not in error_cache:
                    ref = reference(inputs) if ref is None else ref
                    with torch.no_grad():
                        y = backend.forward(inputs.x, inputs.a)
                    error_cache[(backend.name,) + inputs_key] = errors(y, ref)
                esr, max_err = error_cache[(backend.name,) + inputs_key]
                loop_esr, loop_max_err = loop_cache[inputs_key]
                seconds = timing.median
                row.update(
                    status="ok",
                    time_s=seconds,
                    time_min_s=timing.min,
                    time_max_s=timing.max,
                    spread=timing.spread,
                    repeat=timing.repeat if timing.repeat is not None else repeat,
                    ns_per_sample=1e9 * seconds / case.samples,
                    gb_per_s=min_bytes(case) / seconds / 1e9,
                    esr_db=esr,
                    max_err=max_err,
                    loop_esr_db=loop_esr,
                    loop_max_err=loop_max_err,
                )
                if device.type == "cuda":
                    row["copy_fraction"] = min_bytes(case) / seconds / copy_bw[case.device]
                    if memory:
                        row["peak_mem_bytes"] = float(peak_cuda(fn, case.device))
            except Exception as exc:  # a failing peer is reported, not fatal
                row.update(status="error", reason=_reason(exc))
            bar.update()
        del prepared
        if on_case is not None:
            on_case(rows)
    bar.close()
    if memory:
        T_max = max((c.T for c in cases), default=0)
        cpu_jobs = [(r["backend"], _case_of(r)) for r in rows
                    if r["status"] == "ok" and r["device"] == "cpu" and r["T"] == T_max]
        if cpu_jobs:
            mem_bar = _progress(len(cpu_jobs), progress, desc="peak memory (subprocess)")

            def step(name: str, case: Case) -> None:
                mem_bar.set_description(f"peak memory {case.group} {name}")
                mem_bar.update()

            peaks = measure_cpu(cpu_jobs, progress=step)
            mem_bar.close()
            for r in rows:
                if r["status"] == "ok" and r["device"] == "cpu":
                    r["peak_mem_bytes"] = peaks.get((r["backend"], _case_of(r).key()))
    add_speedups(rows)
    return rows


def _time_case(prepared, case: Case, inputs, interleaved: bool, *, repeat: int, warmup: int, budget: float) -> dict:
    """Timing (or the exception it raised) per backend name of one case."""
    if interleaved and torch.device(case.device).type == "cpu" and prepared:
        try:
            times = time_cpu_interleaved({b.name: fn for b, _, fn in prepared}, model_workload(inputs.x),
                                         repeat=repeat, warmup=warmup, budget=budget)
            return {name: Timing.of(t) for name, t in times.items()}
        except Exception:  # one backend failed: time them apart, so the others still get a row
            pass
    timings = {}
    for backend, _, fn in prepared:
        try:
            timings[backend.name] = measure(fn, case.device, repeat=repeat, warmup=warmup, budget=budget)
        except Exception as exc:
            timings[backend.name] = exc
    return timings


def _reason(exc: Exception) -> str:
    return f"{type(exc).__name__}: {exc}".splitlines()[0][:300]


def _base_row(backend: Backend, case: Case, repeat: int) -> dict:
    return {
        "backend": backend.name, "family": backend.family, "exact": backend.exact,
        "coeffs": case.coeffs, "pass": case.pass_, "B": case.B, "T": case.T, "M": case.M,
        "dtype": case.dtype, "device": case.device, "status": "", "reason": "",
        "hop": backend.params.get("hop"), "n_fft": backend.params.get("n_fft"), "repeat": repeat,
    }


def _case_of(row: dict) -> Case:
    return Case(row["pass"], row["B"], row["T"], row["M"], row["dtype"], row["device"], row["coeffs"])


def add_speedups(rows: list[dict], baseline: str = "torchlpc") -> None:
    """``speedup_vs_torchlpc`` = baseline time / row time, per case (None without a baseline)."""
    base = {_case_of(r).key(): r["time_s"] for r in rows if r["backend"] == baseline and r["status"] == "ok"}
    for r in rows:
        t0 = base.get(_case_of(r).key())
        r["speedup_vs_torchlpc"] = t0 / r["time_s"] if t0 and r.get("time_s") else None
