"""Fit a phaser's LFO, feedback and mix to a target by gradient descent through the exact filter.

    python examples/fit_phaser.py                 # exact (td) training, ~1 min on 2 CPU cores
    python examples/fit_phaser.py --method fs     # frequency-sampling baseline, then run exactly

The target is white noise through a phaser with hidden "true" parameters (or --input/--target
WAVs). A fresh phaser is fitted with Adam on the ESR; the script prints ESR before and after
(offline with the training method, offline exact, streamed exact), the recovered parameters, and
writes examples/out/phaser_{method}.png and the WAVs.
"""
from __future__ import annotations

import torch

from allpole_triton.systems import FrequencySampling, Phaser
from example_utils import fit_and_evaluate, run_example

SAMPLE_RATE = 44100
TRUE = dict(rate_hz=0.7, lfo_phase=1.0, depth_octaves=2.0, centre_hz=900.0, feedback=0.7, mix=0.5)
FS = FrequencySampling(hop=512, n_fft=1024)


def make_data(seconds: float, seed: int, device: str = "cpu") -> tuple[torch.Tensor, torch.Tensor]:
    """White noise ``(1, T)`` and its phased version by a phaser with parameters :data:`TRUE`."""
    generator = torch.Generator().manual_seed(seed)
    x = 0.3 * torch.randn(1, int(seconds * SAMPLE_RATE), generator=generator)
    with torch.no_grad():
        target = Phaser(SAMPLE_RATE, **TRUE)(x)
    return x.to(device), target.to(device)


def fit(steps: int = 300, seed: int = 0, method: str = "td", seconds: float = 2.0, device: str = "cpu",
        lr: float = 0.05, data: tuple[torch.Tensor, torch.Tensor] | None = None, sample_rate: int = SAMPLE_RATE,
        progress: bool = False) -> dict:
    """Fit a fresh :class:`Phaser` (default initial parameters) and return its history.

    Returns a dict with ``losses`` (per step, plus the final one), ``before``/``after``
    (:func:`example_utils.evaluate`), ``recovered`` parameters, ``model``, ``x``, ``target``.
    """
    torch.manual_seed(seed)
    x, target = make_data(seconds, seed, device) if data is None else (t.to(device) for t in data)
    model = Phaser(sample_rate, method=method, fs=FS).to(device)
    return fit_and_evaluate(model, x, target, steps=steps, lr=lr, progress=progress)


def main() -> None:
    run_example("phaser", "phaser", fit, description=__doc__.splitlines()[0], default_steps=300,
                default_seconds=2.0, sample_rate=SAMPLE_RATE, true=TRUE)


if __name__ == "__main__":
    main()
