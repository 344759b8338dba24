"""lfilter's four direct forms with time-varying coefficients: each against a float64 sample loop
of that form (outputs and final states, from non-zero initial states), streaming bit for bit,
gradients, scipy for constant coefficients, and philtorch 0.6.0 where it agrees with itself."""
from __future__ import annotations

import numpy as np
import pytest
import torch
from scipy import signal

from allpole_triton.systems import FilterState, lfilter
from allpole_triton.systems.forms import FORMS, TransposedState, tdf1_composed, tdf2_composed

ORDERS = [(2, 2), (1, 3), (3, 1), (0, 2), (2, 0)]


def coefficients(B: int, T: int, K: int, M: int, seed: int, dtype=torch.float64):
    """Time-varying b (B, T, K+1) and small a (B, T, M) (any direct form stays bounded)."""
    g = torch.Generator().manual_seed(seed)
    b = 0.5 * torch.randn(B, T, K + 1, generator=g, dtype=torch.float64)
    a = (0.6 / max(M, 1)) * (2 * torch.rand(B, T, M, generator=g, dtype=torch.float64) - 1)
    x = torch.randn(B, T, generator=g, dtype=torch.float64)
    return x.to(dtype), b.to(dtype), a.to(dtype)


def initial_state(form: str, B: int, K: int, M: int, seed: int, dtype=torch.float64):
    g = torch.Generator().manual_seed(seed)
    draw = lambda n: torch.randn(B, n, generator=g, dtype=torch.float64).to(dtype)  # noqa: E731
    if form == "df1":
        return FilterState(draw(K), draw(M))
    if form == "tdf1":
        return TransposedState(draw(M), draw(K))
    return draw(max(K, M))


def loop(form: str, x, b, a, zi):
    """The form's textbook sample loop in float64 numpy: (y, final state as numpy arrays)."""
    x, b, a = (t.double().numpy() for t in (x, b, a))
    B, T = x.shape
    K, M = b.shape[-1] - 1, a.shape[-1]
    N = max(K, M)
    y = np.zeros((B, T))
    finals = []
    for r in range(B):
        if form == "df1":
            xs, ys = list(zi.inputs[r].double().numpy()[::-1]), list(zi.outputs[r].double().numpy()[::-1])
            for n in range(T):
                xs.append(x[r, n])
                yn = sum(b[r, n, k] * xs[-1 - k] for k in range(K + 1)) - sum(a[r, n, i - 1] * ys[-i] for i in range(1, M + 1))
                ys.append(yn)
                y[r, n] = yn
            finals.append((np.array(xs[::-1][:K]), np.array(ys[::-1][:M])))
        elif form == "df2":
            w = list(zi[r].double().numpy()[::-1])
            for n in range(T):
                w.append(x[r, n] - sum(a[r, n, i - 1] * w[-i] for i in range(1, M + 1)))
                y[r, n] = sum(b[r, n, k] * w[-1 - k] for k in range(K + 1))
            finals.append(np.array(w[::-1][:N]))
        elif form == "tdf2":
            s = list(zi[r].double().numpy()) + [0.0]
            bp = np.pad(b[r], ((0, 0), (0, N - K)))
            ap = np.pad(a[r], ((0, 0), (0, N - M)))
            for n in range(T):
                yn = bp[n, 0] * x[r, n] + s[0]
                s = [bp[n, i] * x[r, n] - ap[n, i - 1] * yn + s[i] for i in range(1, N + 1)] + [0.0]
                y[r, n] = yn
            finals.append(np.array(s[:N]))
        else:  # tdf1
            p = list(zi.poles[r].double().numpy()) + [0.0]
            q = list(zi.zeros[r].double().numpy()) + [0.0]
            for n in range(T):
                v = x[r, n] + p[0]
                p = [p[i] - a[r, n, i - 1] * v for i in range(1, M + 1)] + [0.0]
                yn = b[r, n, 0] * v + q[0]
                q = [b[r, n, k] * v + q[k] for k in range(1, K + 1)] + [0.0]
                y[r, n] = yn
            finals.append((np.array(p[:M]), np.array(q[:K])))
    return y, finals


def final_as_numpy(form: str, zf) -> list:
    if form in ("df1", "tdf1"):
        return [tuple(f[r].double().numpy() for f in zf) for r in range(zf[0].shape[0])]
    return [zf[r].double().numpy() for r in range(zf.shape[0])]


@pytest.mark.parametrize("K, M", ORDERS)
@pytest.mark.parametrize("form", FORMS)
def test_each_form_is_its_sample_loop(form, K, M):
    x, b, a = coefficients(3, 40, K, M, seed=K + 5 * M)
    zi = initial_state(form, 3, K, M, seed=7)
    y, zf = lfilter(x, b, a, zi, form=form, return_zf=True)
    expected, finals = loop(form, x, b, a, zi)
    np.testing.assert_allclose(y.numpy(), expected, rtol=1e-12, atol=1e-12)
    for got, want in zip(final_as_numpy(form, zf), finals):
        for g_, w_ in zip(got, want) if isinstance(want, tuple) else [(got, want)]:
            np.testing.assert_allclose(g_, w_, rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize("form", ["tdf1", "tdf2"])
def test_composition_equals_register_loop(form):
    """The composition (used for gradients, and off CPU) computes what the register loop does."""
    x, b, a = coefficients(2, 37, 2, 3, seed=3)
    zi = initial_state(form, 2, 2, 3, seed=4)
    y, zf = lfilter(x, b, a, zi, form=form, return_zf=True)
    yc, zfc = (tdf2_composed if form == "tdf2" else tdf1_composed)(x, b, a, zi, "auto")
    torch.testing.assert_close(yc, y, rtol=1e-12, atol=1e-12)
    for got, want in zip(zfc if form == "tdf1" else [zfc], zf if form == "tdf1" else [zf]):
        torch.testing.assert_close(got, want, rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
@pytest.mark.parametrize("form", FORMS)
def test_streaming_is_bit_exact(form, dtype):
    T = 400
    x, b, a = coefficients(2, T, 3, 2, seed=11, dtype=dtype)
    whole = lfilter(x, b, a, form=form)
    g = np.random.default_rng(5)
    cuts = np.sort(g.choice(np.arange(1, T), size=9, replace=False)).tolist()
    pieces, state = [], None
    for start, stop in zip([0, *cuts], [*cuts, T]):
        y, state = lfilter(x[:, start:stop], b[:, start:stop], a[:, start:stop], state, form=form, return_zf=True)
        pieces.append(y)
    streamed = torch.cat(pieces, dim=-1)
    assert torch.equal(streamed, whole), (streamed - whole).abs().max()


@pytest.mark.parametrize("form", FORMS)
def test_gradients(form):
    x, b, a = coefficients(2, 12, 2, 2, seed=2)
    zi = initial_state(form, 2, 2, 2, seed=3)
    state = list(zi) if form in ("df1", "tdf1") else [zi]
    inputs = [t.clone().requires_grad_() for t in (x, b, a, *state)]

    def run(x, b, a, *state):
        start = type(zi)(*state) if form in ("df1", "tdf1") else state[0]
        y, zf = lfilter(x, b, a, start, form=form, return_zf=True)
        return (y, *zf) if form in ("df1", "tdf1") else (y, zf)

    assert torch.autograd.gradcheck(run, inputs)


@pytest.mark.parametrize("form", FORMS)
def test_constant_coefficients_are_scipy_lfilter(form):
    x, b, a = coefficients(2, 60, 3, 2, seed=9)
    b, a = b[:, :1], a[:, :1]  # one set per row, shared by every sample
    y = lfilter(x, b, a, form=form)
    for r in range(2):
        expected = signal.lfilter(b[r, 0].numpy(), np.r_[1.0, a[r, 0].numpy()], x[r].numpy())
        np.testing.assert_allclose(y[r].numpy(), expected, rtol=1e-11, atol=1e-12)


def test_agrees_with_philtorch():
    """philtorch 0.6.0 `lpv.lfilter(b, a, x, form=...)` from a zero state. Its two backends disagree
    on tdf1 (by O(1)); ours is its torchlpc backend's tdf1 (the same definition as here) and its
    ssm backend's tdf2 (its torchlpc backend has none)."""
    philtorch = pytest.importorskip("philtorch.lpv")
    cases = [("df1", "ssm"), ("df1", "torchlpc"), ("df2", "ssm"), ("df2", "torchlpc"), ("tdf1", "torchlpc"), ("tdf2", "ssm")]
    for K, M in [(2, 2), (1, 3), (3, 1)]:
        x, b, a = coefficients(2, 50, K, M, seed=K * M)
        for form, backend in cases:
            theirs = philtorch.lfilter(b, a, x, form=form, backend=backend)
            torch.testing.assert_close(lfilter(x, b, a, form=form), theirs, rtol=1e-10, atol=1e-12,
                                       msg=lambda m: f"{form} vs philtorch {backend}, K={K}, M={M}: {m}")


def test_bad_forms_and_states_name_the_problem():
    x, b, a = coefficients(1, 10, 2, 2, seed=1)
    with pytest.raises(ValueError, match="form must be one of"):
        lfilter(x, b, a, form="df3")
    with pytest.raises(TypeError, match="TransposedState"):
        lfilter(x, b, a, torch.zeros(1, 2, dtype=torch.float64), form="tdf1")
    with pytest.raises(ValueError, match="max\\(K, M\\)=2"):
        lfilter(x, b, a, torch.zeros(1, 3, dtype=torch.float64), form="tdf2")
    with pytest.raises(TypeError, match="dtype"):
        lfilter(x.float(), b, a, form="df2")


@pytest.mark.parametrize("form", ["tdf1", "tdf2"])
def test_double_backward_through_the_register_forms(form):
    x, b, a = coefficients(1, 8, 2, 2, seed=6)
    inputs = [t.clone().requires_grad_() for t in (x, b, a)]
    assert torch.autograd.gradgradcheck(lambda x, b, a: lfilter(x, b, a, form=form), inputs)


# (x, b, a, poles, zeros) shapes: broadcast rows, taps constant in time, one order 0, blocks
# shorter than the orders
TDF1_SHAPES = [
    ((3, 20), (3, 20, 3), (3, 20, 2), (3, 2), (3, 2)),
    ((2, 3, 15), (1, 15, 2), (3, 1, 3), (1, 3), (2, 3, 1)),
    ((4, 12), (4, 1, 4), (12, 1), (4, 1), (3,)),
    ((2, 10), (2, 10, 1), (2, 10, 3), (2, 3), (2, 0)),
    ((2, 10), (2, 10, 3), (2, 10, 0), (2, 0), (2, 2)),
    ((2, 2), (2, 2, 5), (2, 2, 4), (2, 4), (2, 4)),
]


@pytest.mark.parametrize("dtype", [torch.float64, pytest.param(torch.complex128, marks=pytest.mark.slow)], ids=str)
@pytest.mark.parametrize("shapes", TDF1_SHAPES)
def test_tdf1_adjoint_matches_the_composition(shapes, dtype):
    """tdf1's fused Numba adjoint against autograd through tdf1_composed (allpole and FIR with shifted
    taps, an independent derivation), for gradients of y and of both final registers."""
    g = torch.Generator().manual_seed(len(shapes[0]) + shapes[1][-1])
    draw = lambda shape, scale=1.0: (scale * torch.randn(*shape, generator=g, dtype=dtype))  # noqa: E731
    x, b, a = draw(shapes[0]), draw(shapes[1], 0.5), draw(shapes[2], 0.3 / max(shapes[2][-1], 1))
    poles, zeros = draw(shapes[3]), draw(shapes[4])
    # an expanded (stride-0) view of b's rows: its gradient is per row, summed by the expand
    b_leaf = b
    b = b.expand(2, *b.shape) if b.ndim == 2 else b
    lead = torch.broadcast_shapes(x.shape[:-1], b.shape[:-2], a.shape[:-2], poles.shape[:-1], zeros.shape[:-1])
    T = x.shape[-1]
    weights = [draw((*lead, n)) for n in (T, shapes[2][-1], shapes[1][-1] - 1)]

    def loss(fn, leaves):
        x, b, a, poles, zeros = leaves
        b = b.expand(2, *b.shape) if b.ndim == 2 else b
        y, zf = fn(x, b, a, TransposedState(poles, zeros))
        return sum((w.conj() * out).real.sum() for w, out in zip(weights, (y, zf.poles, zf.zeros)))

    results = []
    for fn in (lambda *args: lfilter(*args[:3], args[3], form="tdf1", return_zf=True),
               lambda *args: tdf1_composed(*args, "auto")):
        leaves = [t.clone().requires_grad_() for t in (x, b_leaf, a, poles, zeros)]
        grads = torch.autograd.grad(loss(fn, leaves), leaves, allow_unused=True)  # order 0: an empty a
        results.append([torch.zeros_like(t) if grad is None else grad for t, grad in zip(leaves, grads)])
    for fused, composed in zip(*results):
        torch.testing.assert_close(fused, composed, rtol=1e-10, atol=1e-12)
