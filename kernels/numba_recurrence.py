"""Numba kernel of the dense linear recurrence ``h[n] = A[n] h[n-1] + u[n]`` (see
:mod:`allpole_triton.recurrence`), parallel over rows.

``A (Ra, Ta, M, M)`` with ``Ra in {1, R}``, ``Ta in {1, T}`` (broadcast dims read with step 0),
``u (R, T, M)``, ``h0 (R, M)``; writes ``h (R, T, M)``. Each state component is ``u`` plus the
row's dot product with the previous state, accumulated in column order.
"""
from __future__ import annotations

import numba as nb
import numpy as np

from .numba_cpu import _broadcast_steps


@nb.njit(parallel=True, cache=True)
def dense_forward(A, u, h0, h):  # pragma: no cover - compiled
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
