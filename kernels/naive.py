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
