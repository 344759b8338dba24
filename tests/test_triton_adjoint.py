"""The backward as the forward scan on reversed time (kernels/triton_adjoint.py, triton_scan's
``_plan_reversed``) against the float64 adjoint loop, and where the plan takes it.

Under the interpreter the reverse kernels are the default, so these tests force the reversed path
(ALLPOLE_TRITON_LAUNCH's ``adjoint=1``); on a GPU it is the default for real time-varying
coefficients, and the CUDA runs of tests/test_triton.py exercise it too.
"""
from __future__ import annotations

import pytest
import torch

from allpole_triton.kernels.naive import allpole_backward_naive, allpole_naive
from conftest import random_signal, slow, stable_coefficients
from test_allpole import assert_close
from test_triton import DEVICES, chunk_length, many_chunks, planned_on_meta, run_both

pytest.importorskip("triton")
from allpole_triton.kernels import triton_adjoint, triton_scan  # noqa: E402

pytestmark = pytest.mark.skipif(not DEVICES, reason="needs CUDA or TRITON_INTERPRET=1")
COPIES = {triton_adjoint._reversed_inputs, triton_adjoint._adjoint_outputs}


def backward(grad_y, a, y, zi, need_grad_a=True):
    """grad_x, grad_zi and grad_a from triton_scan's backward plan (whichever path it takes)."""
    B, T = grad_y.shape
    grad_x, grad_zi = torch.empty_like(grad_y), torch.empty_like(zi)
    grad_a = torch.empty(B, T, a.shape[-1], dtype=a.dtype, device=a.device) if need_grad_a else None
    launches, finalize = triton_scan.plan(grad_y, a, zi, grad_x, reverse=True, tail=grad_zi, y=y, grad_a=grad_a,
                                          sms=triton_scan._sms(grad_y.device))
    for launch in launches:
        launch.run()
    finalize()
    return launches, (grad_x, grad_zi, grad_a)


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("M, layout, dtype", [
    slow(1, "contiguous", torch.float32), slow(2, "contiguous", torch.float64), (2, "shared", torch.float32),
    slow(3, "transposed", torch.float64), (5, "contiguous", torch.float32), (16, "contiguous", torch.float64),
    (2, "contiguous", torch.bfloat16),
])
@pytest.mark.parametrize("length", ["1", "M", "many"])
def test_reversed_forward_matches_the_adjoint_loop(monkeypatch, device, M, layout, dtype, length):
    """Every output of the backward (grad_x, grad_zi, grad_a) against the float64 adjoint loop:
    one sample (L = 1 + M reversed steps), M samples (the copies' zero padding on both sides) and
    many chunks; coefficients contiguous, transposed (read by their strides) and shared by every row
    (written once); float64, float32 and bfloat16 (its grads held to bfloat16's rounding)."""
    monkeypatch.setenv("ALLPOLE_TRITON_LAUNCH", "adjoint=1")
    T = {"1": 1, "M": M, "many": many_chunks(device, M)}[length]
    B = 3
    a = stable_coefficients((1 if layout == "shared" else B,), T, M, seed=M + T)
    if layout == "transposed":
        a = a.transpose(1, 2).contiguous().transpose(1, 2)
    x, zi, g = (random_signal(s, seed=k) for k, s in enumerate([(B, T), (B, M), (B, T)]))
    y = allpole_naive(x, a, zi)
    inputs = [t.to(dtype) for t in (g, a, y, zi)]  # the reference sees the inputs' rounding too
    expected = allpole_backward_naive(*(t.double() for t in inputs))
    launches, got = backward(*(t.to(device) for t in inputs))
    assert {launches[0].kernel, launches[-1].kernel} == COPIES
    tolerance = dict(rtol=2e-2, atol=2e-2) if dtype == torch.bfloat16 else {}
    for name, fast, slow in zip(("grad_x", "grad_zi", "grad_a"), got, expected):
        if tolerance:
            scale = slow.abs().max().clamp(min=1)
            assert ((fast.cpu().double() - slow).abs().max() / scale) < tolerance["rtol"], name
        else:
            assert_close(fast.cpu(), slow, dtype)


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("M, layout, dtype, launch", [
    (2, "shared", torch.float32, "chunk=32,group=4"), slow(1, "time-major", torch.float32, "chunk=32,group=4"),
    slow(2, "transposed", torch.float32, "chunk=32"), slow(2, "contiguous", torch.float32, "unroll=6,chunk=36"),
    (4, "contiguous", torch.float64, "chunk=32,group=4,fuse=0"), (2, "contiguous", torch.bfloat16, "chunk=32"),
    slow(2, "contiguous", torch.float32, "chunk=32,tile=4"), slow(2, "contiguous", torch.float32, "unroll=2,chunk=34"),
])
@pytest.mark.parametrize("length", ["1", "M", "many"])
def test_fused_adjoint_matches_the_adjoint_loop(monkeypatch, device, M, layout, dtype, launch, length):
    """Short orders with rows (a GPU's default, triton_scan.fuses_adjoint): the coefficients copied,
    then the reverse kernels on the copy writing grad_x, grad_zi and grad_a themselves, grad_a and
    its past outputs as rows; against the float64 adjoint loop, at one sample, M samples and many
    chunks (the carry fused or a launch, coefficient tiles, the shortest body, a body that is not a
    power of two); coefficients shared by the rows, contiguous, and strided (the copy reads them by
    their strides: a GPU copies M=1's only then)."""
    monkeypatch.setenv("ALLPOLE_TRITON_LAUNCH", f"adjoint=1,rows=1,{launch}")
    T = {"1": 1, "M": M, "many": 5 * 32 + 3}[length]
    B = 3
    a = stable_coefficients((1 if layout == "shared" else B,), T, M, seed=M + T)
    if layout == "transposed":
        a = a.transpose(1, 2).contiguous().transpose(1, 2)
    elif layout == "time-major":
        a = a.transpose(0, 1).contiguous().transpose(0, 1)
    x, zi, g = (random_signal(s, seed=k) for k, s in enumerate([(B, T), (B, M), (B, T)]))
    y = allpole_naive(x, a, zi)
    inputs = [t.to(dtype) for t in (g, a, y, zi)]
    expected = allpole_backward_naive(*(t.double() for t in inputs))
    launches, got = backward(*(t.to(device) for t in inputs))
    if layout in ("transposed", "time-major") and T > 1:
        assert triton_scan.coefficient_layout(inputs[1]) == triton_scan.A_STRIDED
    assert launches[0].kernel is triton_adjoint._reversed_inputs and not launches[0].constexprs["INPUT"]
    assert all(launch.constexprs["REVERSE"] and launch.constexprs["A_COPY"] for launch in launches[1:]
               if "A_COPY" in launch.constexprs)
    assert launches[-1].constexprs["GRAD_A_ROWS"]
    for name, fast, slow_ in zip(("grad_x", "grad_zi", "grad_a"), got, expected):
        if dtype == torch.bfloat16:
            scale = slow_.abs().max().clamp(min=1)
            assert ((fast.cpu().double() - slow_).abs().max() / scale) < 2e-2, name
        else:
            assert_close(fast.cpu(), slow_, dtype)


@pytest.mark.parametrize("device", DEVICES)
def test_reversed_forward_through_autograd(monkeypatch, device):
    """The public API's backward on the reversed path, with and without grad_a, against autograd
    through the plain loop and against the reverse kernels."""
    M = 2
    T = 3 * chunk_length(device, M, 2, 1 << 20) + 5
    a = stable_coefficients((2,), T, M, seed=4).to(device)
    x, zi, g = (random_signal(s, seed=k).to(device) for k, s in enumerate([(2, T), (2, M), (2, T)]))
    for grad_a in (True, False):
        results = {}
        for forced in ("adjoint=0", "adjoint=1"):
            monkeypatch.setenv("ALLPOLE_TRITON_LAUNCH", forced)
            results[forced] = run_both(x, a, zi, g, ("triton",), grad_a)[0]
        reference = run_both(x.cpu(), a.cpu(), zi.cpu(), g.cpu(), ("naive",), grad_a)[0]
        for reversed_, kernels, slow in zip(results["adjoint=1"], results["adjoint=0"], reference):
            assert_close(reversed_.cpu(), slow, torch.float64)
            assert_close(reversed_.cpu(), kernels.cpu(), torch.float64)


def test_the_reversed_forward_where_a_gpu_takes_it(monkeypatch):
    """On a GPU (planned on the meta device for 132 SMs) real time-varying coefficients take the
    reversed path, 1-D grids: orders 2 and 4 copy the coefficients and run the reverse kernels on
    the copy (at most four launches, three with the carry fused); other orders two copies around
    the forward's launches (at most three). Constant coefficients, complex inputs, short orders
    over few samples, M=1 with contiguous coefficients (its reverse kernels read them as rows, and
    write grad_a as rows), forced ``adjoint=0`` and the interpreter's default keep the reverse
    kernels."""
    monkeypatch.delenv("ALLPOLE_TRITON_LAUNCH", raising=False)

    def kernels(B, T, M, Ta=None, dtype=torch.float32, sms=132):
        u, a, zi, out, tail, y, grad_a = planned_on_meta(B, T, M, reverse=True, dtype=dtype, Ta=Ta)
        launches, _ = triton_scan.plan(u, a, zi, out, reverse=True, sms=sms, tail=tail, y=y, grad_a=grad_a)
        for launch in launches:
            assert isinstance(launch.grid, int) and 0 < launch.grid < 2**31
        return launches

    for B, T, M in [(16, 1 << 20, 2), (8, 1 << 16, 4), (1, 1 << 20, 4)]:
        launches = kernels(B, T, M)
        assert launches[0].kernel is triton_adjoint._reversed_inputs and not COPIES & {l.kernel for l in launches[1:]}
        assert all(launch.constexprs["REVERSE"] and launch.constexprs["A_COPY"] for launch in launches[1:]
                   if "A_COPY" in launch.constexprs)
        assert launches[-1].constexprs["GRAD_A_ROWS"] and len(launches) <= (3 if B * T <= 1 << 20 else 4)
    for B, T, M in [(1, 17_280_000, 16), (1, 1, 16), (16, 1 << 20, 3), (16, 1 << 20, 8)]:
        launches = kernels(B, T, M)
        assert {launches[0].kernel, launches[-1].kernel} == COPIES and len(launches) <= 5
        assert all(not launch.constexprs.get("REVERSE", False) for launch in launches[1:-1])
    for B, T in [(16, 1 << 20), (4096, 4096)]:
        launches = kernels(B, T, 1)
        assert not COPIES & {launch.kernel for launch in launches} and len(launches) <= 3
        assert launches[-1].constexprs["GRAD_A_ROWS"] and not launches[-1].constexprs["A_COPY"]
    few = triton_scan.REVERSED_MIN_SAMPLES[4] // 2
    for other in (kernels(16, 1 << 20, 2, Ta=1), kernels(16, 1 << 20, 2, dtype=torch.complex64), kernels(16, 1 << 20, 2, sms=None),
                  kernels(1, few, 4), kernels(16, few // 16, 1)):
        assert not COPIES & {launch.kernel for launch in other}
        assert other[-1].constexprs["REVERSE"] and len(other) <= 3
    monkeypatch.setenv("ALLPOLE_TRITON_LAUNCH", "adjoint=0")
    assert not COPIES & {launch.kernel for launch in kernels(16, 1 << 20, 2)}
