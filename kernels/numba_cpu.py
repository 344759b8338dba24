"""Numba CPU kernels: the forward recursion and its adjoint, parallel over batch rows.

Each row is a sequential recursion, so rows are the only parallelism on the CPU. Terms of a
sample's sum are accumulated oldest-first and may be reassociated (``reassoc``), so only the
newest term sits on the loop-carried dependency chain; no ``nnan``/``ninf`` flags, so NaN and
Inf propagate exactly as in a plain loop.
"""
from __future__ import annotations

import numba as nb
import numpy as np

_FLAGS = dict(parallel=True, cache=True, fastmath={"reassoc", "contract"})


@nb.njit(**_FLAGS)
def allpole_forward(x, a, zi, y):  # pragma: no cover - compiled
    """Write y (B, T) from x (B, T), a (Ba, Ta, M), zi (B, M)."""
    B, T = x.shape
    Ba, Ta, M = a.shape
    row_step = 1 if Ba > 1 else 0
    time_step = 1 if Ta > 1 else 0
    for b in nb.prange(B):
        ab = b * row_step
        for n in range(T):
            an = n * time_step
            acc = x[b, n]
            # taps reaching before n = 0 read the initial state
            for i in range(M, n, -1):
                acc -= a[ab, an, i - 1] * zi[b, i - n - 1]
            for i in range(min(M, n), 0, -1):
                acc -= a[ab, an, i - 1] * y[b, n - i]
            y[b, n] = acc


@nb.njit(inline="always")
def _past(y, zi, b, k):  # pragma: no cover - compiled
    """y[b, k], reading the initial state for k < 0."""
    return y[b, k] if k >= 0 else zi[b, -1 - k]


@nb.njit(**_FLAGS)
def allpole_backward(grad_y, a, y, zi, grad_x, grad_zi, grad_a, need_grad_a):  # pragma: no cover
    """The adjoint recursion, run backwards in time, with grad_a fused into the same pass.

    lam[n] = grad_y[n] - sum_i conj(a[n+i, i-1]) * lam[n+i]   for n = T-1 .. -M,
    where lam[n] = grad_x[n] for n >= 0 and grad_zi[i] = lam[-1-i]; terms with n+i outside
    [0, T) vanish. grad_a[n, i-1] = -lam[n] * conj(y[n-i]) (y[n-i] from zi when n < i).
    grad_a has shape (B, Ta, M); with Ta = 1 it is summed over time here.
    """
    B, T = grad_y.shape
    Ba, Ta, M = a.shape
    row_step = 1 if Ba > 1 else 0
    time_step = 1 if Ta > 1 else 0
    for b in nb.prange(B):
        ab = b * row_step
        if need_grad_a and time_step == 0:
            for i in range(M):
                grad_a[b, 0, i] = 0
        for n in range(T - 1, -M - 1, -1):
            if n >= 0:
                acc = grad_y[b, n]
            else:
                grad_zi[b, -1 - n] = 0
                acc = grad_zi[b, -1 - n]  # a zero of the right dtype
            for i in range(min(M, T - 1 - n), max(1, -n) - 1, -1):
                acc -= np.conj(a[ab, (n + i) * time_step, i - 1]) * grad_x[b, n + i]
            if n < 0:
                grad_zi[b, -1 - n] = acc
                continue
            grad_x[b, n] = acc
            if need_grad_a:
                for i in range(1, M + 1):
                    term = acc * np.conj(_past(y, zi, b, n - i))
                    if time_step:
                        grad_a[b, n, i - 1] = -term
                    else:
                        grad_a[b, 0, i - 1] -= term
