"""Each Triton launch of a pass timed on its own, beside the sm_90 model's terms for that launch.

    python -m allpole_triton.bench.launch_times [-B 16] [-T 1048576] [-M 2 16] [--passes fwd fwdbwd dense]

A pass's time says the model is off; this says which kernel, and which of the model's bounds
(memory, issue, L1 wavefronts, latency chain) it missed. Every launch of a pass (``triton_scan.plan`` or
``triton_recurrence.plan``, planned for the device it runs on) is a pure function of tensors it
does not write, so it can be re-run alone: after one run of the whole pass (which compiles and
fills every intermediate), each launch is enqueued ``--repeat`` times back to back between two CUDA
events, behind a spin kernel that holds the GPU while they are enqueued (a Triton launch from
Python takes longer to enqueue than a short kernel takes to run), which gives the kernel's own
time. The model's terms come from the same launch compiled for sm_90
(``allpole_triton.bench.model.model_launch``); ``predicted_us`` is the largest of them, the latency
chain taken as ``loaded_us`` (stretched by DRAM's queue where the launch streams from DRAM, see
``model.queued_seconds``), without the model's host cost per launch. ``--no-model`` times only, and ``--predict CSV`` adds the model's
columns afterwards on any machine. Cases whose coefficients pass ``MAX_BYTES`` are skipped. Prints
CSV. On CPU tensors under ``TRITON_INTERPRET=1`` it runs with wall-clock times (how the tests
exercise it): the times then mean nothing.
"""
from __future__ import annotations

import argparse
import csv
import statistics
import time
from dataclasses import dataclass

import torch

SPIN_CYCLES_PER_LAUNCH = 100_000  # about 60 us per launch to enqueue (a Triton launch takes 10-40)
MAX_BYTES = 4e9  # cases whose coefficients alone pass this are skipped
COLUMNS = ("pass", "B", "T", "M", "launch", "kernel", "grid", "warps", "measured_us", "min_us",
           "predicted_us", "memory_us", "issue_us", "l1_us", "latency_us", "loaded_us")


@dataclass
class PlannedPass:
    """The launches of one pass over real tensors, and the pass's tensors (inputs and outputs)."""

    name: str
    launches: list
    tensors: dict
    finalize: object = None


def plan_passes(B: int, T: int, M: int, passes, device: torch.device, sms: int | None) -> list[PlannedPass]:
    """float32 inputs (stable time-varying coefficients; a contractive dense A) and the launches
    of each asked pass: ``fwd`` and the reverse pass of ``fwdbwd`` (its forward is ``fwd``'s), and
    ``dense`` (linear_recurrence's forward). On the meta device the tensors are only shapes."""
    from allpole_triton.kernels import triton_recurrence, triton_scan

    from .cases import stable_coefficients

    g = torch.Generator().manual_seed(0)
    meta = device.type == "meta"

    def noise(*shape, scale=1.0):
        return torch.empty(shape, device=device) if meta else (torch.randn(*shape, generator=g) * scale).to(device)

    planned = []
    if {"fwd", "fwdbwd"} & set(passes) and B * T * M * 4 <= MAX_BYTES:
        x = noise(B, T)
        a = torch.empty(B, T, M, device=device) if meta else stable_coefficients(B, T, M, generator=g, dtype=torch.float32).to(device)
        zi = torch.zeros(B, M, device=device)
        y = torch.empty_like(x)
        launches, finalize = triton_scan.plan(x, a, zi, y, reverse=False, sms=sms)
        planned.append(PlannedPass("fwd", launches, dict(u=x, a=a, zi=zi, out=y), finalize))
        if "fwdbwd" in passes:
            grad_y = noise(B, T)
            grad_x = torch.empty_like(x)
            extra = dict(tail=torch.empty_like(zi), y=y, grad_a=torch.empty_like(a))
            launches, finalize = triton_scan.plan(grad_y, a, zi, grad_x, reverse=True, sms=sms, **extra)
            planned.append(PlannedPass("bwd", launches, dict(u=grad_y, a=a, zi=zi, out=grad_x, **extra), finalize))
    if "dense" in passes and B * T * M * M * 4 <= MAX_BYTES:
        A = noise(B, T, M, M, scale=0.9 / (2 * M ** 0.5))
        u = noise(B, T, M)
        h0 = torch.zeros(B, M, device=device)
        launches = triton_recurrence.plan(A, u, h0, torch.empty_like(u), sms=sms)
        planned.append(PlannedPass("dense", launches, {}))
    return planned


def predict(rows: list[dict], sms: int = 132) -> list[dict]:
    """Fill the model's columns of measured rows (a GPU run with ``--no-model``) by planning the
    same cases on the meta device for a GPU of ``sms`` multiprocessors (H100 and H200: 132)."""
    cache: dict = {}
    by_launch = {(r["pass"], int(r["B"]), int(r["T"]), int(r["M"]), int(r["launch"])): r for r in rows}
    for B, T, M in sorted({key[1:4] for key in by_launch}):
        passes = {key[0] for key in by_launch if key[1:4] == (B, T, M)}
        asked = [name for name in ("fwd", "fwdbwd", "dense") if name in passes or (name == "fwdbwd" and "bwd" in passes)]
        for planned in plan_passes(B, T, M, asked, torch.device("meta"), sms):
            for index, launch in enumerate(planned.launches):
                row = by_launch.get((planned.name, B, T, M, index))
                if row is None:
                    continue
                if (row["kernel"], int(row["grid"])) != (launch.kernel.__name__, launch.grid):
                    raise ValueError(f"launch {index} of {(B, T, M)} ran {row['kernel']} on {row['grid']} programs, planned "
                                     f"{launch.kernel.__name__} on {launch.grid} for {sms} SMs: pass --sms")
                row.update(_predicted(launch, cache))
    return rows


def time_launch(launch, device: torch.device, repeat: int, rounds: int = 5) -> list[float]:
    """Seconds per launch: ``rounds`` measurements of ``repeat`` back-to-back launches each."""
    times = []
    for _ in range(rounds):
        if device.type == "cuda":
            start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
            # the GPU spins while the launches are enqueued behind it, so they run back to back even
            # when a kernel is shorter than a Python launch (tens of microseconds)
            torch.cuda._sleep(SPIN_CYCLES_PER_LAUNCH * repeat)
            start.record()
            for _ in range(repeat):
                launch.run()
            end.record()
            end.synchronize()
            times.append(start.elapsed_time(end) * 1e-3 / repeat)
        else:
            began = time.perf_counter()
            for _ in range(repeat):
                launch.run()
            times.append((time.perf_counter() - began) / repeat)
    return times


def measure(B: int, T: int, M: int, passes, device: torch.device, repeat: int = 10, rounds: int = 5,
            predict: bool = True) -> list[dict]:
    """One row per launch of every asked pass (see the module docstring)."""
    from allpole_triton.kernels.triton_scan import _null, _sms

    rows = []
    with torch.cuda.device(device) if device.type == "cuda" else _null():
        for planned in plan_passes(B, T, M, passes, device, _sms(device)):
            for launch in planned.launches:  # the whole pass once: compiles, fills every intermediate
                launch.run()
            if planned.finalize:
                planned.finalize()
            cache: dict = {}
            for index, launch in enumerate(planned.launches):
                times = time_launch(launch, device, repeat, rounds)
                row = dict(zip(COLUMNS, (planned.name, B, T, M, index, launch.kernel.__name__, launch.grid,
                                         launch.num_warps, 1e6 * statistics.median(times), 1e6 * min(times))))
                row.update(_predicted(launch, cache) if predict else {})
                rows.append(row)
    return rows


def _predicted(launch, cache: dict) -> dict:
    """The model's terms for this very launch (compiled for sm_90 here)."""
    from . import model, sm90

    key = sm90.variant_key(launch)
    if key not in cache:
        cache[key] = sm90.compile_launch(launch)
    m = model.model_launch(launch, cache[key], torch.float32)
    # the kernel's own time: the model's per-launch host cost (LAUNCH_SECONDS) is not in the measurement
    return {"predicted_us": 1e6 * (m.predicted_s - model.LAUNCH_SECONDS), "memory_us": 1e6 * m.memory_s,
            "issue_us": 1e6 * m.issue_s, "l1_us": 1e6 * m.l1_s, "latency_us": 1e6 * m.latency_s,
            "loaded_us": 1e6 * m.loaded_s}


def _print(rows: list[dict]) -> None:
    for row in rows:
        print(",".join(f"{float(row.get(c, 'nan')):.2f}" if c.endswith("_us") else str(row[c]) for c in COLUMNS), flush=True)


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    p.add_argument("-B", type=int, nargs="+", default=[16])
    p.add_argument("-T", type=int, nargs="+", default=[1 << 20])
    p.add_argument("-M", type=int, nargs="+", default=[2, 16])
    p.add_argument("--passes", nargs="+", default=["fwd", "fwdbwd", "dense"], choices=["fwd", "fwdbwd", "dense"])
    p.add_argument("--repeat", type=int, default=10, help="back-to-back launches per measurement")
    p.add_argument("--no-model", action="store_true", help="times only (no sm_90 compile)")
    p.add_argument("--predict", metavar="CSV", help="add the model's columns to a CSV measured with --no-model")
    p.add_argument("--sms", type=int, default=132, help="with --predict: the measured GPU's multiprocessors")
    args = p.parse_args(argv)
    from . import sm90

    print(",".join(COLUMNS), flush=True)
    if args.predict:
        with open(args.predict) as f:
            rows = list(csv.DictReader(f))
        _print(predict(rows, args.sms))
        return 0
    predict_here = not args.no_model and sm90.toolchain_available()
    for M in args.M:
        for B in args.B:
            for T in args.T:
                _print(measure(B, T, M, args.passes, torch.device(args.device), args.repeat, predict=predict_here))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
