"""Time-varying state-variable filter (Zavalishin's topology-preserving transform), built on
:func:`allpole_triton.linear_recurrence`.

Per sample, with ``g = tan(pi f_c / f_s)``, damping ``2R = 1 / Q`` and ``d = 1 / (1 + 2R g + g^2)``,
the two integrator states ``s = (s1, s2)`` give

    hp = d (x - (2R + g) s1 - s2),   bp = g hp + s1,   lp = g bp + s2,
    s1' = 2 bp - s1,                 s2' = 2 lp - s2,

which is linear in (s, x): ``s[n] = A[n] s[n-1] + B[n] x[n]`` and ``(lp, bp, hp)[n] = C[n] s[n-1] +
D[n] x[n]``. The state recursion runs as one exact, differentiable ``linear_recurrence`` with 2x2
transitions, so cutoff and resonance may change every sample (sweeps stay artefact-free, the
point of the TPT structure) and gradients reach them. With constant parameters the low-pass is
the bilinear transform of ``1 / (s^2 + s / Q + 1)`` at the prewarped cutoff (the RBJ biquad).
"""
from __future__ import annotations

import math
from typing import NamedTuple

import torch
from torch import Tensor

from ..recurrence import linear_recurrence


class SVFOutputs(NamedTuple):
    """The three simultaneous outputs, each ``(..., T)``."""

    lowpass: Tensor
    bandpass: Tensor
    highpass: Tensor


def svf(
    x: Tensor, cutoff_hz: Tensor, q: Tensor, sample_rate: float, state: Tensor | None = None
) -> tuple[SVFOutputs, Tensor]:
    """Filter ``x (..., T)`` with a time-varying TPT state-variable filter.

    Args:
        x: input ``(..., T)``.
        cutoff_hz: cutoff ``(..., T)`` or anything that broadcasts to it, in ``(0, f_s / 2)``.
        q: resonance ``Q > 0``, broadcast like ``cutoff_hz`` (0.7071 is Butterworth).
        sample_rate: ``f_s`` in Hz.
        state: integrator states ``(..., 2)`` from a previous block; zeros when ``None``.
    Returns:
        ``(SVFOutputs(lowpass, bandpass, highpass), final_state (..., 2))``.
    """
    if not isinstance(x, Tensor) or x.ndim < 1:
        raise ValueError(f"x must be a tensor of shape (..., T), got {getattr(x, 'shape', type(x).__name__)}")
    if not sample_rate > 0:
        raise ValueError(f"sample_rate must be > 0, got {sample_rate}")
    cutoff_hz = torch.as_tensor(cutoff_hz, dtype=x.dtype, device=x.device)
    q = torch.as_tensor(q, dtype=x.dtype, device=x.device)
    g = torch.tan(math.pi * cutoff_hz / sample_rate)
    damping = 1 / q  # 2R
    g, damping = torch.broadcast_tensors(g, damping)
    if g.ndim == 0:  # constant parameters: one set for every sample (a time dim of 1)
        g, damping = g.reshape(1), damping.reshape(1)
    d = 1 / (1 + damping * g + g * g)
    k = 1 - g * d * (damping + g)  # bp's weight on s1
    # outputs from the previous state and the input: rows lp, bp, hp over (s1, s2); D the x weights
    C = torch.stack([
        torch.stack([g * k, 1 - g * g * d], -1),
        torch.stack([k, -g * d], -1),
        torch.stack([-d * (damping + g), -d], -1),
    ], -2)  # (..., T, 3, 2)
    D = torch.stack([g * g * d, g * d, d], -1)  # (..., T, 3)
    # s1' = 2 bp - s1, s2' = 2 lp - s2
    A = torch.stack([
        torch.stack([2 * k - 1, -2 * g * d], -1),
        torch.stack([2 * g * k, 2 * (1 - g * g * d) - 1], -1),
    ], -2)  # (..., T, 2, 2)
    B = torch.stack([2 * g * d, 2 * g * g * d], -1)  # (..., T, 2)
    u = B * x.unsqueeze(-1)
    s, final = linear_recurrence(A, u, state, return_final=True)
    lead = s.shape[:-2]
    start = x.new_zeros(*lead, 1, 2) if state is None else state.expand(*lead, 2).unsqueeze(-2)
    previous = torch.cat([start, s[..., :-1, :]], dim=-2)  # s[n-1]
    y = (C @ previous.unsqueeze(-1)).squeeze(-1) + D * x.unsqueeze(-1)  # (..., T, 3)
    return SVFOutputs(y[..., 0], y[..., 1], y[..., 2]), final
