"""Streaming is bit-exact, and outputs follow the input dtype, for every system.

A plugin host cuts a stream into blocks of whatever size it likes; the samples it gets back must
not depend on where the cuts fall. So streamed and offline renderings are compared with ``==``,
not ``allclose``: a 1-ulp difference in a per-sample quantity (oscillator phase, LFO, glide) is
a bug here, because the ill-conditioned filters amplify it far beyond 1 ulp.
"""
from __future__ import annotations

import math

import pytest
import torch

from allpole_triton.systems import Compressor, Phaser, SubtractiveSynth, lfilter, sosfilt

SR = 44100.0
LENGTH = 6000  # long enough for the oscillator and the LFO to wrap several times
SHORT = 300  # for one-sample blocks, whose per-call overhead dominates
DTYPES = [torch.float32, torch.float64]
PARTITIONS = ["1", "37", "512", "random"]
SYSTEMS = ["phaser", "synth", "compressor"]


def block_sizes(partition: str, length: int) -> list[int]:
    """Sizes of consecutive blocks covering ``length`` samples: fixed, or random in [1, 700]."""
    if partition == "random":
        g = torch.Generator().manual_seed(length)
        sizes = torch.randint(1, 701, (length,), generator=g).tolist()
    else:
        sizes = [int(partition)] * length
    cuts, total = [], 0
    for size in sizes:
        if total >= length:
            break
        cuts.append(min(size, length - total))
        total += cuts[-1]
    return cuts


def length_for(partition: str) -> int:
    return SHORT if partition == "1" else LENGTH


def sweeping_f0(rows: int, length: int, dtype: torch.dtype) -> torch.Tensor:
    """Pitch track gliding 220 -> 330 Hz (the sweep makes each phase increment different)."""
    return torch.linspace(220.0, 330.0, length, dtype=torch.float64).expand(rows, length).to(dtype)


def noise(rows: int, length: int, dtype: torch.dtype, seed: int) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    return (0.3 * torch.randn(rows, length, generator=g, dtype=torch.float64)).to(dtype)


def bursts(rows: int, length: int, dtype: torch.dtype, seed: int) -> torch.Tensor:
    """Noise whose level jumps every 100 samples, so the compressor keeps switching attack/release."""
    g = torch.Generator().manual_seed(seed)
    levels = 10 ** (-2 * torch.rand(rows, length // 100 + 1, generator=g, dtype=torch.float64))
    envelope = torch.repeat_interleave(levels, 100, dim=-1)[:, :length]
    return (torch.randn(rows, length, generator=g, dtype=torch.float64) * envelope).to(dtype)


def make_system(name: str, length: int, dtype: torch.dtype) -> tuple[torch.nn.Module, torch.Tensor]:
    """A system with its parameters in ``dtype`` and an input of ``length`` samples in ``dtype``."""
    if name == "phaser":
        model = Phaser(SR, 6, rate_hz=3.0, lfo_phase=0.7, depth_octaves=2.0, centre_hz=500.0, feedback=0.8)
        inputs = noise(2, length, dtype, seed=1)
    elif name == "synth":
        model = SubtractiveSynth(SR, 2, cutoff_glide_s=0.05, q_start=6.0, q_glide_s=0.05, attack_s=0.002)
        inputs = sweeping_f0(2, length, dtype)
    else:
        model = Compressor(SR, threshold_db=-25, ratio=6, attack_ms=1, release_ms=10, detector_ms=0.5)
        inputs = bursts(2, length, dtype, seed=2)
    return model.to(dtype), inputs


def stream(process, inputs: torch.Tensor, sizes: list[int]) -> torch.Tensor:
    return torch.cat([process(block) for block in inputs.split(sizes, dim=-1)], dim=-1)


def max_difference(a: torch.Tensor, b: torch.Tensor) -> float:
    assert a.shape == b.shape and a.dtype == b.dtype
    return float((a - b).abs().max())


@pytest.mark.parametrize("dtype", DTYPES, ids=str)
@pytest.mark.parametrize("partition", PARTITIONS)
@pytest.mark.parametrize("name", SYSTEMS)
def test_streaming_is_bit_exact(name, partition, dtype):
    length = length_for(partition)
    model, inputs = make_system(name, length, dtype)
    with torch.no_grad():
        offline = model(inputs)
        model.reset()
        streamed = stream(model.process_block, inputs, block_sizes(partition, length))
    assert offline.abs().max() > 1e-2, name
    assert max_difference(streamed, offline) == 0.0


@pytest.mark.parametrize("dtype", DTYPES, ids=str)
@pytest.mark.parametrize("partition", PARTITIONS)
def test_lfilter_and_sosfilt_streaming_is_bit_exact(partition, dtype):
    length = length_for(partition)
    g = torch.Generator().manual_seed(3)
    x = torch.randn(2, length, generator=g, dtype=torch.float64).to(dtype)
    t = torch.arange(length, dtype=torch.float64) / SR
    radius, angle = 0.95, 2 * math.pi * (500 + 300 * torch.sin(2 * math.pi * 7 * t)) / SR
    a = torch.stack([-2 * radius * torch.cos(angle), torch.full_like(angle, radius**2)], dim=-1).to(dtype)
    b = torch.randn(length, 3, generator=g, dtype=torch.float64).to(dtype)
    sos = torch.stack([torch.cat([b, torch.ones_like(b[:, :1]), a], dim=-1)] * 2, dim=-2)

    def streamed(filter_block):
        state, chunks, start = None, [], 0
        for size in block_sizes(partition, length):
            y, state = filter_block(slice(start, start + size), state)
            chunks.append(y)
            start += size
        return torch.cat(chunks, dim=-1)

    lfilter_streamed = streamed(lambda sl, zi: lfilter(x[:, sl], b[sl], a[sl], zi, return_zf=True))
    sosfilt_streamed = streamed(lambda sl, zi: sosfilt(x[:, sl], sos[sl], zi, return_zf=True))
    assert max_difference(lfilter_streamed, lfilter(x, b, a)) == 0.0
    assert max_difference(sosfilt_streamed, sosfilt(x, sos)) == 0.0


@pytest.mark.parametrize("parameter_dtype", DTYPES, ids=str)
@pytest.mark.parametrize("input_dtype", DTYPES, ids=str)
@pytest.mark.parametrize("method", ["td", "fs"])
@pytest.mark.parametrize("name", SYSTEMS)
def test_output_dtype_follows_input(name, method, input_dtype, parameter_dtype):
    model, _ = make_system(name, 64, parameter_dtype)
    _, inputs = make_system(name, 600, input_dtype)
    model.method = method
    with torch.no_grad():
        assert model(inputs).dtype == input_dtype
        model.reset()
        assert model.process_block(inputs[:, :100]).dtype == input_dtype
        assert model.process_block(inputs[:, 100:]).dtype == input_dtype
