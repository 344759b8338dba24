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


def _row_at(a: Tensor, B: int):
    """n -> the coefficient row a[:, n] for B rows (``(B, M)``), constant coefficients (Ta = 1) at every n."""
    a = a.expand(B, *a.shape[-2:])
    return (lambda n: a[:, n]) if a.shape[1] > 1 else (lambda n: a[:, 0])


def _grad_a(grad_x: Tensor, y: Tensor, zi: Tensor, Ta: int) -> Tensor:
    """grad_a[n, i-1] = -grad_x[n] conj(y[n-i]) (y[-1-i] = zi[i]), summed over time when Ta = 1."""
    M, T = zi.shape[-1], y.shape[-1]
    history = torch.cat([zi.flip(-1), y], -1)  # history[k] = y[k - M]
    past = torch.stack([history[:, M - i : M - i + T] for i in range(1, M + 1)], -1)  # y[n-i]
    grad_a = -grad_x.unsqueeze(-1) * past.conj()
    return grad_a.sum(1, keepdim=True) if Ta == 1 else grad_a


def allpole_backward_naive(grad_y: Tensor, a: Tensor, y: Tensor, zi: Tensor) -> tuple[Tensor, Tensor, Tensor]:
    """The adjoint recursion as a plain loop backwards in time (the reference for the kernels'
    backward passes on sequences too long to differentiate through :func:`allpole_naive`).

    lam[n] = grad_y[n] - sum_{i=1..M} conj(a[n+i, i-1]) lam[n+i] for n = T-1 .. -M, with terms
    outside [0, T) zero. Returns grad_x = lam[0..T-1], grad_zi[i] = lam[-1-i] and grad_a
    ``(B, Ta, M)`` with grad_a[n, i-1] = -lam[n] conj(y[n-i]) (summed over time when Ta = 1).
    """
    B, T = grad_y.shape
    Ta, M = a.shape[-2:]
    at = _row_at(a, B)
    lam = {}
    for n in range(T - 1, -M - 1, -1):
        value = grad_y[:, n] if n >= 0 else torch.zeros_like(grad_y[:, 0])
        for i in range(1, M + 1):
            if 0 <= n + i < T:
                value = value - at(n + i)[:, i - 1].conj() * lam[n + i]
        lam[n] = value
    grad_x = torch.stack([lam[n] for n in range(T)], -1) if T else grad_y.clone()
    grad_zi = torch.stack([lam[-1 - i] for i in range(M)], -1)
    return grad_x, grad_zi, _grad_a(grad_x, y, zi, Ta)


def _adjoint_step(v: Tensor, a_next: Tensor | None, g: Tensor | None) -> Tensor:
    """v <- e1 g + C^T v for the companion matrix C of the coefficient row ``a_next`` (conjugated:
    the adjoint of a complex filter): entry j becomes v[j+1] - conj(a_next[j]) v[0]."""
    w = torch.cat([v[:, 1:], torch.zeros_like(v[:, :1])], -1)
    if a_next is not None:
        w = w - a_next.conj() * v[:, :1]
    if g is not None:
        w = torch.cat([w[:, :1] + g.unsqueeze(-1), w[:, 1:]], -1)
    return w


def allpole_state_adjoint_naive(grad_y: Tensor, a: Tensor, y: Tensor, zi: Tensor) -> tuple[Tensor, Tensor, Tensor]:
    """:func:`allpole_backward_naive`'s results from the adjoint of the state recursion instead of
    the scalar adjoint filter: v[n] = dL/ds[n] for the state s[n] = (y[n], ..., y[n-M+1]) obeys

        v[n] = e1 grad_y[n] + C[n+1]^T v[n+1],   v[T] = 0,

    so grad_x[n] = v[n][0] and grad_zi = C[0]^T v[0] (zi is s[-1]). Step n reads the coefficient
    row a[n+1, :] whole, where the scalar adjoint filter reads the diagonal a[n+i, i-1], and the
    pass takes T steps, not T + M. Over a stretch of steps its map is the transpose of the forward
    map over the same companion matrices (:func:`chunk_maps`), which is what lets a backward pass
    reuse the forward's chunk summaries (tests/test_naive.py checks both against autograd)."""
    B, T = grad_y.shape
    Ta, M = a.shape[-2:]
    row = _row_at(a, B)
    v = torch.zeros(B, M, dtype=grad_y.dtype, device=grad_y.device)
    grad_x = torch.empty_like(grad_y)
    for n in range(T - 1, -1, -1):
        v = _adjoint_step(v, row(n + 1) if n + 1 < T else None, grad_y[:, n])
        grad_x[:, n] = v[:, 0]
    grad_zi = _adjoint_step(v, row(0), None) if T else v
    return grad_x, grad_zi, _grad_a(grad_x, y, zi, Ta)


def chunk_maps(a: Tensor, T: int, starts: list[int]) -> Tensor:
    """The forward state maps Phi_k = C[e_k - 1] ... C[s_k] over chunks [s_k, e_k) (``starts`` plus
    T as the last end): s[e_k - 1] = Phi_k s[s_k - 1] + (zero-state part). ``(B, K, M, M)``."""
    B, Ta, M = a.shape
    row = _row_at(a, B)
    eye = torch.eye(M, dtype=a.dtype, device=a.device).expand(B, M, M)
    maps = []
    for s, e in zip(starts, starts[1:] + [T]):
        phi = eye
        for n in range(s, e):
            companion = torch.cat([-row(n).unsqueeze(1), eye[:, :-1]], 1)  # first row -a[n], then the shift
            phi = companion @ phi
        maps.append(phi)
    return torch.stack(maps, 1)


def allpole_state_adjoint_chunked(grad_y: Tensor, a: Tensor, y: Tensor, zi: Tensor, maps: Tensor,
                                  starts: list[int]) -> tuple[Tensor, Tensor, Tensor]:
    """:func:`allpole_state_adjoint_naive` chunk-parallel, the homogeneous part taken from the
    forward's chunk ``maps`` (:func:`chunk_maps` over chunks beginning at ``starts``, starts[0] = 0):
    the backward chunk k covers steps n in [s_k - 1, e_k - 1) (v at n = s_k - 1 is C[s_k]^T v[s_k]
    plus grad_y[s_k - 1]), so its map is C[s_k]^T ... C[e_k - 1]^T = Phi_k^T (conjugate transpose).
    Per chunk one driven recursion from zero (its zero-state response), a reverse scan of the chunk
    carries through Phi_k^H, and each chunk finished from its carry: the backward's summary runs
    one recursion per chunk where the scalar adjoint filter's runs M + 1."""
    B, T = grad_y.shape
    Ta, M = a.shape[-2:]
    row = _row_at(a, B)
    ends = starts[1:] + [T]

    def run(v, first, last):  # steps n = last-1 .. first, each from the row after it; grad_y outside [0, T) is 0
        out = {}
        for n in range(last - 1, first - 1, -1):
            v = _adjoint_step(v, row(n + 1) if n + 1 < T else None, grad_y[:, n] if n >= 0 else None)
            out[n] = v[:, 0]
        return v, out

    # chunk k runs steps n = e_k - 2 .. s_k - 1; the last one also n = T - 1, whose v[T] is 0
    bounds = [(s - 1, e - 1) for s, e in zip(starts, ends)]
    bounds[-1] = (bounds[-1][0], T)
    zero = torch.zeros(B, M, dtype=grad_y.dtype, device=grad_y.device)
    driven = [run(zero, first, last)[0] for first, last in bounds]  # parallel over chunks
    # v entering chunk k (at n = e_k - 1) is the one chunk k+1 left: 0 for the last chunk
    entering = [zero] * len(starts)
    for k in range(len(starts) - 2, -1, -1):
        through = maps[:, k + 1].conj().transpose(-1, -2) @ entering[k + 1].unsqueeze(-1)
        entering[k] = through.squeeze(-1) + driven[k + 1]
    grad_x = torch.empty_like(grad_y)
    grad_zi = zero
    for k, (first, last) in enumerate(bounds):  # parallel over chunks
        v, out = run(entering[k], first, last)
        for n, value in out.items():
            if n >= 0:
                grad_x[:, n] = value
        if k == 0:
            grad_zi = v  # v at n = -1: C[0]^H v[0]
    return grad_x, grad_zi, _grad_a(grad_x, y, zi, Ta)
