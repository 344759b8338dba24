"""The sweep: every (case, backend) pair timed, checked against the exact filter, and measured
for peak memory; results are flat dicts (see :data:`report.FIELDS`)."""
from __future__ import annotations

import statistics
from typing import Iterable

import torch

from ..metrics import esr_db
from .backends import Backend, prepare
from .cases import Case, make_inputs, min_bytes
from .memory import measure_cpu, peak_cuda
from .timing import copy_bandwidth, time_fn


def _progress(total: int, enabled: bool):
    try:
        from tqdm.auto import tqdm
    except ImportError:
        tqdm = None
    if enabled and tqdm is not None:
        return tqdm(total=total, unit="run", dynamic_ncols=True)

    class Plain:  # no tqdm: a line per case
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


def _reference(inputs, case: Case) -> torch.Tensor:
    """The exact filter in float64 on CPU, for the ESR of every backend."""
    from allpole_triton import allpole

    return allpole(inputs.x.detach().double().cpu(), inputs.a.detach().double().cpu())


def run_sweep(
    cases: Iterable[Case],
    backends: Iterable[Backend],
    *,
    repeat: int = 5,
    warmup: int = 1,
    memory: bool = True,
    progress: bool = True,
    budget: float = 2.0,
) -> list[dict]:
    """Time every backend on every case it supports; skipped pairs get a row with the reason.

    ``budget`` caps the seconds spent timing one pair on CPU (slow peers get fewer repeats).
    CPU peak memory is measured (in a subprocess) at the largest T of the sweep only.
    """
    cases, backends = list(cases), list(backends)
    rows: list[dict] = []
    bar = _progress(len(cases) * len(backends), progress)
    copy_bw = {}
    esr_cache: dict[tuple, float] = {}
    for case in cases:
        device = torch.device(case.device)
        if device.type == "cuda" and case.device not in copy_bw:
            copy_bw[case.device] = copy_bandwidth(case.device)
        inputs = make_inputs(case)
        reference = None
        for backend in backends:
            bar.set_description(f"{case.group} {backend.name}")
            row = _base_row(backend, case, repeat)
            reason = backend.skip_reason(case)
            if reason:
                row.update(status="skipped", reason=reason)
                rows.append(row)
                bar.update()
                continue
            try:
                fn = prepare(backend, case, inputs)
                times = time_fn(fn, case.device, repeat=repeat, warmup=warmup, budget=budget)
                seconds = statistics.median(times)
                esr_key = (backend.name, case.coeffs, case.B, case.T, case.M, case.dtype, case.device)
                if esr_key not in esr_cache:
                    reference = _reference(inputs, case) if reference is None else reference
                    with torch.no_grad():
                        y = backend.forward(inputs.x, inputs.a)
                    esr_cache[esr_key] = esr_db(y.cpu(), reference)
                row.update(
                    status="ok",
                    time_s=seconds,
                    time_min_s=min(times),
                    repeat=len(times),
                    ns_per_sample=1e9 * seconds / case.samples,
                    gb_per_s=min_bytes(case) / seconds / 1e9,
                    esr_db=esr_cache[esr_key],
                )
                if device.type == "cuda":
                    row["copy_fraction"] = min_bytes(case) / seconds / copy_bw[case.device]
                    if memory:
                        row["peak_mem_bytes"] = float(peak_cuda(fn, case.device))
                del fn
            except Exception as exc:  # a failing peer is reported, not fatal
                row.update(status="error", reason=f"{type(exc).__name__}: {exc}".splitlines()[0][:300])
            rows.append(row)
            bar.update()
    bar.close()
    if memory:
        T_max = max((c.T for c in cases), default=0)
        cpu_jobs = [(r["backend"], _case_of(r)) for r in rows
                    if r["status"] == "ok" and r["device"] == "cpu" and r["T"] == T_max]
        if cpu_jobs:
            if progress:
                print(f"peak memory: {len(cpu_jobs)} runs in a subprocess ...", flush=True)
            peaks = measure_cpu(cpu_jobs)
            for r in rows:
                if r["status"] == "ok" and r["device"] == "cpu":
                    r["peak_mem_bytes"] = peaks.get((r["backend"], _case_of(r).key()))
    add_speedups(rows)
    return rows


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
