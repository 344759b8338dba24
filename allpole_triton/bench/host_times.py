"""What one call costs the host (Python, the custom ops, the plan, Triton's launches), beside its GPU time.

    python -m allpole_triton.bench.host_times [-B 16] [-T 65536 1048576] [-M 2 16] [--profile FILE]

A GPU pass whose host cost passes its kernels' time is host-bound: the GPU idles between launches
whatever the kernels do. The H100 session of 2026-11-27 found the forward at M=2, B=16, T=2^20
enqueued in 590 us per call against 277 us of kernels, and the sm_90 model (2.5 us per launch)
had no term for it. Per case and pass (``fwd``: ``allpole``; ``fwdbwd``: ``allpole`` and
``backward``; ``fwdbwd_graphs``, CUDA only: the same through ``torch.compile(mode="reduce-overhead")``,
whose CUDA graphs replay the launches with no plans and no per-launch host cost; its plan and
launch columns are NaN), with float32 time-varying coefficients that need grad, it prints CSV:

- ``call_us``: the host time of one public call, enqueued behind a spin kernel that holds the GPU,
  so that the host never waits on it (median of ``--calls``);
- ``plan_us``: ``triton_scan.plan`` alone, for each pass the call runs;
- ``cached_plan_us``: the same passes through ``triton_scan.cached_plan`` once cached, which is
  what a call pays from its second call on with the same shapes;
- ``launch_us``: the planned launches alone (``Launch.run``), behind the spin kernel too;
- ``gpu_us``: the call's GPU time, CUDA events around each synchronised call;
- ``launches``: how many kernels the call launches.

``call_us - cached_plan_us - launch_us`` is then what the layers above the kernels cost (autograd, the
custom ops, checks, allocations). ``--profile FILE`` writes a cProfile of ``--calls`` calls per
case there (by own time, then by cumulative time). On CPU tensors under ``TRITON_INTERPRET=1`` it
runs with wall-clock times, which then mean nothing (that is how the tests exercise it).
"""
from __future__ import annotations

import argparse
import contextlib
import cProfile
import io
import pstats
import statistics
import time

import torch

from allpole_triton import allpole

COLUMNS = ("pass", "B", "T", "M", "launches", "call_us", "plan_us", "cached_plan_us", "launch_us", "gpu_us")
SPIN_CYCLES_PER_CALL = 2_000_000  # about 1.2 ms at 1.7 GHz: more than a call takes to enqueue


def host_seconds(fn, device: torch.device, calls: int) -> list[float]:
    """Host seconds per ``fn()``, each call timed alone while the GPU spins behind it."""
    times = []
    for _ in range(calls):
        if device.type == "cuda":
            torch.cuda._sleep(SPIN_CYCLES_PER_CALL)
        began = time.perf_counter()
        fn()
        times.append(time.perf_counter() - began)
        if device.type == "cuda":
            torch.cuda.synchronize()
    return times


def measure(B: int, T: int, M: int, passes, device: torch.device, calls: int = 20, profile=None) -> list[dict]:
    """One row per pass of ``passes`` (``fwd``, ``fwdbwd``) for float32 inputs of B rows of T samples;
    ``profile``, an open text file, gets each pass's cProfile."""
    from allpole_triton.kernels import triton_scan

    from .cases import stable_coefficients
    from .launch_times import plan_passes
    from .timing import time_each

    g = torch.Generator().manual_seed(0)
    x = torch.randn(B, T, generator=g).to(device)
    a = stable_coefficients(B, T, M, generator=g, dtype=torch.float32).to(device).requires_grad_()
    zi = torch.zeros(B, M, device=device)
    grad_y = torch.randn(B, T, generator=g).to(device)
    sms = triton_scan._sms(device)
    planned = {p.name: p for p in plan_passes(B, T, M, ["fwd", "fwdbwd"], device, sms)}

    def forward():
        with torch.no_grad():
            allpole(x, a, zi, backend="triton")

    def forward_backward():
        allpole(x, a, zi, backend="triton").backward(grad_y)

    rows = []
    for name in passes:
        if name == "fwdbwd_graphs":
            rows.append(_graphs_row(x, a, zi, grad_y, device, calls))
            continue
        call = forward if name == "fwd" else forward_backward
        parts = [planned["fwd"]] + ([planned["bwd"]] if name == "fwdbwd" else [])

        def plans(planner):
            def run():
                for part in parts:
                    t = part.tensors
                    extra = {k: t[k] for k in ("tail", "y", "grad_a") if k in t}
                    planner(t["u"], t["a"], t["zi"], t["out"], reverse=part.name == "bwd", sms=sms, **extra)
            return run

        def launches_only():
            for part in parts:
                for launch in part.launches:
                    launch.run()

        call()  # compiles
        launches_only()
        row = dict(zip(COLUMNS, (name, B, T, M, sum(len(p.launches) for p in parts))))
        for column, fn, timer in (("call_us", call, host_seconds), ("plan_us", plans(triton_scan.plan), host_seconds),
                                  ("cached_plan_us", plans(triton_scan.cached_plan), host_seconds),
                                  ("launch_us", launches_only, host_seconds), ("gpu_us", call, time_each)):
            row[column] = 1e6 * statistics.median(timer(fn, device, calls))
        rows.append(row)
        if profile is not None:
            _profile(call, device, calls, f"{name} B={B} T={T} M={M}", profile)
    return rows


def _graphs_row(x, a, zi, grad_y, device: torch.device, calls: int) -> dict:
    """forward+backward with ``allpole`` compiled by Inductor into CUDA graphs (``reduce-overhead``):
    the first calls compile and record, the timed ones replay."""
    from .timing import time_each

    if device.type != "cuda":
        raise ValueError(f"fwdbwd_graphs needs CUDA tensors (CUDA graphs), got device {device}")
    compiled = torch.compile(lambda x, a, zi: allpole(x, a, zi, backend="triton"), mode="reduce-overhead",
                             fullgraph=True)

    def step():
        a.grad = None
        compiled(x, a, zi).backward(grad_y)

    for _ in range(3):  # compile, record, replay
        step()
    B, T = x.shape
    row = dict(zip(COLUMNS, ("fwdbwd_graphs", B, T, a.shape[-1], 0)))
    row.update(plan_us=float("nan"), cached_plan_us=float("nan"), launch_us=float("nan"))
    row["call_us"] = 1e6 * statistics.median(host_seconds(step, device, calls))
    row["gpu_us"] = 1e6 * statistics.median(time_each(step, device, calls))
    return row


def _profile(fn, device: torch.device, calls: int, title: str, out) -> None:
    profiler = cProfile.Profile()
    for _ in range(calls):
        if device.type == "cuda":
            torch.cuda._sleep(SPIN_CYCLES_PER_CALL)
        profiler.enable()
        fn()
        profiler.disable()
        if device.type == "cuda":
            torch.cuda.synchronize()
    # own time names the hot functions; cumulative time says which layer calls them (the first
    # H100 profile had own time only, and most of it sat in torch's backend_impl)
    for order, lines in (("tottime", 25), ("cumulative", 50)):
        text = io.StringIO()
        pstats.Stats(profiler, stream=text).sort_stats(order).print_stats(lines)
        print(f"# cProfile of {calls} calls, {title} (sorted by {order})\n{text.getvalue()}", file=out, flush=True)


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    p.add_argument("-B", type=int, nargs="+", default=[16])
    p.add_argument("-T", type=int, nargs="+", default=[65536, 1 << 20])
    p.add_argument("-M", type=int, nargs="+", default=[2, 16])
    p.add_argument("--passes", nargs="+", default=["fwd", "fwdbwd"], choices=["fwd", "fwdbwd", "fwdbwd_graphs"])
    p.add_argument("--calls", type=int, default=20, help="timed calls per measurement")
    p.add_argument("--profile", metavar="FILE", help="write a cProfile of each case there")
    args = p.parse_args(argv)
    print(",".join(COLUMNS), flush=True)
    with open(args.profile, "w") if args.profile else contextlib.nullcontext() as profile:
        for M in args.M:
            for B in args.B:
                for T in args.T:
                    for row in measure(B, T, M, args.passes, torch.device(args.device), args.calls, profile):
                        print(",".join(f"{row[c]:.1f}" if c.endswith("_us") else str(row[c]) for c in COLUMNS), flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
