"""Feed-forward compressor: level detector, static curve, attack/release gain smoothing.

Signal chain, per sample (``x`` the input):

1. level detector: mean-square ``p[n] = (1 - d) p[n-1] + d x[n]^2`` (a first-order all-pole
   filter), level ``L = 10 log10(p + eps)`` in dB;
2. static curve: soft-knee gain ``G(L) <= 0`` dB from threshold, ratio and knee width
   (Giannoulis, Massberg & Reiss, JAES 2012), target gain ``f = 10^(G / 20)``;
3. smoothing: ``g[n] = g[n-1] + c[n] (f[n] - g[n-1])`` with ``c[n]`` the attack coefficient
   when ``f[n] < g[n-1]`` (gain falling) and the release coefficient otherwise — the torchcomp
   formulation, see :func:`attack_release_smoothing`;
4. output ``y = x * g * 10^(makeup / 20)``.
"""
from __future__ import annotations

import math
from typing import NamedTuple

import numpy as np
import torch
from torch import Tensor

from ..functional import allpole, allpole_rows_direct
from ..kernels.numba_realtime import POWER_FLOOR, attack_release_choices
from ..op import direct_numba, from_rows, numpy_rows, readable_tensors
from ..realtime import FrozenCompressor
from .common import Bounded, FrequencySampling, StreamingSystem, check_method, pole_zero_filter, base_power

class CompressorState(NamedTuple):
    """Streaming state: the detector's mean square ``p[n-1]`` ``(..., 1)`` and the smoothed gain ``g[n-1]`` ``(...)``."""

    power: Tensor
    gain: Tensor


def time_constant_coefficient(time_ms: Tensor, sample_rate: float) -> Tensor:
    """One-pole smoothing coefficient ``1 - exp(-1 / (tau f_s))`` for a time constant ``tau`` in ms."""
    return 1 - torch.exp(-1000.0 / (time_ms * sample_rate))


def static_gain_db(level_db: Tensor, threshold_db: Tensor, ratio: Tensor, knee_db: Tensor) -> Tensor:
    """Soft-knee compressor curve: the gain in dB (``<= 0``) for a level in dB.

    Below ``threshold - knee/2`` the gain is 0; above ``threshold + knee/2`` it is
    ``(1/ratio - 1)(L - threshold)``; in between a quadratic joins the two with matching slopes.
    ``knee_db`` must be > 0.
    """
    over = level_db - threshold_db
    slope = 1 / ratio - 1
    in_knee = slope * (over + knee_db / 2) ** 2 / (2 * knee_db)
    above = slope * over
    twice = 2 * over
    return torch.where(twice <= -knee_db, 0.0, torch.where(twice >= knee_db, above, in_knee))


def attack_release_smoothing(
    target: Tensor, attack: Tensor, release: Tensor, initial: Tensor, backend: str = "auto"
) -> Tensor:
    """Exact attack/release smoothing ``g[n] = g[n-1] + c[n] (target[n] - g[n-1])``.

    ``c[n] = attack`` if ``target[n] < g[n-1]`` else ``release``. The switch makes the
    recursion nonlinear in its own state, so it cannot be one linear filter. But once the
    per-sample choices are known it *is* one: the first-order time-varying all-pole filter
    ``g[n] = c[n] target[n] - (c[n] - 1) g[n-1]``. As in torchcomp, the choices are computed from
    the recursion's output without gradient, and the output and all gradients then come from the
    exact, differentiable :func:`allpole` with the coefficients fixed by those choices (the
    choices are piecewise constant in the inputs, so this is the exact gradient almost everywhere).

    torchcomp finds the choices with a sequential per-sample loop, and so does this function on
    CPU (a Numba loop). Elsewhere they are the fixed point of ``choices -> filter -> compare``,
    iterated with the all-pole op itself, so it runs on every backend: if the choices are right up to sample j, the filtered gain is right up to j and the
    comparison gives the right choice at j+1, so each iteration fixes at least one more sample
    and the first agreement of two iterates is the sequential solution (exact, not approximate).
    Iterations restart at the first changed sample; on audio, a few iterations suffice.

    Args:
        target: gain to follow ``(..., T)``.
        attack, release: coefficients in (0, 1], 0-d or broadcastable to ``(...)``.
        initial: ``g[-1]``, ``(...)``.
    Returns:
        ``g (..., T)``.
    """
    T = target.shape[-1]
    lead = target.shape[:-1]
    attack = attack.expand(lead).unsqueeze(-1)
    release = release.expand(lead).unsqueeze(-1)
    initial = initial.expand(lead)
    if backend in ("auto", "numba") and direct_numba(target, attack, release, initial) and _sequential_applies(
        target, attack, release, initial
    ):
        return _smoothing_direct(target, attack, release, initial)
    with torch.no_grad():
        f, at, rt, g0 = target.detach(), attack.detach(), release.detach(), initial.detach()
        if _sequential_applies(f, at, rt, g0):
            choose_attack = _sequential_choices(f, at, rt, g0)
        else:
            choose_attack = _fixed_point_choices(f, at, rt, g0, backend)
    c = torch.where(choose_attack, attack, release)
    return allpole(c * target, (c - 1).unsqueeze(-1), initial.unsqueeze(-1), backend=backend)


def _smoothing_direct(target: Tensor, attack: Tensor, release: Tensor, initial: Tensor) -> Tensor:
    """:func:`attack_release_smoothing` in inference on CPU with numpy glue only: the same choices,
    products and all-pole kernel as the torch path (see :func:`~allpole_triton.op.direct_numba`),
    so the same bits. ``attack``, ``release`` ``(..., 1)``, ``initial`` ``(...)``."""
    lead, T = target.shape[:-1], target.shape[-1]
    rows = math.prod(lead)
    f = numpy_rows(target, lead, rows, (T,))
    at, rt = numpy_rows(attack, lead, rows, (1,)), numpy_rows(release, lead, rows, (1,))
    g0 = numpy_rows(initial.unsqueeze(-1), lead, rows, (1,))
    choose_attack = np.empty((rows, T), dtype=np.bool_)
    attack_release_choices(f, at[:, 0], rt[:, 0], g0[:, 0], choose_attack)
    c = np.where(choose_attack, at, rt)
    g, _ = allpole_rows_direct(c * f, (c - c.dtype.type(1))[:, :, None], g0)
    return from_rows(g, lead)


def _fixed_point_choices(f: Tensor, at: Tensor, rt: Tensor, g0: Tensor, backend: str) -> Tensor:
    """The attack/release decisions as the fixed point of ``choices -> filter -> compare`` (any
    backend; see :func:`attack_release_smoothing`). Shapes as in :func:`_sequential_choices`."""
    T = f.shape[-1]
    # first guess: the gain falls where the target falls (the smoothed gain tracks the target)
    choose_attack = f < torch.cat([g0.unsqueeze(-1), f[..., :-1]], dim=-1)
    start = 0
    while start < T:
        c = torch.where(choose_attack[..., start:], at, rt)
        zi = (g0 if start == 0 else g[..., start - 1]).unsqueeze(-1)
        g_tail = allpole(c * f[..., start:], (c - 1).unsqueeze(-1), zi, backend=backend)
        g = g_tail if start == 0 else torch.cat([g[..., :start], g_tail], dim=-1)
        previous = torch.cat([zi, g_tail[..., :-1]], dim=-1)
        new_choice = f[..., start:] < previous
        changed = (new_choice != choose_attack[..., start:]).reshape(-1, T - start).any(0).nonzero()
        if changed.numel() == 0:
            break
        choose_attack[..., start:] = new_choice
        start += int(changed[0])
    return choose_attack


def _sequential_applies(*tensors: Tensor) -> bool:
    """The Numba pass reads plain, non-empty float32/float64 CPU tensors (under transforms such as
    torch.func.grad, or tracing, the fixed point runs on the op instead)."""
    return tensors[0].shape[-1] > 0 and readable_tensors(*tensors, device="cpu", dtypes=(torch.float32, torch.float64))


def _sequential_choices(target: Tensor, attack: Tensor, release: Tensor, initial: Tensor) -> Tensor:
    """The attack/release decisions by one sequential pass (Numba) on CPU: cheaper than the
    fixed-point iteration's several filter calls for the short blocks of streaming. ``attack``,
    ``release`` are ``(..., 1)`` and ``initial`` ``(...)``, expanded to ``target (..., T)``'s rows."""
    rows, T = math.prod(target.shape[:-1]), target.shape[-1]
    flat = lambda t: t.reshape(rows).contiguous().numpy()  # noqa: E731
    choose_attack = torch.empty(target.shape, dtype=torch.bool)
    attack_release_choices(
        target.reshape(rows, T).contiguous().numpy(), flat(attack), flat(release), flat(initial),
        choose_attack.view(rows, T).numpy(),
    )
    return choose_attack


def compressor(
    x: Tensor,
    *,
    threshold_db: Tensor,
    ratio: Tensor,
    knee_db: Tensor,
    makeup_db: Tensor,
    attack_ms: Tensor,
    release_ms: Tensor,
    detector_ms: Tensor,
    sample_rate: float,
    state: CompressorState | None = None,
    method: str = "td",
    fs: FrequencySampling = FrequencySampling(),
    backend: str = "auto",
) -> tuple[Tensor, CompressorState | None]:
    """Feed-forward compressor on ``x (..., T)`` (see the module docstring); parameters 0-d tensors.

    Args:
        threshold_db, ratio (>= 1), knee_db (> 0), makeup_db: static curve and make-up gain.
        attack_ms, release_ms: time constants of the gain smoothing.
        detector_ms: time constant of the mean-square level detector.
        state: streaming state from a previous block (``method="td"``); ``None`` starts from
            silence (detector 0, gain 1).
        method: ``"td"`` exact; ``"fs"`` runs the detector and the gain smoothing (with the
            per-sample attack/release coefficients, chosen from the exact recursion on the FS
            target gain) through the frame-wise frequency-sampling baseline.
    Returns:
        ``(y (..., T), final_state)``; ``final_state`` is ``None`` for ``method="fs"``.
    """
    if not isinstance(x, Tensor) or x.ndim < 1:
        raise ValueError(f"x must be a tensor of shape (..., T), got {getattr(x, 'shape', type(x).__name__)}")
    if check_method(method) == "fs" and state is not None:
        raise ValueError("method='fs' is frame-based and cannot continue from a streaming state; use method='td'")
    lead = x.shape[:-1]
    gain0 = x.new_ones(lead) if state is None else state.gain
    times_ms = (detector_ms, attack_ms, release_ms)
    if detector_ms.shape == attack_ms.shape == release_ms.shape:  # in one pass of ops (~2 us an op a block)
        detector, attack, release = time_constant_coefficient(torch.stack(times_ms), sample_rate).to(x.dtype).unbind()
    else:  # parameters per row
        detector, attack, release = (time_constant_coefficient(t, sample_rate).to(x.dtype) for t in times_ms)

    detector = detector.unsqueeze(-1)  # against x (..., T); feedback is a (..., 1, 1) coefficient
    feedback = (detector - 1).unsqueeze(-1)
    if method == "td":  # lfilter(x^2, [d], [d - 1]) without its FIR pass: the same products
        power, power_zf = allpole(detector * (x * x), feedback, None if state is None else state.power,
                                  return_zf=True, backend=backend)
    else:
        power, _ = pole_zero_filter(x * x, detector.unsqueeze(-1), feedback, None, method, fs, backend)
    level_db = 10 * torch.log10(power.clamp(min=0) + POWER_FLOOR)
    target = base_power(10.0, static_gain_db(level_db, threshold_db, ratio, knee_db) / 20)
    if method == "td":
        gain = attack_release_smoothing(target, attack, release, gain0, backend)
    else:
        gain = _attack_release_fs(target, attack, release, gain0, fs)
    y = x * gain * base_power(10.0, makeup_db / 20)
    if method == "fs":
        return y, None
    return y, CompressorState(power_zf, gain[..., -1] if x.shape[-1] else gain0)


def _attack_release_fs(target: Tensor, attack: Tensor, release: Tensor, initial: Tensor, fs: FrequencySampling) -> Tensor:
    """FS baseline of :func:`attack_release_smoothing`: same per-sample choices, filtered frame-wise."""
    with torch.no_grad():
        exact = attack_release_smoothing(target.detach(), attack.detach(), release.detach(), initial.detach())
        previous = torch.cat([initial.expand(target.shape[:-1]).unsqueeze(-1), exact[..., :-1]], dim=-1)
        choose_attack = target.detach() < previous
    c = torch.where(choose_attack, attack, release).unsqueeze(-1)
    # the FS filter starts from rest: filter the deviation from the initial gain
    deviation, _ = pole_zero_filter(target - initial.unsqueeze(-1), c, c - 1, None, "fs", fs)
    return deviation + initial.unsqueeze(-1)


class Compressor(StreamingSystem):
    """Trainable feed-forward compressor (see :func:`compressor`); ``forward(x (..., T)) -> (..., T)``.

    All seven parameters are learnable within :attr:`RANGES`.
    """

    RANGES = {
        "threshold_db": Bounded(-60.0, 0.0),
        "ratio": Bounded(1.0, 20.0, log=True),
        "knee_db": Bounded(0.1, 24.0, log=True),
        "makeup_db": Bounded(-24.0, 24.0),
        "attack_ms": Bounded(0.1, 200.0, log=True),
        "release_ms": Bounded(5.0, 2000.0, log=True),
        "detector_ms": Bounded(0.1, 100.0, log=True),
    }

    def __init__(
        self,
        sample_rate: float = 44100.0,
        *,
        method: str = "td",
        fs: FrequencySampling | None = None,
        backend: str = "auto",
        threshold_db: float = -12.0,
        ratio: float = 2.0,
        knee_db: float = 6.0,
        makeup_db: float = 0.0,
        attack_ms: float = 10.0,
        release_ms: float = 100.0,
        detector_ms: float = 5.0,
    ) -> None:
        super().__init__(
            sample_rate, method, fs, backend,
            dict(threshold_db=threshold_db, ratio=ratio, knee_db=knee_db, makeup_db=makeup_db,
                 attack_ms=attack_ms, release_ms=release_ms, detector_ms=detector_ms),
        )

    def freeze(self) -> FrozenCompressor:
        """A real-time processor with the current parameters (see :mod:`allpole_triton.realtime`)."""
        values = self.physical_parameters()
        coefficient = lambda ms: 1 - math.exp(-1000.0 / (values[ms] * self.sample_rate))  # noqa: E731
        params = {name: values[name] for name in ("threshold_db", "ratio", "knee_db", "makeup_db")}
        params |= {"attack": coefficient("attack_ms"), "release": coefficient("release_ms"), "detector": coefficient("detector_ms")}
        return FrozenCompressor(self.sample_rate, params)

    def _render(self, x: Tensor, state: CompressorState | None, method: str) -> tuple[Tensor, CompressorState | None]:
        return compressor(
            x, **self.values(), sample_rate=self.sample_rate,
            state=state, method=method, fs=self.fs, backend=self.backend,
        )
