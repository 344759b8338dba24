"""Thin ``nn.Module`` wrappers over the functional API."""
from __future__ import annotations

from torch import Tensor, nn

from .functional import allpole
from .op import BACKENDS


class AllPole(nn.Module):
    """Time-varying all-pole filter as a module; see :func:`allpole_triton.allpole`.

    Args:
        backend: one of ``"auto"``, ``"numba"``, ``"triton"``, ``"naive"``.
        return_zf: make ``forward`` return ``(y, zf)``.

    Shapes: x ``(..., T)``, a ``(..., T or 1, M)``, zi ``(..., M)`` -> y ``(..., T)``.
    """

    def __init__(self, backend: str = "auto", return_zf: bool = False) -> None:
        super().__init__()
        if backend not in BACKENDS:
            raise ValueError(f"backend must be one of {BACKENDS}, got {backend!r}")
        self.backend = backend
        self.return_zf = return_zf

    def forward(self, x: Tensor, a: Tensor, zi: Tensor | None = None):
        return allpole(x, a, zi, return_zf=self.return_zf, backend=self.backend)

    def extra_repr(self) -> str:
        return f"backend={self.backend!r}, return_zf={self.return_zf}"
