"""Time-varying pole-zero filtering built on the exact all-pole op.

``lfilter`` evaluates the time-varying difference equation (direct form I)::

    y[n] = sum_{k=0..K} b[n, k] * x[n-k]  -  sum_{i=1..M} a[n, i-1] * y[n-i]

as a differentiable FIR with time-varying taps followed by :func:`allpole_triton.allpole`.
``sosfilt`` runs a cascade of such filters of order 2 (biquads). Both carry their state in a
:class:`FilterState` (the last K inputs and the last M outputs), so a signal filtered block by
block with each block's final state passed on as the next block's initial state gives the same
output as filtering it in one call.
"""
from __future__ import annotations

import math
from typing import NamedTuple

import numpy as np
import torch
from torch import Tensor

from .._shapes import broadcast_leading
from ..functional import a_rows_numpy, allpole, allpole_rows_direct, coefficient_rows
from ..op import (
    NUMBA_DTYPES, _empty, composition_gradients, direct_numba, from_rows, host_empty, numpy_rows, readable_tensors, resolved,
)


class FilterState(NamedTuple):
    """Direct-form-I state of a pole-zero filter, newest sample first.

    Attributes:
        inputs: ``(..., K)`` with ``inputs[..., i] = x[-1-i]`` (the FIR part's memory).
        outputs: ``(..., M)`` with ``outputs[..., i] = y[-1-i]`` (the all-pole part's memory;
            the ``zi``/``zf`` convention of :func:`allpole_triton.allpole`).

    For :func:`sosfilt` both fields have an extra section dim: ``(..., S, 2)``.
    """

    inputs: Tensor
    outputs: Tensor

    def detach(self) -> "FilterState":
        return FilterState(self.inputs.detach(), self.outputs.detach())


def _require_tensor(name: str, value: object, min_ndim: int, shape_doc: str) -> Tensor:
    """``value`` checked to be a tensor of at least ``min_ndim`` dims, its conj/neg view resolved."""
    if not isinstance(value, Tensor):
        raise TypeError(f"{name} must be a torch.Tensor of shape {shape_doc}, got {type(value).__name__}")
    if value.ndim < min_ndim:
        raise ValueError(f"{name} must have shape {shape_doc}, got shape {tuple(value.shape)}")
    return resolved(value)


def _check_time_dim(name: str, coefficients: Tensor, T: int, x: Tensor) -> None:
    if coefficients.shape[-2] not in (1, T):
        raise ValueError(
            f"{name}'s time dim must be T={T} or 1, got {name} of shape {tuple(coefficients.shape)} "
            f"for x of shape {tuple(x.shape)}"
        )


def _check_state(zi: object, sizes: dict[str, int], shape_doc: str, kind: type = FilterState, where: str = ""):
    """zi is a ``kind`` whose tensor fields end in the given sizes (``where``: the context, for the error)."""
    if not isinstance(zi, kind):
        raise TypeError(f"zi must be a {kind.__name__}({', '.join(sizes)}) or None{where}, got {type(zi).__name__}")
    fields = {}
    for field, size in sizes.items():
        t = fields[field] = _require_tensor(f"zi.{field}", getattr(zi, field), 1, shape_doc)
        if t.shape[-1] != size:
            raise ValueError(f"zi.{field} must have shape {shape_doc} with last dim {size}, got {tuple(t.shape)}")
    return kind(**fields)


def time_varying_fir(
    x: Tensor, b: Tensor, zi: Tensor | None = None, *, return_zf: bool = False
) -> Tensor | tuple[Tensor, Tensor]:
    """FIR filter with time-varying taps: ``w[n] = sum_{k=0..K} b[n, k] * x[n-k]``.

    A differentiable convolution (in x, b and zi); its state is the last K inputs.

    Args:
        x: ``(..., T)``.
        b: ``(..., T or 1, K+1)``.
        zi: ``(..., K)`` with ``zi[..., i] = x[-1-i]``; zeros when ``None``.
        return_zf: also return ``zf (..., K)``, the last K inputs (newest first).
    Returns:
        ``w (..., T)`` or ``(w, zf)``; leading dims are the broadcast of x's, b's and zi's.
    """
    x = _require_tensor("x", x, 1, "(..., T)")
    b = _require_tensor("b", b, 2, "(..., T or 1, K+1)")
    T, K = x.shape[-1], b.shape[-1] - 1
    if K < 0:
        raise ValueError(f"b must have at least one tap in its last dim, got shape {tuple(b.shape)}")
    _check_time_dim("b", b, T, x)
    if zi is not None:
        zi = _require_tensor("zi", zi, 1, "(..., K)")
        if zi.shape[-1] != K:
            raise ValueError(f"zi must have shape (..., K) with K={K}, got shape {tuple(zi.shape)}")
    lead = broadcast_leading(
        **{"x (..., T)": x.shape[:-1], "b (..., T, K+1)": b.shape[:-2]},
        **({} if zi is None else {"zi (..., K)": zi.shape[:-1]}),
    )
    if T and direct_numba(x, b, *(() if zi is None else (zi,))):
        w, zf = _fir_direct(x, b, zi, lead)
        return (w, zf) if return_zf else w
    past = x.new_zeros(*lead, K) if zi is None else zi.expand(*lead, K)
    if T and readable_tensors(x, b, past, device="cpu", dtypes=NUMBA_DTYPES) and len({x.dtype, b.dtype, past.dtype}) == 1:
        rows = math.prod(lead)
        w = _NumbaFIR.apply(x.expand(*lead, T).reshape(rows, T), coefficient_rows(b, lead), past.reshape(rows, K))
        w = w.reshape(*lead, T)
    else:
        w = _fir_torch(x.expand(*lead, T), b, past)
    if not return_zf:
        return w
    keep = min(K, T)  # the last K inputs, newest first: this block's, then the older state's
    return w, torch.cat([x.expand(*lead, T)[..., T - keep:].flip(-1), past[..., : K - keep]], dim=-1)


def _fir_direct(x: Tensor, b: Tensor, zi: Tensor | None, lead: tuple[int, ...]) -> tuple[Tensor, Tensor]:
    """:func:`time_varying_fir` on the Numba kernel with numpy glue only (see
    :func:`~allpole_triton.op.direct_numba`); the same rows and kernel as :class:`_NumbaFIR`, so the
    same bits. Returns ``(w, zf)``."""
    T, K = x.shape[-1], b.shape[-1] - 1
    rows = math.prod(lead)
    x_rows = numpy_rows(x, lead, rows, (T,))
    w, zf = _fir_rows_direct(x_rows, _b_rows_numpy(b, lead), numpy_rows(zi, lead, rows, (K,), x_rows.dtype))
    return from_rows(w, lead), from_rows(zf, lead)


def _b_rows_numpy(b: Tensor, lead: tuple[int, ...]) -> np.ndarray:
    return np.ascontiguousarray(a_rows_numpy(b, lead))  # _NumbaFIR reads contiguous taps


def _fir_rows_direct(x: np.ndarray, b: np.ndarray, past: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """The Numba FIR on rows ``x (R, T)``, ``b (Rb, Tb, K+1)``, ``past (R, K)``: ``(w (R, T), zf (R, K))``."""
    from ..kernels import numba_fir

    T, K = x.shape[1], b.shape[2] - 1
    w = host_empty(x.shape, x.dtype)
    numba_fir.fir_forward(x, b, past, w)
    keep = min(K, T)  # the last K inputs, newest first: this block's, then the older state's
    return w, np.concatenate([x[:, T - keep:][:, ::-1], past[:, : K - keep]], axis=1)


def _df1_direct(x: Tensor, b: Tensor, a: Tensor, zi: FilterState | None) -> tuple[Tensor, FilterState]:
    """Direct form I on the Numba kernels with numpy glue only, FIR then all-pole as in the
    autograd-aware path (the same rows and kernels, so the same bits), in one pass of glue."""
    T, K, M = x.shape[-1], b.shape[-1] - 1, a.shape[-1]
    shapes = {"x (..., T)": x.shape[:-1], "b (..., T, K+1)": b.shape[:-2], "a (..., T, M)": a.shape[:-2]}
    if zi is not None:
        shapes |= {"zi.inputs (..., K)": zi.inputs.shape[:-1], "zi.outputs (..., M)": zi.outputs.shape[:-1]}
    lead = broadcast_leading(**shapes)
    rows = math.prod(lead)
    x_rows = numpy_rows(x, lead, rows, (T,))
    inputs, outputs = (None, None) if zi is None else zi
    past_x, past_y = numpy_rows(inputs, lead, rows, (K,), x_rows.dtype), numpy_rows(outputs, lead, rows, (M,), x_rows.dtype)
    w, inputs_zf = _fir_rows_direct(x_rows, _b_rows_numpy(b, lead), past_x)
    y, outputs_zf = allpole_rows_direct(w, a_rows_numpy(a, lead), past_y) if M else (w, past_y)
    return from_rows(y, lead), FilterState(from_rows(inputs_zf, lead), from_rows(outputs_zf, lead))


def _fir_torch(x: Tensor, b: Tensor, past: Tensor) -> Tensor:
    """The FIR in torch ops (any device and transform): ``x (..., T)``, ``b (..., T or 1, K+1)``,
    ``past (..., K)`` newest first."""
    K = b.shape[-1] - 1
    history = torch.cat([past.flip(-1), x], dim=-1)  # history[K + n] = x[n]
    if not x.shape[-1]:
        return history[..., :0]
    # windows[..., n, k] = x[n-k]: one product-sum over a strided view (vecdot conjugates its
    # first argument, hence b.conj(), a free view)
    return torch.linalg.vecdot(b.conj(), history.unfold(-1, K + 1, 1).flip(-1))


class _NumbaFIR(torch.autograd.Function):
    """Rows: x (R, T), b (Rb, Tb, K+1), past (R, K) -> w (R, T) with the Numba kernels. The backward
    is one fused pass; under create_graph it differentiates :func:`_fir_torch` instead."""

    @staticmethod
    def forward(x: Tensor, b: Tensor, past: Tensor) -> Tensor:
        from ..kernels import numba_fir

        x, b, past = (t.detach().contiguous() for t in (x, b, past))
        w = _empty(x.shape, x, "numba")
        numba_fir.fir_forward(x.numpy(), b.numpy(), past.numpy(), w.numpy())
        return w

    @staticmethod
    def setup_context(ctx, inputs, output):
        ctx.save_for_backward(*inputs)

    @staticmethod
    def backward(ctx, g: Tensor):
        x, b, past = ctx.saved_tensors
        if torch.is_grad_enabled():  # create_graph: the torch-op FIR's gradients, differentiable again
            compose = lambda x, b, past: (_fir_torch(x, b, past),)  # noqa: E731
            return composition_gradients(compose, (x, b, past), ctx.needs_input_grad, (g,), True)
        from ..kernels import numba_fir

        R = x.shape[0]
        x, b, past, g = (t.detach().contiguous() for t in (x, b, past, g))
        grad_x, grad_past = _empty(x.shape, x, "numba"), torch.empty_like(past)
        grad_b = x.new_empty(R, b.shape[1], b.shape[2])
        numba_fir.fir_adjoint(x.numpy(), b.numpy(), past.numpy(), g.numpy(), grad_x.numpy(), grad_past.numpy(), grad_b.numpy())
        return grad_x, (grad_b.sum(0, keepdim=True) if b.shape[0] == 1 and R > 1 else grad_b), grad_past


def lfilter(
    x: Tensor,
    b: Tensor,
    a: Tensor,
    zi: FilterState | Tensor | None = None,
    *,
    form: str = "df1",
    return_zf: bool = False,
    backend: str = "auto",
) -> Tensor | tuple[Tensor, FilterState | Tensor]:
    """Exact time-varying pole-zero filter ``y = (b / [1, a]) x``, differentiable in x, b, a, zi.

    ``form="df1"`` (direct form I, the default):
    ``y[n] = sum_{k=0..K} b[n, k] x[n-k] - sum_{i=1..M} a[n, i-1] y[n-i]``. With constant
    coefficients every form is ``scipy.signal.lfilter(b, [1, *a], x)``; with time-varying ones
    ``"df2"``, ``"tdf1"`` and ``"tdf2"`` differ (see :mod:`allpole_triton.systems.forms`).

    Args:
        x: input ``(..., T)``.
        b: numerator ``(..., T or 1, K+1)``.
        a: denominator without the leading 1, ``(..., T or 1, M)`` (the :func:`allpole`
            convention); ``M = 0`` gives a pure FIR filter.
        zi: initial state, zeros when ``None``: for ``df1`` a :class:`FilterState` with
            ``inputs (..., K)``, ``outputs (..., M)``; for ``df2`` (past w) and ``tdf2``
            (registers) a tensor ``(..., max(K, M))``; for ``tdf1`` a
            :class:`~allpole_triton.systems.forms.TransposedState` ``(poles (..., M), zeros (..., K))``.
        form: ``"df1"``, ``"df2"``, ``"tdf1"`` or ``"tdf2"``.
        return_zf: also return the final state (the next block's ``zi``, same type).
        backend: passed to :func:`allpole_triton.allpole`.
    Returns:
        ``y (*lead, T)`` or ``(y, zf)``; ``lead`` broadcasts the leading dims of all inputs.
    """
    x = _require_tensor("x", x, 1, "(..., T)")
    b = _require_tensor("b", b, 2, "(..., T or 1, K+1)")
    a = _require_tensor("a", a, 2, "(..., T or 1, M)")
    T, K, M = x.shape[-1], b.shape[-1] - 1, a.shape[-1]
    _check_time_dim("a", a, T, x)
    if form != "df1":
        return _other_form(form, x, b, a, zi, return_zf, backend)
    if zi is not None:
        zi = _check_state(zi, {"inputs": K, "outputs": M}, f"inputs (..., K={K}), outputs (..., M={M})")
    fields = (x, b, a) + (() if zi is None else tuple(zi))
    if T and K >= 0 and b.shape[-2] in (1, T) and backend in ("auto", "numba") and direct_numba(*fields):
        y, zf = _df1_direct(x, b, a, zi)
        return (y, zf) if return_zf else y
    w, inputs_zf = time_varying_fir(x, b, None if zi is None else zi.inputs, return_zf=True)
    if M == 0:
        y = w
        outputs_zf = w.new_zeros(*w.shape[:-1], 0)
    else:
        y, outputs_zf = allpole(w, a, None if zi is None else zi.outputs, return_zf=True, backend=backend)
    if not return_zf:
        return y
    lead = y.shape[:-1]
    return y, FilterState(inputs_zf.expand(*lead, K), outputs_zf.expand(*lead, M))


def _other_form(form: str, x: Tensor, b: Tensor, a: Tensor, zi, return_zf: bool, backend: str):
    from . import forms

    if form not in forms.FORMS:
        raise ValueError(f"form must be one of {forms.FORMS}, got {form!r}")
    T, K, M = x.shape[-1], b.shape[-1] - 1, a.shape[-1]
    if K < 0:
        raise ValueError(f"b must have at least one tap in its last dim, got shape {tuple(b.shape)}")
    _check_time_dim("b", b, T, x)
    if len({x.dtype, b.dtype, a.dtype}) > 1:
        raise TypeError(f"x, b and a must share one dtype, got {x.dtype}, {b.dtype}, {a.dtype}")
    N = max(K, M)
    if form == "tdf1":
        if zi is not None:
            zi = _check_state(zi, {"poles": M, "zeros": K}, f"poles (..., M={M}), zeros (..., K={K})",
                              forms.TransposedState, " for form='tdf1'")
    elif zi is not None:
        zi = _require_tensor("zi", zi, 1, f"(..., max(K, M)={N})")
        if zi.shape[-1] != N:
            raise ValueError(f"zi must have shape (..., max(K, M)={N}) for form={form!r}, got shape {tuple(zi.shape)}")
    if form == "df2":
        y, zf = forms.df2(x, b, a, zi, backend)
    else:
        y, zf = forms.transposed(form, x, b, a, zi, backend)
    if not return_zf:
        return y
    lead = y.shape[:-1]
    if isinstance(zf, forms.TransposedState):
        return y, forms.TransposedState(zf.poles.expand(*lead, M), zf.zeros.expand(*lead, K))
    return y, zf.expand(*lead, N)


def sosfilt(
    x: Tensor,
    sos: Tensor,
    zi: FilterState | None = None,
    *,
    return_zf: bool = False,
    backend: str = "auto",
) -> Tensor | tuple[Tensor, FilterState]:
    """Cascade of S exact time-varying biquads; each section is an :func:`lfilter` call.

    With constant coefficients this is ``scipy.signal.sosfilt(sos, x)``.

    Args:
        x: input ``(..., T)``.
        sos: ``(..., T or 1, S, 6)``, rows ``[b0, b1, b2, a0, a1, a2]`` as in scipy; each
            section is normalised by its ``a0`` per sample.
        zi: initial :class:`FilterState` with ``inputs (..., S, 2)``, ``outputs (..., S, 2)``
            (section s's inputs are section s-1's outputs); zeros when ``None``.
        return_zf: also return the final :class:`FilterState`.
        backend: passed to :func:`allpole_triton.allpole`.
    Returns:
        ``y (*lead, T)`` or ``(y, zf)``.
    """
    x = _require_tensor("x", x, 1, "(..., T)")
    sos = _require_tensor("sos", sos, 3, "(..., T or 1, S, 6)")
    if sos.shape[-1] != 6 or sos.shape[-2] < 1:
        raise ValueError(f"sos must have shape (..., T or 1, S, 6) with S >= 1, got shape {tuple(sos.shape)}")
    if sos.shape[-3] not in (1, x.shape[-1]):
        raise ValueError(
            f"sos's time dim must be T={x.shape[-1]} or 1, got sos of shape {tuple(sos.shape)} "
            f"for x of shape {tuple(x.shape)}"
        )
    S = sos.shape[-2]
    if zi is not None:
        _check_state(zi, {"inputs": 2, "outputs": 2}, "inputs (..., S, 2), outputs (..., S, 2)")
        for field in zi:
            if field.ndim < 2 or field.shape[-2] != S:
                raise ValueError(f"zi fields must have shape (..., S={S}, 2), got {tuple(field.shape)}")
    a0 = sos[..., 3:4]
    b, a = sos[..., :3] / a0, sos[..., 4:] / a0
    y, finals = x, []
    for s in range(S):
        section_zi = None if zi is None else FilterState(zi.inputs[..., s, :], zi.outputs[..., s, :])
        y, zf = lfilter(y, b[..., s, :], a[..., s, :], section_zi, return_zf=True, backend=backend)
        finals.append(zf)
    if not return_zf:
        return y
    lead = y.shape[:-1]
    return y, FilterState(
        torch.stack([f.inputs.expand(*lead, 2) for f in finals], dim=-2),
        torch.stack([f.outputs.expand(*lead, 2) for f in finals], dim=-2),
    )


def _time_invariant(b: Tensor, a: Tensor) -> tuple[Tensor, Tensor]:
    b = _require_tensor("b", b, 1, "(..., K+1)")
    a = _require_tensor("a", a, 1, "(..., M)")
    if b.shape[-1] < 1:
        raise ValueError(f"b must have at least one tap in its last dim, got shape {tuple(b.shape)}")
    if b.dtype != a.dtype:
        raise TypeError(f"b and a must share one dtype, got {b.dtype} and {a.dtype}")
    return b, a


def lfilter_zi(b: Tensor, a: Tensor) -> FilterState:
    """Initial state of a constant filter for the steady state of a unit step (scipy's
    ``lfilter_zi``, as a :class:`FilterState` for :func:`lfilter`): every past input is 1 and every
    past output is the DC gain ``sum(b) / (1 + sum(a))``. Scale it by ``x[..., :1]`` to start a
    signal at ``x[0]`` without a transient.

    Args:
        b: numerator ``(..., K+1)``; a: denominator without the leading 1, ``(..., M)`` (as in
            :func:`lfilter`; scipy's ``a`` is ``[1, *a]``). The filter must be stable at DC
            (``1 + sum(a) != 0``).
    Returns:
        ``FilterState(inputs (..., K), outputs (..., M))``, leading dims broadcast.
    """
    b, a = _time_invariant(b, a)
    lead = broadcast_leading(**{"b (..., K+1)": b.shape[:-1], "a (..., M)": a.shape[:-1]})
    gain = b.sum(-1) / (1 + a.sum(-1))  # H(z = 1)
    K, M = b.shape[-1] - 1, a.shape[-1]
    inputs = torch.ones(*lead, K, dtype=b.dtype, device=b.device)
    return FilterState(inputs, gain.unsqueeze(-1).expand(*lead, M).clone() if M else gain.new_zeros(*lead, 0))


def filtfilt(b: Tensor, a: Tensor, x: Tensor, padlen: int | None = None, *, backend: str = "auto") -> Tensor:
    """Zero-phase filtering of ``x (..., T)`` by a constant filter, forwards then backwards, as
    ``scipy.signal.filtfilt(b, [1, *a], x)`` (odd extension of ``padlen`` samples at each end,
    default ``3 * max(K + 1, M + 1)``, each pass started from the steady state of its first sample).
    Exact and differentiable in ``b``, ``a`` and ``x``.

    Args:
        b: ``(..., K+1)``; a: ``(..., M)`` without the leading 1; leading dims broadcast with x's.
        padlen: samples of odd extension at each end, ``0 <= padlen < T``.
    """
    b, a = _time_invariant(b, a)
    x = _require_tensor("x", x, 1, "(..., T)")
    T = x.shape[-1]
    edge = 3 * max(b.shape[-1], a.shape[-1] + 1) if padlen is None else int(padlen)
    if not 0 <= edge < T:
        raise ValueError(f"padlen must be in [0, T - 1] = [0, {T - 1}], got {edge} (x of shape {tuple(x.shape)})")
    if edge:
        first, last = x[..., :1], x[..., -1:]
        head, tail = x[..., 1 : edge + 1].flip(-1), x[..., T - 1 - edge : T - 1].flip(-1)
        x = torch.cat([2 * first - head, x, 2 * last - tail], dim=-1)
    zi = lfilter_zi(b, a)
    b_t, a_t = b.unsqueeze(-2), a.unsqueeze(-2)  # constant over time: (..., 1, K+1), (..., 1, M)

    def one_pass(signal: Tensor) -> Tensor:
        start = signal[..., :1]
        return lfilter(signal, b_t, a_t, FilterState(zi.inputs * start, zi.outputs * start), backend=backend)

    y = one_pass(x).flip(-1)
    y = one_pass(y).flip(-1)
    return y[..., edge : y.shape[-1] - edge]


def max_pole_radius(a: Tensor) -> Tensor:
    """Largest pole radius of ``1 + sum_i a[..., i-1] z^-i`` for every coefficient set, e.g. per
    sample of a time-varying ``a (..., T, M)``: ``(...)`` or ``(..., T)``, in ``a``'s real dtype.

    A frozen-time check: every value below 1 means each sample's filter is stable on its own, which
    for coefficients that move slowly is what keeps the time-varying filter bounded (fast changes can
    still make it grow). The eigenvalues of the companion matrix; no gradient.
    """
    a = _require_tensor("a", a, 1, "(..., M)")
    M = a.shape[-1]
    if M == 0:
        return a.new_zeros(a.shape[:-1], dtype=a.real.dtype if a.is_complex() else a.dtype)
    with torch.no_grad():
        companion = torch.zeros(*a.shape, M, dtype=a.dtype, device=a.device)
        companion[..., 0, :] = -a
        if M > 1:
            companion[..., 1:, :-1] = torch.eye(M - 1, dtype=a.dtype, device=a.device)
        return torch.linalg.eigvals(companion).abs().amax(-1)  # eigvals is complex of a's precision
