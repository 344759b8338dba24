"""Numba sample loops of the transposed direct forms (:mod:`allpole_triton.systems.forms`).

Their state is a set of registers, each a running sum. Filtering a block from a register state
must give exactly the samples of one long call, so the forward runs the registers themselves, in
the order a textbook loop does (no fastmath: one rounding per operation, as a plain loop), and a
stream cut anywhere reproduces the long call bit for bit. tdf1 has its adjoint here; tdf2's
gradients come from the differentiable composition in ``forms`` (same function, other rounding).

Coefficients arrive as ``(Rc, Tc, P)`` with ``Rc in {1, R}`` and ``Tc in {1, T}`` (broadcast dims
are read with step 0), states as ``(R, P)`` arrays updated in place.
"""
from __future__ import annotations

import numba as nb
import numpy as np

from .numba_cpu import _broadcast_steps, _put_grad

_FLAGS = dict(parallel=True, cache=True)


@nb.njit(**_FLAGS)
def tdf2_forward(x, b, a, s, y):  # pragma: no cover - compiled
    """Transposed direct form II, b ``(., ., N+1)`` and a ``(., ., N)`` padded to one order N:
    ``y = b0 x + s1``, ``s_i = b_i x - a_i y + s_{i+1}`` (``s_{N+1} = 0``)."""
    R, T = x.shape
    N = a.shape[2]
    rb, tb = _broadcast_steps(b)
    ra, ta = _broadcast_steps(a)
    for r in nb.prange(R):
        # the row's registers in a thread-local copy: the shared (R, N) array packs every row's
        # into one cache line, which the threads' per-sample writes would bounce between cores
        reg = s[r].copy()
        for n in range(T):
            bn = b[r * rb, n * tb]
            an = a[r * ra, n * ta]
            xn = x[r, n]
            yn = bn[0] * xn + reg[0] if N else bn[0] * xn
            for i in range(N - 1):
                reg[i] = bn[i + 1] * xn - an[i] * yn + reg[i + 1]
            if N:
                reg[N - 1] = bn[N] * xn - an[N - 1] * yn
            y[r, n] = yn
        s[r] = reg


@nb.njit(**_FLAGS)
def tdf1_forward(x, b, a, poles, zeros, y, v):  # pragma: no cover - compiled
    """Transposed direct form I: the all-pole part first, ``v = x + p1``, ``p_i = -a_i v + p_{i+1}``,
    then the FIR part, ``y = b0 v + z1``, ``z_k = b_k v + z_{k+1}``. Writes y and v ``(R, T)``
    (v for :func:`tdf1_adjoint`)."""
    R, T = x.shape
    M, K = a.shape[2], b.shape[2] - 1
    rb, tb = _broadcast_steps(b)
    ra, ta = _broadcast_steps(a)
    for r in nb.prange(R):
        p, z = poles[r].copy(), zeros[r].copy()  # thread-local registers (see tdf2_forward)
        for n in range(T):
            bn = b[r * rb, n * tb]
            an = a[r * ra, n * ta]
            vn = x[r, n] + p[0] if M else x[r, n]
            for i in range(M - 1):
                p[i] = p[i + 1] - an[i] * vn
            if M:
                p[M - 1] = -an[M - 1] * vn
            yn = bn[0] * vn + z[0] if K else bn[0] * vn
            for k in range(K - 1):
                z[k] = bn[k + 1] * vn + z[k + 1]
            if K:
                z[K - 1] = bn[K] * vn
            y[r, n] = yn
            v[r, n] = vn
        poles[r] = p
        zeros[r] = z


@nb.njit(**_FLAGS)
def tdf1_adjoint(b, a, v, g, poles_bar, zeros_bar, grad_x, grad_b, grad_a):  # pragma: no cover - compiled
    """Reverse of :func:`tdf1_forward`, one pass back in time per row. ``g (R, T)`` is the gradient
    of y; ``poles_bar (R, M)`` and ``zeros_bar (R, K)`` come in holding the gradients of the final
    registers and leave holding those of the initial ones. Writes ``grad_x (R, T)``,
    ``grad_b (R, Tb, K+1)`` and ``grad_a (R, Ta, M)`` per row (summed over time where Tb or Ta is
    1; the caller sums broadcast rows). With ``v`` the forward's all-pole output, step n gives
    ``v_bar = conj(b0) g + sum_k conj(b_k) z_bar_k - sum_i conj(a_i) p_bar_i`` (= grad_x[n]),
    ``grad_b[n, 0] = g conj(v)``, ``grad_b[n, k] = z_bar_k conj(v)``, ``grad_a[n, i-1] = -p_bar_i conj(v)``,
    then the registers' gradients move back one step: ``z_bar <- (g, z_bar_1, ..)``,
    ``p_bar <- (v_bar, p_bar_1, ..)``."""
    R, T = g.shape
    M, K = a.shape[2], b.shape[2] - 1
    rb, tb = _broadcast_steps(b)
    ra, ta = _broadcast_steps(a)
    b_summed = grad_b.shape[1] == 1 and T > 1
    a_summed = grad_a.shape[1] == 1 and T > 1
    for r in nb.prange(R):
        p_bar, z_bar = poles_bar[r].copy(), zeros_bar[r].copy()
        zero = np.zeros(1, dtype=grad_b.dtype)[0]  # a true 0 (g * 0 would spread a NaN)
        if b_summed:
            grad_b[r, 0, :] = zero
        if a_summed:
            grad_a[r, 0, :] = zero
        for n in range(T - 1, -1, -1):
            bn = b[r * rb, n * tb]
            an = a[r * ra, n * ta]
            gn = g[r, n]
            v_conj = np.conj(v[r, n])
            v_bar = np.conj(bn[0]) * gn
            for k in range(K):
                v_bar += np.conj(bn[k + 1]) * z_bar[k]
            for i in range(M):
                v_bar -= np.conj(an[i]) * p_bar[i]
            _put_grad(grad_b, r, n, 0, gn * v_conj, b_summed)
            for k in range(K):
                _put_grad(grad_b, r, n, k + 1, z_bar[k] * v_conj, b_summed)
            for i in range(M):
                _put_grad(grad_a, r, n, i, -(p_bar[i] * v_conj), a_summed)
            for k in range(K - 1, 0, -1):
                z_bar[k] = z_bar[k - 1]
            if K:
                z_bar[0] = gn
            for i in range(M - 1, 0, -1):
                p_bar[i] = p_bar[i - 1]
            if M:
                p_bar[0] = v_bar
            grad_x[r, n] = v_bar
        poles_bar[r] = p_bar
        zeros_bar[r] = z_bar
