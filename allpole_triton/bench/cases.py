"""Benchmark cases: shapes, stable coefficients and the inputs built from them.

The coefficient generator lives here only; the sweep, the pytest-benchmark suite, the accuracy
table and the tests all build their filters with :func:`stable_coefficients` (the timing cases
through :func:`case_coefficients`: speech-LPC-like poles of radius 0.9 to 0.99).
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
    bands: bool = False,
    generator: torch.Generator | None = None,
    dtype: torch.dtype = torch.float64,
) -> Tensor:
    """Denominators ``a (B, T, M)`` (without the leading 1) of stable filters that move over time.

    Poles are drawn at ``knots + 1`` evenly spaced instants: ``M // 2`` conjugate pairs with radii
    uniform in ``radius`` (keep the upper end < 1) and angles in ``(0, pi)``, plus, for odd ``M``,
    one real pole whose magnitude is uniform in ``radius`` and whose sign is drawn once per row.
    Radius and angle are interpolated linearly between knots, so every pole stays inside the
    disc at every sample, and ``a[n]`` is the product of ``(1 - p z^-1)`` over the poles at ``n``.
    Few knots give slowly varying filters; ``knots ~ T / 16`` gives fast-moving ones. ``T = 1``
    (or ``knots = 0``) gives a constant filter.

    ``angle_step``: pole angles random-walk by at most that many radians from one knot to the
    next (reflected at the ends of their range) instead of jumping anywhere in their range.

    ``bands``: pair ``k`` keeps its angle in the middle 60% of the ``k``-th of ``M // 2`` equal
    bands of ``(0, pi)``, so pairs never cross or cluster, as formants F1 < F2 < ... do. Without
    it, independently moving pairs meet now and then; a cluster of ``k`` poles near the unit
    circle is ill-conditioned in direct form (float32 rounding of ``a`` moves such poles by about
    ``eps ** (1 / k)``) and the filter's float32 error is then that of the cluster, not of the
    arithmetic.
    """
    if not 0 <= radius[0] <= radius[1] < 1:
        raise ValueError(f"radius must satisfy 0 <= lo <= hi < 1, got {radius}")
    g = generator
    pairs, real = divmod(M, 2)
    K = max(int(knots), 0) + 1

    def draw(n: int, lo: float, hi: float, k: int = K) -> Tensor:
        return lo + (hi - lo) * torch.rand(B, k, n, generator=g, dtype=torch.float64)

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
        if bands:  # pair k in [k + 0.2, k + 0.8] * pi / pairs
            width = 0.6 * math.pi / pairs
            start = (torch.arange(pairs, dtype=torch.float64) + 0.2) * math.pi / pairs
        else:
            width, start = math.pi, torch.zeros(pairs, dtype=torch.float64)
        u = draw(pairs, 0.0, 1.0)  # position inside the range, in units of its width
        if angle_step is not None:
            steps = draw(pairs, -angle_step / width, angle_step / width)
            u = _reflect(u[:, :1] + steps.cumsum(1) - steps[:, :1])
        theta = interpolate(start + width * u)
        for k in range(pairs):  # (1 - 2 r cos(theta) z^-1 + r^2 z^-2)
            quad = torch.stack([torch.ones_like(r[..., k]), -2 * r[..., k] * theta[..., k].cos(), r[..., k] ** 2], -1)
            poly = _polymul(poly, quad)
    if real:  # a real pole of magnitude in radius, its sign fixed per row
        sign = torch.where(torch.rand(B, 1, 1, generator=g, dtype=torch.float64) < 0.5, -1.0, 1.0)
        pole = sign * interpolate(draw(1, *radius))
        poly = _polymul(poly, torch.cat([torch.ones(B, T, 1, dtype=torch.float64), -pole], -1))
    return poly[..., 1:].to(dtype).contiguous()


def _reflect(u: Tensor) -> Tensor:
    """Fold any real ``u`` into ``[0, 1]`` by reflection at 0 and 1 (a triangle wave)."""
    v = u.remainder(2.0)
    return torch.where(v > 1, 2 - v, v)


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


KNOT_SPACING = 256  # samples between pole positions of the timing cases (16 ms at 16 kHz: an LPC hop)
RADIUS = (0.9, 0.99)  # pole radii of the timing cases: bandwidths of about 50 to 535 Hz at 16 kHz
ANGLE_STEP = 0.05  # most radians a pole angle moves from one knot to the next (~130 Hz at 16 kHz)


def case_coefficients(B: int, T: int, M: int, *, radius=RADIUS, generator=None, dtype=torch.float64) -> Tensor:
    """The filters of the benchmark: speech-LPC-like poles moving smoothly over time.

    ``M // 2`` conjugate pairs, each in its own band of angles (like formants, pairs never cross;
    see ``bands`` in :func:`stable_coefficients`), with radii uniform in ``radius`` (default
    0.9 to 0.99) and, for odd ``M``, a real pole of magnitude in ``radius``. New pole positions
    every :data:`KNOT_SPACING` samples, angles moving by at most :data:`ANGLE_STEP` radians from
    one to the next and both interpolated linearly in between: a frame-by-frame LPC envelope, or
    (M = 2) one resonator sweeping at random. ``T = 1`` gives one constant filter.
    """
    knots = max(1, math.ceil(T / KNOT_SPACING)) if T > 1 else 0
    return stable_coefficients(B, T, M, knots=knots, radius=radius, angle_step=ANGLE_STEP, bands=True,
                               generator=generator, dtype=dtype)


def make_inputs(case: Case, seed: int = 0) -> Inputs:
    """Deterministic inputs for ``case``: :func:`case_coefficients` (``(B, T, M)`` for "tv",
    one constant ``(1, 1, M)`` filter for "lti") and white Gaussian ``x`` and upstream gradient."""
    gen = torch.Generator().manual_seed(seed)
    if case.coeffs == "tv":
        a = case_coefficients(case.B, case.T, case.M, generator=gen)
    elif case.coeffs == "lti":
        a = case_coefficients(1, 1, case.M, generator=gen)
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
