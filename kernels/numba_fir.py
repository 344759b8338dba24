"""Numba kernels of the time-varying FIR ``w[n] = sum_k b[n, k] x[n-k]`` and of its adjoint, parallel
over rows (see ``allpole_triton.systems.filters.time_varying_fir``).

``x (R, T)``, taps ``b (Rb, Tb, K+1)`` with ``Rb in {1, R}``, ``Tb in {1, T}`` (broadcast dims read
with step 0), ``past (R, K)`` the inputs before the block, newest first (``past[r, i] = x[r, -1-i]``).
Terms are summed tap by tap from k = 0, one rounding per operation (no fastmath), so a block's
samples do not depend on where a stream was cut.
"""
from __future__ import annotations

import numba as nb
import numpy as np

from .numba_cpu import _broadcast_steps, _put_grad

_FLAGS = dict(parallel=True, cache=True)


@nb.njit(inline="always")
def _input(x, past, r, n):  # pragma: no cover - compiled
    """x[r, n], reaching into ``past`` for n < 0."""
    return x[r, n] if n >= 0 else past[r, -1 - n]


@nb.njit(**_FLAGS)
def fir_forward(x, b, past, w):  # pragma: no cover - compiled
    R, T = x.shape
    taps = b.shape[2]
    rb, tb = _broadcast_steps(b)
    for r in nb.prange(R):
        for n in range(T):
            coeffs = b[r * rb, n * tb]
            acc = coeffs[0] * x[r, n]
            if n >= taps - 1:  # the whole window inside the block: no branch per tap
                for k in range(1, taps):
                    acc += coeffs[k] * x[r, n - k]
            else:
                for k in range(1, taps):
                    acc += coeffs[k] * _input(x, past, r, n - k)
            w[r, n] = acc


@nb.njit(**_FLAGS)
def fir_adjoint(x, b, past, g, grad_x, grad_past, grad_b):  # pragma: no cover - compiled
    """From the upstream gradient ``g (R, T)``: ``grad_x[m] = sum_k g[m+k] conj(b[m+k, k])``,
    ``grad_past[i]`` likewise for x[-1-i], and ``grad_b[r, n, k] = g[n] conj(x[n-k])`` per row
    (``grad_b (R, Tb, K+1)``: summed over time when Tb = 1; the caller sums broadcast rows)."""
    R, T = x.shape
    taps = b.shape[2]
    K = taps - 1
    rb, tb = _broadcast_steps(b)
    summed = grad_b.shape[1] == 1 and T > 1
    for r in nb.prange(R):
        zero = np.zeros(1, dtype=grad_b.dtype)[0]  # a true 0 (not g * 0: a NaN in g stays where it is)
        for m in range(-K, T):
            acc = zero
            for k in range(taps):
                n = m + k
                if 0 <= n < T:
                    acc += g[r, n] * np.conj(b[r * rb, n * tb, k])
            if m >= 0:
                grad_x[r, m] = acc
            else:
                grad_past[r, -1 - m] = acc
        if summed:
            for k in range(taps):
                grad_b[r, 0, k] = zero
        for n in range(T):
            for k in range(taps):
                _put_grad(grad_b, r, n, k, g[r, n] * np.conj(_input(x, past, r, n - k)), summed)
