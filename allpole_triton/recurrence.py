"""General linear recurrences: ``h[n] = A[n] @ h[n-1] + u[n]`` with dense or diagonal transitions.

:func:`linear_recurrence` is the state-space workhorse (philtorch's ``state_space`` recursion):
time-varying ``A (..., T or 1, M, M)``, inputs ``u (..., T, M)``, initial state ``h0 (..., M)``,
real or complex. Exact and differentiable in A, u and h0 to any order: the adjoint
``lam[n] = A[n+1]^H lam[n+1] + g[n]`` runs as the same recurrence in reversed time, and
``grad A[n] = lam[n] h[n-1]^H``, ``grad u = lam``, ``grad h0 = A[0]^H lam[0]``.

- ``diagonal=True``: ``A (..., T or 1, M)`` acts elementwise, M independent first-order
  recursions; they run as :func:`allpole_triton.allpole` of order 1 (the Triton scan on CUDA,
  Numba on CPU, with everything allpole supports).
- dense: a Triton chunked scan on CUDA tensors (``allpole_triton.kernels.triton_recurrence``;
  complex recurrences run as real ones of twice the order, up to a real order of 8), a Numba
  kernel on CPU tensors, and a sequential torch loop elsewhere and above that order.
"""
from __future__ import annotations

import math

import torch
from torch import Tensor

from ._shapes import broadcast_leading
from .functional import allpole, coefficient_rows
from .op import NUMBA_DTYPES, readable_tensors, resolve_backend


def linear_recurrence(
    A: Tensor, u: Tensor, h0: Tensor | None = None, *, diagonal: bool = False, return_final: bool = False,
    backend: str = "auto",
) -> Tensor | tuple[Tensor, Tensor]:
    """``h[n] = A[n] @ h[n-1] + u[n]`` for n = 0..T-1 with ``h[-1] = h0`` (zeros when ``None``).

    Args:
        A: transitions ``(..., T or 1, M, M)``, or ``(..., T or 1, M)`` with ``diagonal=True``.
        u: inputs ``(..., T, M)``.
        h0: initial state ``(..., M)``.
        diagonal: A holds the diagonals of diagonal transitions.
        return_final: also return ``h[T-1]`` (the next block's ``h0``).
        backend: ``"auto"`` (Triton for CUDA tensors, Numba for CPU), ``"triton"`` (CUDA, or CPU
            under ``TRITON_INTERPRET=1``), ``"numba"`` (CPU) or ``"naive"`` (a torch loop).
    Returns:
        ``h (*lead, T, M)`` (and ``h[..., T-1, :]``); ``lead`` broadcasts the leading dims.
    """
    for name, t in (("A", A), ("u", u)) + ((("h0", h0),) if h0 is not None else ()):
        if not isinstance(t, Tensor):
            raise TypeError(f"{name} must be a torch.Tensor, got {type(t).__name__}")
    if u.ndim < 2:
        raise ValueError(f"u must have shape (..., T, M), got shape {tuple(u.shape)}")
    T, M = u.shape[-2:]
    state_dims = 1 if diagonal else 2
    expected = "(..., T or 1, M)" if diagonal else "(..., T or 1, M, M)"
    if A.ndim < 1 + state_dims or A.shape[-state_dims:] != (M,) * state_dims or A.shape[-1 - state_dims] not in (1, T):
        raise ValueError(f"A must have shape {expected} with T={T}, M={M}, got shape {tuple(A.shape)}")
    if h0 is not None and (h0.ndim < 1 or h0.shape[-1] != M):
        raise ValueError(f"h0 must have shape (..., M) with M={M}, got shape {tuple(h0.shape)}")
    devices = {t.device for t in (A, u) + ((h0,) if h0 is not None else ())}
    if len(devices) > 1:
        raise ValueError(f"A, u and h0 must be on one device, got {sorted(map(str, devices))}")
    dtypes = {t.dtype for t in (A, u) + ((h0,) if h0 is not None else ())}
    if len(dtypes) > 1:
        raise TypeError(f"A, u and h0 must share one dtype, got {sorted(map(str, dtypes))}")
    lead = broadcast_leading(
        **{"A": A.shape[: A.ndim - 1 - state_dims], "u": u.shape[:-2]}, **({} if h0 is None else {"h0": h0.shape[:-1]})
    )
    backend = resolve_backend(backend, u.device)
    h0 = u.new_zeros(*lead, M) if h0 is None else h0.expand(*lead, M)
    if diagonal:
        # M independent first-order recursions: allpole of order 1 with a = -A, over (..., M, T) rows
        h = allpole(u.movedim(-1, -2), (-A).movedim(-1, -2).unsqueeze(-1), h0.unsqueeze(-1), backend=backend)
        h = h.movedim(-1, -2)
    else:
        rows = math.prod(lead)
        h = _DenseRecurrence.apply(coefficient_rows(A, lead, tail=3), u.expand(*lead, T, M).reshape(rows, T, M),
                                   h0.reshape(rows, M), backend)
        h = h.reshape(*lead, T, M)
    if not return_final:
        return h
    return h, (h[..., -1, :] if T else h0)


def linear_recurrence_naive(A: Tensor, u: Tensor, h0: Tensor) -> Tensor:
    """The reference: a sequential torch loop over rows ``A (Ra, Ta, M, M)``, ``u (R, T, M)``, ``h0 (R, M)``."""
    out, h = [], h0
    for n in range(u.shape[1]):
        h = (A[:, n if A.shape[1] > 1 else 0] @ h.unsqueeze(-1)).squeeze(-1) + u[:, n]
        out.append(h)
    return torch.stack(out, dim=1) if out else u.new_zeros(u.shape)


def _triton_dense(A: Tensor, u: Tensor, h0: Tensor) -> Tensor:
    """The Triton scan on rows; a complex recurrence runs as the real one of twice the order on the
    state [Re h; Im h], with A as [[Re A, -Im A], [Im A, Re A]]."""
    from .kernels import triton_recurrence

    M = u.shape[-1]
    if u.is_complex():
        A = torch.cat([torch.cat([A.real, -A.imag], -1), torch.cat([A.imag, A.real], -1)], -2)
        u, h0 = (torch.cat([t.real, t.imag], -1) for t in (u, h0))
    u, h0 = u.contiguous(), h0.contiguous()
    h = torch.empty_like(u)
    triton_recurrence.dense_forward(A, u, h0, h)
    return torch.complex(h[..., :M], h[..., M:]) if h.shape[-1] != M else h


def _uses_triton(u: Tensor, backend: str) -> bool:
    from .kernels.triton_recurrence import MAX_ORDER

    return backend == "triton" and u.shape[-1] * (2 if u.is_complex() else 1) <= MAX_ORDER


class _DenseRecurrence(torch.autograd.Function):
    """Rows: A (Ra, Ta, M, M), u (R, T, M), h0 (R, M) -> h (R, T, M). The backward and the
    forward-mode derivative are written with this Function and torch ops, so they are
    differentiable again. Under vmap, torch.compile or jit tracing the kernels cannot read the
    tensors, and the forward runs the torch loop (which is what the generated vmap rule batches)."""

    generate_vmap_rule = True

    @staticmethod
    def forward(A: Tensor, u: Tensor, h0: Tensor, backend: str) -> Tensor:
        if u.numel() and _uses_triton(u, backend) and readable_tensors(A, u, h0):
            return _triton_dense(A, u, h0)
        if u.numel() and backend == "numba" and readable_tensors(A, u, h0, device="cpu", dtypes=NUMBA_DTYPES):
            from .kernels import numba_recurrence

            h = torch.empty_like(u)
            numba_recurrence.dense_forward(A.contiguous().numpy(), u.contiguous().numpy(), h0.contiguous().numpy(), h.numpy())
            return h
        with torch.no_grad():
            return linear_recurrence_naive(A, u, h0)

    @staticmethod
    def setup_context(ctx, inputs, output):
        A, _, h0, backend = inputs
        ctx.backend = backend
        ctx.save_for_backward(A, h0, output)
        ctx.save_for_forward(A, h0, output)

    @staticmethod
    def jvp(ctx, dA: Tensor | None, du: Tensor | None, dh0: Tensor | None, _) -> Tensor:
        """dh[n] = A[n] dh[n-1] + dA[n] h[n-1] + du[n] from dh[-1] = dh0: the same recurrence."""
        A, h0, h = ctx.saved_tensors
        drive = torch.zeros_like(h) if du is None else du.expand_as(h)
        if dA is not None:
            previous = torch.cat([h0.unsqueeze(1), h[:, :-1]], dim=1)
            drive = drive + (dA @ previous.unsqueeze(-1)).squeeze(-1)
        return _DenseRecurrence.apply(A, drive, torch.zeros_like(h0) if dh0 is None else dh0, ctx.backend)

    @staticmethod
    def backward(ctx, grad_h: Tensor):
        A, h0, h = ctx.saved_tensors
        R, T, M = grad_h.shape
        if T == 0:
            return torch.zeros_like(A), torch.zeros_like(grad_h), torch.zeros_like(h0), None
        # lam[n] = A[n+1]^H lam[n+1] + g[n]: in reversed time m = T-1-n, mu[m] = A[T-m]^H mu[m-1] + g[T-1-m]
        # from mu[-1] = 0 (so the transition at m = 0 is never used: A[0] stands in for it)
        reversed_A = torch.cat([A[:, :1], A[:, 1:].flip(1)], dim=1) if A.shape[1] > 1 else A
        lam = _DenseRecurrence.apply(reversed_A.mH, grad_h.flip(1), torch.zeros_like(h0), ctx.backend).flip(1)
        previous = torch.cat([h0.unsqueeze(1), h[:, :-1]], dim=1)
        grad_A = lam.unsqueeze(-1) * previous.conj().unsqueeze(-2)  # (R, T, M, M): lam[n] h[n-1]^H
        if A.shape[1] == 1:
            grad_A = grad_A.sum(1, keepdim=True)
        if A.shape[0] == 1 and R > 1:
            grad_A = grad_A.sum(0, keepdim=True)
        grad_h0 = (A[:, 0].mH @ lam[:, 0].unsqueeze(-1)).squeeze(-1)  # (R, M): A's rows broadcast
        return grad_A, lam, grad_h0, None
