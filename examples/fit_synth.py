"""Fit a subtractive synth's oscillator shape, filter envelopes and amplitude envelope to a target note.

    python examples/fit_synth.py                 # exact (td) training
    python examples/fit_synth.py --method fs     # frequency-sampling baseline, then run exactly

The target is one note (a rising glide with vibrato) from a synth with hidden "true" parameters
(or --input/--target WAVs: then --input is read as the f0 curve in Hz, one value per sample).
A fresh synth, given the same f0 curve, is fitted with Adam on the ESR; the script prints ESR
before and after, the recovered parameters, and writes examples/out/synth_{method}.png and WAVs.
"""
from __future__ import annotations

import math

import torch

from allpole_triton.systems import FrequencySampling, SubtractiveSynth
from example_utils import fit_and_evaluate, run_example

SAMPLE_RATE = 44100
SECTIONS = 2  # 24 dB/oct
TRUE = dict(square_mix=0.3, cutoff_start_hz=4000.0, cutoff_end_hz=400.0, cutoff_glide_s=0.25, q_start=4.0,
            q_end=1.5, q_glide_s=0.4, attack_s=0.02, decay_s=1.2, gain=0.6)
FS = FrequencySampling(hop=256, n_fft=1024)


def make_f0(seconds: float) -> torch.Tensor:
    """``(1, T)`` pitch curve: 110 Hz gliding up an octave over the note, 5 Hz vibrato of 1%."""
    t = torch.arange(int(seconds * SAMPLE_RATE), dtype=torch.float64) / SAMPLE_RATE
    f0 = 110 * 2 ** (t / max(seconds, 1e-3)) * (1 + 0.01 * torch.sin(2 * math.pi * 5 * t))
    return f0.float().unsqueeze(0)


def make_data(seconds: float, seed: int, device: str = "cpu") -> tuple[torch.Tensor, torch.Tensor]:
    """The f0 curve and the note rendered with :data:`TRUE` (``seed`` is unused: the target is deterministic)."""
    f0 = make_f0(seconds)
    with torch.no_grad():
        target = SubtractiveSynth(SAMPLE_RATE, SECTIONS, **TRUE)(f0)
    return f0.to(device), target.to(device)


def fit(steps: int = 300, seed: int = 0, method: str = "td", seconds: float = 1.5, device: str = "cpu",
        lr: float = 0.05, data: tuple[torch.Tensor, torch.Tensor] | None = None, sample_rate: int = SAMPLE_RATE,
        progress: bool = False) -> dict:
    """Fit a fresh :class:`SubtractiveSynth` (default initial parameters); history as in ``fit_phaser.fit``."""
    torch.manual_seed(seed)
    f0, target = make_data(seconds, seed, device) if data is None else (t.to(device) for t in data)
    model = SubtractiveSynth(sample_rate, SECTIONS, method=method, fs=FS).to(device)
    return fit_and_evaluate(model, f0, target, steps=steps, lr=lr, progress=progress)


def main() -> None:
    run_example("synth", "subtractive synth", fit, description=__doc__.splitlines()[0], default_steps=300,
                default_seconds=1.5, sample_rate=SAMPLE_RATE, true=TRUE, input_is_audio=False)


if __name__ == "__main__":
    main()
