"""Functional API: :func:`allpole` and the torchlpc-compatible :func:`sample_wise_lpc`."""
from __future__ import annotations

import math

import numpy as np
import torch
from torch import Tensor

from ._shapes import broadcast_leading
from .kernels import numba_cpu
from .op import direct_numba, filter_rows, from_rows, host_empty, numpy_rows, resolve_backend, resolved

_LOW_PRECISION = (torch.float16, torch.bfloat16)


def _check_inputs(x: Tensor, a: Tensor, zi: Tensor | None) -> tuple[int, ...]:
    """Validate shapes, dtypes and devices; return the broadcast leading shape."""
    named = {"x": x, "a": a} if zi is None else {"x": x, "a": a, "zi": zi}
    for name, t in named.items():
        if not isinstance(t, Tensor):
            raise TypeError(f"{name} must be a torch.Tensor, got {type(t).__name__}")
        if not (t.is_floating_point() or t.is_complex()):
            raise TypeError(f"{name} must be a floating-point or complex tensor, got dtype {t.dtype}")
    if a.dtype != x.dtype or (zi is not None and zi.dtype != x.dtype):
        raise TypeError(f"x, a and zi must share one dtype, got {({name: t.dtype for name, t in named.items()})}")
    if a.device != x.device or (zi is not None and zi.device != x.device):
        raise ValueError(f"x, a and zi must be on one device, got {({name: t.device for name, t in named.items()})}")
    if x.ndim < 1:
        raise ValueError(f"x must have shape (..., T), got a 0-d tensor")
    if a.ndim < 2:
        raise ValueError(f"a must have shape (..., T, M), got shape {tuple(a.shape)}")
    T, (Ta, M) = x.shape[-1], a.shape[-2:]
    if M == 0:
        raise ValueError(f"a must have order M >= 1 in its last dim, got shape {tuple(a.shape)}")
    if Ta not in (1, T) and M == T and a.ndim == x.ndim:
        raise ValueError(
            f"a needs a trailing order dim: a (..., T, M) holds M coefficients per sample, got a of shape "
            f"{tuple(a.shape)} for x of shape {tuple(x.shape)} (for order 1 use a[..., None])"
        )
    if Ta not in (1, T):
        raise ValueError(
            f"a's time dim must be T={T} or 1, got a of shape {tuple(a.shape)} for x of shape {tuple(x.shape)}"
        )
    if zi is not None and (zi.ndim < 1 or zi.shape[-1] != M):
        raise ValueError(f"zi must have shape (..., M) with M={M}, got shape {tuple(zi.shape)}")
    leads = {"x (..., T)": x.shape[:-1], "a (..., T, M)": a.shape[:-2]}
    return broadcast_leading(**leads, **({} if zi is None else {"zi (..., M)": zi.shape[:-1]}))


def coefficient_rows(a: Tensor, lead: tuple[int, ...], tail: int = 2) -> Tensor:
    """a ``(..., Ta, M)`` as ``(Ba, Ta', M)`` rows for the kernels, without copying where a view will
    do: leading dims that are all 1, or broadcast (stride 0), become one shared row (Ba = 1), and a
    time dim of stride 0 (one coefficient set expanded over time) becomes Ta = 1. The kernels read
    any strides, so a transposed or sliced ``a`` is not copied either. ``tail`` counts the dims
    after the leading ones, time first (3 for matrices ``(..., Ta, M, M)``)."""
    shape = a.shape[a.ndim - tail :]
    if a.ndim == tail + 1 and a.shape[0] in (1, math.prod(lead)) and (a.shape[0] == 1 or a.stride(0)):
        rows = a  # already rows: the common case, without the view ops below (~1 us each)
    elif all(n == 1 or stride == 0 for n, stride in zip(a.shape[:-tail], a.stride()[:-tail])):
        rows = a[(0,) * (a.ndim - tail)].unsqueeze(0) if a.ndim > tail else a.unsqueeze(0)
    else:
        rows = a.expand(*lead, *shape).reshape(math.prod(lead), *shape)
    if shape[0] > 1 and rows.stride(1) == 0:
        rows = rows[:, :1]
    return rows


def allpole(
    x: Tensor,
    a: Tensor,
    zi: Tensor | None = None,
    *,
    return_zf: bool = False,
    backend: str = "auto",
) -> Tensor | tuple[Tensor, Tensor]:
    """Time-varying all-pole filter: ``y[n] = x[n] - sum_{i=1..M} a[n, i-1] * y[n-i]``.

    Exact (no approximation) and differentiable in ``x``, ``a`` and ``zi`` to any order.

    Args:
        x: input, ``(..., T)``.
        a: denominator coefficients without the leading 1, ``(..., T, M)``; the time dim may be 1
            for coefficients constant over time (broadcast, never materialised to T).
        zi: initial state ``(..., M)`` with ``zi[..., i] = y[-1-i]``; zeros when ``None``.
        return_zf: also return the final state ``zf[..., i] = y[T-1-i]`` (the next block's zi).
        backend: ``"auto"`` (Triton for CUDA tensors, Numba for CPU), ``"numba"``, ``"triton"``
            (CUDA, or CPU under ``TRITON_INTERPRET=1``), or ``"naive"`` (a plain torch loop).

    Leading dims of x, a and zi broadcast against each other; a whose leading dims are all 1
    is shared by every row without a copy. float16/bfloat16 inputs are computed in float32 and
    returned in the input dtype (the Triton kernels read them as they are; the CPU backends work
    on a float32 copy). NaN and Inf propagate as in a sequential loop.

    Returns:
        ``y`` of shape ``(*lead, T)``, or ``(y, zf)`` with ``zf`` of shape ``(*lead, M)``.
    """
    lead = _check_inputs(x, a, zi)
    x, a, zi = resolved(x), resolved(a), resolved(zi)
    backend = resolve_backend(backend, x.device)
    if backend == "numba" and direct_numba(x, a, *(() if zi is None else (zi,))):
        y, zf = _allpole_direct(x, a, zi, lead)
        return (y, zf) if return_zf else y
    T, (Ta, M) = x.shape[-1], a.shape[-2:]
    rows = math.prod(lead)
    out_dtype = x.dtype
    if out_dtype in _LOW_PRECISION and backend != "triton":  # Triton loads 16-bit itself
        x, a = x.float(), a.float()
        zi = None if zi is None else zi.float()

    x_rows = x.expand(*lead, T).reshape(rows, T)
    a_rows = coefficient_rows(a, lead)
    zi_rows = x.new_zeros(rows, M) if zi is None else zi.expand(*lead, M).reshape(rows, M)

    y_rows = filter_rows(x_rows, a_rows, zi_rows, backend)
    y = y_rows.reshape(*lead, T).to(out_dtype)
    if not return_zf:
        return y
    # zf[i] = y[T-1-i], reaching into zi when the block is shorter than M
    zf_rows = torch.cat([y_rows[:, max(T - M, 0):].flip(-1), zi_rows], dim=-1)[:, :M]
    return y, zf_rows.reshape(*lead, M).to(out_dtype)


def _allpole_direct(x: Tensor, a: Tensor, zi: Tensor | None, lead: tuple[int, ...]) -> tuple[Tensor, Tensor]:
    """:func:`allpole` on the Numba kernel with numpy glue only (see :func:`~allpole_triton.op.direct_numba`):
    the same rows and kernel as the autograd-aware path, so the same bits. Returns ``(y, zf)``."""
    T, M = x.shape[-1], a.shape[-1]
    rows = math.prod(lead)
    x_rows = numpy_rows(x, lead, rows, (T,))
    y, zf = allpole_rows_direct(x_rows, a_rows_numpy(a, lead), numpy_rows(zi, lead, rows, (M,), x_rows.dtype))
    return from_rows(y, lead), from_rows(zf, lead)


def a_rows_numpy(a: Tensor, lead: tuple[int, ...]) -> np.ndarray:
    """:func:`coefficient_rows` as a numpy array (strides kept), for direct Numba calls."""
    return coefficient_rows(a.detach() if a.requires_grad else a, lead).numpy()


def allpole_rows_direct(x: np.ndarray, a: np.ndarray, zi: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """The Numba forward on rows ``x (R, T)``, ``a (Ra, Ta, M)``, ``zi (R, M)``: ``(y (R, T), zf (R, M))``."""
    T, M = x.shape[1], a.shape[2]
    y = host_empty(x.shape, x.dtype)
    if y.size:
        numba_cpu.allpole_forward(x, a, zi, y)
    # zf[i] = y[T-1-i], reaching into zi when the block is shorter than M
    return y, np.concatenate([y[:, max(T - M, 0):][:, ::-1], zi], axis=1)[:, :M]


def sample_wise_lpc(
    x: Tensor, a: Tensor, zi: Tensor | None = None, return_zf: bool = False
) -> Tensor | tuple[Tensor, Tensor]:
    """Drop-in for ``torchlpc.sample_wise_lpc``: x ``(B, T)``, a ``(B, T, M)``, zi ``(B, M)``.

    Same argument names and defaults, recursion, state conventions and return convention
    (``y`` or ``(y, zf)``).
    """
    if isinstance(x, Tensor) and x.ndim != 2:
        raise ValueError(f"x must have shape (B, T), got shape {tuple(x.shape)}")
    if isinstance(a, Tensor) and a.ndim != 3:
        raise ValueError(f"a must have shape (B, T, M), got shape {tuple(a.shape)}")
    return allpole(x, a, zi, return_zf=return_zf)


def reflection_to_lpc(k: Tensor) -> Tensor:
    """Reflection (PARCOR) coefficients to the all-pole coefficients of :func:`allpole`.

    The step-up (Levinson) recursion, differentiable: ``k (..., M)`` with every ``|k| < 1`` gives
    ``a (..., M)`` such that ``1 + sum_i a[i-1] z^-i`` has all its roots inside the unit circle, so
    a network that emits ``tanh``-bounded ``k`` per sample always drives a stable filter.
    """
    if not isinstance(k, Tensor) or k.ndim < 1 or k.shape[-1] < 1:
        raise ValueError(f"k must be a tensor of shape (..., M) with M >= 1, got {getattr(k, 'shape', type(k).__name__)}")
    a = k[..., :1]
    for m in range(1, k.shape[-1]):
        km = k[..., m : m + 1]
        a = torch.cat([a + km * a.flip(-1), km], dim=-1)
    return a
