"""state_space: philtorch 0.6.0's lpv.state_space equations and shapes on linear_recurrence."""
from __future__ import annotations

import warnings

import pytest
import torch

from allpole_triton import state_space

BATCH, N, M, F, P = 3, 40, 3, 2, 4


def tensor(*shape, seed):
    g = torch.Generator().manual_seed(seed)
    return torch.randn(shape, generator=g, dtype=torch.float64)


def stable_A(*lead, seed=0):
    return (0.9 / (2 * M ** 0.5)) * tensor(*lead, N, M, M, seed=seed)


# (x shape, A lead, B, C, D): every shape rule of B and C at least once, and most of D's
CASES = [
    ((BATCH, N), (), (M,), (M,), None),
    ((BATCH, N), (BATCH,), (N, M), (N, M), ()),
    ((BATCH, N), (), (BATCH, M), (BATCH, M), (N,)),
    ((BATCH, N), (BATCH,), (BATCH, N, M), (P, M), None),
    ((BATCH, N), (BATCH,), (BATCH, N, M), (N, M), (BATCH,)),
    ((BATCH, N), (), (M,), (N, P, M), (P,)),
    ((BATCH, N), (), (M,), (BATCH, N, M), (BATCH, N)),
    ((BATCH, N), (), (M,), (BATCH, P, M), (N, P)),
    ((BATCH, N), (), (M,), (BATCH, N, P, M), (BATCH, N, P)),
    ((BATCH, N, F), (), (M, F), (M,), (F,)),
    ((BATCH, N, F), (BATCH,), (N, M, F), (M,), (N, F)),
    ((BATCH, N, F), (), (BATCH, M, F), (P, M), (P, F)),
    ((BATCH, N, F), (), (BATCH, N, M, F), (BATCH, N, P, M), (BATCH, N, P, F)),
    ((BATCH, N, M), (), None, None, None),
]


@pytest.mark.parametrize("with_zi", [False, True], ids=["rest", "zi"])
@pytest.mark.parametrize("case", range(len(CASES)))
def test_agrees_with_philtorch(case, with_zi):
    lpv = pytest.importorskip("philtorch.lpv")
    x_shape, A_lead, B_shape, C_shape, D_shape = CASES[case]
    x, A = tensor(*x_shape, seed=1), stable_A(*A_lead, seed=2)
    B, C, D = (None if s is None else tensor(*s, seed=3 + k) for k, s in enumerate((B_shape, C_shape, D_shape)))
    zi = tensor(BATCH, M, seed=9) if with_zi else None
    ours = state_space(x, A, B, C, D, zi)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        theirs = lpv.state_space(A, x, B, C, D, zi)
    for o, t in zip(ours if with_zi else (ours,), theirs if with_zi else (theirs,)):
        assert o.shape == t.shape
        torch.testing.assert_close(o, t, rtol=1e-10, atol=1e-10)


def test_gradients_and_errors():
    x, A, B, C = tensor(2, 12, seed=1), stable_A(seed=2)[:12], tensor(M, seed=3), tensor(M, seed=4)
    zi = tensor(2, M, seed=5)
    inputs = tuple(t.clone().requires_grad_() for t in (x, A, B, C, zi))
    assert torch.autograd.gradcheck(lambda x, A, B, C, zi: state_space(x, A, B, C, None, zi), inputs)
    with pytest.raises(ValueError, match="A must have shape"):
        state_space(x, A[:5], B, C)
    with pytest.raises(ValueError, match="B must have shape"):
        state_space(x, A, tensor(M + 1, seed=6), C)
    with pytest.raises(ValueError, match="C must have shape"):
        state_space(x, A, B, tensor(M + 1, seed=6))


VECTOR_SHAPES = [(M,), (N, M), (BATCH, M), (BATCH, N, M)]


@pytest.fixture
def fused_calls(monkeypatch):
    from allpole_triton.kernels import numba_recurrence

    calls = {"n": 0}
    original = numba_recurrence.state_space_forward

    def spy(*args):
        calls["n"] += 1
        return original(*args)

    monkeypatch.setattr(numba_recurrence, "state_space_forward", spy)
    return calls


@pytest.mark.parametrize("dtype", [torch.float64, torch.complex128], ids=str)
@pytest.mark.parametrize("C_shape", VECTOR_SHAPES)
@pytest.mark.parametrize("B_shape", VECTOR_SHAPES)
def test_fused_single_input_single_output_matches_the_torch_loop(B_shape, C_shape, dtype, fused_calls):
    """The fused Numba kernels (B x and C h inside the recurrence) against the unfused composition
    on the torch loop (backend="naive"): outputs, final state and every gradient."""
    g = torch.Generator().manual_seed(len(B_shape) * 10 + len(C_shape))
    draw = lambda *shape, scale=1.0: scale * torch.randn(*shape, generator=g, dtype=dtype)  # noqa: E731
    x, A = draw(BATCH, N), draw(BATCH, N, M, M, scale=0.9 / (2 * M ** 0.5))
    B, C, zi = draw(*B_shape), draw(*C_shape), draw(BATCH, M)
    weights = draw(BATCH, N), draw(BATCH, M)
    results = []
    for backend in ("auto", "naive"):
        before = fused_calls["n"]
        leaves = [t.clone().requires_grad_() for t in (x, A, B, C, zi)]
        y, zf = state_space(*leaves[:4], None, leaves[4], backend=backend)
        assert fused_calls["n"] == before + (backend == "auto")
        loss = (weights[0].conj() * y).real.sum() + (weights[1].conj() * zf).real.sum()
        results.append([y, zf, *torch.autograd.grad(loss, leaves)])
    for fused, loop in zip(*results):
        torch.testing.assert_close(fused, loop, rtol=1e-10, atol=1e-10)


def test_fused_path_double_backward_partial_gradients_and_ambiguous_shapes(fused_calls):
    x, A, B, C = tensor(2, 10, seed=1), stable_A(seed=2)[:10], tensor(10, M, seed=3), tensor(M, seed=4)
    inputs = tuple(t.clone().requires_grad_() for t in (x, A, B, C))
    assert torch.autograd.gradgradcheck(lambda x, A, B, C: state_space(x, A, B, C), inputs, fast_mode=True)
    assert fused_calls["n"] > 0
    # A and C without gradients: the fused adjoint skips them
    A_, C_ = A.clone(), C.clone()
    x_, B_ = x.clone().requires_grad_(), B.clone().requires_grad_()
    grads = torch.autograd.grad(state_space(x_, A_, B_, C_).sum(), (x_, B_))
    expected = torch.autograd.grad(state_space(x_, A_, B_, C_, backend="naive").sum(), (x_, B_))
    for got, want in zip(grads, expected):
        torch.testing.assert_close(got, want, rtol=1e-10, atol=1e-10)
    # batch == N: C (batch, N, M) is the (N, P, M) matrix form, as in philtorch: not fused
    x, A, C = tensor(N, N, seed=5), stable_A(seed=6), tensor(N, N, M, seed=7)
    before = fused_calls["n"]
    assert state_space(x, A, tensor(M, seed=8), C).shape == (N, N, N)
    assert fused_calls["n"] == before
