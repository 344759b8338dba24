"""linear_recurrence: dense and diagonal transitions against a float64 loop, gradients to second
order, shapes and errors."""
from __future__ import annotations

import numpy as np
import pytest
import triton
import torch

from allpole_triton.op import triton_interpret
from allpole_triton.recurrence import linear_recurrence
from conftest import poles_at_radius, random_signal, slow


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
    with pytest.raises(ValueError, match="one device"):
        linear_recurrence(A.to("meta"), u)
    empty_A, empty_u = (torch.zeros(2, 5, *(0,) * k, dtype=torch.float64, requires_grad=True) for k in (2, 1))
    linear_recurrence(empty_A, empty_u).sum().backward()  # order 0: no state, zero gradients
    assert empty_A.grad.shape == empty_A.shape and empty_u.grad.shape == empty_u.shape


# The Triton scan (on CPU tensors through the interpreter: chunks of 8 samples, so these lengths
# cross chunk boundaries and run every launch: summaries, carry walk, finish)
triton_path = pytest.mark.skipif(not triton_interpret() and not torch.cuda.is_available(),
                                 reason="needs CUDA or TRITON_INTERPRET=1")
DEVICE = "cuda" if torch.cuda.is_available() else "cpu"


@triton_path
@pytest.mark.parametrize("complex_", [False, True], ids=["real", "complex"])
@pytest.mark.parametrize("Ra, Ta", [(3, 41), (1, 41), (3, 1)])
@pytest.mark.parametrize("M", [1, 3, 5, 8])  # complex order 8: real order 16, the largest
def test_triton_matches_a_float64_loop(M, Ra, Ta, complex_):
    A, u, h0 = inputs(3, 41, M, Ra, Ta, complex_, seed=10 + M)
    h, final = linear_recurrence(*(t.to(DEVICE) for t in (A, u, h0)), return_final=True, backend="triton")
    expected = loop(A.numpy(), u.numpy(), h0.numpy())
    np.testing.assert_allclose(h.cpu().numpy(), expected, rtol=1e-12, atol=1e-12)
    np.testing.assert_allclose(final.cpu().numpy(), expected[:, -1], rtol=1e-12, atol=1e-12)
    short = linear_recurrence(*(t.to(DEVICE) for t in (A[:, :5], u[:, :5], h0)), backend="triton")  # one chunk
    np.testing.assert_allclose(short.cpu().numpy(), expected[:, :5], rtol=1e-12, atol=1e-12)


@triton_path
@pytest.mark.parametrize("layout", ["transposed", "sliced", "time-strided"])
def test_triton_any_matrix_layout(monkeypatch, layout):
    """The kernel's matrix strides are compile-time constants (row- or column-major); any other
    layout is copied to row-major first. Each runs on the Triton scan (the torch-op fallback is
    made to fail) and matches the float64 loop."""
    from allpole_triton import recurrence

    monkeypatch.setattr(recurrence, "blocked_recurrence", lambda *args: pytest.fail("fell back to torch ops"))
    A, u, h0 = inputs(2, 37, 6, 2, 37, False, seed=7)
    if layout == "transposed":
        strided = A.mT.contiguous().mT
    elif layout == "sliced":
        strided = torch.zeros(2, 37, 9, 9, dtype=A.dtype)
        strided[..., :6, :6] = A
        strided = strided[..., :6, :6]
    else:
        strided = torch.zeros(2, 74, 6, 6, dtype=A.dtype)
        strided[:, ::2] = A
        strided = strided[:, ::2]
    assert torch.equal(strided, A) and strided.stride() != A.stride()
    h = linear_recurrence(*(t.to(DEVICE) for t in (strided, u, h0)), backend="triton")
    np.testing.assert_allclose(h.cpu().numpy(), loop(A.numpy(), u.numpy(), h0.numpy()), rtol=1e-12, atol=1e-12)


@triton_path
@pytest.mark.parametrize("complex_", [False, slow(True)], ids=["real", "complex"])
def test_triton_gradients_to_second_order(complex_):
    """Second order for real inputs (the double backward is the same torch-op adjoint whatever the
    dtype; complex second order is checked on the CPU kernels)."""
    A, u, h0 = (t.to(DEVICE).requires_grad_() for t in inputs(2, 19, 2, 2, 19, complex_, seed=4))
    fn = lambda A, u, h0: linear_recurrence(A, u, h0, backend="triton")  # noqa: E731
    assert torch.autograd.gradcheck(fn, (A, u, h0), fast_mode=True)
    if not complex_:
        assert torch.autograd.gradgradcheck(fn, (A, u, h0), fast_mode=True)


def companion(a: torch.Tensor) -> torch.Tensor:
    """The (..., T, M, M) companion matrices of all-pole coefficients a (..., T, M): a dense,
    very non-normal recurrence whose chunk products cancel in float32."""
    M = a.shape[-1]
    C = torch.zeros(*a.shape, M, dtype=a.dtype)
    C[..., 0, :] = -a
    C[..., 1:, :-1] = torch.eye(M - 1, dtype=a.dtype)
    return C


def companion_inputs(T: int, M: int, radii: tuple[float, ...]):
    """float32 companion transitions with every pole at one radius per row, driven by a random
    signal in the first state component, and a random initial state."""
    A = companion(torch.cat([poles_at_radius((1,), T, M, r, seed=M + k) for k, r in enumerate(radii)]))
    u = torch.zeros(len(radii), T, M, dtype=torch.float64)
    u[..., 0] = random_signal((len(radii), T), seed=1)
    return A.float(), u.float(), random_signal((len(radii), M), seed=2).float()


def row_errors(actual: torch.Tensor, exact: torch.Tensor) -> torch.Tensor:
    """Per row: max |actual - exact| / max |exact|."""
    exact = exact.cpu()
    return (actual.cpu().double() - exact).abs().flatten(1).amax(1) / exact.abs().flatten(1).amax(1)


def recurrence_results(A, u, h0, g, backend):
    inputs_ = [t.to(DEVICE).requires_grad_() for t in (A, u, h0)]
    h = linear_recurrence(*inputs_, backend=backend)
    return (h.detach(), *torch.autograd.grad(h, inputs_, g.to(DEVICE)))


@triton_path
@pytest.mark.parametrize("launch, M", [("chunk=64", 2), ("chunk=64", 5), ("chunk=64", 8), slow("chunk=256", 8),
                                       ("chunk=64", 16)])
def test_triton_float32_within_ten_times_a_float32_loop(monkeypatch, launch, M):
    """The GPU's chunk lengths forced; companion-matrix transitions with every pole at radius 0.9,
    0.99 and 0.999 (one row each): h and the gradients of A, u and h0 against a float64 loop on the
    same float32 inputs (at 0.999 rounding A to float32 alone moves grad_h0 by 6e-3), within
    10x of the error of a float32 loop (its adjoint loop for the gradients). A few float32 ulps are
    always allowed: the loop's error can be below one by luck (grad_h0 at radius 0.9: 0.3 ulp)."""
    from allpole_triton import recurrence

    monkeypatch.setattr(recurrence, "blocked_recurrence", lambda *args: pytest.fail("fell back to torch ops"))
    monkeypatch.setenv("ALLPOLE_TRITON_LAUNCH", launch)
    T = 2 * int(launch.split("=")[1]) + 7  # three chunks, the last one partial
    A, u, h0 = companion_inputs(T, M, (0.9, 0.99, 0.999))
    g = random_signal((3, T, M), seed=3).float()
    exact = recurrence_results(*(t.double() for t in (A, u, h0, g)), "naive")
    slow = recurrence_results(A, u, h0, g, "naive")
    fast = recurrence_results(A, u, h0, g, "triton")
    for name, f, s, e in zip(("h", "grad_A", "grad_u", "grad_h0"), fast, slow, exact):
        slow_error, fast_error = row_errors(s, e), row_errors(f, e)
        assert f.dtype == torch.float32 and torch.isfinite(f).all(), name
        bound = torch.clamp(10 * slow_error, min=8 * torch.finfo(torch.float32).eps)
        assert (fast_error <= bound).all(), f"{name}: {fast_error.tolist()} > 10 x the loop's {slow_error.tolist()}"


def test_dense_plan_and_model_bytes():
    """On an H100's shape (planned on the meta device): one launch when rows fill the GPU, else
    summary, carry and finish, whose traffic the sm_90 model counts once per tensor each reads or
    writes (the carry reads the maps' z column from the maps themselves: not twice)."""
    from allpole_triton.bench.model import _launch_bytes
    from allpole_triton.kernels import triton_recurrence

    meta = torch.device("meta")

    def launches(R, T, M):
        u = torch.empty(R, T, M, device=meta)
        return triton_recurrence.plan(torch.empty(R, T, M, M, device=meta), u, torch.empty(R, M, device=meta),
                                      torch.empty_like(u), sms=132)

    (single,) = launches(1 << 16, 9, 2)
    assert single.args[6] == 10  # the chunk: T rounded up to whole loop iterations, no further
    summary, carry, finish = launches(1, 1 << 20, 2)
    chunks = triton.cdiv(1 << 20, summary.args[6])
    assert chunks > 1 and summary.constexprs["SUMMARY"] and not finish.constexprs["SUMMARY"]
    # a row's last chunk has no map and no outgoing state: nothing reads them
    A, u, h = 4 * (1 << 20) * 4, 4 * (1 << 20) * 2, 4 * (1 << 20) * 2
    maps, states = 8 * (chunks - 1) * 2 * 3, 8 * (chunks - 1) * 2
    assert _launch_bytes(summary) == A + u + maps
    assert _launch_bytes(carry) == maps + states
    assert _launch_bytes(finish) == A + u + states + h


@pytest.mark.parametrize("complex_", [False, True], ids=["real", "complex"])
def test_dense_vmap_jvp_and_compile(complex_):
    """vmap batches the dense recurrence, jvp matches forward-mode AD through the plain torch loop,
    and torch.compile(fullgraph=True) traces it (as the torch loop) to the eager result."""
    from allpole_triton.recurrence import linear_recurrence_naive

    A, u, h0 = inputs(2, 9, 3, 2, 9, complex_, seed=7)
    dA, du, dh0 = inputs(2, 9, 3, 2, 9, complex_, seed=8)
    batched = torch.func.vmap(linear_recurrence)(A, u, h0)
    torch.testing.assert_close(batched, torch.stack([linear_recurrence(A[i:i + 1], u[i:i + 1], h0[i:i + 1])[0] for i in range(2)]))
    out, tangent = torch.func.jvp(linear_recurrence, (A, u, h0), (dA, du, dh0))
    ref_out, ref_tangent = torch.func.jvp(linear_recurrence_naive, (A, u, h0), (dA, du, dh0))
    torch.testing.assert_close(out, ref_out)
    torch.testing.assert_close(tangent, ref_tangent)
    compiled = torch.compile(lambda A, u, h0: linear_recurrence(A, u, h0), fullgraph=True, backend="eager")
    torch.testing.assert_close(compiled(A, u, h0), linear_recurrence(A, u, h0))


@pytest.mark.parametrize("M, complex_, Ra, Ta", [(3, False, 3, 30), slow(9, False, 1, 30), (3, True, 3, 1), (5, True, 1, 30),
                                                  (9, False, 3, 1), (3, False, 1, 30)])
def test_numba_kernels_match_the_torch_loop(M, complex_, Ra, Ta):
    """The Numba forward and fused adjoint (register state up to order 8, 4 complex; a state in
    memory above) against the torch loop and its torch-op adjoint, with broadcast A."""
    A, u, h0 = inputs(3, 30, M, Ra, Ta, complex_, seed=20 + M)
    g = inputs(3, 30, M, 3, 30, complex_, seed=40 + M)[1]
    for A_needs_grad in (True, False):  # without it the fused adjoint skips grad_A
        results = []
        for backend in ("numba", "naive"):
            leaves = [A.clone().requires_grad_(A_needs_grad), u.clone().requires_grad_(), h0.clone().requires_grad_()]
            h = linear_recurrence(*leaves, backend=backend)
            results.append((h, *torch.autograd.grad(h, [t for t in leaves if t.requires_grad], g)))
        assert len(results[0]) == (4 if A_needs_grad else 3)
        for fast, slow in zip(*results):
            torch.testing.assert_close(fast, slow, rtol=1e-10, atol=1e-10)


@pytest.mark.parametrize("complex_", [False, True], ids=["real", "complex"])
@pytest.mark.parametrize("Ra, Ta", [(3, 70), (1, 70), (3, 1)])
@pytest.mark.parametrize("chunk", [None, 1, 8, 13, 70])
def test_blocked_torch_scan_matches_a_float64_loop(chunk, Ra, Ta, complex_):
    """The torch chunked scan (CUDA above Triton's orders, transforms) on lengths its chunks do and
    do not divide, against the float64 loop."""
    from allpole_triton.recurrence import blocked_recurrence

    A, u, h0 = inputs(3, 70, 10, Ra, Ta, complex_, seed=3)
    np.testing.assert_allclose(blocked_recurrence(A, u, h0, chunk).numpy(), loop(A.numpy(), u.numpy(), h0.numpy()),
                               rtol=1e-10, atol=1e-10)


def test_blocked_torch_scan_float32_within_ten_times_a_float32_loop():
    """Companion matrices of order 16 with every pole at radius 0.9, 0.99 and 0.999 (one row each),
    float32: the float64 chunk maps keep the error within 10x of a float32 loop's."""
    from allpole_triton.recurrence import blocked_recurrence, linear_recurrence_naive

    A, u, h0 = companion_inputs(600, 16, (0.9, 0.99, 0.999))
    exact = linear_recurrence_naive(A.double(), u.double(), h0.double())
    slow, fast = row_errors(linear_recurrence_naive(A, u, h0), exact), row_errors(blocked_recurrence(A, u, h0), exact)
    assert (fast <= torch.clamp(10 * slow, min=8 * torch.finfo(torch.float32).eps)).all(), (fast, slow)
