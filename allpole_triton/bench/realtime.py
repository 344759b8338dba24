"""``allpole-bench --realtime``: time per block of each system, streamed as a plugin host would.

For every system, block size and sample rate, a stream of blocks is processed one block per call,
single-threaded, by the torch module's ``process_block`` (inference, ``torch.no_grad``) and by its
frozen processor (``system.freeze().process``). Reported per case: median and 99th-percentile time
per block and the real-time factor (block duration / median time; > 1 is faster than real time).
"""
from __future__ import annotations

import statistics
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np
import torch

from ..systems import Compressor, Phaser, SubtractiveSynth

BLOCKS = (32, 64, 128, 256, 512)
SAMPLE_RATES = (44100.0, 48000.0)
PATHS = ("process_block", "frozen")


def _systems(sample_rate: float) -> dict[str, tuple[torch.nn.Module, Callable[[int], np.ndarray]]]:
    """Each system (float32, default parameters) with a generator of its input stream."""
    rng = np.random.default_rng(0)

    def noise(n: int) -> np.ndarray:
        return (0.3 * rng.standard_normal((1, n))).astype(np.float32)

    def pitch(n: int) -> np.ndarray:
        return (220.0 * 1.5 ** np.linspace(0, 1, n)).astype(np.float32).reshape(1, n)

    return {
        "Phaser (4 stages)": (Phaser(sample_rate=sample_rate, stages=4), noise),
        "Compressor": (Compressor(sample_rate=sample_rate), noise),
        "SubtractiveSynth": (SubtractiveSynth(sample_rate=sample_rate), pitch),
    }


def _time_stream(process: Callable, blocks: list) -> list[float]:
    times = []
    for block in blocks:
        start = time.perf_counter()
        process(block)
        times.append(time.perf_counter() - start)
    return times


def run(
    blocks: tuple[int, ...] = BLOCKS,
    sample_rates: tuple[float, ...] = SAMPLE_RATES,
    calls: int = 300,
    warmup: int = 20,
    progress: Callable | None = None,
) -> list[dict]:
    """One row per (system, path, sample rate, block size)."""
    torch.set_num_threads(1)
    try:
        import numba

        numba.set_num_threads(1)
    except (ImportError, ValueError):
        pass
    cases = [(sr, L) for sr in sample_rates for L in blocks]
    rows = []
    for sample_rate, length in progress(cases) if progress else cases:
        for name, (system, make) in _systems(sample_rate).items():
            stream = make(length * (calls + warmup))
            numpy_blocks = [stream[:, i * length : (i + 1) * length] for i in range(calls + warmup)]
            tensor_blocks = [torch.from_numpy(b) for b in numpy_blocks]
            frozen = system.freeze()
            with torch.no_grad():
                system.reset()
                _time_stream(system.process_block, tensor_blocks[:warmup])
                times = {"process_block": _time_stream(system.process_block, tensor_blocks[warmup:])}
            _time_stream(frozen.process, numpy_blocks[:warmup])
            times["frozen"] = _time_stream(frozen.process, numpy_blocks[warmup:])
            budget = length / sample_rate
            for path, samples in times.items():
                median = statistics.median(samples)
                p99 = float(np.percentile(samples, 99))
                rows.append(dict(
                    system=name, path=path, sample_rate=sample_rate, block=length,
                    median_us=1e6 * median, p99_us=1e6 * p99, budget_us=1e6 * budget,
                    rtf_median=budget / median, rtf_p99=budget / p99, calls=calls,
                ))
    return rows


def small_calls(blocks: tuple[int, ...] = BLOCKS, order: int = 2, calls: int = 300) -> list[dict]:
    """One filter call on a ``(1, L)`` block in inference, ours (:func:`allpole`) against torchlpc's
    ``sample_wise_lpc`` when it is installed, taking turns call by call (single-threaded, as
    :func:`run` sets up). One row per (block, filter): median and min in us."""
    from ..functional import allpole
    from .timing import time_cpu_interleaved

    fns = {"allpole_triton": allpole}
    try:
        import torchlpc

        fns["torchlpc"] = torchlpc.sample_wise_lpc
    except ImportError:
        pass
    g = torch.Generator().manual_seed(0)
    rows = []
    for length in blocks:
        x = torch.randn(1, length, generator=g)
        a = 0.4 * torch.rand(1, length, order, generator=g) - 0.2
        zi = torch.randn(1, order, generator=g)
        with torch.no_grad():
            times = time_cpu_interleaved(
                {name: (lambda fn=fn: fn(x, a, zi, return_zf=True)) for name, fn in fns.items()},
                lambda: None, repeat=calls, warmup=20, budget=float("inf"),
            )
        for name, samples in times.items():
            rows.append(dict(filter=name, block=length, order=order, median_us=1e6 * statistics.median(samples),
                             min_us=1e6 * min(samples), calls=len(samples)))
    return rows


def small_calls_markdown(rows: list[dict]) -> str:
    lines = [
        "## One filter call per block",
        "",
        f"`(1, L)` float32 block, order {rows[0]['order'] if rows else 2}, with `zi` and `return_zf=True`, "
        "under `torch.no_grad()`, the filters taking turns call by call.",
        "",
        "| block | filter | median (us) | min (us) | ratio to torchlpc (median) |",
        "| ---: | --- | ---: | ---: | ---: |",
    ]
    reference = {r["block"]: r["median_us"] for r in rows if r["filter"] == "torchlpc"}
    for r in rows:
        ratio = f"{r['median_us'] / reference[r['block']]:.2f}" if r["block"] in reference else "-"
        lines.append(f"| {r['block']} | {r['filter']} | {r['median_us']:.1f} | {r['min_us']:.1f} | {ratio} |")
    return "\n".join(lines)


def markdown(rows: list[dict], machine: str) -> str:
    lines = [
        "# Real-time: time per block, single-threaded",
        "",
        f"Machine: {machine}. Each case streams {rows[0]['calls'] if rows else 0} consecutive blocks "
        "(after a warm-up) through the system; `process_block` is the torch module under "
        "`torch.no_grad()`, `frozen` its `freeze()` processor. Real-time factor = block duration / time "
        "(> 1: faster than real time).",
        "",
        "| system | path | rate (Hz) | block | median (us) | p99 (us) | budget (us) | RTF median | RTF p99 |",
        "| --- | --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: |",
    ]
    for r in rows:
        lines.append(
            f"| {r['system']} | {r['path']} | {r['sample_rate']:.0f} | {r['block']} | {r['median_us']:.1f} | "
            f"{r['p99_us']:.1f} | {r['budget_us']:.0f} | {r['rtf_median']:.1f} | {r['rtf_p99']:.1f} |"
        )
    return "\n".join(lines)


def plot(rows: list[dict], path: Path) -> None:
    """Real-time factor (99th percentile) against block size, one line per system and path, at the highest rate."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    rate = max(r["sample_rate"] for r in rows)
    fig, ax = plt.subplots(figsize=(7, 4.5))
    for name in dict.fromkeys(r["system"] for r in rows):
        for path_name, style in zip(PATHS, ("--", "-")):
            picked = [r for r in rows if r["system"] == name and r["path"] == path_name and r["sample_rate"] == rate]
            ax.plot([r["block"] for r in picked], [r["rtf_p99"] for r in picked], style, marker="o",
                    label=f"{name}, {path_name}")
    ax.axhline(1.0, color="k", linewidth=0.8)
    ax.set(xscale="log", yscale="log", xlabel="block size (samples)", ylabel="real-time factor (p99)",
           title=f"Streaming at {rate:.0f} Hz, one thread")
    ax.set_xticks(sorted({r["block"] for r in rows}), labels=[str(b) for b in sorted({r["block"] for r in rows})])
    ax.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)

