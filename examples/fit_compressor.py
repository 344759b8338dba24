"""Fit a feed-forward compressor's threshold, ratio, knee, make-up, attack, release and detector time.

    python examples/fit_compressor.py                 # exact (td) training
    python examples/fit_compressor.py --method fs     # frequency-sampling baseline, then run exactly

The input is a train of noise bursts at random levels; the target is that input through a
compressor with hidden "true" parameters (or --input/--target WAVs). A fresh compressor is fitted
with Adam on the ESR; the script prints ESR before and after, the recovered parameters, and writes
examples/out/compressor_{method}.png (loss, static curves, gain over time) and the WAVs.
"""
from __future__ import annotations

import torch

from allpole_triton.systems import Compressor, FrequencySampling, static_gain_db
from example_utils import fit_and_evaluate, run_example

SAMPLE_RATE = 44100
TRUE = dict(threshold_db=-24.0, ratio=4.0, knee_db=4.0, makeup_db=3.0, attack_ms=5.0, release_ms=60.0, detector_ms=2.0)
FS = FrequencySampling(hop=256, n_fft=1024)


def make_input(seconds: float, seed: int) -> torch.Tensor:
    """``(1, T)`` noise bursts every 125 ms, levels uniform in [-40, 0] dB, 60 ms decay."""
    generator = torch.Generator().manual_seed(seed)
    T = int(seconds * SAMPLE_RATE)
    burst = SAMPLE_RATE // 8
    n = torch.arange(burst)
    envelope = torch.cat([
        10 ** (-40 * torch.rand(1, generator=generator) / 20) * torch.exp(-n / (0.06 * SAMPLE_RATE))
        for _ in range(-(-T // burst))
    ])[:T]
    return (envelope * torch.randn(T, generator=generator)).unsqueeze(0)


def make_data(seconds: float, seed: int, device: str = "cpu") -> tuple[torch.Tensor, torch.Tensor]:
    x = make_input(seconds, seed)
    with torch.no_grad():
        target = Compressor(SAMPLE_RATE, **TRUE)(x)
    return x.to(device), target.to(device)


def fit(steps: int = 600, seed: int = 0, method: str = "td", seconds: float = 3.0, device: str = "cpu",
        lr: float = 0.05, data: tuple[torch.Tensor, torch.Tensor] | None = None, sample_rate: int = SAMPLE_RATE,
        progress: bool = False) -> dict:
    """Fit a fresh :class:`Compressor` (default initial parameters); history as in ``fit_phaser.fit``."""
    torch.manual_seed(seed)
    x, target = make_data(seconds, seed, device) if data is None else (t.to(device) for t in data)
    model = Compressor(sample_rate, method=method, fs=FS).to(device)
    return fit_and_evaluate(model, x, target, steps=steps, lr=lr, progress=progress)


def compressor_panels(history: dict, prediction: torch.Tensor, sample_rate: int, method: str, true: dict | None):
    """Static curve (recovered vs true) and gain over time (target vs prediction)."""
    levels = torch.linspace(-60, 0, 200)

    def output_level(parameters):
        p = {k: torch.tensor(v) for k, v in parameters.items()}
        return levels + static_gain_db(levels, p["threshold_db"], p["ratio"], p["knee_db"]) + p["makeup_db"]

    def static_curves(ax):
        ax.plot(levels, output_level(history["recovered"]), label="recovered")
        if true is not None:
            ax.plot(levels, output_level(true), "--", label="true")
        ax.set(xlabel="input level (dB)", ylabel="output level (dB)")
        ax.legend()

    def gains(ax):
        xs = history["x"].detach().cpu().reshape(-1)
        keep = xs.abs() > 1e-3
        times = torch.arange(xs.numel())[keep] / sample_rate
        for signal, label in ((history["target"], "target"), (prediction, f"prediction ({method}-trained, run exactly)")):
            gain_db = 20 * torch.log10((signal.detach().cpu().reshape(-1)[keep] / xs[keep]).abs() + 1e-9)
            ax.plot(times, gain_db, ".", markersize=1, label=label)
        ax.set(xlabel="time (s)", ylabel="gain (dB)")
        ax.legend(markerscale=10)

    return [("static curve", static_curves), ("gain over time", gains)]


def main() -> None:
    run_example("compressor", "compressor", fit, description=__doc__.splitlines()[0], default_steps=600,
                default_seconds=3.0, sample_rate=SAMPLE_RATE, true=TRUE, panels=compressor_panels)


if __name__ == "__main__":
    main()
