"""Frequency-sampling (FS) approximation of a time-varying pole-zero filter.

The method used before exact time-domain filters: per frame of ``hop`` samples, freeze the
coefficients, sample ``B(e^jw) / A(e^jw)`` on an ``n_fft``-point grid, filter the frame by
multiplication in the frequency domain and overlap-add. It is approximate twice over: the
coefficients are piecewise constant, and the infinite impulse response is truncated and
time-aliased to ``n_fft`` samples. Kept as the baseline that the exact filter is compared with.
"""
from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import Tensor

from ._shapes import broadcast_leading


def _frame_coefficients(c: Tensor, frames: int, hop: int, T: int) -> Tensor:
    """Coefficients ``(..., T or 1, K)`` sampled at each frame's centre -> ``(..., frames, K)``."""
    if c.shape[-2] == 1:
        return c.expand(*c.shape[:-2], frames, c.shape[-1])
    centres = (torch.arange(frames, device=c.device) * hop + hop // 2).clamp(max=T - 1)
    return c.index_select(-2, centres)


def fs_filter(
    x: Tensor, a: Tensor, b: Tensor | None = None, *, hop: int = 256, n_fft: int = 1024
) -> Tensor:
    """FS approximation of ``y = (b / [1, a]) * x`` with time-varying coefficients.

    Args:
        x: ``(..., T)`` real input.
        a: ``(..., T or 1, M)`` denominator without the leading 1 (the :func:`allpole` convention).
        b: ``(..., T or 1, K+1)`` numerator, or ``None`` for an all-pole filter.
        hop: frame length in samples (coefficients are held constant over a frame).
        n_fft: frequency grid size, ``>= hop``; the impulse response is aliased beyond it.
    Returns:
        ``(..., T)``.
    """
    if n_fft < hop:
        raise ValueError(f"n_fft must be >= hop, got n_fft={n_fft}, hop={hop}")
    T = x.shape[-1]
    frames = max(1, math.ceil(T / hop))
    lead = broadcast_leading(
        **{"x (..., T)": x.shape[:-1], "a (..., T, M)": a.shape[:-2]}, **({} if b is None else {"b (..., T, K+1)": b.shape[:-2]})
    )
    x_frames = F.pad(x, (0, frames * hop - T)).expand(*lead, frames * hop).reshape(*lead, frames, hop)
    a_frames = _frame_coefficients(a, frames, hop, T)
    denominator = torch.fft.rfft(F.pad(a_frames, (1, 0), value=1.0), n=n_fft)
    response = 1 / denominator
    if b is not None:
        response = response * torch.fft.rfft(_frame_coefficients(b, frames, hop, T), n=n_fft)
    y_frames = torch.fft.irfft(torch.fft.rfft(x_frames, n=n_fft) * response, n=n_fft)  # (..., frames, n_fft)
    rows = y_frames.reshape(-1, frames, n_fft).transpose(1, 2)  # overlap-add via fold
    length = (frames - 1) * hop + n_fft
    y = F.fold(rows, output_size=(1, length), kernel_size=(1, n_fft), stride=(1, hop))
    return y.reshape(*lead, length)[..., :T]
