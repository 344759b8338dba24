"""Plain torch reference: one step per sample, differentiable by ordinary autograd."""
from __future__ import annotations

import torch
from torch import Tensor


def allpole_naive(x: Tensor, a: Tensor, zi: Tensor) -> Tensor:
    """y[n] = x[n] - sum_{i=1..M} a[n, i-1] * y[n-i], with zi[:, i] = y[-1-i].

    Args:
        x: ``(B, T)``.
        a: ``(Ba, Ta, M)`` with ``Ba in {1, B}``, ``Ta in {1, T}``.
        zi: ``(B, M)``.
    Returns:
        y: ``(B, T)``.
    """
    T = x.shape[-1]
    state = zi  # state[:, i] = y[n-1-i]
    ys = []
    for n in range(T):
        a_n = a[:, n if a.shape[1] > 1 else 0]
        y_n = x[:, n] - (a_n * state).sum(-1)
        ys.append(y_n)
        state = torch.cat([y_n.unsqueeze(-1), state[:, :-1]], dim=-1)
    if not ys:
        return x.clone()
    return torch.stack(ys, dim=-1)


def allpole_backward_naive(grad_y: Tensor, a: Tensor, y: Tensor, zi: Tensor) -> tuple[Tensor, Tensor, Tensor]:
    """The adjoint recursion as a plain loop backwards in time (the reference for the kernels'
    backward passes on sequences too long to differentiate through :func:`allpole_naive`).

    lam[n] = grad_y[n] - sum_{i=1..M} conj(a[n+i, i-1]) lam[n+i] for n = T-1 .. -M, with terms
    outside [0, T) zero. Returns grad_x = lam[0..T-1], grad_zi[i] = lam[-1-i] and grad_a
    ``(B, Ta, M)`` with grad_a[n, i-1] = -lam[n] conj(y[n-i]) (summed over time when Ta = 1).
    """
    B, T = grad_y.shape
    Ta, M = a.shape[-2:]
    a = a.expand(B, Ta, M)
    at = (lambda n: a[:, n]) if Ta > 1 else (lambda n: a[:, 0])
    lam = {}
    for n in range(T - 1, -M - 1, -1):
        value = grad_y[:, n] if n >= 0 else torch.zeros_like(grad_y[:, 0])
        for i in range(1, M + 1):
            if 0 <= n + i < T:
                value = value - at(n + i)[:, i - 1].conj() * lam[n + i]
        lam[n] = value
    grad_x = torch.stack([lam[n] for n in range(T)], -1) if T else grad_y.clone()
    grad_zi = torch.stack([lam[-1 - i] for i in range(M)], -1)
    history = torch.cat([zi.flip(-1), y], -1)  # history[k] = y[k - M]
    past = torch.stack([history[:, M - i : M - i + T] for i in range(1, M + 1)], -1)  # y[n-i]
    grad_a = -grad_x.unsqueeze(-1) * past.conj()
    if Ta == 1:
        grad_a = grad_a.sum(1, keepdim=True)
    return grad_x, grad_zi, grad_a
