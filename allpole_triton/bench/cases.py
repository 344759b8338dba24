"""Benchmark cases: shapes, stable coefficients and the inputs built from them.

The coefficient generator lives here only; the sweep, the pytest-benchmark suite and the tests
all build their filters with :func:`stable_coefficients`.
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import torch
from torch import Tensor

PASSES = ("fwd", "fwdbwd")
COEFFS = ("tv", "lti")  # time-varying, or one constant coefficient set shared by every row


def stable_coefficients(
    B: int,
    T: int,
    M: int,
    *,
    knots: int = 4,
    radius: tuple[float, float] = (0.5, 0.98),
    angle_step: float | None = None,
    generator: torch.Generator | None = None,
    dtype: torch.dtype = torch.float64,
) -> Tensor:
    """Denominators ``a (B, T, M)`` (without the leading 1) of stable filters that move over time.

    Poles are drawn at ``knots + 1`` evenly spaced instants: conjugate pairs (plus one real pole
    for odd ``M``) with radii uniform in ``radius`` (keep the upper end < 1) and random angles.
    Radius and angle are interpolated linearly between knots, so every pole stays inside the
    disc at every sample, and ``a[n]`` is the product of ``(1 - p z^-1)`` over the poles at ``n``.
    Few knots give slowly varying filters; ``knots ~ T / 16`` gives fast-moving ones. ``T = 1``
    (or ``knots = 0``) gives a constant filter. With ``angle_step``, pole angles random-walk by at
    most that many radians from one knot to the next instead of jumping anywhere in ``(0, pi)``.
    """
    if not 0 <= radius[0] <= radius[1] < 1:
        raise ValueError(f"radius must satisfy 0 <= lo <= hi < 1, got {radius}")
    g = generator
    pairs, real = divmod(M, 2)
    K = max(int(knots), 0) + 1

    def draw(n: int, lo: float, hi: float) -> Tensor:
        return lo + (hi - lo) * torch.rand(B, K, n, generator=g, dtype=torch.float64)

    def interpolate(v: Tensor) -> Tensor:  # (B, K, n) -> (B, T, n)
        if K == 1 or T == 1:
            return v[:, :1].expand(B, T, v.shape[-1])
        pos = torch.linspace(0, K - 1, T, dtype=torch.float64)
        lo = pos.floor().long().clamp(max=K - 2)
        w = (pos - lo)[None, :, None]
        return v[:, lo] * (1 - w) + v[:, lo + 1] * w

    poly = torch.ones(B, T, 1, dtype=torch.float64)
    if pairs:
        r = interpolate(draw(pairs, *radius))
        theta = draw(pairs, 0.0, math.pi)
        if angle_step is not None:
            steps = draw(pairs, -angle_step, angle_step)
            theta = (theta[:, :1] + steps.cumsum(1) - steps[:, :1]).clamp(0.0, math.pi)
        theta = interpolate(theta)
        for k in range(pairs):  # (1 - 2 r cos(theta) z^-1 + r^2 z^-2)
            quad = torch.stack([torch.ones_like(r[..., k]), -2 * r[..., k] * theta[..., k].cos(), r[..., k] ** 2], -1)
            poly = _polymul(poly, quad)
    if real:  # a real pole moving inside (-hi, hi)
        poly = _polymul(poly, torch.cat([torch.ones(B, T, 1, dtype=torch.float64), -interpolate(draw(1, -radius[1], radius[1]))], -1))
    return poly[..., 1:].to(dtype).contiguous()


def _polymul(p: Tensor, q: Tensor) -> Tensor:
    """Per-sample product of polynomials in z^-1: ``(..., P)`` x ``(..., Q)`` -> ``(..., P+Q-1)``."""
    out = p.new_zeros(*p.shape[:-1], p.shape[-1] + q.shape[-1] - 1)
    for j in range(q.shape[-1]):
        out[..., j : j + p.shape[-1]] += p * q[..., j : j + 1]
    return out


@dataclass(frozen=True)
class Case:
    """One point of the grid: pass, shape, dtype, device and coefficient kind."""

    pass_: str  # "fwd" or "fwdbwd"
    B: int
    T: int
    M: int
    dtype: str = "float32"
    device: str = "cpu"
    coeffs: str = "tv"  # "tv" (a is (B, T, M)) or "lti" (a is (1, 1, M))

    @property
    def samples(self) -> int:
        return self.B * self.T

    @property
    def torch_dtype(self) -> torch.dtype:
        return getattr(torch, self.dtype)

    @property
    def group(self) -> str:
        """The pytest-benchmark / report group: (pass, B, T, M, dtype[, coeffs])."""
        return f"{self.pass_}-B{self.B}-T{self.T}-M{self.M}-{self.dtype}-{self.coeffs}"

    def key(self) -> tuple:
        return (self.coeffs, self.pass_, self.B, self.T, self.M, self.dtype, self.device)


@dataclass
class Inputs:
    """Tensors of a case. ``a`` is ``(B, T, M)`` for "tv" cases and ``(1, 1, M)`` for "lti"."""

    x: Tensor
    a: Tensor
    g: Tensor  # fixed upstream gradient for the backward pass


KNOT_SPACING = 4096  # samples between pole positions of the timing cases


def make_inputs(case: Case, seed: int = 0) -> Inputs:
    """Deterministic inputs for ``case``: stable poles (radii up to 0.98) that move from one
    random position to the next every :data:`KNOT_SPACING` samples, whatever T."""
    gen = torch.Generator().manual_seed(seed)
    if case.coeffs == "tv":
        knots = max(1, math.ceil(case.T / KNOT_SPACING))
        a = stable_coefficients(case.B, case.T, case.M, knots=knots, generator=gen)
    elif case.coeffs == "lti":
        a = stable_coefficients(1, 1, case.M, generator=gen)
    else:
        raise ValueError(f"coeffs must be one of {COEFFS}, got {case.coeffs!r}")
    x = torch.randn(case.B, case.T, generator=gen, dtype=torch.float64)
    g = torch.randn(case.B, case.T, generator=gen, dtype=torch.float64)
    to = dict(dtype=case.torch_dtype, device=case.device)
    return Inputs(x.to(**to), a.to(**to).contiguous(), g.to(**to))


def grid(
    *, B=(8,), T=(65536,), M=(1, 2, 16), dtypes=("float32",), passes=PASSES, coeffs=COEFFS, device="cpu"
) -> list[Case]:
    """Every combination, ordered so that cheap cases come first."""
    return [
        Case(p, b, t, m, d, device, c)
        for c in coeffs
        for p in passes
        for d in dtypes
        for m in M
        for t in sorted(T)
        for b in B
    ]


def min_bytes(case: Case) -> int:
    """Bytes an ideal kernel must move: fwd reads x, a and writes y; the backward reads g, a, y
    and writes grad_x and grad_a (the size of a)."""
    item = torch.empty(0, dtype=case.torch_dtype).element_size()
    a_elems = (case.B * case.T if case.coeffs == "tv" else 1) * case.M
    fwd = 2 * case.samples + a_elems
    bwd = 3 * case.samples + 2 * a_elems
    return item * (fwd + (bwd if case.pass_ == "fwdbwd" else 0))
