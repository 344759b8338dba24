"""Accuracy of the Triton scan at high order with poles near the unit circle, in the GPU's launch
shapes (forced with ALLPOLE_TRITON_LAUNCH under the interpreter).

For each case: the forward output and all three gradients, against a float64 loop, must be within
10x of the error a plain sequential loop makes in the input's working precision (float32; for
16-bit inputs the float32 loop on the same rounded inputs, against float64 on them too). The chunk
maps are products of hundreds of companion matrices, very non-normal, and composing them in
float32 cancels catastrophically; this is the test that caught it.
"""
from __future__ import annotations

import pytest
import torch

from allpole_triton import allpole
from allpole_triton.kernels.naive import allpole_backward_naive, allpole_naive
from allpole_triton.op import triton_interpret
from conftest import poles_at_radius, random_signal, slow

pytest.importorskip("triton")
from allpole_triton.kernels import triton_scan  # noqa: E402

DEVICE = "cuda" if torch.cuda.is_available() else "cpu"
pytestmark = pytest.mark.skipif(DEVICE == "cpu" and not triton_interpret(), reason="needs CUDA or TRITON_INTERPRET=1")
FACTOR = 10


def relative(actual: torch.Tensor, expected: torch.Tensor) -> torch.Tensor:
    """Per row: max |actual - expected| / max |expected|."""
    error = (actual.double().cpu() - expected).abs().flatten(1).amax(1)
    return error / expected.abs().flatten(1).amax(1).clamp(min=1e-30)


def loop_results(x, a, zi, g):
    """Forward output and (grad_x, grad_a, grad_zi) by plain loops in x's dtype."""
    y = allpole_naive(x, a, zi)
    grad_x, grad_zi, grad_a = allpole_backward_naive(g, a, y, zi)
    return y, grad_x, grad_a, grad_zi


def triton_results(x, a, zi, g):
    inputs = [t.to(DEVICE).requires_grad_() for t in (x, a, zi)]
    y = allpole(*inputs, backend="triton")
    grads = torch.autograd.grad(y, inputs, g.to(DEVICE))
    return (y.detach(), *grads)


def length_for(M: int, chunk: int, group: int) -> int:
    """Two carry levels: short orders need more chunks than one carry block holds (the block's
    incoming state composed by a carry launch or by the finish, see LAUNCHES); long orders walk
    chunks sequentially, where three chunks (the last one partial) cross every boundary."""
    return (group + 1) * chunk + 7 if triton_scan.is_short(M) else 2 * chunk + 7


def check(x, a, zi, g, working: torch.dtype):
    """The Triton path on (x, a, zi) in their dtype against float64, next to a loop in ``working``,
    row by row. The output's own rounding (its dtype's eps) is always allowed."""
    exact = loop_results(*(t.double() for t in (x, a, zi, g)))
    loop = loop_results(*(t.to(working) for t in (x, a, zi, g)))
    fast = triton_results(x, a, zi, g)
    floor = 2 * torch.finfo(x.dtype).eps
    for name, f, l, e in zip(("y", "grad_x", "grad_a", "grad_zi"), fast, loop, exact):
        assert f.dtype == x.dtype and torch.isfinite(f).all(), name
        loop_error, fast_error = relative(l, e), relative(f, e)
        bound = torch.clamp(FACTOR * loop_error, min=floor)
        assert (fast_error <= bound).all(), f"{name}: errors {fast_error.tolist()} > {FACTOR} x loop's {loop_error.tolist()}"


def cases(M: int, T: int, radii: tuple[float, ...]):
    """One row per pole radius."""
    a = torch.cat([poles_at_radius((1,), T, M, r, seed=M + k) for k, r in enumerate(radii)])
    B = len(radii)
    return a, random_signal((B, T), seed=1), random_signal((B, M), seed=2), random_signal((B, T), seed=3)


# Every order at chunk=64; at chunk=256 (the interpreter's cost grows with the chunk, 23 s per
# short-order case) the short orders are represented by M=2: orders 1 and 4 run the same kernels,
# whose two carry levels they cross at chunk=64. The short orders' block carry is fused into the
# finish (as a GPU runs rows of few blocks) except at M=4, which runs the carry launch.
# make test runs chunk=64 at M = 2, 8, 16, 32 (orders 1 and 4 run M=2's kernels) and the reversed
# forward at M=16 (at M=2 with rows, the reverse kernels on the coefficients' copy); the rest is
# the full suite's.
LAUNCHES = [("chunk=64,group=16", M) for M in (2, 8, 16, 32)]
LAUNCHES += [slow("chunk=64,group=16", 1), slow("chunk=64,group=16,fuse=0", 4)]
LAUNCHES += [slow("chunk=256,group=16", M) for M in (2, 8, 16, 32)]
# the backward as the forward scan on reversed time (a GPU's default for real coefficients)
LAUNCHES += [slow("chunk=64,group=16,adjoint=1", M) for M in (1, 4)] + [("chunk=64,group=16,adjoint=1", 16)]
# ... and its short orders' default with rows: the reverse kernels on a copy of the coefficients
LAUNCHES += [("chunk=64,group=16,adjoint=1,rows=1", 2), slow("chunk=64,group=16,adjoint=1,rows=1", 4)]


@pytest.mark.parametrize("launch, M", LAUNCHES)
def test_float32_within_ten_times_a_float32_loop(monkeypatch, launch, M):
    """Pole radius 0.9, 0.99 and 0.999 (one row each)."""
    monkeypatch.setenv("ALLPOLE_TRITON_LAUNCH", launch)
    forced = triton_scan.forced_launch()
    a, x, zi, g = cases(M, length_for(M, forced["chunk"], forced["group"]), (0.9, 0.99, 0.999))
    check(*(t.float() for t in (x, a, zi, g)), torch.float32)


@pytest.mark.parametrize("dtype, M, adjoint", [
    (torch.bfloat16, 16, 0), slow(torch.bfloat16, 2, 0), slow(torch.bfloat16, 2, 1),
    slow(torch.bfloat16, 2, "1,rows=1"),
    slow(torch.float16, 2, 0), slow(torch.float16, 2, 1), slow(torch.float16, 16, 0),
])
def test_16_bit_within_ten_times_a_float32_loop(monkeypatch, dtype, M, adjoint):
    """float16 stops at 65504: at M=16 with poles at 0.99 the filter's gain overflows it, so only
    bfloat16 (float32's range) takes that case. ``adjoint``: the backward's path (see LAUNCHES)."""
    monkeypatch.setenv("ALLPOLE_TRITON_LAUNCH", f"chunk=64,group=16,adjoint={adjoint}")
    radii = (0.9, 0.99) if dtype == torch.bfloat16 or M < 16 else (0.9,)
    a, x, zi, g = cases(M, length_for(M, 64, 16), radii)
    check(*(t.to(dtype) for t in (x, a, zi, g)), torch.float32)


@pytest.mark.slow
@pytest.mark.skipif(DEVICE != "cpu", reason="the compiler always chains its sums")
@pytest.mark.parametrize("launch, M", [("chunk=32,group=4", 2), ("chunk=64,group=16", 8)])  # short, long
def test_chained_sums_within_ten_times_a_float32_loop(monkeypatch, launch, M):
    """The compiled kernels sum a step's products oldest first in one multiply-add chain
    (triton_scan.CHAINED_SUMS); the interpreter, which pays per op, reduces in slot order unless
    told otherwise. The compiler's order, under the GPU's chunk length, meets the same bar (and is
    another order: its output differs from the slot-order reduction's in the last bits)."""
    monkeypatch.setenv("ALLPOLE_TRITON_LAUNCH", launch)
    forced = triton_scan.forced_launch()
    a, x, zi, g = (t.float() for t in cases(M, length_for(M, forced["chunk"], forced["group"]), (0.9, 0.99, 0.999)))
    slot_order = allpole(x, a, zi, backend="triton")
    monkeypatch.setattr(triton_scan, "CHAINED_SUMS", triton_scan.tl.constexpr(True))
    check(x, a, zi, g, torch.float32)
    assert not torch.equal(allpole(x, a, zi, backend="triton"), slot_order)
