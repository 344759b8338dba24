"""The TPT state-variable filter against its per-sample definition, scipy for constant settings,
streaming, and gradients."""
from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from scipy import signal

from allpole_triton.systems import svf
from allpole_triton.systems.synth import lowpass_biquad

SR = 8000.0


def tpt_loop(x, cutoff, q, state=None):
    """Zavalishin's TPT SVF, sample by sample in float64 numpy: (lp, bp, hp, final state)."""
    T = x.shape[-1]
    s1, s2 = (0.0, 0.0) if state is None else state
    out = np.zeros((3, T))
    for n in range(T):
        g = math.tan(math.pi * cutoff[n] / SR)
        r2 = 1 / q[n]
        hp = (x[n] - (r2 + g) * s1 - s2) / (1 + r2 * g + g * g)
        bp = g * hp + s1
        lp = g * bp + s2
        s1, s2 = 2 * bp - s1, 2 * lp - s2
        out[:, n] = lp, bp, hp
    return out, (s1, s2)


def sweep(T, seed=0):
    g = np.random.default_rng(seed)
    x = g.standard_normal(T)
    cutoff = 200 * 2 ** np.linspace(0, 4, T)  # 200 -> 3200 Hz
    q = 0.5 + 4 * np.sin(np.linspace(0, np.pi, T)) ** 2
    return x, cutoff, q


def test_matches_the_per_sample_definition_and_streams():
    x, cutoff, q = sweep(300)
    (lp, bp, hp), final = svf(*(torch.from_numpy(v) for v in (x, cutoff, q)), SR)
    expected, expected_final = tpt_loop(x, cutoff, q)
    for got, want in zip((lp, bp, hp), expected):
        np.testing.assert_allclose(got.numpy(), want, rtol=1e-9, atol=1e-10)
    np.testing.assert_allclose(final.numpy(), expected_final, rtol=1e-9, atol=1e-10)
    first, state = svf(*(torch.from_numpy(v[:120]) for v in (x, cutoff, q)), SR)
    rest, _ = svf(*(torch.from_numpy(v[120:]) for v in (x, cutoff, q)), SR, state=state)
    np.testing.assert_allclose(torch.cat([first.lowpass, rest.lowpass]).numpy(), expected[0], rtol=1e-9, atol=1e-10)


def test_constant_lowpass_is_the_rbj_biquad():
    x = np.random.default_rng(1).standard_normal((2, 200))
    cutoff, q = 900.0, 2.0
    lp = svf(torch.from_numpy(x), torch.tensor(cutoff, dtype=torch.float64), torch.tensor(q, dtype=torch.float64), SR)[0].lowpass
    sos = lowpass_biquad(torch.tensor(cutoff, dtype=torch.float64), torch.tensor(q, dtype=torch.float64), SR).numpy()
    expected = signal.lfilter(sos[:3], sos[3:], x)
    np.testing.assert_allclose(lp.numpy(), expected, rtol=1e-9, atol=1e-11)


def test_gradients_reach_cutoff_and_resonance():
    x, cutoff, q = sweep(16, seed=2)
    inputs = [torch.from_numpy(v).requires_grad_() for v in (x, cutoff, q)]
    assert torch.autograd.gradcheck(lambda x, c, q: torch.stack(svf(x, c, q, SR)[0]), inputs)


def test_bad_inputs():
    with pytest.raises(ValueError, match="sample_rate"):
        svf(torch.zeros(4), 100.0, 0.7, 0.0)
    with pytest.raises(ValueError, match="x must be"):
        svf(torch.tensor(1.0), 100.0, 0.7, SR)
