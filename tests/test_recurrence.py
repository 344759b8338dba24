"""linear_recurrence: dense and diagonal transitions against a float64 loop, gradients to second
order, shapes and errors."""
from __future__ import annotations

import numpy as np
import pytest
import torch

from allpole_triton.recurrence import linear_recurrence


def loop(A: np.ndarray, u: np.ndarray, h0: np.ndarray, diagonal: bool = False) -> np.ndarray:
    """Rows: A (R or 1, T or 1, M[, M]), u (R, T, M), h0 (R, M); numpy float64/complex128."""
    R, T, M = u.shape
    h = np.zeros_like(u)
    for r in range(R):
        state = h0[r].copy()
        for n in range(T):
            An = A[r if A.shape[0] > 1 else 0, n if A.shape[1] > 1 else 0]
            state = (An * state if diagonal else An @ state) + u[r, n]
            h[r, n] = state
    return h


def inputs(R, T, M, Ra, Ta, complex_, diagonal=False, seed=0):
    g = torch.Generator().manual_seed(seed)
    dtype = torch.complex128 if complex_ else torch.float64
    shape = (Ra, Ta, M) if diagonal else (Ra, Ta, M, M)
    A = 0.9 * torch.randn(*shape, generator=g, dtype=dtype) / (1 if diagonal else M ** 0.5)
    u = torch.randn(R, T, M, generator=g, dtype=dtype)
    h0 = torch.randn(R, M, generator=g, dtype=dtype)
    return A, u, h0


@pytest.mark.parametrize("diagonal", [False, True], ids=["dense", "diagonal"])
@pytest.mark.parametrize("complex_", [False, True], ids=["real", "complex"])
@pytest.mark.parametrize("Ra, Ta", [(3, 40), (1, 40), (3, 1), (1, 1)])
@pytest.mark.parametrize("M", [1, 2, 4])
def test_matches_a_float64_loop(M, Ra, Ta, complex_, diagonal):
    A, u, h0 = inputs(3, 40, M, Ra, Ta, complex_, diagonal, seed=M)
    h, final = linear_recurrence(A, u, h0, diagonal=diagonal, return_final=True)
    expected = loop(A.numpy(), u.numpy(), h0.numpy(), diagonal)
    np.testing.assert_allclose(h.numpy(), expected, rtol=1e-10, atol=1e-12)
    np.testing.assert_allclose(final.numpy(), expected[:, -1], rtol=1e-10, atol=1e-12)


@pytest.mark.parametrize("diagonal", [False, True], ids=["dense", "diagonal"])
@pytest.mark.parametrize("complex_", [False, True], ids=["real", "complex"])
@pytest.mark.parametrize("Ra, Ta", [(2, 6), (1, 1)])
def test_gradients_to_second_order(Ra, Ta, complex_, diagonal):
    A, u, h0 = (t.requires_grad_() for t in inputs(2, 6, 2, Ra, Ta, complex_, diagonal, seed=3))
    fn = lambda A, u, h0: linear_recurrence(A, u, h0, diagonal=diagonal)  # noqa: E731
    assert torch.autograd.gradcheck(fn, (A, u, h0))
    # second order by random projections (the full complex Jacobians cost 10 s a case)
    assert torch.autograd.gradgradcheck(fn, (A, u, h0), fast_mode=True)


def test_streaming_matches_one_call_and_leading_dims_broadcast():
    A, u, h0 = inputs(6, 50, 3, 6, 50, False, seed=5)
    whole = linear_recurrence(A, u, h0)
    first, final = linear_recurrence(A[:, :20], u[:, :20], h0, return_final=True)
    rest = linear_recurrence(A[:, 20:], u[:, 20:], final)
    assert torch.equal(torch.cat([first, rest], dim=1), whole)
    shared = linear_recurrence(A[:1].reshape(1, 1, 50, 3, 3), u.reshape(2, 3, 50, 3))  # A shared by every row
    np.testing.assert_allclose(shared.reshape(6, 50, 3).numpy(), loop(A[:1].numpy(), u.numpy(), np.zeros((6, 3))), rtol=1e-10)


def test_bad_shapes_name_the_argument():
    A, u, h0 = inputs(2, 10, 3, 2, 10, False)
    with pytest.raises(ValueError, match="A must have shape"):
        linear_recurrence(A[..., :2], u)
    with pytest.raises(ValueError, match="h0 must have shape"):
        linear_recurrence(A, u, h0[:, :2])
    with pytest.raises(TypeError, match="dtype"):
        linear_recurrence(A.float(), u)
