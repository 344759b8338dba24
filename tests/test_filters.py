"""lfilter / sosfilt: against scipy (constant coefficients), a float64 loop (time-varying), streaming, grads."""
from __future__ import annotations

import numpy as np
import pytest
import torch
from scipy import signal

from allpole_triton.systems import FilterState, lfilter, sosfilt


def loop_lfilter(x: np.ndarray, b: np.ndarray, a: np.ndarray) -> np.ndarray:
    """Float64 reference of the time-varying DF-I recursion for x (T,), b (T, K+1), a (T, M)."""
    T, K, M = len(x), b.shape[1] - 1, a.shape[1]
    y = np.zeros(T)
    for n in range(T):
        acc = sum(b[n, k] * x[n - k] for k in range(K + 1) if n - k >= 0)
        acc -= sum(a[n, i - 1] * y[n - i] for i in range(1, M + 1) if n - i >= 0)
        y[n] = acc
    return y


def stable_denominators(T: int, M: int, generator: torch.Generator) -> torch.Tensor:
    """(T, M) slowly varying denominators with poles inside radius 0.9 (real-coefficient pairs)."""
    t = torch.linspace(0, 1, T, dtype=torch.float64)
    polys = []
    for n in range(T):
        roots = []
        for j in range(M // 2):
            r, w = 0.9 - 0.2 * j / M, 0.3 + 2 * t[n] + j
            roots += [r * np.exp(1j * float(w)), r * np.exp(-1j * float(w))]
        if M % 2:
            roots.append(0.5 * float(torch.cos(3 * t[n])))
        polys.append(np.real(np.poly(roots))[1:])
    return torch.tensor(np.array(polys))


@pytest.mark.parametrize("K,M", [(0, 1), (2, 2), (4, 4), (3, 6)])
def test_lfilter_matches_scipy_constant(K, M):
    g = torch.Generator().manual_seed(K * 10 + M)
    x = torch.randn(3, 400, generator=g, dtype=torch.float64)
    b = torch.randn(K + 1, generator=g, dtype=torch.float64)
    a = stable_denominators(1, M, g)[0]
    y = lfilter(x, b[None], a[None])
    expected = signal.lfilter(b.numpy(), np.r_[1.0, a.numpy()], x.numpy(), axis=-1)
    np.testing.assert_allclose(y.numpy(), expected, rtol=1e-10, atol=1e-12)


def test_sosfilt_matches_scipy_constant():
    sos = signal.butter(8, [0.1, 0.3], btype="bandpass", output="sos")
    x = torch.randn(2, 1000, generator=torch.Generator().manual_seed(0), dtype=torch.float64)
    y = sosfilt(x, torch.tensor(sos)[None])
    np.testing.assert_allclose(y.numpy(), signal.sosfilt(sos, x.numpy(), axis=-1), rtol=1e-9, atol=1e-12)


def test_sosfilt_normalises_a0():
    sos = signal.butter(4, 0.2, output="sos")
    scaled = sos * np.array([[2.0], [0.5]])  # same filter, a0 != 1
    x = torch.randn(300, generator=torch.Generator().manual_seed(1), dtype=torch.float64)
    np.testing.assert_allclose(sosfilt(x, torch.tensor(scaled)[None]).numpy(), signal.sosfilt(sos, x.numpy()), atol=1e-12)


@pytest.mark.parametrize("K,M", [(1, 1), (2, 2), (3, 5)])
def test_lfilter_matches_loop_time_varying(K, M):
    g = torch.Generator().manual_seed(7 + K + M)
    T = 300
    x = torch.randn(T, generator=g, dtype=torch.float64)
    b = torch.randn(T, K + 1, generator=g, dtype=torch.float64)
    a = stable_denominators(T, M, g)
    y = lfilter(x, b, a)
    np.testing.assert_allclose(y.numpy(), loop_lfilter(x.numpy(), b.numpy(), a.numpy()), rtol=1e-10, atol=1e-10)


def test_sosfilt_matches_loop_time_varying():
    g = torch.Generator().manual_seed(3)
    T, S = 250, 3
    x = torch.randn(T, generator=g, dtype=torch.float64)
    a = torch.stack([stable_denominators(T, 2, g) * (0.9 - 0.1 * s) ** torch.tensor([1.0, 2.0]) for s in range(S)], 1)
    b = torch.randn(T, S, 3, generator=g, dtype=torch.float64)
    a0 = 1 + 0.5 * torch.rand(T, S, 1, generator=g, dtype=torch.float64)
    sos = torch.cat([b * a0, a0, a * a0], dim=-1)  # un-normalised rows
    expected = x.numpy()
    for s in range(S):
        expected = loop_lfilter(expected, b[:, s].numpy(), a[:, s].numpy())
    np.testing.assert_allclose(sosfilt(x, sos).numpy(), expected, rtol=1e-9, atol=1e-10)


@pytest.mark.parametrize("block", [1, 37, 512])
def test_streaming_equals_offline(block):
    g = torch.Generator().manual_seed(block)
    T = 1100 if block > 1 else 150
    x = torch.randn(2, T, generator=g, dtype=torch.float64)
    b = torch.randn(T, 3, generator=g, dtype=torch.float64)
    a = stable_denominators(T, 2, g)
    sos = torch.stack([torch.cat([b, torch.ones(T, 1, dtype=torch.float64), a], -1)] * 2, dim=-2)
    offline_l, offline_s = lfilter(x, b, a), sosfilt(x, sos)
    state_l = state_s = None
    chunks_l, chunks_s = [], []
    for start in range(0, T, block):
        sl = slice(start, start + block)
        y, state_l = lfilter(x[:, sl], b[sl], a[sl], state_l, return_zf=True)
        chunks_l.append(y)
        y, state_s = sosfilt(x[:, sl], sos[sl], state_s, return_zf=True)
        chunks_s.append(y)
    torch.testing.assert_close(torch.cat(chunks_l, -1), offline_l, rtol=1e-12, atol=1e-12)
    torch.testing.assert_close(torch.cat(chunks_s, -1), offline_s, rtol=1e-12, atol=1e-12)
    assert state_l.inputs.shape == (2, 2) and state_l.outputs.shape == (2, 2)
    assert state_s.inputs.shape == (2, 2, 2) and state_s.outputs.shape == (2, 2, 2)


def test_state_shorter_block_than_order():
    g = torch.Generator().manual_seed(5)
    x = torch.randn(20, generator=g, dtype=torch.float64)
    b = torch.randn(1, 6, generator=g, dtype=torch.float64)
    a = stable_denominators(1, 5, g)
    offline = lfilter(x, b, a)
    state, chunks = None, []
    for chunk in x.split(3):
        y, state = lfilter(chunk, b, a, state, return_zf=True)
        chunks.append(y)
    torch.testing.assert_close(torch.cat(chunks), offline)


def test_gradcheck_lfilter():
    g = torch.Generator().manual_seed(11)
    T = 12
    x = torch.randn(2, T, generator=g, dtype=torch.float64, requires_grad=True)
    b = torch.randn(T, 3, generator=g, dtype=torch.float64, requires_grad=True)
    a = (0.3 * stable_denominators(T, 2, g)).requires_grad_()
    zi_in = torch.randn(2, 2, generator=g, dtype=torch.float64, requires_grad=True)
    zi_out = torch.randn(2, 2, generator=g, dtype=torch.float64, requires_grad=True)

    def run(x, b, a, zi_in, zi_out):
        y, zf = lfilter(x, b, a, FilterState(zi_in, zi_out), return_zf=True)
        return y, zf.inputs, zf.outputs

    assert torch.autograd.gradcheck(run, (x, b, a, zi_in, zi_out))


def test_gradcheck_sosfilt():
    g = torch.Generator().manual_seed(12)
    T = 10
    x = torch.randn(T, generator=g, dtype=torch.float64, requires_grad=True)
    sos = torch.cat([
        torch.randn(T, 2, 3, generator=g, dtype=torch.float64),
        1 + 0.1 * torch.rand(T, 2, 1, generator=g, dtype=torch.float64),
        0.3 * torch.randn(T, 2, 2, generator=g, dtype=torch.float64),
    ], -1).requires_grad_()
    assert torch.autograd.gradcheck(lambda x, sos: sosfilt(x, sos), (x, sos))


def test_errors_name_the_argument():
    x = torch.randn(10)
    with pytest.raises(ValueError, match="b's time dim"):
        lfilter(x, torch.randn(5, 3), torch.randn(1, 2))
    with pytest.raises(ValueError, match="a's time dim"):
        lfilter(x, torch.randn(1, 3), torch.randn(4, 2))
    with pytest.raises(TypeError, match="zi must be a FilterState"):
        lfilter(x, torch.randn(1, 3), torch.randn(1, 2), (torch.zeros(2), torch.zeros(2)))
    with pytest.raises(ValueError, match="zi.outputs"):
        lfilter(x, torch.randn(1, 3), torch.randn(1, 2), FilterState(torch.zeros(2), torch.zeros(3)))
    with pytest.raises(TypeError, match="b must be a torch.Tensor"):
        lfilter(x, [1.0, 2.0], torch.randn(1, 2))
    with pytest.raises(ValueError, match="sos must have shape"):
        sosfilt(x, torch.randn(1, 2, 5))
    with pytest.raises(ValueError, match="do not broadcast"):
        lfilter(torch.randn(3, 10), torch.randn(2, 1, 3), torch.randn(1, 2))


def test_pure_fir():
    x = torch.randn(50, dtype=torch.float64)
    b = torch.tensor([[0.5, -0.25, 0.125]], dtype=torch.float64)
    y = lfilter(x, b, torch.zeros(1, 0, dtype=torch.float64))
    np.testing.assert_allclose(y.numpy(), signal.lfilter(b[0].numpy(), [1.0], x.numpy()), atol=1e-14)


def _constant_filter(order_b: int, order_a: int, seed: int, radius: float = 0.9):
    """A stable constant filter: b (K+1,), a (M,) without the leading 1 (float64)."""
    g = np.random.default_rng(seed)
    poles = radius * np.sqrt(g.uniform(0, 1, order_a // 2)) * np.exp(1j * np.pi * g.uniform(0, 1, order_a // 2))
    poles = np.concatenate([poles, poles.conj(), g.uniform(-radius, radius, order_a % 2)])
    a = np.real(np.poly(poles))[1:] if order_a else np.zeros(0)
    return torch.from_numpy(g.standard_normal(order_b + 1)), torch.from_numpy(a)


@pytest.mark.parametrize("K, M", [(0, 1), (2, 2), (1, 4), (4, 3)])
def test_lfilter_zi_is_the_steady_state_of_a_step(K, M):
    from allpole_triton.systems import lfilter_zi

    b, a = _constant_filter(K, M, seed=K + 10 * M)
    zi = lfilter_zi(b, a)
    step = torch.ones(1, 50, dtype=torch.float64)
    y = lfilter(step, b[None, None], a[None, None], FilterState(zi.inputs[None], zi.outputs[None]))
    np.testing.assert_allclose(y.numpy(), b.sum().item() / (1 + a.sum().item()), rtol=1e-12)
    # scipy's zi (transposed direct form II) starts the same signal identically
    x = np.random.default_rng(1).standard_normal(40)
    expected, _ = signal.lfilter(b.numpy(), np.r_[1.0, a.numpy()], x, zi=signal.lfilter_zi(b.numpy(), np.r_[1.0, a.numpy()]) * x[0])
    ours = lfilter(torch.from_numpy(x)[None], b[None, None], a[None, None], FilterState(zi.inputs[None] * x[0], zi.outputs[None] * x[0]))
    np.testing.assert_allclose(ours[0].numpy(), expected, rtol=1e-10, atol=1e-12)


@pytest.mark.parametrize("K, M, padlen", [(2, 2, None), (1, 4, None), (4, 3, 0), (3, 6, 17)])
def test_filtfilt_matches_scipy(K, M, padlen):
    from allpole_triton.systems import filtfilt

    b, a = _constant_filter(K, M, seed=3 * K + M)
    x = np.random.default_rng(2).standard_normal((3, 200))
    expected = signal.filtfilt(b.numpy(), np.r_[1.0, a.numpy()], x, padlen=padlen)
    ours = filtfilt(b, a, torch.from_numpy(x), padlen=padlen)
    np.testing.assert_allclose(ours.numpy(), expected, rtol=1e-10, atol=1e-12)


def test_filtfilt_gradients_and_errors():
    from allpole_triton.systems import filtfilt

    b, a = _constant_filter(2, 2, seed=4)
    inputs = (b.clone().requires_grad_(), a.clone().requires_grad_(), torch.randn(2, 30, dtype=torch.float64, requires_grad=True))
    assert torch.autograd.gradcheck(lambda b, a, x: filtfilt(b, a, x, padlen=6), inputs)
    with pytest.raises(ValueError, match="padlen"):
        filtfilt(b, a, torch.zeros(2, 9, dtype=torch.float64))  # default padlen 9 > T - 1 = 8
    with pytest.raises(TypeError, match="dtype"):
        filtfilt(b.float(), a, torch.zeros(2, 100))


def test_max_pole_radius_per_sample():
    from allpole_triton.systems import max_pole_radius

    b, a = _constant_filter(0, 5, seed=8, radius=0.95)
    expected = np.abs(np.roots(np.r_[1.0, a.numpy()])).max()
    per_sample = torch.stack([a, 2 * a])  # (T=2, M): the second is (typically) unstable
    radius = max_pole_radius(per_sample)
    assert radius.shape == (2,)
    assert radius[0].item() == pytest.approx(expected, rel=1e-10)
    assert radius[1].item() == pytest.approx(np.abs(np.roots(np.r_[1.0, 2 * a.numpy()])).max(), rel=1e-10)
    assert max_pole_radius(torch.tensor([[-0.5]])).item() == pytest.approx(0.5)


@pytest.mark.parametrize("dtype", [torch.float64, torch.complex128])
@pytest.mark.parametrize("K", [0, 1, 3])
@pytest.mark.parametrize("b_lead, Tb", [((3,), 20), ((1,), 20), ((3,), 1)])
@pytest.mark.parametrize("T", [2, 20])
def test_numba_fir_matches_torch_ops(dtype, K, b_lead, Tb, T):
    """The Numba FIR (forward and fused adjoint) against the torch-op FIR and its autograd, with
    blocks shorter than the filter, taps shared over rows or time, and a past state."""
    from allpole_triton.systems.filters import _fir_torch, time_varying_fir

    g = torch.Generator().manual_seed(K + T)
    make = lambda *s: torch.randn(*s, generator=g, dtype=dtype)  # noqa: E731
    x, b, zi, upstream = make(3, T), make(*b_lead, Tb if Tb == 1 else T, K + 1), make(3, K), make(3, T)
    results = []
    for fir in (time_varying_fir, _fir_torch):
        leaves = [t.clone().requires_grad_() for t in (x, b, zi)]
        w = fir(*leaves) if fir is _fir_torch else fir(leaves[0], leaves[1], leaves[2])
        grads = torch.autograd.grad(w, leaves, upstream, allow_unused=True)
        results.append((w, *(torch.zeros_like(t) if gr is None else gr for t, gr in zip(leaves, grads))))
    for fast, slow in zip(*results):
        torch.testing.assert_close(fast, slow, rtol=1e-12, atol=1e-12)
