"""Frozen real-time processors: bit-exact under any block partition, equal to the torch modules
to rounding, and strict about their inputs."""
from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from allpole_triton.realtime import FrozenCompressor, FrozenPhaser, FrozenSynth
from allpole_triton.systems import Compressor, Phaser, SubtractiveSynth

SAMPLE_RATE = 48000.0
LENGTH = 4801
PARTITIONS = {"1": [1] * 300, "37": [37], "512": [512], "random": None}


def make_system(name: str) -> torch.nn.Module:
    """A system with parameters moved away from their defaults (as after training)."""
    torch.manual_seed(7)
    system = {
        "phaser": lambda: Phaser(sample_rate=SAMPLE_RATE, stages=4),
        "compressor": lambda: Compressor(sample_rate=SAMPLE_RATE, threshold_db=-24.0, ratio=4.0, attack_ms=2.0),
        "synth": lambda: SubtractiveSynth(sample_rate=SAMPLE_RATE),
        "synth2": lambda: SubtractiveSynth(sample_rate=SAMPLE_RATE, sections=2),
    }[name]()
    with torch.no_grad():
        for p in system.parameters():
            p.add_(0.3 * torch.randn_like(p))
    return system.double()


def make_input(name: str, rows: tuple[int, ...] = (2,)) -> np.ndarray:
    """Noise with a swelling envelope (crosses the compressor's threshold), or an f0 sweep in Hz."""
    if name.startswith("synth"):
        sweep = 220.0 * 1.5 ** np.linspace(0, 1, LENGTH)
        return np.broadcast_to(sweep * (1 + 0.1 * np.arange(math.prod(rows))).reshape(*rows, 1), (*rows, LENGTH)).copy()
    g = np.random.default_rng(3)
    envelope = 0.02 + 0.8 * np.sin(np.linspace(0, 3 * np.pi, LENGTH)) ** 2
    return g.standard_normal((*rows, LENGTH)) * envelope


def blocks(partition: list[int] | None, seed: int = 0) -> list[int]:
    """Block lengths covering LENGTH: a repeating pattern, or random lengths from 1 to 700."""
    if partition is None:
        g = np.random.default_rng(seed)
        partition = list(g.integers(1, 700, size=64))
    sizes, total, k = [], 0, 0
    while total < LENGTH:
        size = min(partition[k % len(partition)], LENGTH - total)
        sizes.append(size)
        total += size
        k += 1
    return sizes


def stream(frozen, signal: np.ndarray, sizes: list[int]) -> np.ndarray:
    frozen.reset()
    out, start = [], 0
    for size in sizes:
        out.append(frozen.process(signal[..., start : start + size]))
        start += size
    return np.concatenate(out, axis=-1)


SYSTEMS = ["phaser", "compressor", "synth", "synth2"]


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("partition", PARTITIONS)
@pytest.mark.parametrize("name", SYSTEMS)
def test_any_partition_is_bit_exact(name, partition, dtype):
    frozen = make_system(name).freeze()
    signal = make_input(name).astype(dtype)
    whole = stream(frozen, signal, [LENGTH])
    streamed = stream(frozen, signal, blocks(PARTITIONS[partition]))
    assert streamed.dtype == dtype and streamed.shape == signal.shape
    assert np.isfinite(whole).all() and np.abs(whole).max() > 1e-3
    assert np.array_equal(streamed, whole), f"max |diff| {np.abs(streamed - whole).max()}"


@pytest.mark.parametrize("dtype, bound", [(np.float64, 1e-12), (np.float32, 1e-5)])
@pytest.mark.parametrize("name", SYSTEMS)
def test_matches_the_float64_module(name, dtype, bound):
    """float64 blocks to 1e-12 of the float64 module; float32 blocks within float32 rounding of it."""
    system = make_system(name)
    signal = make_input(name)
    with torch.no_grad():
        expected = system(torch.from_numpy(signal)).numpy()
    got = stream(system.freeze(), signal.astype(dtype), [LENGTH])
    assert got.dtype == dtype
    error = np.abs(got - expected).max() / np.abs(expected).max()
    assert error <= bound, error


def test_tensors_in_tensors_out_with_leading_dims():
    frozen = make_system("phaser").freeze()
    signal = torch.from_numpy(make_input("phaser", rows=(2, 3))).float()
    out = frozen.process(signal)
    assert isinstance(out, torch.Tensor) and out.dtype == torch.float32 and out.shape == signal.shape
    frozen.reset()
    rows_apart = [stream(frozen, signal[i, j].numpy(), [LENGTH]) for i in range(2) for j in range(3)]
    assert np.array_equal(out.reshape(6, LENGTH).numpy(), np.stack(rows_apart))


def test_reset_restarts_the_stream():
    frozen = make_system("synth").freeze()
    f0 = make_input("synth")[..., :256]
    first = frozen.process(f0)
    assert not np.array_equal(frozen.process(f0), first)  # time and phase moved on
    frozen.reset()
    assert np.array_equal(frozen.process(f0), first)


def test_bad_inputs_name_the_problem():
    frozen = make_system("compressor").freeze()
    with pytest.raises(TypeError, match="float32 or float64"):
        frozen.process(np.zeros((2, 8), dtype=np.int16))
    with pytest.raises(ValueError, match="shape"):
        frozen.process(np.float64(1.0))
    frozen.process(np.zeros((2, 8)))
    with pytest.raises(ValueError, match="reset"):
        frozen.process(np.zeros((3, 8)))
    with pytest.raises(ValueError, match="stages"):
        FrozenPhaser(SAMPLE_RATE, 0, make_system("phaser").physical_parameters())
    with pytest.raises(ValueError, match="sections"):
        FrozenSynth(SAMPLE_RATE, 3, {})
    with pytest.raises(ValueError, match="needs parameters"):
        FrozenCompressor(SAMPLE_RATE, {"ratio": 2.0})


def test_empty_blocks_pass_through():
    frozen = make_system("phaser").freeze()
    assert frozen.process(np.zeros((2, 0))).shape == (2, 0)
    signal = make_input("phaser")
    assert np.array_equal(stream(frozen, signal, [0, 100, 0, LENGTH - 100]), stream(frozen, signal, [LENGTH]))
