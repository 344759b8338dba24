"""Phaser: K first-order all-pass stages swept by an LFO, feedback around the cascade, dry/wet mix.

Each all-pass stage is ``A(z) = (p + z^-1) / (1 + p z^-1)`` with ``p = (t - 1) / (t + 1)``,
``t = tan(pi f_c / f_s)``. With ``N = (p + z^-1)^K`` and ``D = (1 + p z^-1)^K`` the cascade is
``N / D``; feedback ``g`` around it gives ``N / (D - g N)``, and the mix ``m`` gives

    H(z) = ((1 - m)(D - g N) + m N) / (D - g N),

one pole-zero filter of order K. Its coefficients are computed per sample from the swept
``p[n]`` and the signal is filtered exactly with :func:`~allpole_triton.systems.lfilter`
(``method="td"``), or frame-wise with the frequency-sampling baseline (``method="fs"``).
"""
from __future__ import annotations

import math
from typing import NamedTuple

import torch
import torch.nn.functional as F
from torch import Tensor

from ..realtime import FrozenPhaser
from .common import Bounded, FrequencySampling, StreamingSystem, check_method, pole_zero_filter, base_power, sample_times
from .filters import FilterState


class PhaserState(NamedTuple):
    """Streaming state: samples processed so far (the LFO's clock) and the filter's state."""

    time: int
    filter: FilterState


def lfo_break_frequency(
    times: Tensor, rate_hz: Tensor, lfo_phase: Tensor, depth_octaves: Tensor, centre_hz: Tensor, sample_rate: float
) -> Tensor:
    """``f_c = centre * 2^(depth * sin(2 pi rate t + phase))`` in Hz, clamped to (10 Hz, 0.45 f_s).

    ``times (T,)`` in seconds (float64); parameters 0-d. Returns ``(T,)`` in float64: computed in
    float64 so the sweep does not depend on how a stream is cut into blocks beyond ~1e-16.
    """
    angle = 2 * math.pi * rate_hz.double() * times + lfo_phase.double()
    octaves = depth_octaves.double() * torch.sin(angle)
    return (centre_hz.double() * base_power(2.0, octaves)).clamp(10.0, 0.45 * sample_rate)


def allpass_coefficient(break_hz: Tensor, sample_rate: float) -> Tensor:
    """First-order all-pass coefficient ``p = (tan(pi f/f_s) - 1) / (tan(pi f/f_s) + 1)``, in (-1, 1)."""
    t = torch.tan(math.pi * break_hz / sample_rate)
    return (t - 1) / (t + 1)


def phaser_coefficients(p: Tensor, feedback: Tensor, mix: Tensor, stages: int) -> tuple[Tensor, Tensor]:
    """Per-sample polynomials of the phaser's transfer function (see the module docstring).

    Args:
        p: all-pass coefficients ``(..., T)``; feedback, mix: broadcastable to ``(..., T)``.
        stages: K.
    Returns:
        ``b (..., T, K+1)`` and ``a (..., T, K)`` (without the leading 1), normalised by the
        leading denominator coefficient ``1 - g p^K``.
    """
    # p^0 .. p^K by one sequential product (the same roundings as multiplying by p K times)
    powers = F.pad(torch.cumprod(p.unsqueeze(-1).expand(*p.shape, stages), dim=-1), (1, 0), value=1.0)
    binomial = p.new_tensor([math.comb(stages, k) for k in range(stages + 1)])
    cascade_den = binomial * powers  # (1 + p z^-1)^K
    numerator = cascade_den.flip(-1)  # (p + z^-1)^K: the binomials are symmetric
    feedback, mix = feedback.unsqueeze(-1), mix.unsqueeze(-1)
    denominator = cascade_den - feedback * numerator
    b = (1 - mix) * denominator + mix * numerator
    leading = denominator[..., :1]
    return b / leading, denominator[..., 1:] / leading


def phaser(
    x: Tensor,
    *,
    rate_hz: Tensor,
    lfo_phase: Tensor,
    depth_octaves: Tensor,
    centre_hz: Tensor,
    feedback: Tensor,
    mix: Tensor,
    sample_rate: float,
    stages: int = 4,
    state: PhaserState | None = None,
    method: str = "td",
    fs: FrequencySampling = FrequencySampling(),
    backend: str = "auto",
    compute_dtype: torch.dtype = torch.float64,
) -> tuple[Tensor, PhaserState | None]:
    """Render the phaser on ``x (..., T)``; parameters are 0-d tensors (shared by all rows).

    Args:
        rate_hz, lfo_phase (radians), depth_octaves, centre_hz: the LFO sweeping the break
            frequency, see :func:`lfo_break_frequency`.
        feedback: g in (-1, 1), around the all-pass cascade.
        mix: wet share in [0, 1].
        stages: number of all-pass stages K (the filter's order).
        state: streaming state from a previous block (``method="td"`` only); ``None`` starts
            from silence at time 0.
        method: ``"td"`` exact per-sample filtering, ``"fs"`` frame-wise frequency sampling.
        compute_dtype: dtype of the coefficients, the filtering and the carried state. float64 by
            default: the direct form of order K has K poles clustered near ``z = -p`` (close to 1
            at low break frequencies), which amplifies rounding ~1e6-fold; in float32 that is a
            ~1% error (and FS denominators that round to 0), in float64 ~1e-10.
    Returns:
        ``(y (..., T), final_state)``; ``final_state`` is ``None`` for ``method="fs"``.
    """
    if not isinstance(x, Tensor) or x.ndim < 1:
        raise ValueError(f"x must be a tensor of shape (..., T), got {getattr(x, 'shape', type(x).__name__)}")
    if stages < 1:
        raise ValueError(f"stages must be >= 1, got {stages}")
    check_method(method)
    start = 0 if state is None else state.time
    times = sample_times(start, x.shape[-1], sample_rate, x)
    break_hz = lfo_break_frequency(times, rate_hz, lfo_phase, depth_octaves, centre_hz, sample_rate)
    b, a = phaser_coefficients(
        allpass_coefficient(break_hz.to(compute_dtype), sample_rate), feedback.to(compute_dtype), mix.to(compute_dtype), stages
    )
    y, filter_state = pole_zero_filter(
        x.to(compute_dtype), b, a, None if state is None else state.filter, method, fs, backend
    )
    return y.to(x.dtype), None if filter_state is None else PhaserState(start + x.shape[-1], filter_state)


class Phaser(StreamingSystem):
    """Trainable phaser (see :func:`phaser`); ``forward(x (..., T)) -> (..., T)``.

    Args:
        sample_rate: in Hz.
        stages: number of all-pass stages (filter order).
        method: ``"td"`` (exact) or ``"fs"`` (frequency-sampling baseline) for ``forward``.
        fs: frame settings of the FS baseline.
        rate_hz, lfo_phase, depth_octaves, centre_hz, feedback, mix: initial parameter values,
            each learnable within :attr:`RANGES`.
    """

    RANGES = {
        "rate_hz": Bounded(0.05, 5.0, log=True),
        "lfo_phase": Bounded(-2 * math.pi, 2 * math.pi),
        "depth_octaves": Bounded(0.0, 4.0),
        "centre_hz": Bounded(50.0, 5000.0, log=True),
        "feedback": Bounded(-0.95, 0.95),
        "mix": Bounded(0.0, 1.0),
    }

    def __init__(
        self,
        sample_rate: float = 44100.0,
        stages: int = 4,
        *,
        method: str = "td",
        fs: FrequencySampling | None = None,
        backend: str = "auto",
        rate_hz: float = 0.5,
        lfo_phase: float = 0.0,
        depth_octaves: float = 1.5,
        centre_hz: float = 600.0,
        feedback: float = 0.3,
        mix: float = 0.5,
    ) -> None:
        super().__init__(
            sample_rate, method, fs, backend,
            dict(rate_hz=rate_hz, lfo_phase=lfo_phase, depth_octaves=depth_octaves,
                 centre_hz=centre_hz, feedback=feedback, mix=mix),
        )
        self.stages = stages

    def freeze(self) -> FrozenPhaser:
        """A real-time processor with the current parameters (see :mod:`allpole_triton.realtime`)."""
        return FrozenPhaser(self.sample_rate, self.stages, self.physical_parameters())

    def _render(self, x: Tensor, state: PhaserState | None, method: str) -> tuple[Tensor, PhaserState | None]:
        return phaser(
            x, **self.values(), sample_rate=self.sample_rate, stages=self.stages,
            state=state, method=method, fs=self.fs, backend=self.backend,
        )
