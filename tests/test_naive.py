"""The plain references of kernels/naive.py against autograd through the plain forward loop,
including the state-adjoint backward (the blueprint of a backward that reuses the forward's chunk
maps): grads from v[n] = e1 grad_y[n] + C[n+1]^H v[n+1], and chunk by chunk through Phi_k^H."""
from __future__ import annotations

import pytest
import torch

from allpole_triton.kernels.naive import (
    allpole_backward_naive,
    allpole_naive,
    allpole_state_adjoint_chunked,
    allpole_state_adjoint_naive,
    chunk_maps,
)

from conftest import random_signal, stable_coefficients


def autograd_grads(x, a, zi, grad_y):
    x, a, zi = (t.clone().requires_grad_() for t in (x, a, zi))
    allpole_naive(x, a, zi).backward(grad_y)
    return x.grad, zi.grad, a.grad


CASES = [(1, 7, torch.float64, "T"), (2, 23, torch.float64, "T"), (4, 40, torch.float64, "T"),
         (3, 19, torch.complex128, "T"), (2, 17, torch.float64, 1)]


@pytest.mark.parametrize("M, T, dtype, Ta", CASES)
def test_state_adjoint_matches_autograd(M, T, dtype, Ta):
    a = stable_coefficients((2,), T if Ta == "T" else 1, M, dtype=dtype, seed=M, radius=0.999)
    x, zi, g = (random_signal(s, dtype, seed=k) for k, s in enumerate([(2, T), (2, M), (2, T)]))
    y = allpole_naive(x, a, zi)
    expected = autograd_grads(x, a, zi, g)
    for name, got, scalar, want in zip(("grad_x", "grad_zi", "grad_a"), allpole_state_adjoint_naive(g, a, y, zi),
                                        allpole_backward_naive(g, a, y, zi), expected):
        torch.testing.assert_close(got, want, rtol=1e-10, atol=1e-10, msg=name)
        torch.testing.assert_close(scalar, want, rtol=1e-10, atol=1e-10, msg=name)


@pytest.mark.parametrize("M, T, dtype, Ta", CASES)
@pytest.mark.parametrize("starts", [[0], [0, 5], [0, 3, 4, 11], [0, 1, 2, 6]], ids=["one", "two", "uneven", "short"])
def test_chunked_state_adjoint_reuses_the_forward_maps(M, T, dtype, Ta, starts):
    """Each backward chunk's homogeneous map is the forward chunk map's conjugate transpose (the
    chunks shifted one step back), so the backward needs one driven recursion per chunk."""
    starts = [s for s in starts if s < T]
    a = stable_coefficients((2,), T if Ta == "T" else 1, M, dtype=dtype, seed=M + 1, radius=0.999)
    x, zi, g = (random_signal(s, dtype, seed=k + 3) for k, s in enumerate([(2, T), (2, M), (2, T)]))
    y = allpole_naive(x, a, zi)
    maps = chunk_maps(a.expand(2, *a.shape[1:]), T, starts)
    # the maps are the forward's: the state after a chunk from the state before it, at zero input
    for k, (s, e) in enumerate(zip(starts, starts[1:] + [T])):
        state = random_signal((2, M), dtype, seed=k + 9)
        zero = torch.zeros(2, e - s, dtype=dtype)
        ran = allpole_naive(zero, a[:, s:e] if Ta == "T" else a, state).flip(-1)[:, :M]
        torch.testing.assert_close((maps[:, k] @ state.unsqueeze(-1)).squeeze(-1)[:, : min(M, e - s)],
                                   ran[:, : min(M, e - s)], rtol=1e-10, atol=1e-10)
    expected = autograd_grads(x, a, zi, g)
    for name, got, want in zip(("grad_x", "grad_zi", "grad_a"), allpole_state_adjoint_chunked(g, a, y, zi, maps, starts),
                               expected):
        torch.testing.assert_close(got, want, rtol=1e-10, atol=1e-10, msg=name)
