"""Timing: a perf-counter median on CPU; ``triton.testing.do_bench`` (or CUDA events) on GPU.

:func:`measure` gives the median with the min, max and spread beside it, so that a noisy
measurement (a shared machine, a GPU clocking down) shows up in the report instead of hiding
behind a median.
"""
from __future__ import annotations

import math
import statistics
import time
from dataclasses import dataclass
from typing import Callable

import torch


def time_cpu(fn: Callable[[], object], *, repeat: int = 5, warmup: int = 1, budget: float = 2.0) -> list[float]:
    """Wall times of ``fn()`` in seconds (report the median): ``repeat`` calls after ``warmup``
    calls (the first call of a Numba backend compiles or loads its cache), fewer when the calls
    together pass ``budget`` seconds (slow peers; at least one call is timed)."""
    for _ in range(warmup):
        fn()
    times = []
    while len(times) < max(repeat, 1):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
        if sum(times) > budget:
            break
    return times


def time_cpu_interleaved(
    fns: dict[str, Callable[[], object]],
    between: Callable[[], object],
    *,
    repeat: int = 5,
    warmup: int = 1,
    budget: float = 2.0,
) -> dict[str, list[float]]:
    """Wall times per backend, the backends taking turns call by call and each timed call preceded
    by ``between()`` (untimed): how a model calls a filter, between its other torch ops, so thread
    pools, caches and the allocator are as those ops leave them. A backend stops once its timed calls
    pass ``budget`` seconds (at least one call is timed)."""
    for _ in range(warmup):
        for fn in fns.values():
            between()
            fn()
    times: dict[str, list[float]] = {name: [] for name in fns}
    for _ in range(max(repeat, 1)):
        active = [name for name, t in times.items() if sum(t) <= budget]
        if not active:
            break
        for name in active:
            between()
            start = time.perf_counter()
            fns[name]()
            times[name].append(time.perf_counter() - start)
    return times


def model_workload(signal: torch.Tensor) -> Callable[[], object]:
    """The torch work a model does between two filter calls, the size of the signal: elementwise
    ops and a reduction, run on torch's own threads. Untimed; it sets the machine's state."""
    w = signal.detach().float()
    return lambda: (torch.tanh(w * 1.1) + w.sin()).sum().item()


def side_by_side(
    fns: dict[str, Callable[..., torch.Tensor]], inputs: tuple[torch.Tensor, ...], signal: torch.Tensor,
    *, backward: bool, repeat: int,
) -> str:
    """``name median (min)`` in ms per function, and ``ratio`` (ours / the other) for two: each
    call on fresh copies of ``inputs`` (leaves requiring grad when ``backward``, back-propagating
    ones), the functions taking turns after :func:`model_workload` on ``signal``, one warm-up round
    (see :func:`time_cpu_interleaved`)."""
    fresh: list[torch.Tensor] = []
    workload = model_workload(signal)

    def between() -> None:
        workload()
        fresh[:] = [t.clone().requires_grad_(backward) for t in inputs]

    def call(fn) -> None:
        y = fn(*fresh)
        if backward:
            y.backward(torch.ones_like(y))

    times = time_cpu_interleaved({name: (lambda fn=fn: call(fn)) for name, fn in fns.items()}, between,
                                 repeat=repeat, warmup=1, budget=math.inf)
    text = "".join(f"  {name} {1e3 * statistics.median(t):8.2f} ({1e3 * min(t):7.2f})" for name, t in times.items())
    if len(times) == 2 and "ours" in times:
        other = next(name for name in times if name != "ours")
        text += f"  ratio {statistics.median(times['ours']) / statistics.median(times[other]):.2f}"
    return text


def time_cuda(fn: Callable[[], object], *, repeat: int = 20, warmup: int = 3) -> list[float]:
    """GPU time of ``fn()`` in seconds: the median of ``triton.testing.do_bench`` when Triton
    imports (it flushes L2 between calls), otherwise CUDA events around each call."""
    try:
        from triton.testing import do_bench
    except Exception:
        do_bench = None
    if do_bench is not None:
        return [do_bench(fn, warmup=25, rep=max(100, 5 * repeat), return_mode="median") / 1e3]
    for _ in range(warmup):
        fn()
    return time_each(fn, torch.device("cuda"), max(repeat, 1))


def time_each(fn: Callable[[], object], device: torch.device, calls: int) -> list[float]:
    """Seconds of each of ``calls`` calls of ``fn()``, timed alone: CUDA events around it after a
    synchronise on a GPU (no L2 flush), wall clock elsewhere."""
    times = []
    for _ in range(calls):
        if device.type == "cuda":
            torch.cuda.synchronize()
            start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
            start.record()
            fn()
            end.record()
            end.synchronize()
            times.append(start.elapsed_time(end) * 1e-3)
        else:
            began = time.perf_counter()
            fn()
            times.append(time.perf_counter() - began)
    return times


@dataclass(frozen=True)
class Timing:
    """Seconds per call: median, fastest and slowest of ``repeat`` timed calls (``repeat`` is
    ``None`` where ``do_bench`` chose the count)."""

    median: float
    min: float
    max: float
    repeat: int | None

    @property
    def spread(self) -> float:
        """``(max - min) / median``: 0 for steady timings; above ~0.5 the median is not to be trusted."""
        return (self.max - self.min) / self.median if self.median > 0 else math.nan

    @classmethod
    def of(cls, times: list[float]) -> "Timing":
        return cls(statistics.median(times), min(times), max(times), len(times))


def measure(fn: Callable[[], object], device: str, *, repeat: int, warmup: int, budget: float = 2.0) -> Timing:
    """Median, min and max seconds per call of ``fn`` on ``device``: the calls of :func:`time_cpu`
    on CPU; on GPU the 0, 0.5 and 1 quantiles of ``triton.testing.do_bench`` (it flushes L2
    between calls), or CUDA events around ``repeat`` calls without Triton."""
    if torch.device(device).type != "cuda":
        return Timing.of(time_cpu(fn, repeat=repeat, warmup=warmup, budget=budget))
    try:
        from triton.testing import do_bench
    except Exception:
        do_bench = None
    if do_bench is None:
        return Timing.of(time_cuda(fn, repeat=repeat, warmup=warmup))
    lo, median, hi = do_bench(fn, warmup=25, rep=max(100, 5 * repeat), quantiles=[0.0, 0.5, 1.0])
    return Timing(median / 1e3, lo / 1e3, hi / 1e3, None)


def time_fn(fn: Callable[[], object], device: str, *, repeat: int, warmup: int, budget: float = 2.0) -> list[float]:
    """Seconds per call on ``device`` (CUDA: do_bench median / events; CPU: perf counter)."""
    if torch.device(device).type == "cuda":
        return time_cuda(fn, repeat=repeat, warmup=warmup)
    return time_cpu(fn, repeat=repeat, warmup=warmup, budget=budget)


def copy_bandwidth(device: str, nbytes: int = 1 << 28, repeat: int = 20) -> float:
    """Device-to-device copy bandwidth in bytes/s (read + write), timed like the kernels."""
    src = torch.empty(nbytes // 4, dtype=torch.float32, device=device).uniform_()
    dst = torch.empty_like(src)
    seconds = statistics.median(time_fn(lambda: dst.copy_(src), device, repeat=repeat, warmup=3))
    return 2 * nbytes / seconds
