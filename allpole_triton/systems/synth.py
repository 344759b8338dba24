"""Time-varying subtractive synth: PolyBLEP saw/square oscillator -> resonant low-pass -> amplitude envelope.

The low-pass is the RBJ-cookbook biquad (12 dB/oct), or two identical biquads in cascade
(24 dB/oct, ``sections=2``), with coefficients computed per sample from a cutoff and a resonance
(Q) that glide exponentially from a start to an end value, filtered exactly with
:func:`~allpole_triton.systems.lfilter` section by section (``method="td"``, as
:func:`~allpole_triton.systems.sosfilt` does), or frame-wise (``method="fs"``).
"""
from __future__ import annotations

import math
from typing import NamedTuple

import numpy as np
import torch
from torch import Tensor

from ..kernels.numba_realtime import oscillator_block
from ..op import direct_numba, from_rows, numpy_rows
from ..realtime import FrozenSynth
from .common import Bounded, FrequencySampling, StreamingSystem, check_method, pole_zero_filter, sample_times
from .filters import FilterState


class SynthState(NamedTuple):
    """Streaming state: samples rendered so far, oscillator phase in cycles ``(...)`` (float64, unwrapped), filter state."""

    time: int
    phase: Tensor
    filter: FilterState


def oscillator_phase(f0_hz: Tensor, sample_rate: float, initial: Tensor | None = None) -> tuple[Tensor, Tensor]:
    """Phase in cycles, in [0, 1), of an oscillator following ``f0_hz (..., T)``.

    ``phase[n] = frac(initial + sum_{m<n} f0[m] / f_s)``, accumulated in float64 one sample after
    another (a sequential ``cumsum`` starting from ``initial``), so a stream cut into blocks adds
    exactly what one long block does. Returns ``(phase (..., T) float64, final (...))``, ``final``
    being the running total (unwrapped) that the next block starts from.
    """
    increments = f0_hz.detach().double() / sample_rate
    start = increments.new_zeros(f0_hz.shape[:-1]) if initial is None else initial
    total = torch.cumsum(torch.cat([start.unsqueeze(-1), increments], dim=-1), dim=-1)
    return torch.frac(total[..., :-1]), total[..., -1]


def polyblep(phase: Tensor, increment: Tensor) -> Tensor:
    """Polynomial band-limited step residual for a unit downward jump at phase 0 (phase in cycles,
    ``increment`` in (0, 0.5] cycles per sample).

    With ``v`` the distance to the jump in samples (``phase / increment`` after it,
    ``(phase - 1) / increment`` before it) the residual is ``2v - v^2 - 1 = -(1 - v)^2`` for
    ``0 <= v < 1``, ``v^2 + 2v + 1 = (1 + v)^2`` for ``-1 < v < 0`` and 0 elsewhere, i.e.
    ``copysign(max(1 - |v|, 0)^2, -v)``: one expression, so both branches are not evaluated.
    """
    v = torch.where(phase < 0.5, phase, phase - 1) / increment
    return torch.copysign((1 - v.abs()).clamp(min=0).square(), -v)


def polyblep_oscillator(phase: Tensor, f0_hz: Tensor, sample_rate: float) -> tuple[Tensor, Tensor]:
    """Band-limited saw and square waves ``(..., T)`` from a phase in cycles and ``f0_hz``."""
    increment = (f0_hz.double() / sample_rate).clamp(1e-9, 0.5)
    # the residuals at the saw's jump and at the square's second jump, in one pass (elementwise
    # arithmetic only, so each value is what a separate call would give)
    at_zero, at_half = polyblep(torch.stack([phase, torch.frac(phase + 0.5)]), increment)
    saw = 2 * phase - 1 - at_zero
    square = torch.where(phase < 0.5, 1.0, -1.0) + at_zero - at_half
    return saw, square


def _oscillator_direct(f0_hz: Tensor, initial: Tensor | None, sample_rate: float) -> tuple[Tensor, Tensor, Tensor]:
    """:func:`oscillator_phase` then :func:`polyblep_oscillator` in one Numba pass, for CPU inference
    (see :func:`~allpole_triton.op.direct_numba`): the same operations, so the same bits.
    Returns ``(saw, square, final phase)``."""
    lead, T = f0_hz.shape[:-1], f0_hz.shape[-1]
    rows = math.prod(lead)
    f0 = numpy_rows(f0_hz, lead, rows, (T,))
    # a fresh copy: the kernel advances it in place
    phase = np.array(numpy_rows(None if initial is None else initial.double(), lead, rows, (), np.float64), copy=True)
    saw, square = np.empty((rows, T)), np.empty((rows, T))
    oscillator_block(f0, phase, float(sample_rate), saw, square)
    return from_rows(saw, lead), from_rows(square, lead), from_rows(phase, lead)


def glide(start: Tensor, end: Tensor, time_constant_s: Tensor, times: Tensor) -> Tensor:
    """Exponential envelope ``end + (start - end) exp(-t / tau)`` at ``times (T,)`` seconds."""
    return _glide(start, end, time_constant_s, -times)


def _glide(start: Tensor, end: Tensor, time_constant_s: Tensor, negative_times: Tensor) -> Tensor:
    # -t / tau == (-t) / tau exactly: the negated times are shared by every envelope of a block
    return end + (start - end) * torch.exp(negative_times / time_constant_s)


def lowpass_biquad(cutoff_hz: Tensor, q: Tensor, sample_rate: float) -> Tensor:
    """RBJ-cookbook low-pass biquad per sample: ``sos`` rows ``[b0, b1, b2, 1, a1, a2]``, shape ``(..., T, 6)``."""
    b, a = _lowpass_coefficients(cutoff_hz, q, sample_rate)
    return torch.cat([b, torch.ones_like(a[..., :1]), a], dim=-1)


def _lowpass_coefficients(cutoff_hz: Tensor, q: Tensor, sample_rate: float) -> tuple[Tensor, Tensor]:
    """:func:`lowpass_biquad` as ``b (..., T, 3)``, ``a (..., T, 2)`` (without the leading 1)."""
    w0 = 2 * math.pi * cutoff_hz / sample_rate
    cos_w0 = torch.cos(w0)
    alpha = torch.sin(w0) / (2 * q)
    a0 = 1 + alpha
    b1 = (1 - cos_w0) / a0
    b0 = b1 / 2
    return torch.stack([b0, b1, b0], dim=-1), torch.stack([-2 * cos_w0 / a0, (1 - alpha) / a0], dim=-1)


def subtractive_synth(
    f0_hz: Tensor,
    *,
    square_mix: Tensor,
    cutoff_start_hz: Tensor,
    cutoff_end_hz: Tensor,
    cutoff_glide_s: Tensor,
    q_start: Tensor,
    q_end: Tensor,
    q_glide_s: Tensor,
    attack_s: Tensor,
    decay_s: Tensor,
    gain: Tensor,
    sample_rate: float,
    sections: int = 1,
    state: SynthState | None = None,
    method: str = "td",
    fs: FrequencySampling = FrequencySampling(),
    backend: str = "auto",
) -> tuple[Tensor, SynthState | None]:
    """Render one note following the pitch curve ``f0_hz (..., T)``; parameters are 0-d tensors.

    ``osc = (1 - square_mix) saw + square_mix square``; the low-pass cutoff glides (on a log
    scale) from ``cutoff_start_hz`` to ``cutoff_end_hz`` with time constant ``cutoff_glide_s``,
    the resonance from ``q_start`` to ``q_end`` with ``q_glide_s``; the amplitude envelope is
    ``gain (1 - exp(-t / attack_s)) exp(-t / decay_s)``. ``t`` counts from the note start (time 0
    of the stream). ``sections``: 1 (12 dB/oct) or 2 (24 dB/oct) identical biquads.

    Returns ``(audio (..., T), final_state)``; ``final_state`` is ``None`` for ``method="fs"``.
    """
    if not isinstance(f0_hz, Tensor) or f0_hz.ndim < 1:
        raise ValueError(f"f0_hz must be a tensor of shape (..., T), got {getattr(f0_hz, 'shape', type(f0_hz).__name__)}")
    if sections not in (1, 2):
        raise ValueError(f"sections must be 1 or 2, got {sections}")
    if check_method(method) == "fs" and state is not None:
        raise ValueError("method='fs' is frame-based and cannot continue from a streaming state; use method='td'")
    dtype = f0_hz.dtype if f0_hz.is_floating_point() else square_mix.dtype  # outputs follow the input
    start = 0 if state is None else state.time
    initial_phase = None if state is None else state.phase
    if (backend in ("auto", "numba") and f0_hz.dtype in (torch.float32, torch.float64)
            and (initial_phase is None or initial_phase.shape == f0_hz.shape[:-1])
            and direct_numba(f0_hz) and (initial_phase is None or direct_numba(initial_phase))):
        saw, square, final_phase = _oscillator_direct(f0_hz, initial_phase, sample_rate)
    else:
        phase, final_phase = oscillator_phase(f0_hz, sample_rate, initial_phase)
        saw, square = polyblep_oscillator(phase, f0_hz, sample_rate)
    oscillator = (1 - square_mix) * saw.to(dtype) + square_mix * square.to(dtype)

    negative_times = -sample_times(start, f0_hz.shape[-1], sample_rate, f0_hz).to(dtype)
    log_cutoff = _glide(torch.log(cutoff_start_hz), torch.log(cutoff_end_hz), cutoff_glide_s, negative_times)
    cutoff = torch.exp(log_cutoff).clamp(max=0.45 * sample_rate)
    q = _glide(q_start, q_end, q_glide_s, negative_times)
    b, a = _lowpass_coefficients(cutoff, q, sample_rate)  # (T, 3), (T, 2)

    y = oscillator
    filter_states = []
    for s in range(sections):
        section_state = None if state is None else FilterState(state.filter.inputs[..., s, :], state.filter.outputs[..., s, :])
        y, zf = pole_zero_filter(y, b, a, section_state, method, fs, backend)
        filter_states.append(zf)
    envelope = gain * (1 - torch.exp(negative_times / attack_s)) * torch.exp(negative_times / decay_s)
    audio = y * envelope
    if method == "fs":
        return audio, None
    filter_state = FilterState(*(torch.stack(fields, dim=-2) for fields in zip(*filter_states)))
    return audio, SynthState(start + f0_hz.shape[-1], final_phase, filter_state)


class SubtractiveSynth(StreamingSystem):
    """Trainable subtractive synth (see :func:`subtractive_synth`); ``forward(f0_hz (..., T)) -> audio (..., T)``.

    All ten parameters are learnable within :attr:`RANGES`; ``sections`` (1 or 2 biquads) is fixed.
    """

    RANGES = {
        "square_mix": Bounded(0.0, 1.0),
        "cutoff_start_hz": Bounded(50.0, 12000.0, log=True),
        "cutoff_end_hz": Bounded(50.0, 12000.0, log=True),
        "cutoff_glide_s": Bounded(0.005, 5.0, log=True),
        "q_start": Bounded(0.3, 12.0, log=True),
        "q_end": Bounded(0.3, 12.0, log=True),
        "q_glide_s": Bounded(0.005, 5.0, log=True),
        "attack_s": Bounded(0.0005, 1.0, log=True),
        "decay_s": Bounded(0.05, 20.0, log=True),
        "gain": Bounded(0.01, 4.0, log=True),
    }

    def __init__(
        self,
        sample_rate: float = 44100.0,
        sections: int = 1,
        *,
        method: str = "td",
        fs: FrequencySampling | None = None,
        backend: str = "auto",
        square_mix: float = 0.5,
        cutoff_start_hz: float = 3000.0,
        cutoff_end_hz: float = 500.0,
        cutoff_glide_s: float = 0.3,
        q_start: float = 2.0,
        q_end: float = 1.0,
        q_glide_s: float = 0.3,
        attack_s: float = 0.01,
        decay_s: float = 1.0,
        gain: float = 0.5,
    ) -> None:
        super().__init__(
            sample_rate, method, fs, backend,
            dict(square_mix=square_mix, cutoff_start_hz=cutoff_start_hz, cutoff_end_hz=cutoff_end_hz,
                 cutoff_glide_s=cutoff_glide_s, q_start=q_start, q_end=q_end, q_glide_s=q_glide_s,
                 attack_s=attack_s, decay_s=decay_s, gain=gain),
        )
        if sections not in (1, 2):
            raise ValueError(f"sections must be 1 or 2, got {sections}")
        self.sections = sections

    def freeze(self) -> FrozenSynth:
        """A real-time processor with the current parameters (see :mod:`allpole_triton.realtime`)."""
        params = self.physical_parameters()
        params["log_cutoff_start"] = math.log(params.pop("cutoff_start_hz"))
        params["log_cutoff_end"] = math.log(params.pop("cutoff_end_hz"))
        return FrozenSynth(self.sample_rate, self.sections, params)

    def _render(self, f0_hz: Tensor, state: SynthState | None, method: str) -> tuple[Tensor, SynthState | None]:
        return subtractive_synth(
            f0_hz, **self.values(), sample_rate=self.sample_rate, sections=self.sections,
            state=state, method=method, fs=self.fs, backend=self.backend,
        )
