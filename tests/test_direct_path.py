"""Inference on CPU runs the Numba kernels with numpy glue only (``op.direct_numba``), and the
autograd-aware path runs the same kernels on the same rows: their outputs must be the same bits,
or a stream rendered under ``torch.no_grad`` would differ from the one rendered while training.

Each case runs once without gradients (the direct path, checked to be taken) and once with every
input requiring a gradient (the autograd path), and compares with ``==``.
"""
from __future__ import annotations

import importlib

import pytest
import torch

from allpole_triton import allpole
from allpole_triton import functional
from allpole_triton.systems import Compressor, FilterState, Phaser, SubtractiveSynth, lfilter
from allpole_triton.systems import filters
from allpole_triton.systems.compressor import attack_release_smoothing
from allpole_triton.systems.filters import time_varying_fir

# the package exports a function named like the module
compressor_module = importlib.import_module("allpole_triton.systems.compressor")
synth_module = importlib.import_module("allpole_triton.systems.synth")

DTYPES = [torch.float32, torch.float64, torch.complex64]


@pytest.fixture
def direct_calls(monkeypatch):
    """Counts the calls of the direct-path functions."""
    calls = {"n": 0}
    for module, name in [
        (functional, "_allpole_direct"), (filters, "_df1_direct"), (filters, "_fir_direct"),
        (compressor_module, "_smoothing_direct"), (synth_module, "_oscillator_direct"),
    ]:
        original = getattr(module, name)

        def spy(*args, _original=original, **kwargs):
            calls["n"] += 1
            return _original(*args, **kwargs)

        monkeypatch.setattr(module, name, spy)
    return calls


def both_paths(fn, tensors, direct_calls):
    """``fn(*tensors)`` without gradients (asserting the direct path ran) and with them."""
    with torch.no_grad():
        before = direct_calls["n"]
        direct = fn(*tensors)
        assert direct_calls["n"] > before, "the direct path was not taken"
    before = direct_calls["n"]
    tracked = fn(*[t.detach().clone().requires_grad_() for t in tensors])
    assert direct_calls["n"] == before, "the direct path ran although gradients were wanted"
    return direct, tracked


def assert_same_bits(a, b):
    a, b = (list(t) if isinstance(t, tuple) else [t] for t in (a, b))
    assert len(a) == len(b)
    for u, v in zip(a, b):
        assert u.shape == v.shape and u.dtype == v.dtype
        assert torch.equal(u, v.detach()), float((u - v.detach()).abs().max())


def random(*shape, dtype, scale=1.0, seed=0):
    g = torch.Generator().manual_seed(seed)
    return (scale * torch.randn(*shape, generator=g, dtype=dtype)).to(dtype)


# (x shape, a shape, zi shape or None): broadcast rows, coefficients shared or constant in time,
# blocks shorter than the order, and the orders of each Numba forward variant (1-2, 3-16, > 16)
ALLPOLE_CASES = [
    ((3, 50), (3, 50, 2), (3, 2)),
    ((2, 3, 40), (1, 1, 40, 5), None),
    ((4, 30), (30, 3), (1, 3)),
    ((2, 25), (2, 1, 4), (2, 4)),
    ((2, 3), (2, 3, 6), (2, 6)),
    ((1, 40), (1, 40, 20), (1, 20)),
]


@pytest.mark.parametrize("dtype", DTYPES, ids=str)
@pytest.mark.parametrize("x_shape, a_shape, zi_shape", ALLPOLE_CASES)
def test_allpole(x_shape, a_shape, zi_shape, dtype, direct_calls):
    M = a_shape[-1]
    tensors = [random(*x_shape, dtype=dtype), random(*a_shape, dtype=dtype, scale=0.5 / M, seed=1)]
    if zi_shape is not None:
        tensors.append(random(*zi_shape, dtype=dtype, seed=2))
    direct, tracked = both_paths(lambda *t: allpole(*t, return_zf=True), tensors, direct_calls)
    assert_same_bits(direct, tracked)


# (x shape, b shape, a shape, with state)
LFILTER_CASES = [
    ((2, 60), (2, 60, 3), (2, 60, 2), True),
    ((3, 40), (1, 5), (40, 4), False),
    ((2, 2, 30), (2, 1, 30, 2), (1, 1, 3), True),
    ((2, 3), (2, 3, 7), (2, 3, 6), True),
    ((2, 20), (2, 20, 3), (2, 20, 0), True),
]


@pytest.mark.parametrize("dtype", DTYPES, ids=str)
@pytest.mark.parametrize("x_shape, b_shape, a_shape, with_state", LFILTER_CASES)
def test_lfilter_and_fir(x_shape, b_shape, a_shape, with_state, dtype, direct_calls):
    K, M = b_shape[-1] - 1, a_shape[-1]
    x, b = random(*x_shape, dtype=dtype), random(*b_shape, dtype=dtype, seed=1)
    a = random(*a_shape, dtype=dtype, scale=0.5 / max(M, 1), seed=2)
    lead = x_shape[:-1]
    tensors = [x, b, a]
    if with_state:
        tensors += [random(*lead, K, dtype=dtype, seed=3), random(*lead, M, dtype=dtype, seed=4)]

    def run(x, b, a, *state):
        y, zf = lfilter(x, b, a, FilterState(*state) if state else None, return_zf=True)
        return (y, *zf)

    assert_same_bits(*both_paths(run, tensors, direct_calls))
    fir_tensors = [x, b] + ([tensors[3]] if with_state else [])
    assert_same_bits(*both_paths(lambda *t: time_varying_fir(*t, return_zf=True), fir_tensors, direct_calls))


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64], ids=str)
def test_attack_release_smoothing(dtype, direct_calls):
    target = random(3, 200, dtype=dtype).abs().clamp(max=1.0)
    attack, release = torch.tensor(0.3, dtype=dtype), torch.tensor(0.05, dtype=dtype)
    initial = torch.rand(3, dtype=dtype)
    direct, tracked = both_paths(attack_release_smoothing, [target, attack, release, initial], direct_calls)
    assert_same_bits(direct, tracked)


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64], ids=str)
@pytest.mark.parametrize("system", ["phaser", "synth", "compressor"])
def test_systems_render_the_same_bits_with_and_without_gradients(system, dtype, direct_calls):
    if system == "phaser":
        model, inputs = Phaser(44100.0, 4, feedback=0.7), random(2, 3000, dtype=dtype, scale=0.3)
    elif system == "synth":
        model, inputs = SubtractiveSynth(44100.0, 2, q_start=6.0), torch.linspace(220, 330, 3000, dtype=dtype).expand(2, -1)
    else:
        model, inputs = Compressor(44100.0, threshold_db=-30, ratio=6), random(2, 3000, dtype=dtype, scale=0.3)
    model = model.to(dtype)
    with torch.no_grad():
        before = direct_calls["n"]
        direct = model(inputs)
        assert direct_calls["n"] > before
    before = direct_calls["n"]
    tracked = model(inputs.clone().requires_grad_())
    assert direct_calls["n"] == before
    assert_same_bits(direct, tracked)


def test_oscillator_is_the_torch_ops_bit_for_bit_even_for_non_finite_pitch(direct_calls):
    """The Numba oscillator against oscillator_phase + polyblep_oscillator, NaN for NaN: an infinite
    or NaN f0 poisons the phase from that sample on in both (torch.frac(inf) is NaN)."""
    sr = 44100.0
    for values in ([440.0, float("inf"), 440.0], [440.0, -float("inf"), 440.0], [440.0, float("nan"), 440.0],
                   [-440.0] * 20, [0.0] * 5, [sr / 2] * 9, [0.9 * sr] * 9):
        f0 = torch.tensor([values], dtype=torch.float64)
        for initial in (None, torch.tensor([0.25], dtype=torch.float64), torch.tensor([-3.7], dtype=torch.float64)):
            before = direct_calls["n"]
            direct = synth_module._oscillator_direct(f0, initial, sr)
            phase, final = synth_module.oscillator_phase(f0, sr, initial)
            expected = (*synth_module.polyblep_oscillator(phase, f0, sr), final)
            assert direct_calls["n"] == before + 1
            for got, want in zip(direct, expected):
                same = (got.view(torch.int64) == want.view(torch.int64)) | (got.isnan() & want.isnan())
                assert bool(same.all()), (values, initial, got, want)
