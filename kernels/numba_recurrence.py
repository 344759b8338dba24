"""Numba kernels of the dense linear recurrence ``h[n] = A[n] h[n-1] + u[n]`` (see
:mod:`allpole_triton.recurrence`) and of its adjoint, parallel over rows.

``A (Ra, Ta, M, M)`` with ``Ra in {1, R}``, ``Ta in {1, T}`` (broadcast dims read with step 0),
``u (R, T, M)``, ``h0 (R, M)``. Up to ``REGISTER_ORDER_MAX`` (half for complex) a row's state lives
in a tuple of registers (``zeros`` gives its length and type, one specialisation per order), so a
step is M^2 register FMAs with no memory round trip; above, a plain loop over a state in memory.
"""
from __future__ import annotations

import numba as nb
import numpy as np
from numba.cpython.unsafe.tuple import tuple_setitem

from .numba_cpu import PREFETCH_STEPS, _broadcast_steps, _prefetch_row, _put_grad, _state_tuple

_FLAGS = dict(parallel=True, cache=True, fastmath={"contract"})
REGISTER_ORDER_MAX = 8


def uses_registers(M: int, is_complex: bool) -> bool:
    return M <= REGISTER_ORDER_MAX // (2 if is_complex else 1)


def dense_forward(A, u, h0, h):
    """Write h (R, T, M)."""
    M = u.shape[2]
    if uses_registers(M, np.iscomplexobj(u)):
        _forward_registers(A, u, h0, h, (h.dtype.type(0),) * M)
    else:
        _forward_memory(A, u, h0, h)


def dense_adjoint(A, h0, h, grad_h, grad_A, grad_u, grad_h0, need_grad_A=True):
    """The adjoint of :func:`dense_forward` from the upstream gradient ``grad_h (R, T, M)``:
    ``lam[n] = A[n+1]^H lam[n+1] + grad_h[n]`` (lam[T-1] = grad_h[T-1]) written to ``grad_u``,
    ``grad_A[n] = lam[n] h[n-1]^H`` per row (``grad_A (R, Ta, M, M)``: summed over time when
    Ta = 1; the caller sums broadcast rows; neither read nor written without ``need_grad_A``)
    and ``grad_h0 = A[0]^H lam[0]``."""
    M = h.shape[2]
    zeros = (h.dtype.type(0),) * M
    if uses_registers(M, np.iscomplexobj(h)):
        _adjoint_registers(A, h0, h, grad_h, grad_A, grad_u, grad_h0, zeros, need_grad_A)
    else:
        _adjoint_memory(A, h0, h, grad_h, grad_A, grad_u, grad_h0, need_grad_A)


@nb.njit(inline="always")
def _matvec(An, state, drive_row, zeros):  # pragma: no cover - compiled
    """An @ state + drive_row as a tuple like ``zeros``."""
    out = zeros
    for i in range(len(zeros)):
        acc = drive_row[i]
        for j in range(len(zeros)):
            acc += An[i, j] * state[j]
        out = tuple_setitem(out, i, acc)
    return out


@nb.njit(inline="always")
def _adjoint_step(An, lam, drive_row, zeros):  # pragma: no cover - compiled
    """An^H @ lam + drive_row as a tuple like ``zeros``."""
    out = zeros
    for j in range(len(zeros)):
        acc = drive_row[j]
        for i in range(len(zeros)):
            acc += np.conj(An[i, j]) * lam[i]
        out = tuple_setitem(out, j, acc)
    return out


@nb.njit(**_FLAGS)
def _forward_registers(A, u, h0, h, zeros):  # pragma: no cover - compiled
    R, T, M = u.shape
    ra, ta = _broadcast_steps(A)
    for r in nb.prange(R):
        state = _state_tuple(h0, r, zeros)
        for n in range(T):
            if ta:
                _prefetch_row(A, r * ra, n + PREFETCH_STEPS)
            state = _matvec(A[r * ra, n * ta], state, u[r, n], zeros)
            for i in range(len(zeros)):
                h[r, n, i] = state[i]


@nb.njit(**_FLAGS)
def _forward_memory(A, u, h0, h):  # pragma: no cover - compiled
    R, T, M = u.shape
    ra, ta = _broadcast_steps(A)
    for r in nb.prange(R):
        previous = np.empty(M, dtype=h.dtype)
        for i in range(M):
            previous[i] = h0[r, i]
        for n in range(T):
            An = A[r * ra, n * ta]
            for i in range(M):
                acc = u[r, n, i]
                for j in range(M):
                    acc += An[i, j] * previous[j]
                h[r, n, i] = acc
            for i in range(M):
                previous[i] = h[r, n, i]


@nb.njit(inline="always")
def _previous_state(h0, h, r, n, i):  # pragma: no cover - compiled
    return h[r, n - 1, i] if n >= 1 else h0[r, i]


@nb.njit(inline="always")
def _add_grad_A(grad_A, h0, h, r, n, lam, summed):  # pragma: no cover - compiled
    """grad_A[r, n] = lam[n] h[n-1]^H (lam a tuple or an array), or added to grad_A[r, 0] when
    ``summed`` (constant A; the caller zeroes it first)."""
    for i in range(len(lam)):
        for j in range(len(lam)):
            term = lam[i] * np.conj(_previous_state(h0, h, r, n, j))
            if summed:
                grad_A[r, 0, i, j] += term
            else:
                grad_A[r, n, i, j] = term


@nb.njit(**_FLAGS)
def _adjoint_registers(A, h0, h, grad_h, grad_A, grad_u, grad_h0, zeros, need_grad_A):  # pragma: no cover
    R, T, M = h.shape
    ra, ta = _broadcast_steps(A)
    summed = grad_A.shape[1] == 1 and T > 1  # constant A: grad_A sums lam[n] h[n-1]^H over time
    for r in nb.prange(R):
        if summed and need_grad_A:
            for i in range(M):
                for j in range(M):
                    grad_A[r, 0, i, j] = 0
        lam = zeros
        for n in range(T - 1, -1, -1):
            if ta:
                _prefetch_row(A, r * ra, n - PREFETCH_STEPS)
            if n == T - 1:  # lam[T-1] = grad_h[T-1]: the adjoint step of a zero lam
                for i in range(len(zeros)):
                    lam = tuple_setitem(lam, i, grad_h[r, n, i])
            else:
                lam = _adjoint_step(A[r * ra, (n + 1) * ta], lam, grad_h[r, n], zeros)
            for i in range(len(zeros)):
                grad_u[r, n, i] = lam[i]
            if need_grad_A:
                _add_grad_A(grad_A, h0, h, r, n, lam, summed)
        first = _adjoint_step(A[r * ra, 0], lam, zeros, zeros)
        for j in range(len(zeros)):
            grad_h0[r, j] = first[j]


@nb.njit(**_FLAGS)
def _adjoint_memory(A, h0, h, grad_h, grad_A, grad_u, grad_h0, need_grad_A):  # pragma: no cover - compiled
    R, T, M = h.shape
    ra, ta = _broadcast_steps(A)
    summed = grad_A.shape[1] == 1 and T > 1
    for r in nb.prange(R):
        lam = np.zeros(M, dtype=h.dtype)
        zero = lam[0]
        if summed and need_grad_A:
            for i in range(M):
                for j in range(M):
                    grad_A[r, 0, i, j] = 0
        for n in range(T - 1, -1, -1):
            if n == T - 1:
                for i in range(M):
                    grad_u[r, n, i] = grad_h[r, n, i]
            else:
                An = A[r * ra, (n + 1) * ta]
                for j in range(M):
                    acc = grad_h[r, n, j]
                    for i in range(M):
                        acc += np.conj(An[i, j]) * lam[i]
                    grad_u[r, n, j] = acc
            for i in range(M):
                lam[i] = grad_u[r, n, i]
            if need_grad_A:
                _add_grad_A(grad_A, h0, h, r, n, lam, summed)
        An = A[r * ra, 0]
        for j in range(M):
            acc = zero
            for i in range(M):
                acc += np.conj(An[i, j]) * lam[i]
            grad_h0[r, j] = acc


# The single-input, single-output state-space model of allpole_triton.recurrence.state_space,
#     y[n] = C[n] . h[n-1],    h[n] = A[n] h[n-1] + B[n] x[n],
# fused: B x and C h are formed in the recurrence's registers instead of as (R, T, M) tensors
# around it. B, C are (Rb, Tb, M) / (Rc, Tc, M) (broadcast dims read with step 0); x, y (R, T).
# Register states only (uses_registers); other orders take the unfused path.


def state_space_forward(A, x, B, C, h0, h, y):
    """Write the states h (R, T, M) and the outputs y (R, T)."""
    _ss_forward(A, x, B, C, h0, h, y, (h.dtype.type(0),) * h.shape[2])


def state_space_adjoint(A, x, B, C, h0, h, grad_y, grad_final, grad_A, grad_x, grad_B, grad_C, grad_h0, needs):
    """The adjoint of :func:`state_space_forward` from the gradients of y (R, T) and of the final
    state h[T-1] (R, M): with mu[T-1] = grad_final and mu[n-1] = A[n]^H mu[n] + conj(C[n]) grad_y[n],
    ``grad_x[n] = B[n]^H mu[n]``, ``grad_A[n] = mu[n] h[n-1]^H``, ``grad_B[n] = mu[n] conj(x[n])``,
    ``grad_C[n] = grad_y[n] conj(h[n-1])`` and ``grad_h0 = mu[-1]``. The per-row coefficient
    gradients are summed over time where their time dim is 1 (the caller sums broadcast rows);
    ``needs`` = (A, B, C) says which to form (the others are not touched)."""
    _ss_adjoint(A, x, B, C, h0, h, grad_y, grad_final, grad_A, grad_x, grad_B, grad_C, grad_h0,
                needs[0], needs[1], needs[2], (h.dtype.type(0),) * h.shape[2])


@nb.njit(inline="always")
def _scaled(row, scale, zeros):  # pragma: no cover - compiled
    """row * scale as a tuple like ``zeros``."""
    out = zeros
    for i in range(len(zeros)):
        out = tuple_setitem(out, i, row[i] * scale)
    return out


@nb.njit(**_FLAGS)
def _ss_forward(A, x, B, C, h0, h, y, zeros):  # pragma: no cover - compiled
    R, T = x.shape
    ra, ta = _broadcast_steps(A)
    rb, tb = _broadcast_steps(B)
    rc, tc = _broadcast_steps(C)
    for r in nb.prange(R):
        state = _state_tuple(h0, r, zeros)
        for n in range(T):
            if ta:
                _prefetch_row(A, r * ra, n + PREFETCH_STEPS)
            c = C[r * rc, n * tc]
            out = c[0] * state[0]
            for i in range(1, len(zeros)):
                out += c[i] * state[i]
            y[r, n] = out
            state = _matvec(A[r * ra, n * ta], state, _scaled(B[r * rb, n * tb], x[r, n], zeros), zeros)
            for i in range(len(zeros)):
                h[r, n, i] = state[i]


@nb.njit(**_FLAGS)
def _ss_adjoint(A, x, B, C, h0, h, grad_y, grad_final, grad_A, grad_x, grad_B, grad_C, grad_h0,
                need_A, need_B, need_C, zeros):  # pragma: no cover - compiled
    R, T = x.shape
    M = len(zeros)
    ra, ta = _broadcast_steps(A)
    rb, tb = _broadcast_steps(B)
    rc, tc = _broadcast_steps(C)
    A_summed = grad_A.shape[1] == 1 and T > 1
    B_summed = grad_B.shape[1] == 1 and T > 1
    C_summed = grad_C.shape[1] == 1 and T > 1
    for r in nb.prange(R):
        zero = zeros[0]
        if need_A and A_summed:
            for i in range(M):
                for j in range(M):
                    grad_A[r, 0, i, j] = zero
        if need_B and B_summed:
            for i in range(M):
                grad_B[r, 0, i] = zero
        if need_C and C_summed:
            for i in range(M):
                grad_C[r, 0, i] = zero
        mu = _state_tuple(grad_final, r, zeros)
        for n in range(T - 1, -1, -1):
            if ta:
                _prefetch_row(A, r * ra, n - PREFETCH_STEPS)
            b = B[r * rb, n * tb]
            gx = np.conj(b[0]) * mu[0]
            for i in range(1, M):
                gx += np.conj(b[i]) * mu[i]
            grad_x[r, n] = gx
            if need_A:
                _add_grad_A(grad_A, h0, h, r, n, mu, A_summed)
            if need_B:
                x_conj = np.conj(x[r, n])
                for i in range(M):
                    _put_grad(grad_B, r, n, i, mu[i] * x_conj, B_summed)
            g = grad_y[r, n]
            if need_C:
                for i in range(M):
                    _put_grad(grad_C, r, n, i, g * np.conj(_previous_state(h0, h, r, n, i)), C_summed)
            c = C[r * rc, n * tc]
            drive = zeros
            for i in range(M):
                drive = tuple_setitem(drive, i, np.conj(c[i]) * g)
            mu = _adjoint_step(A[r * ra, n * ta], mu, drive, zeros)
        for i in range(M):
            grad_h0[r, i] = mu[i]
