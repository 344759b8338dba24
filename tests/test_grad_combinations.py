"""Every combination of inputs requiring a gradient works, on every backend, for every entry point.

Regression for the Numba backward that failed to compile when ``a`` needed no gradient (its
grad_a buffer was 1-d and Numba types the dead branch anyway).
"""
from __future__ import annotations

import itertools

import pytest
import torch

from allpole_triton import Compressor, Phaser, SubtractiveSynth, allpole, lfilter, sample_wise_lpc, sosfilt
from allpole_triton.kernels.naive import allpole_naive
from allpole_triton.systems import FilterState
from conftest import random_signal, stable_coefficients

BACKENDS = ["numba", "triton", "naive"]
# every non-empty subset of (x, a, zi)
SUBSETS = [s for r in (1, 2, 3) for s in itertools.combinations(("x", "a", "zi"), r)]


def _inputs(dtype: torch.dtype, B: int = 2, T: int = 37, M: int = 3, seed: int = 0) -> dict[str, torch.Tensor]:
    wide = torch.complex128 if dtype.is_complex else torch.float64
    return {
        "x": random_signal((B, T), wide, seed=seed + 1).to(dtype),
        "a": stable_coefficients((B,), T, M, dtype=wide, seed=seed, radius=0.9).to(dtype),
        "zi": random_signal((B, M), wide, seed=seed + 2).to(dtype),
    }


def _grads(fn, inputs: dict[str, torch.Tensor], needs: tuple[str, ...]) -> dict[str, torch.Tensor]:
    leaves = {k: v.detach().clone().requires_grad_(k in needs) for k, v in inputs.items()}
    y = fn(**leaves)
    weight = torch.linspace(-1, 1, y.shape[-1], dtype=y.real.dtype)
    (y.real * weight).sum().backward() if not y.is_complex() else (y * weight).abs().square().sum().backward()
    for name, leaf in leaves.items():
        assert (leaf.grad is not None) == (name in needs), f"{name}: grad presence wrong"
    return {name: leaves[name].grad for name in needs}


def _loop(x, a, zi):
    return allpole_naive(x, a, zi)


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("dtype", [torch.float64, torch.complex128])
@pytest.mark.parametrize("needs", SUBSETS, ids=lambda s: "+".join(s))
def test_allpole_gradient_subsets(backend, dtype, needs):
    inputs = _inputs(dtype)
    got = _grads(lambda x, a, zi: allpole(x, a, zi, backend=backend), inputs, needs)
    expected = _grads(_loop, inputs, needs)
    for name in needs:
        torch.testing.assert_close(got[name], expected[name], rtol=1e-9, atol=1e-9, msg=name)


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64, torch.complex64])
@pytest.mark.parametrize("M", [1, 2, 16])
@pytest.mark.parametrize("needs", [("x",), ("zi",), ("x", "zi")], ids=lambda s: "+".join(s))
def test_numba_backward_without_grad_a(dtype, M, needs):
    """The crash of the issue: every dtype and order, ``a`` needing no gradient."""
    inputs = _inputs(dtype, M=M)
    got = _grads(lambda x, a, zi: allpole(x, a, zi, backend="numba"), inputs, needs)
    wide = {k: v.to(torch.complex128 if dtype.is_complex else torch.float64) for k, v in inputs.items()}
    expected = _grads(_loop, wide, needs)
    for name in needs:
        torch.testing.assert_close(got[name].to(expected[name].dtype), expected[name], rtol=1e-3, atol=1e-4)


@pytest.mark.parametrize("needs", SUBSETS, ids=lambda s: "+".join(s))
def test_sample_wise_lpc_gradient_subsets(needs):
    inputs = _inputs(torch.float64)
    got = _grads(lambda x, a, zi: sample_wise_lpc(x, a, zi), inputs, needs)
    expected = _grads(_loop, inputs, needs)
    for name in needs:
        torch.testing.assert_close(got[name], expected[name], rtol=1e-9, atol=1e-9)


def test_backward_without_grad_a_under_compile():
    inputs = _inputs(torch.float32)
    compiled = torch.compile(lambda x, a, zi: allpole(x, a, zi), fullgraph=True, backend="aot_eager")
    got = _grads(compiled, inputs, ("x", "zi"))
    expected = _grads(_loop, inputs, ("x", "zi"))
    for name in ("x", "zi"):
        torch.testing.assert_close(got[name], expected[name], rtol=1e-4, atol=1e-5)


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("needs", [("x",), ("b",), ("a",), ("zi",), ("x", "b", "a", "zi")], ids=lambda s: "+".join(s))
def test_lfilter_and_sosfilt_gradient_subsets(backend, needs):
    g = torch.Generator().manual_seed(3)
    T = 29
    base = {
        "x": torch.randn(2, T, generator=g, dtype=torch.float64),
        "b": torch.randn(2, T, 3, generator=g, dtype=torch.float64),
        "a": stable_coefficients((2,), T, 2, radius=0.9),
        "zi": torch.randn(2, 4, generator=g, dtype=torch.float64),
    }

    def run_lfilter(x, b, a, zi, backend):
        return lfilter(x, b, a, FilterState(zi[:, :2], zi[:, 2:]), backend=backend)

    got = _grads(lambda **kw: run_lfilter(**kw, backend=backend), base, needs)
    expected = _grads(lambda **kw: run_lfilter(**kw, backend="naive"), base, needs)
    for name in needs:
        torch.testing.assert_close(got[name], expected[name], rtol=1e-9, atol=1e-9)

    def run_sosfilt(x, b, a, zi, backend):
        sos = torch.cat([b, torch.ones_like(b[..., :1]), a], -1).unsqueeze(-2)  # one section
        return sosfilt(x, sos, FilterState(zi[:, None, :2], zi[:, None, 2:]), backend=backend)

    got = _grads(lambda **kw: run_sosfilt(**kw, backend=backend), base, needs)
    expected = _grads(lambda **kw: run_sosfilt(**kw, backend="naive"), base, needs)
    for name in needs:
        torch.testing.assert_close(got[name], expected[name], rtol=1e-9, atol=1e-9)


def _system(name: str, backend: str):
    if name == "phaser":
        return Phaser(sample_rate=8000.0, stages=2, backend=backend), torch.randn(2, 64, dtype=torch.float64)
    if name == "compressor":
        x = torch.randn(2, 64, dtype=torch.float64) * torch.linspace(0.05, 1.0, 64, dtype=torch.float64)
        return Compressor(sample_rate=8000.0, backend=backend), x
    return SubtractiveSynth(sample_rate=8000.0, backend=backend), torch.full((1, 64), 300.0, dtype=torch.float64)


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("name", ["phaser", "compressor", "synth"])
def test_system_gradients_frozen_or_trainable(backend, name):
    """Frozen parameters with a differentiable input, and trainable parameters with a fixed input."""
    system, inputs = _system(name, backend)
    system = system.double()
    reference, _ = _system(name, "naive")
    reference = reference.double()
    reference.load_state_dict(system.state_dict())
    # trainable parameters, input fixed
    for module in (system, reference):
        module(inputs).square().sum().backward()
    for (pname, p), (_, q) in zip(system.named_parameters(), reference.named_parameters()):
        torch.testing.assert_close(p.grad, q.grad, rtol=1e-8, atol=1e-10, msg=pname)
    if name == "synth":
        return  # its input is a pitch track, not a signal to differentiate
    # frozen parameters, differentiable input
    grads = []
    for module in (system, reference):
        module.requires_grad_(False)
        leaf = inputs.clone().requires_grad_()
        module(leaf).square().sum().backward()
        grads.append(leaf.grad)
    torch.testing.assert_close(grads[0], grads[1], rtol=1e-8, atol=1e-10)
