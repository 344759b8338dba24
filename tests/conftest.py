"""Shared test inputs: stable, time-varying coefficients from random poles."""
from __future__ import annotations

import math
import os

import pytest
import torch

# Without a GPU, every Triton kernel runs on CPU tensors through Triton's interpreter. Triton reads
# this when a kernel is decorated, i.e. before allpole_triton's Triton module is first imported.
if not torch.cuda.is_available():
    os.environ.setdefault("TRITON_INTERPRET", "1")


def stable_coefficients(
    lead: tuple[int, ...], T: int, M: int, dtype: torch.dtype = torch.float64, seed: int = 0, radius: float = 0.99
) -> torch.Tensor:
    """a (*lead, T, M): [1, a] has all its roots inside |z| < radius at every n.

    Two random pole sets are drawn and linearly interpolated (in radius and angle) over time, so
    the coefficients move while staying stable. Real dtypes get conjugate pairs (plus one real
    pole for odd M); complex dtypes get unpaired complex poles.
    """
    g = torch.Generator().manual_seed(seed)
    complex_ = dtype.is_complex
    n_free = M if complex_ else M // 2

    def draw():
        r = radius * torch.rand(*lead, n_free, generator=g, dtype=torch.float64).sqrt()
        theta = math.pi * torch.rand(*lead, n_free, generator=g, dtype=torch.float64)
        real = radius * (2 * torch.rand(*lead, 1, generator=g, dtype=torch.float64) - 1)
        return r, theta, real

    (r0, t0, p0), (r1, t1, p1) = draw(), draw()
    w = torch.linspace(0, 1, T, dtype=torch.float64).reshape(T, 1)
    r = r0.unsqueeze(-2) * (1 - w) + r1.unsqueeze(-2) * w
    theta = t0.unsqueeze(-2) * (1 - w) + t1.unsqueeze(-2) * w
    poles = torch.polar(r, theta)
    if complex_:
        sign = torch.where(torch.rand(*lead, 1, n_free, generator=g) < 0.5, -1.0, 1.0)
        poles = poles * sign
    else:
        poles = torch.cat([poles, poles.conj()], -1)
        if M % 2:
            real = p0.unsqueeze(-2) * (1 - w) + p1.unsqueeze(-2) * w
            poles = torch.cat([poles, real.to(poles.dtype)], -1)
    # expand prod_k (1 - p_k z^-1) to [1, a_1 .. a_M]
    poly = torch.ones(*lead, T, 1, dtype=torch.complex128)
    for k in range(M):
        p = poles[..., k : k + 1]
        poly = torch.cat([poly, torch.zeros_like(poly[..., :1])], -1) - p * torch.cat(
            [torch.zeros_like(poly[..., :1]), poly], -1
        )
    a = poly[..., 1:]
    return (a if complex_ else a.real).to(dtype)


def random_signal(shape: tuple[int, ...], dtype: torch.dtype = torch.float64, seed: int = 1) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    if dtype.is_complex:
        return torch.randn(*shape, generator=g, dtype=dtype)
    return torch.randn(*shape, generator=g, dtype=torch.float64).to(dtype)


@pytest.fixture(autouse=True)
def _seed():
    torch.manual_seed(0)
