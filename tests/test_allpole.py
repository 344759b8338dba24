"""The core op: exactness against the float64 loop, gradients, transforms, compile, errors."""
from __future__ import annotations

import importlib.util

import numpy as np
import pytest
import torch

from allpole_triton import AllPole, allpole, sample_wise_lpc
from allpole_triton.kernels.naive import allpole_naive
from conftest import random_signal, slow, stable_coefficients

TOL = {torch.float32: 2e-4, torch.float64: 1e-10, torch.complex64: 2e-4, torch.complex128: 1e-10}


def reference(x, a, zi=None):
    """Float64 naive loop on broadcast rows, independent of every fast kernel."""
    wide = torch.complex128 if x.dtype.is_complex else torch.float64
    T, (Ta, M) = x.shape[-1], a.shape[-2:]
    lead = torch.broadcast_shapes(x.shape[:-1], a.shape[:-2], *([] if zi is None else [zi.shape[:-1]]))
    rows = x.to(wide).expand(*lead, T).reshape(-1, T)
    coeffs = a.to(wide).expand(*lead, Ta, M).reshape(-1, Ta, M)
    state = torch.zeros(rows.shape[0], M, dtype=wide) if zi is None else zi.to(wide).expand(*lead, M).reshape(-1, M)
    return allpole_naive(rows, coeffs, state).reshape(*lead, T)


def relative_error(actual, expected):
    scale = expected.abs().max().clamp(min=1.0)
    return (actual.to(expected.dtype) - expected).abs().max() / scale


def assert_close(actual, expected, dtype):
    err = relative_error(actual, expected)
    assert err <= TOL[dtype], f"relative error {err:.3g} > {TOL[dtype]:.1g}"


def assert_close_to_rounding(y, x, a, zi):
    """y within rounding of the float64 loop on the same inputs.

    High orders with poles near the unit circle amplify rounding in any sequential evaluation.
    The amplification is measured by running the plain loop in single precision on the same
    inputs; y may be off by up to 8x that, rescaled to y's precision.
    """
    expected = reference(x, a, zi)
    single = torch.complex64 if x.dtype.is_complex else torch.float32
    T, (Ta, M) = x.shape[-1], a.shape[-2:]
    rows = x.to(single).reshape(-1, T)
    state = rows.new_zeros(rows.shape[0], M) if zi is None else zi.to(single).reshape(-1, M)
    loop = allpole_naive(rows, a.to(single).reshape(-1, Ta, M), state).reshape(expected.shape)
    eps_ratio = torch.finfo(y.real.dtype).eps / torch.finfo(torch.float32).eps
    bound = max(TOL[x.dtype], 8 * float(relative_error(loop, expected)) * eps_ratio)
    err = relative_error(y, expected)
    assert err <= bound, f"relative error {err:.3g} > {bound:.3g}"


@pytest.mark.parametrize("M", [1, 2, 3, 8, 16])
@pytest.mark.parametrize("T", [1, 5, 1000, slow(4097)])
@pytest.mark.parametrize("lead", [(), (3,), (2, 3)])
def test_forward_matches_float64_loop(M, T, lead):
    a64 = stable_coefficients(lead, T, M, seed=M + T)
    x64 = random_signal((*lead, T))
    zi64 = random_signal((*lead, M), seed=7)
    for zi in (None, zi64):
        for dtype in (torch.float32, torch.float64):
            inputs = [None if t is None else t.to(dtype) for t in (x64, a64, zi)]
            y = allpole(*inputs)
            assert y.dtype == dtype and y.shape == (*lead, T)
            assert_close_to_rounding(y, *inputs)


@pytest.mark.parametrize("M", [1, 2, 3, 8, 16])
@pytest.mark.parametrize("T", [1, 1000])
@pytest.mark.parametrize("dtype", [torch.complex64, torch.complex128])
def test_complex_forward_matches_float64_loop(M, T, dtype):
    inputs = [
        stable_coefficients((2,), T, M, dtype=torch.complex128, seed=M).to(dtype)
        if name == "a" else random_signal(shape, torch.complex128, seed=seed).to(dtype)
        for name, shape, seed in [("x", (2, T), 1), ("a", None, None), ("zi", (2, M), 3)]
    ]
    assert_close_to_rounding(allpole(*inputs), *inputs)


def test_constant_and_shared_coefficients_broadcast():
    a_const = stable_coefficients((), 1, 4, seed=5)  # (1, M): one filter for every row and sample
    x = random_signal((3, 2, 300))
    assert_close(allpole(x, a_const), reference(x, a_const), torch.float64)
    a_rows = stable_coefficients((2,), 300, 4, seed=6)  # broadcast over the first dim of x
    assert_close(allpole(x, a_rows), reference(x, a_rows), torch.float64)
    scipy_signal = pytest.importorskip("scipy.signal")
    y = allpole(x, a_const)
    expected = scipy_signal.lfilter([1.0], [1.0, *a_const[0].tolist()], x.numpy(), axis=-1)
    assert_close(y, torch.from_numpy(expected), torch.float64)


@pytest.mark.parametrize("M", [1, 3, 8])
def test_streaming_chains_zf_into_zi(M):
    T = 1000
    a = stable_coefficients((2,), T, M, seed=11)
    x = random_signal((2, T))
    zi = random_signal((2, M), seed=12)
    whole, zf_whole = allpole(x, a, zi, return_zf=True)
    state, pieces = zi, []
    for lo, hi in [(0, 1), (1, 2), (2, 37), (37, 500), (500, 503), (503, T)]:
        y, state = allpole(x[..., lo:hi], a[..., lo:hi, :], state, return_zf=True)
        pieces.append(y)
    assert_close(torch.cat(pieces, -1), whole, torch.float64)
    assert_close(state, zf_whole, torch.float64)
    assert torch.equal(zf_whole, whole[..., -M:].flip(-1))


def test_zf_of_block_shorter_than_order_reaches_into_zi():
    a = stable_coefficients((1,), 2, 5, seed=1)
    x, zi = random_signal((1, 2)), random_signal((1, 5), seed=2)
    y, zf = allpole(x, a, zi, return_zf=True)
    assert torch.equal(zf, torch.cat([y.flip(-1), zi[:, :3]], -1))


def _small_inputs(dtype, Ta=7, Ba=2, M=3):
    a = stable_coefficients((Ba,), Ta, M, dtype=dtype, seed=2)
    x = random_signal((2, 7), dtype)
    zi = random_signal((2, M), dtype, seed=4)
    return [t.clone().requires_grad_() for t in (x, a, zi)]


@pytest.mark.parametrize("dtype", [torch.float64, torch.complex128])
@pytest.mark.parametrize("Ta,Ba", [(7, 2), (1, 2), (7, 1)])
def test_gradcheck_and_gradgradcheck(dtype, Ta, Ba):
    inputs = _small_inputs(dtype, Ta, Ba)
    assert torch.autograd.gradcheck(allpole, inputs)
    assert torch.autograd.gradgradcheck(allpole, inputs)


@pytest.mark.parametrize("M", [1, 2, 5])
@pytest.mark.parametrize("dtype", [torch.float64, torch.complex128])
def test_gradients_match_autograd_through_loop(M, dtype):
    T = 300
    a = stable_coefficients((3,), T, M, dtype=dtype, seed=M)
    x, zi = random_signal((3, T), dtype), random_signal((3, M), dtype, seed=9)
    g = random_signal((3, T), dtype, seed=10)
    grads = []
    for backend in ("numba", "naive"):
        inputs = [t.clone().requires_grad_() for t in (x, a, zi)]
        y, zf = allpole(*inputs, return_zf=True, backend=backend)
        loss = (y * g.conj()).real.sum() + zf.abs().pow(2).sum()
        grads.append(torch.autograd.grad(loss, inputs))
    for fast, slow in zip(*grads):
        assert_close(fast, slow, torch.float64)


def test_jvp_matches_vjp_jacobian():
    x, a, zi = (t.detach() for t in _small_inputs(torch.float64))
    tangents = tuple(torch.randn_like(t) for t in (x, a, zi))
    _, jvp_out = torch.func.jvp(allpole, (x, a, zi), tangents)
    jac = torch.autograd.functional.jacobian(lambda *t: allpole(*t), (x, a, zi))
    expected = sum((j * t).flatten(-t.ndim).sum(-1) for j, t in zip(jac, tangents))
    assert_close(jvp_out, expected, torch.float64)


def test_dual_tensors_carry_tangents_without_requires_grad():
    """torch.autograd.forward_ad: no input requires grad, yet the tangent must come through (the
    inference shortcut that skips autograd must not swallow it)."""
    import torch.autograd.forward_ad as fwAD

    x, a, zi = (t.detach() for t in _small_inputs(torch.float64))
    tangents = tuple(torch.randn_like(t) for t in (x, a, zi))
    _, expected = torch.func.jvp(allpole, (x, a, zi), tangents)
    with torch.no_grad(), fwAD.dual_level():
        duals = [fwAD.make_dual(t, dt) for t, dt in zip((x, a, zi), tangents)]
        tangent = fwAD.unpack_dual(allpole(*duals)).tangent
    assert tangent is not None
    assert_close(tangent, expected, torch.float64)


def test_vmap_matches_loop():
    a = stable_coefficients((4, 3), 50, 3, seed=1)
    x, zi = random_signal((4, 3, 50)), random_signal((4, 3, 3), seed=2)
    out = torch.func.vmap(allpole)(x, a, zi)
    assert_close(out, torch.stack([allpole(*t) for t in zip(x, a, zi)]), torch.float64)
    shared = torch.func.vmap(allpole, in_dims=(0, None, None))(x, a[0], zi[0])
    assert_close(shared, torch.stack([allpole(xi, a[0], zi[0]) for xi in x]), torch.float64)
    grad_vmapped = torch.func.vmap(torch.func.grad(lambda x, a: allpole(x, a).pow(2).sum(), argnums=(0, 1)))(x, a)
    for i in range(4):
        xi, ai = x[i].clone().requires_grad_(), a[i].clone().requires_grad_()
        expected = torch.autograd.grad(allpole(xi, ai).pow(2).sum(), (xi, ai))
        for got, want in zip(grad_vmapped, expected):
            assert_close(got[i], want, torch.float64)


def test_torch_compile_fullgraph_matches_eager():
    a = stable_coefficients((2,), 200, 4, dtype=torch.float32, seed=3)
    x = random_signal((2, 200), torch.float32)
    zi = random_signal((2, 4), torch.float32, seed=5)

    def loss_fn(x, a, zi):
        y, zf = allpole(x, a, zi, return_zf=True)
        return y.pow(2).mean() + zf.sum()

    grads = []
    for fn in (loss_fn, torch.compile(loss_fn, fullgraph=True, backend="aot_eager")):
        inputs = [t.clone().requires_grad_() for t in (x, a, zi)]
        loss = fn(*inputs)
        loss.backward()
        grads.append([loss.detach()] + [t.grad for t in inputs])
    for eager, compiled in zip(*grads):
        torch.testing.assert_close(compiled, eager, rtol=1e-5, atol=1e-6)


@pytest.mark.skipif(importlib.util.find_spec("torchlpc") is None, reason="torchlpc not installed")
@pytest.mark.parametrize("M", [1, 2, 6])
def test_parity_with_torchlpc(M):
    import torchlpc

    T = 2000
    a = stable_coefficients((3,), T, M, seed=M)
    x, zi = random_signal((3, T)), random_signal((3, M), seed=3)
    results = []
    for fn in (torchlpc.sample_wise_lpc, sample_wise_lpc):
        inputs = [t.clone().requires_grad_() for t in (x, a, zi)]
        y, zf = fn(*inputs, return_zf=True)
        (y.pow(2).sum() + zf.sum()).backward()
        results.append([y.detach(), zf.detach()] + [t.grad for t in inputs])
    for theirs, ours in zip(*results):
        assert_close(ours, theirs, torch.float64)


def test_empty_time_and_batch():
    a = torch.zeros(2, 0, 3)
    zi = torch.randn(2, 3)
    y, zf = allpole(torch.zeros(2, 0), a, zi, return_zf=True)
    assert y.shape == (2, 0) and torch.equal(zf, zi)
    assert allpole(torch.zeros(0, 5), torch.zeros(0, 5, 2)).shape == (0, 5)
    x = torch.zeros(2, 0, requires_grad=True)
    allpole(x, torch.zeros(2, 1, 3)).sum().backward()
    assert x.grad.shape == (2, 0)


def test_non_contiguous_inputs():
    a = stable_coefficients((3,), 100, 2, seed=1)
    x = random_signal((100, 3)).t()  # (3, 100), non-contiguous
    a_nc = a.transpose(0, 1).contiguous().transpose(0, 1)
    assert not x.is_contiguous() and not a_nc.is_contiguous()
    assert_close(allpole(x, a_nc), reference(x, a), torch.float64)


def test_nan_and_inf_propagate_like_a_loop():
    a = stable_coefficients((1,), 20, 2, seed=1)
    for bad in (float("nan"), float("inf")):
        x = random_signal((1, 20))
        x[0, 5] = bad
        assert torch.equal(allpole(x, a).isnan(), reference(x, a).isnan())
        assert torch.equal(allpole(x, a).isinf(), reference(x, a).isinf())


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16])
def test_low_precision_computes_in_float32(dtype):
    a = stable_coefficients((2,), 500, 2, seed=1)
    x = random_signal((2, 500))
    y = allpole(x.to(dtype), a.to(dtype))
    assert y.dtype == dtype
    expected = reference(x.to(dtype).double(), a.to(dtype).double())
    assert (y.double() - expected).abs().max() <= 1e-2 * expected.abs().max()


def test_module_and_backends_agree():
    a = stable_coefficients((2,), 64, 3, seed=1)
    x = random_signal((2, 64))
    module = AllPole(return_zf=True)
    y, zf = module(x, a)
    for backend in ("numba", "naive"):
        y2, zf2 = AllPole(backend=backend, return_zf=True)(x, a)
        assert_close(y2, y, torch.float64)
        assert_close(zf2, zf, torch.float64)
    assert "backend='auto'" in repr(module)


BAD_INPUTS = [
    (lambda: allpole(torch.zeros(2, 10), torch.zeros(2, 9, 2)), ValueError, "time dim"),
    (lambda: allpole(torch.zeros(2, 64), torch.zeros(2, 64)), ValueError, "a needs a trailing order dim"),
    (lambda: allpole(torch.zeros(2, 10), torch.zeros(3, 10, 2)), ValueError, "do not broadcast"),
    (lambda: allpole(torch.zeros(2, 10), torch.zeros(2, 10, 2), torch.zeros(2, 3)), ValueError, "zi must have shape"),
    (lambda: allpole(torch.zeros(2, 10), torch.zeros(2, 10, 2), torch.zeros(5, 2)), ValueError, "do not broadcast"),
    (lambda: allpole(torch.zeros(2, 10), torch.zeros(2, 10, 0)), ValueError, "order M >= 1"),
    (lambda: allpole(torch.zeros(2, 10), torch.zeros(10)), ValueError, "a must have shape"),
    (lambda: allpole(torch.zeros((), dtype=torch.float32), torch.zeros(1, 1)), ValueError, "x must have shape"),
    (lambda: allpole(torch.zeros(2, 10, dtype=torch.int64), torch.zeros(2, 10, 2)), TypeError, "x must be a floating"),
    (lambda: allpole(torch.zeros(2, 10), torch.zeros(2, 10, 2, dtype=torch.bool)), TypeError, "a must be a floating"),
    (lambda: allpole(torch.zeros(2, 10), torch.zeros(2, 10, 2, dtype=torch.float64)), TypeError, "share one dtype"),
    (lambda: allpole(torch.zeros(2, 10), torch.zeros(2, 10, 2), torch.zeros(2, 2, device="meta")), ValueError, "one device"),
    (lambda: allpole([1.0], torch.zeros(1, 2)), TypeError, "x must be a torch.Tensor"),
    (lambda: allpole(torch.zeros(2, 10), torch.zeros(2, 10, 2), backend="cuda"), ValueError, "backend must be one of"),
    (lambda: sample_wise_lpc(torch.zeros(10), torch.zeros(10, 2)), ValueError, "x must have shape \\(B, T\\)"),
]


@pytest.mark.parametrize("call,error,message", BAD_INPUTS)
def test_bad_input_raises_clear_error(call, error, message):
    with pytest.raises(error, match=message):
        call()


def test_triton_backend_on_cpu_without_interpreter_is_refused(monkeypatch):
    monkeypatch.setenv("TRITON_INTERPRET", "0")
    with pytest.raises(ValueError, match="TRITON_INTERPRET=1"):
        allpole(torch.zeros(1, 4), torch.zeros(1, 4, 2), backend="triton")


COLD_FIRST_CALL = """
import sys, torch
from allpole_triton import allpole
x = torch.randn(2, 64, requires_grad=True)
a = (0.1 * torch.randn(2, 64, 2)).requires_grad_()
allpole(x, a).sum().backward()
assert x.grad is not None and a.grad is not None
print(sorted(m for m in ("torch._dynamo", "torch._inductor", "sympy", "triton") if m in sys.modules))
"""


def test_cold_first_call_imports_no_compiler_stack():
    """Import, first forward and first backward on CPU stay clear of torch._dynamo, Inductor,
    sympy and Triton: importing those was 1.3 s of a 1.7 s cold first call (the README's figure)."""
    import os
    import subprocess
    import sys

    env = {k: v for k, v in os.environ.items() if k != "TRITON_INTERPRET"}
    run = subprocess.run([sys.executable, "-c", COLD_FIRST_CALL], capture_output=True, text=True, env=env, timeout=300)
    assert run.returncode == 0, run.stderr[-3000:]
    assert run.stdout.strip().splitlines()[-1] == "[]", run.stdout


def test_dispatch_modes_see_the_op():
    """Plain eager calls go straight to the kernels; under a dispatch mode (as profilers, FLOP and
    memory counters use) the call goes through the torch.library op, so the mode sees it."""
    from torch.utils._python_dispatch import TorchDispatchMode

    class Recorder(TorchDispatchMode):
        def __init__(self):
            super().__init__()
            self.ops = []

        def __torch_dispatch__(self, func, types, args=(), kwargs=None):
            self.ops.append(str(func))
            return func(*args, **(kwargs or {}))

    x = random_signal((2, 32)).requires_grad_()
    a = stable_coefficients((2,), 32, 2)
    expected = allpole(x.detach(), a)
    with Recorder() as recorder:
        y = allpole(x, a)
        y.sum().backward()
    assert any(op.startswith("allpole_triton.allpole.") for op in recorder.ops), recorder.ops
    assert any(op.startswith("allpole_triton.allpole_backward.") for op in recorder.ops), recorder.ops
    torch.testing.assert_close(y.detach(), expected, rtol=0, atol=0)


def test_large_outputs_reuse_freed_buffers_only():
    """Large CPU outputs come from a pool of already-faulted buffers: a buffer is handed out again
    only after every tensor (and view) on it is gone, and never while one is alive."""
    import gc

    from allpole_triton.op import host_pool

    if host_pool.max_bytes < 4 << 20:
        pytest.skip("the buffer pool is turned off (ALLPOLE_HOST_POOL_MB)")
    gc.collect()
    host_pool.clear()  # earlier tests' free buffers would be lent first
    T = 1 << 16  # 4 rows of float32: 1 MiB, the pool's smallest size
    x, a = random_signal((4, T)).float(), stable_coefficients((4,), 1, 2, seed=3).float()
    first = allpole(x, a)
    expected = first.clone()
    second = allpole(2 * x, a)
    assert second.data_ptr() != first.data_ptr()
    torch.testing.assert_close(first, expected, rtol=0, atol=0)  # untouched by the second call
    view = first[1:]
    address = first.data_ptr()
    del first
    gc.collect()
    third = allpole(3 * x, a)
    assert third.data_ptr() != address  # the view keeps the buffer
    torch.testing.assert_close(view, expected[1:], rtol=0, atol=0)
    del view, second, third
    gc.collect()
    reused = allpole(x, a)
    assert reused.data_ptr() == address  # the first freed buffer, already faulted in
    torch.testing.assert_close(reused, expected, rtol=0, atol=0)


def test_reflection_to_lpc_gives_stable_filters():
    """|k| < 1 gives all roots of 1 + sum a_i z^-i inside the unit circle; M = 2 by hand; differentiable."""
    from allpole_triton import reflection_to_lpc

    g = torch.Generator().manual_seed(11)
    k = 0.99 * (2 * torch.rand(50, 12, generator=g, dtype=torch.float64) - 1)
    a = reflection_to_lpc(k)
    roots = [np.roots(np.concatenate([[1.0], row])) for row in a.numpy()]
    assert max(np.abs(r).max() for r in roots) < 1
    k1, k2 = 0.3, -0.5
    expected = torch.tensor([k1 + k2 * k1, k2], dtype=torch.float64)
    torch.testing.assert_close(reflection_to_lpc(torch.tensor([k1, k2], dtype=torch.float64)), expected)
    assert torch.autograd.gradcheck(reflection_to_lpc, (k[:2, :5].clone().requires_grad_(),))
    with pytest.raises(ValueError, match="shape"):
        reflection_to_lpc(torch.zeros(3, 0))


def test_jit_trace_records_the_op_not_its_output():
    """A trace of the direct eager call would freeze its output as a constant; traced calls go through the op."""
    x, a = random_signal((2, 64)), stable_coefficients((2,), 64, 2)
    traced = torch.jit.trace(lambda x, a: allpole(x, a), (x, a), check_trace=False)
    other = random_signal((2, 64), seed=5)
    torch.testing.assert_close(traced(other, a), allpole(other, a), rtol=0, atol=0)


def test_profiler_sees_the_op():
    x, a = random_signal((2, 64)).requires_grad_(), stable_coefficients((2,), 64, 2)
    with torch.profiler.profile() as prof:
        allpole(x, a).sum().backward()
    names = {event.name for event in prof.events()}
    assert "allpole_triton::allpole" in names and "allpole_triton::allpole_backward" in names, sorted(names)[:40]


def test_host_pool_evicts_least_recently_lent_free_buffers():
    from allpole_triton.op import HostBufferPool

    mib = 1 << 20
    pool = HostBufferPool(max_bytes=3 * mib, min_bytes=mib)
    first = pool.empty((mib // 4,), np.dtype(np.float32))  # 1 MiB
    second = pool.empty((mib // 2,), np.dtype(np.float32))  # 2 MiB
    assert pool.held_bytes == 3 * mib
    assert pool.empty((mib // 4,), np.dtype(np.float32)) is None  # full, and nothing is free
    del first
    third = pool.empty((mib // 2,), np.dtype(np.float32))  # 2 MiB more: the free 1 MiB goes, still too little
    assert third is None and pool.held_bytes == 2 * mib
    del second
    again = pool.empty((mib // 2,), np.dtype(np.float32))  # the freed 2 MiB buffer is lent again
    assert again is not None and pool.held_bytes == 2 * mib
    del again
    pool.clear()
    assert pool.held_bytes == 0


@pytest.mark.parametrize("dtype", [torch.float64, slow(torch.complex128)])
def test_every_order_of_the_cpu_kernels(dtype):
    """Orders on both sides of every Numba kernel's bounds (registers for M <= 2, a register tuple up
    to 16 (8 complex), the in-memory dot product above), forward and backward; an odd number of
    rows leaves one row alone in the last interleaved pair; coefficients per row and time, shared,
    and constant."""
    for M in (1, 2, 3, 5, 8, 9, 16, 17):
        x, zi = random_signal((3, 37), dtype, seed=M), random_signal((3, M), dtype, seed=M + 1)
        for a_lead, Ta in [((3,), 37), ((1,), 37), ((3,), 1)]:
            a = (0.5 / M) * random_signal((*a_lead, Ta, M), dtype, seed=M + 2)
            inputs = [t.clone().requires_grad_() for t in (x, a, zi)]
            y = allpole(*inputs, backend="numba")
            grads = torch.autograd.grad(y, inputs, torch.ones_like(y))
            ref_inputs = [t.clone().requires_grad_() for t in (x, a, zi)]
            ref = allpole(*ref_inputs, backend="naive")
            ref_grads = torch.autograd.grad(ref, ref_inputs, torch.ones_like(ref))
            torch.testing.assert_close(y, ref, rtol=1e-12, atol=1e-12)
            for g, r in zip(grads, ref_grads):
                torch.testing.assert_close(g, r, rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize("dtype, M", [(torch.float32, 8), (torch.float64, 4)])
def test_streamed_grad_a_equals_plain_stores(monkeypatch, dtype, M):
    """A large per-sample grad_a (4 MiB here) is written with non-temporal vector stores: the same
    values, bit for bit, as the plain stores of a small one."""
    from allpole_triton.kernels import numba_cpu

    decisions = []
    decide = numba_cpu.streams_grad_a
    monkeypatch.setattr(numba_cpu, "streams_grad_a", lambda *args: decisions.append(decide(*args)) or decisions[-1])
    x = random_signal((2, 65536), dtype, seed=1)
    a = (0.5 / M) * random_signal((2, 65536, M), dtype, seed=2)

    def grads():
        inputs = [t.clone().requires_grad_() for t in (x, a)]
        y = allpole(*inputs, backend="numba")
        return torch.autograd.grad(y, inputs, torch.ones_like(y))

    streamed = grads()
    monkeypatch.setattr(numba_cpu, "STREAM_MIN_BYTES", 1 << 62)
    plain = grads()
    assert decisions == [True, False]
    for s, p in zip(streamed, plain):
        assert torch.equal(s, p)


def test_backward_kernel_takes_a_strided_grad_a():
    """Direct callers may hand the Numba backward a strided grad_a (the op never does): it is
    written as it is, as before the streamed stores existed."""
    from allpole_triton.kernels import numba_cpu
    from allpole_triton.kernels.naive import allpole_backward_naive

    g, y = random_signal((3, 40), seed=1), random_signal((3, 40), seed=2)
    a, zi = 0.1 * random_signal((3, 40, 5), seed=3), random_signal((3, 5), seed=4)
    grad_x, grad_zi, wide = np.empty((3, 40)), np.empty((3, 5)), np.zeros((3, 40, 10))
    numba_cpu.allpole_backward(g.numpy(), a.numpy(), y.numpy(), zi.numpy(), grad_x, grad_zi, wide[:, :, ::2], True)
    expected = allpole_backward_naive(g, a, y, zi)
    np.testing.assert_allclose(grad_x, expected[0].numpy(), rtol=1e-12)
    np.testing.assert_allclose(wide[:, :, ::2], expected[2].numpy(), rtol=1e-12)
    assert not wide[:, :, 1::2].any()
