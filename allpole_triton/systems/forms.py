"""The direct forms of a time-varying pole-zero filter other than direct form I.

With constant coefficients the four direct forms are one filter; once coefficients change per
sample they differ in *when* each coefficient multiplies (``N = max(K, M)``, coefficients padded
with zeros to order N where a form needs one order):

- ``df2``: ``w[n] = x[n] - sum_i a[n, i-1] w[n-i]``, ``y[n] = sum_k b[n, k] w[n-k]``. State: the last
  N values of w, newest first (``zi[..., i] = w[-1-i]``), a tensor ``(..., N)``.
- ``tdf2`` (scipy's ``lfilter``): ``y[n] = b[n, 0] x[n] + s_1[n-1]``,
  ``s_i[n] = b[n, i] x[n] - a[n, i-1] y[n] + s_{i+1}[n-1]``. State: the registers
  ``zi[..., i-1] = s_i``, a tensor ``(..., N)``. Unrolled: each product keeps the coefficient of
  the time it was formed, ``y[n] = sum_k b[n-k, k] x[n-k] - sum_i a[n-i, i-1] y[n-i]``.
- ``tdf1``: the transposed all-pole part first, ``v[n] = x[n] + p_1[n-1]``,
  ``p_i[n] = p_{i+1}[n-1] - a[n, i-1] v[n]``, then the transposed FIR part,
  ``y[n] = b[n, 0] v[n] + z_1[n-1]``, ``z_k[n] = b[n, k] v[n] + z_{k+1}[n-1]``. State:
  :class:`TransposedState` ``(poles (..., M), zeros (..., K))``.

Every form is computed here as the exact, differentiable composition of :func:`allpole` and a
time-varying FIR with coefficients shifted along their diagonals (``shifted[n, j] =
c[n - j - offset, j]``), run N samples past the end so that the final registers come out as the
outputs of those extra samples. On plain CPU tensors the transposed forms' outputs and states come
from their register loops instead (``kernels/numba_forms.py``), so that a stream cut into blocks
reproduces one long call bit for bit. tdf1's gradients come from one fused pass back in time
(``kernels/numba_forms.tdf1_adjoint``); tdf2's, and tdf1's under ``create_graph``, from
differentiating the composition.
"""
from __future__ import annotations

import math
from typing import NamedTuple

import torch
import torch.nn.functional as F
from torch import Tensor

from .._shapes import broadcast_leading
from ..functional import allpole, coefficient_rows
from ..op import NUMBA_DTYPES, composition_gradients, readable_tensors
from .filters import time_varying_fir

FORMS = ("df1", "df2", "tdf1", "tdf2")


class TransposedState(NamedTuple):
    """Registers of the transposed direct form I: ``poles (..., M)`` (``p_1 .. p_M``) and
    ``zeros (..., K)`` (``z_1 .. z_K``); see :mod:`allpole_triton.systems.forms`."""

    poles: Tensor
    zeros: Tensor

    def detach(self) -> "TransposedState":
        return TransposedState(self.poles.detach(), self.zeros.detach())


def _pad_order(c: Tensor, size: int) -> Tensor:
    return F.pad(c, (0, size - c.shape[-1])) if c.shape[-1] < size else c


def shift_diagonals(c: Tensor, T: int, length: int, offset: int) -> Tensor:
    """``c (..., T or 1, P)`` -> ``(..., length, P)`` with ``out[n, j] = c[n - j - offset, j]``,
    zero where that time falls outside ``[0, T)`` (``length >= T``).

    One padded copy and a strided view: each tap's row is padded on the left by
    ``S = P - 1 + offset``, so in the (P, W) buffer entry ``(j, n + P - 1 - j)`` is ``out[n, j]``,
    i.e. the view has strides ``(W - 1, 1)`` over (tap, time)."""
    P = c.shape[-1]
    shift = P - 1 + offset
    width = length + shift
    rows = c.expand(*c.shape[:-2], T, P).movedim(-1, -2)  # (..., P, T)
    padded = F.pad(rows, (shift, width - shift - T)).contiguous()  # (..., P, width)
    view = padded.as_strided(
        (*padded.shape[:-2], P, length), (*padded.stride()[:-2], width - 1, 1), padded.storage_offset() + P - 1
    )
    return view.transpose(-1, -2)


def df2(x: Tensor, b: Tensor, a: Tensor, zi: Tensor | None, backend: str) -> tuple[Tensor, Tensor]:
    """Direct form II (see the module docstring); its state is raw past values of w, so streaming
    is bit-exact as it is for allpole and the FIR."""
    K, M = b.shape[-1] - 1, a.shape[-1]
    history = x.new_zeros(max(K, M)) if zi is None else zi
    # the new state is the last max(K, M) values of w: the FIR's state (K) or the all-pole's (M)
    w, w_zf = allpole(x, a, history[..., :M], return_zf=True, backend=backend) if M else (x, None)
    y, fir_zf = time_varying_fir(w, b, history[..., :K], return_zf=True)
    return y, fir_zf if K >= M else w_zf


def tdf2_composed(x: Tensor, b: Tensor, a: Tensor, zi: Tensor | None, backend: str) -> tuple[Tensor, Tensor]:
    """Transposed direct form II as allpole(FIR(x) + registers) with diagonally shifted coefficients."""
    T, N = x.shape[-1], max(b.shape[-1] - 1, a.shape[-1])
    length = T + N
    u = time_varying_fir(F.pad(x, (0, N)), shift_diagonals(_pad_order(b, N + 1), T, length, 0))
    if zi is not None:
        u = u + F.pad(zi, (0, length - N))
    if N:
        u = allpole(u, shift_diagonals(_pad_order(a, N), T, length, 1), backend=backend)
    return u[..., :T], u[..., T:]


def tdf1_composed(
    x: Tensor, b: Tensor, a: Tensor, zi: TransposedState | None, backend: str
) -> tuple[Tensor, TransposedState]:
    """Transposed direct form I: allpole(x + pole registers), then FIR(v) + zero registers, each with
    diagonally shifted coefficients."""
    T, K, M = x.shape[-1], b.shape[-1] - 1, a.shape[-1]
    v = F.pad(x, (0, M))
    if zi is not None:
        v = v + F.pad(zi.poles, (0, T))
    if M:
        v = allpole(v, shift_diagonals(a, T, T + M, 1), backend=backend)
    y = time_varying_fir(F.pad(v[..., :T], (0, K)), shift_diagonals(b, T, T + K, 0))
    if zi is not None:
        y = y + F.pad(zi.zeros, (0, T))
    return y[..., :T], TransposedState(v[..., T:], y[..., T:])


def _rows(t: Tensor, lead: tuple[int, ...], tail: int) -> Tensor:
    """``t (..., *tail dims)`` as contiguous ``(rows, *tail dims)`` over the broadcast ``lead``."""
    shape = t.shape[t.ndim - tail :]
    return t.expand(*lead, *shape).reshape(math.prod(lead), *shape).contiguous()


def _register_loop(form: str, x: Tensor, b: Tensor, a: Tensor, state: tuple[Tensor, ...]) -> tuple[Tensor, ...]:
    """The form's register loop on CPU (values only): returns ``(y, *final registers)``."""
    from ..kernels import numba_forms

    named = {"x": x.shape[:-1], "b": b.shape[:-2], "a": a.shape[:-2]} | {f"zi[{i}]": s.shape[:-1] for i, s in enumerate(state)}
    lead = broadcast_leading(**named)
    T = x.shape[-1]
    xr = _rows(x.detach(), lead, 1)
    registers = [_rows(s.detach(), lead, 1).clone() for s in state]
    y = torch.empty_like(xr)
    if form == "tdf2":
        N = registers[0].shape[-1]
        numba_forms.tdf2_forward(
            xr.numpy(), coefficient_rows(_pad_order(b.detach(), N + 1), lead).contiguous().numpy(),
            coefficient_rows(_pad_order(a.detach(), N), lead).contiguous().numpy(), registers[0].numpy(), y.numpy(),
        )
    else:
        v = torch.empty_like(xr)
        numba_forms.tdf1_forward(
            xr.numpy(), coefficient_rows(b.detach(), lead).contiguous().numpy(), coefficient_rows(a.detach(), lead).contiguous().numpy(),
            registers[0].numpy(), registers[1].numpy(), y.numpy(), v.numpy(),
        )
        registers.append(v)  # the all-pole part's output, for tdf1_adjoint
    return (y.reshape(*lead, T), *(r.reshape(*lead, r.shape[-1]) for r in registers))


def _tdf1_adjoint(x: Tensor, b: Tensor, a: Tensor, state: tuple[Tensor, Tensor], v: Tensor, grads) -> tuple:
    """Gradients of tdf1's ``(y, poles, zeros)`` with respect to ``(x, b, a, poles0, zeros0)`` in one
    Numba pass (:func:`kernels.numba_forms.tdf1_adjoint`), each summed down to its input's shape.
    ``v (*lead, T)`` is the forward's all-pole output."""
    from ..kernels import numba_forms

    lead, T = v.shape[:-1], v.shape[-1]
    R = math.prod(lead)
    M, K = a.shape[-1], b.shape[-1] - 1
    wanted = (T, M, K)
    g, poles_bar, zeros_bar = (
        v.new_zeros(*lead, size) if grad is None else grad.expand(*lead, size)
        for grad, size in zip(grads, wanted)
    )
    grad_x, grad_b, grad_a = v.new_empty(R, T), v.new_empty(R, b.shape[-2], K + 1), v.new_empty(R, a.shape[-2], M)
    poles_bar, zeros_bar = _rows(poles_bar, lead, 1).clone(), _rows(zeros_bar, lead, 1).clone()
    numba_forms.tdf1_adjoint(
        coefficient_rows(b.detach(), lead).contiguous().numpy(), coefficient_rows(a.detach(), lead).contiguous().numpy(),
        _rows(v, lead, 1).numpy(), _rows(g.detach(), lead, 1).numpy(), poles_bar.numpy(), zeros_bar.numpy(),
        grad_x.numpy(), grad_b.numpy(), grad_a.numpy(),
    )
    # per-row gradients, reduced to each input's shape (broadcast rows, and time for constant taps)
    return (
        grad_x.reshape(*lead, T).sum_to_size(x.shape), grad_b.reshape(*lead, *grad_b.shape[1:]).sum_to_size(b.shape),
        grad_a.reshape(*lead, *grad_a.shape[1:]).sum_to_size(a.shape),
        poles_bar.reshape(*lead, M).sum_to_size(state[0].shape), zeros_bar.reshape(*lead, K).sum_to_size(state[1].shape),
    )


class _RegisterForm(torch.autograd.Function):
    """Values from the register loop; gradients from tdf1's fused adjoint, or from the composition
    (the same function), which is also what a double backward differentiates."""

    @staticmethod
    def forward(ctx, form: str, backend: str, x: Tensor, b: Tensor, a: Tensor, *state: Tensor):
        ctx.form, ctx.backend = form, backend
        outputs = _register_loop(form, x, b, a, state)
        if form == "tdf1":  # the all-pole part's output v, which tdf1's adjoint reads
            *outputs, v = outputs
            ctx.save_for_backward(x, b, a, *state, v)
        else:
            ctx.save_for_backward(x, b, a, *state)
        return tuple(outputs)

    @staticmethod
    def backward(ctx, *grads):
        saved = ctx.saved_tensors
        create_graph = torch.is_grad_enabled()  # a double backward differentiates this backward
        if ctx.form == "tdf1":
            *saved, v = saved
            if not create_graph:  # one fused pass instead of differentiating the composition
                gradients = _tdf1_adjoint(*saved[:3], tuple(saved[3:]), v, grads)
                return (None, None, *(grad if need else None for grad, need in zip(gradients, ctx.needs_input_grad[2:])))
        compose = lambda x, b, a, *state: _composed(ctx.form, x, b, a, state, ctx.backend)  # noqa: E731
        return (None, None, *composition_gradients(compose, saved, ctx.needs_input_grad[2:], grads, create_graph))


def _composed(form: str, x: Tensor, b: Tensor, a: Tensor, state: tuple[Tensor, ...], backend: str) -> tuple[Tensor, ...]:
    if form == "tdf2":
        y, zf = tdf2_composed(x, b, a, state[0], backend)
        return y, zf
    y, zf = tdf1_composed(x, b, a, TransposedState(*state), backend)
    return y, zf.poles, zf.zeros


def transposed(
    form: str, x: Tensor, b: Tensor, a: Tensor, zi: Tensor | TransposedState | None, backend: str
) -> tuple[Tensor, Tensor | TransposedState]:
    """``tdf1`` / ``tdf2`` (see the module docstring): the register loop on plain CPU tensors,
    the composition elsewhere."""
    K, M = b.shape[-1] - 1, a.shape[-1]
    if form == "tdf2":
        N = max(K, M)
        state = (x.new_zeros(N) if zi is None else zi,)
    else:
        state = (x.new_zeros(M), x.new_zeros(K)) if zi is None else tuple(zi)
    if x.shape[-1] > 0 and readable_tensors(x, b, a, *state, types=(Tensor, torch.nn.Parameter), device="cpu", dtypes=NUMBA_DTYPES):
        y, *final = _RegisterForm.apply(form, backend, x, b, a, *state)
    else:
        y, *final = _composed(form, x, b, a, state, backend)
    return y, (final[0] if form == "tdf2" else TransposedState(*final))
