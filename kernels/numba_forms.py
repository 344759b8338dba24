"""Numba sample loops of the transposed direct forms (:mod:`allpole_triton.systems.forms`).

Their state is a set of registers, each a running sum. Filtering a block from a register state
must give exactly the samples of one long call, so the forward runs the registers themselves, in
the order a textbook loop does (no fastmath: one rounding per operation, as a plain loop), and a
stream cut anywhere reproduces the long call bit for bit. Gradients come from the differentiable
composition in ``forms`` (same function, other rounding).

Coefficients arrive as ``(Rc, Tc, P)`` with ``Rc in {1, R}`` and ``Tc in {1, T}`` (broadcast dims
are read with step 0), states as ``(R, P)`` arrays updated in place.
"""
from __future__ import annotations

import numba as nb

from .numba_cpu import _broadcast_steps

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
def tdf1_forward(x, b, a, poles, zeros, y):  # pragma: no cover - compiled
    """Transposed direct form I: the all-pole part first, ``v = x + p1``, ``p_i = -a_i v + p_{i+1}``,
    then the FIR part, ``y = b0 v + z1``, ``z_k = b_k v + z_{k+1}``."""
    R, T = x.shape
    M, K = a.shape[2], b.shape[2] - 1
    rb, tb = _broadcast_steps(b)
    ra, ta = _broadcast_steps(a)
    for r in nb.prange(R):
        p, z = poles[r].copy(), zeros[r].copy()  # thread-local registers (see tdf2_forward)
        for n in range(T):
            bn = b[r * rb, n * tb]
            an = a[r * ra, n * ta]
            v = x[r, n] + p[0] if M else x[r, n]
            for i in range(M - 1):
                p[i] = p[i + 1] - an[i] * v
            if M:
                p[M - 1] = -an[M - 1] * v
            yn = bn[0] * v + z[0] if K else bn[0] * v
            for k in range(K - 1):
                z[k] = bn[k + 1] * v + z[k + 1]
            if K:
                z[K - 1] = bn[K] * v
            y[r, n] = yn
        poles[r] = p
        zeros[r] = z
