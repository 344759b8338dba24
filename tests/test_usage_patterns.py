"""The calling patterns of real torchlpc clients, on the default CPU backend.

Each test reproduces one way downstream code calls ``sample_wise_lpc`` (or ``allpole``), with
synthetic data, and checks values and gradients against an independent float64 reference:
:func:`loop_filter`, a plain loop differentiated by ordinary autograd.
"""
from __future__ import annotations

import math

import pytest
import torch
from torch import nn
from torch.utils._python_dispatch import TorchDispatchMode
from torch.utils._pytree import tree_leaves

from allpole_triton import allpole, sample_wise_lpc
from allpole_triton.kernels.naive import allpole_naive
from conftest import random_signal, stable_coefficients


def loop_filter(x, a, zi=None):
    """The reference: ``allpole_naive``, one step per sample, differentiated by ordinary autograd."""
    zi = x.new_zeros(x.shape[0], a.shape[-1]) if zi is None else zi.expand(x.shape[0], a.shape[-1])
    return allpole_naive(x, a, zi)


def as_reference(*tensors):
    """float64 / complex128 leaf copies that require grad where the originals do."""
    out = []
    for t in tensors:
        wide = torch.complex128 if t.is_complex() else torch.float64
        out.append(t.detach().to(wide).requires_grad_(t.requires_grad))
    return out


def assert_close_relative(actual, expected, rtol):
    """max |actual - expected| <= rtol * max |expected| (a scale-aware check for float32 outputs)."""
    actual = actual.detach().to(expected.dtype)
    expected = expected.detach()
    error = (actual - expected).abs().max().item()
    scale = expected.abs().max().item()
    assert scale > 0, "the reference is all zero: the comparison would prove nothing"
    assert error <= rtol * scale, f"max error {error:.3e} > {rtol:g} * max |expected| {scale:.3e}"


def assert_matches_loop(y, y_loop, grads, grads_loop):
    """float32 output within 1e-5 and gradients within 1e-4 of the loop's (relative to their maxima)."""
    assert_close_relative(y, y_loop, 1e-5)
    for g, w in zip(grads, grads_loop):
        assert_close_relative(g, w, 1e-4)


def weighted_loss(y, seed=7):
    """A real scalar that weights every output sample differently (so gradients are not all equal)."""
    wide = torch.complex128 if y.is_complex() else torch.float64  # same weights whatever y's precision
    w = random_signal(tuple(y.shape), dtype=wide, seed=seed).to(y.dtype)
    return (y * w).real.sum()


def grads_of(loss, tensors):
    return torch.autograd.grad(loss, [t for t in tensors if t.requires_grad])


# ----------------------------------------------------------------------------------------------


def test_transposed_noncontiguous_coefficients_match_loop():
    """Clients that predict coefficients as (B, M, T) (conv output) and pass ``a.transpose(1, 2)``."""
    B, T, M = 3, 96, 4
    # the (B, M, T) buffer is the leaf, as a conv layer's output would be
    buffer = stable_coefficients((B,), T, M, dtype=torch.float32, radius=0.9).transpose(1, 2).contiguous()
    buffer.requires_grad_(True)
    a = buffer.transpose(1, 2)
    assert not a.is_contiguous() and a.stride() == (M * T, 1, T)
    x = random_signal((B, T), dtype=torch.float32).requires_grad_(True)
    zi = random_signal((B, M), dtype=torch.float32, seed=3).requires_grad_(True)

    y = sample_wise_lpc(x, a, zi)
    got = grads_of(weighted_loss(y), (x, buffer, zi))

    xr, br, zr = as_reference(x, buffer, zi)
    yr = loop_filter(xr, br.transpose(1, 2), zr)
    want = grads_of(weighted_loss(yr), (xr, br, zr))
    assert_matches_loop(y, yr, got, want)


def test_fully_expanded_stride0_coefficients_match_loop():
    """Clients with one coefficient set for all rows and samples, ``a[None, None].expand(B, T, M)``."""
    B, T, M = 3, 80, 3
    base = stable_coefficients((), 1, M, dtype=torch.float32, radius=0.9)[0].requires_grad_(True)
    a = base[None, None].expand(B, T, M)
    assert a.stride() == (0, 0, 1)
    x = random_signal((B, T), dtype=torch.float32).requires_grad_(True)

    y = sample_wise_lpc(x, a)
    got = grads_of(weighted_loss(y), (x, base))

    xr, br = as_reference(x, base)
    yr = loop_filter(xr, br[None, None].expand(B, T, M))
    want = grads_of(weighted_loss(yr), (xr, br))
    assert_matches_loop(y, yr, got, want)
    assert got[1].shape == (M,)


def test_complex64_coefficients_with_real_input_promoted_by_caller():
    """GOLF / diffsptk: complex64 ``a`` and ``zi``, a real ``x`` cast with ``x.to(a.dtype)``; grads w.r.t. complex a."""
    B, T, M = 2, 64, 3
    a = stable_coefficients((B,), T, M, dtype=torch.complex64, radius=0.9).requires_grad_(True)
    zi = random_signal((B, M), dtype=torch.complex64, seed=4).requires_grad_(True)
    x_real = random_signal((B, T), dtype=torch.float32).requires_grad_(True)

    y, zf = sample_wise_lpc(x_real.to(a.dtype), a, zi, return_zf=True)
    assert y.dtype == torch.complex64 and zf.dtype == torch.complex64
    got = grads_of(weighted_loss(y) + weighted_loss(zf, seed=8), (x_real, a, zi))

    xr, ar, zr = as_reference(x_real, a, zi)
    yr = loop_filter(xr.to(ar.dtype), ar, zr)
    zfr = yr[:, -M:].flip(-1)
    want = grads_of(weighted_loss(yr) + weighted_loss(zfr, seed=8), (xr, ar, zr))
    assert_close_relative(y, yr, 1e-5)
    assert_close_relative(zf, zfr, 1e-5)
    assert got[0].dtype == torch.float32  # the real input gets a real gradient
    assert got[1].dtype == torch.complex64 and got[1].imag.abs().max() > 0
    for g, w in zip(got, want):
        assert_close_relative(g, w, 1e-4)


def test_order_199_forward_and_backward_match_loop():
    """High-order LPC (M = 199) on a short block, longer than T, with a nonzero initial state."""
    B, T, M = 2, 64, 199
    g = torch.Generator().manual_seed(5)
    # sum_i |a[n, i]| < 0.5: contractive, hence stable and well conditioned at any order
    a = (0.5 / M * (2 * torch.rand(B, T, M, generator=g) - 1)).requires_grad_(True)
    x = random_signal((B, T), dtype=torch.float32).requires_grad_(True)
    zi = random_signal((B, M), dtype=torch.float32, seed=6).requires_grad_(True)

    y, zf = sample_wise_lpc(x, a, zi, return_zf=True)
    got = grads_of(weighted_loss(y) + weighted_loss(zf, seed=8), (x, a, zi))

    xr, ar, zr = as_reference(x, a, zi)
    yr = loop_filter(xr, ar, zr)
    zfr = torch.cat([yr.flip(-1), zr], -1)[:, :M]  # T < M: zf reaches back into zi
    want = grads_of(weighted_loss(yr) + weighted_loss(zfr, seed=8), (xr, ar, zr))
    assert_close_relative(y, yr, 1e-5)
    assert_close_relative(zf, zfr, 1e-5)
    for g_, w in zip(got, want):
        assert_close_relative(g_, w, 1e-4)


def test_fixed_coefficients_learnable_excitation_adam_step():
    """Source-filter fitting with a frozen LPC filter: only the excitation ``x`` is an ``nn.Parameter``."""
    B, T, M = 2, 64, 4
    a = stable_coefficients((B,), T, M, dtype=torch.float32, radius=0.9)
    assert not a.requires_grad
    target = loop_filter(random_signal((B, T), dtype=torch.float64, seed=9), a.double()).float()
    x = nn.Parameter(torch.zeros(B, T))
    optimiser = torch.optim.Adam([x], lr=0.05)

    def loss_fn():
        return (sample_wise_lpc(x, a) - target).pow(2).mean()

    loss_before = loss_fn()
    optimiser.zero_grad()
    loss_before.backward()
    grad_x = x.grad.clone()

    xr = x.detach().double().requires_grad_(True)
    (want,) = torch.autograd.grad((loop_filter(xr, a.double()) - target.double()).pow(2).mean(), xr)
    assert_close_relative(grad_x, want, 1e-4)

    optimiser.step()
    assert x.detach().abs().max() > 0, "Adam did not move the excitation"
    loss_after = loss_fn()
    assert loss_after.item() < loss_before.item()


def test_learnable_initial_state_alone():
    """Block-wise / stateful clients that learn only ``zi`` (x and a carry no grad)."""
    B, T, M = 3, 48, 4
    a = stable_coefficients((B,), T, M, dtype=torch.float32, radius=0.9)
    x = random_signal((B, T), dtype=torch.float32)
    zi = random_signal((B, M), dtype=torch.float32, seed=10).requires_grad_(True)

    y, zf = sample_wise_lpc(x, a, zi, return_zf=True)
    (loss := weighted_loss(y) + weighted_loss(zf, seed=8)).backward()
    assert x.grad is None and a.grad is None

    (zr,) = as_reference(zi)
    yr = loop_filter(x.double(), a.double(), zr)
    (want,) = torch.autograd.grad(weighted_loss(yr) + weighted_loss(yr[:, -M:].flip(-1), seed=8), zr)
    assert_close_relative(y, yr, 1e-5)
    assert_close_relative(zi.grad, want, 1e-4)
    assert loss.requires_grad


class LPCSynth(nn.Module):
    """A tiny client module: learnable gain on the excitation, then ``sample_wise_lpc``."""

    def __init__(self):
        super().__init__()
        self.gain = nn.Parameter(torch.tensor(0.5))

    def forward(self, x, a):
        return sample_wise_lpc(self.gain * x, a)


@pytest.mark.slow  # test_allpole compiles the op fullgraph in make test
def test_torch_compile_fullgraph_module_calling_sample_wise_lpc():
    """Clients that ``torch.compile(model, fullgraph=True)`` a module whose forward calls ``sample_wise_lpc``."""
    if not hasattr(torch, "compile") or not torch._dynamo.is_dynamo_supported():
        pytest.skip("torch.compile is not supported on this platform / Python version")
    B, T, M = 2, 32, 2
    a = stable_coefficients((B,), T, M, dtype=torch.float32, radius=0.9).requires_grad_(True)
    x = random_signal((B, T), dtype=torch.float32).requires_grad_(True)
    model = LPCSynth()
    compiled = torch.compile(model, fullgraph=True)

    y = compiled(x, a)
    got = grads_of(weighted_loss(y), (x, a, model.gain))

    xr, ar, gr = as_reference(x, a, model.gain)
    yr = loop_filter(gr * xr, ar)
    want = grads_of(weighted_loss(yr), (xr, ar, gr))
    assert_matches_loop(y, yr, got, want)


def test_double_backward_matches_loop():
    """Gradient-penalty style clients: grad with ``create_graph=True``, then the grad of a function of it."""
    B, T, M = 2, 40, 3
    a = stable_coefficients((B,), T, M, dtype=torch.float64, radius=0.9).requires_grad_(True)
    x = random_signal((B, T)).requires_grad_(True)
    zi = random_signal((B, M), seed=11).requires_grad_(True)

    def second_order(filter_fn, x, a, zi):
        first = torch.autograd.grad(weighted_loss(filter_fn(x, a, zi)), (x, a, zi), create_graph=True)
        penalty = sum(weighted_loss(g, seed=20 + k) for k, g in enumerate(first))
        return first, torch.autograd.grad(penalty, (x, a, zi))

    got_first, got_second = second_order(sample_wise_lpc, x, a, zi)
    want_first, want_second = second_order(loop_filter, *as_reference(x, a, zi))
    for g, w in zip(got_first + got_second, want_first + want_second):
        torch.testing.assert_close(g, w, rtol=1e-9, atol=1e-9)
    assert all(g.abs().max() > 0 for g in got_second)


def test_positional_and_keyword_arguments_agree():
    """Clients call ``sample_wise_lpc(x, a, zi, True)`` or ``sample_wise_lpc(x=..., a=..., zi=..., return_zf=...)``."""
    B, T, M = 2, 32, 3
    a = stable_coefficients((B,), T, M, dtype=torch.float32, radius=0.9)
    x = random_signal((B, T), dtype=torch.float32)
    zi = random_signal((B, M), dtype=torch.float32, seed=12)

    calls = {
        "positional": lambda x, a, zi: sample_wise_lpc(x, a, zi, True),
        "keyword": lambda x, a, zi: sample_wise_lpc(x=x, a=a, zi=zi, return_zf=True),
        "keyword, reordered": lambda x, a, zi: sample_wise_lpc(return_zf=True, zi=zi, a=a, x=x),
        "mixed": lambda x, a, zi: sample_wise_lpc(x, a, zi=zi, return_zf=True),
    }
    yr = loop_filter(x.double(), a.double(), zi.double())
    results = {}
    for name, call in calls.items():
        leaves = [t.clone().requires_grad_(True) for t in (x, a, zi)]
        y, zf = call(*leaves)
        grads = grads_of(weighted_loss(y) + weighted_loss(zf, seed=8), leaves)
        results[name] = (y, zf, *grads)
    first = results["positional"]
    assert_close_relative(first[0], yr, 1e-5)
    assert_close_relative(first[1], yr[:, -M:].flip(-1), 1e-5)
    for name, result in results.items():
        for got, want in zip(result, first):
            torch.testing.assert_close(got, want, rtol=0, atol=0, msg=f"{name} differs from positional")
    # and the defaults: no zi means zeros, no return_zf means y alone
    y_default = sample_wise_lpc(x, a)
    assert isinstance(y_default, torch.Tensor)
    torch.testing.assert_close(y_default, sample_wise_lpc(x=x, a=a, zi=torch.zeros(B, M), return_zf=False))


class TensorSizeRecorder(TorchDispatchMode):
    """Records (op name, numel, storage bytes) of every tensor with fresh storage (not a view of an
    input) that a dispatched op returns, the filter's own custom ops included (their Numba-side
    outputs are allocated by numpy, which the memory profiler does not see)."""

    def __init__(self):
        super().__init__()
        self.created = []

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        out = func(*args, **(kwargs or {}))
        inputs = {t.untyped_storage().data_ptr() for t in tree_leaves((args, kwargs)) if isinstance(t, torch.Tensor)}
        for t in tree_leaves(out):
            if isinstance(t, torch.Tensor) and t.untyped_storage().data_ptr() not in inputs:
                self.created.append((str(func), t.numel(), t.untyped_storage().nbytes()))
        return out


def forward_backward_with_expanded_coefficients(filter_fn, B=4, T=2**16, M=4):
    """Run filter_fn(x, a) forward and backward with a stride-0 (B, T, M) float32 ``a`` (no grad)
    under the recorder and the memory profiler; return (recorder, profiler largest allocation in bytes)."""
    base = stable_coefficients((), 1, M, dtype=torch.float32, radius=0.9)[0]
    a = base[None, None].expand(B, T, M)
    assert a.stride() == (0, 0, 1)
    x = random_signal((B, T), dtype=torch.float32).requires_grad_(True)
    recorder = TensorSizeRecorder()
    with torch.profiler.profile(activities=[torch.profiler.ProfilerActivity.CPU], profile_memory=True) as prof:
        with recorder:
            y = filter_fn(x, a)
            y.backward(torch.ones_like(y))
    assert x.grad is not None and x.grad.shape == (B, T)
    allocations = [e.cpu_memory_usage for e in prof.events() if e.cpu_memory_usage > 0]
    return recorder, max(allocations, default=0)


@pytest.mark.parametrize(
    "filter_fn",
    [allpole, sample_wise_lpc, lambda x, a: allpole(x, a, return_zf=True)[0]],
    ids=["allpole", "sample_wise_lpc", "allpole_return_zf"],
)
def test_expanded_stride0_coefficients_are_never_materialised(filter_fn):
    """Clients passing ``a.expand(B, T, M)`` of one coefficient set: forward + backward must not
    allocate a (B, T, M) tensor for it (a does not require grad, so no (B, T, M) grad_a either)."""
    B, T, M = 4, 2**16, 4
    recorder, largest_profiled = forward_backward_with_expanded_coefficients(filter_fn, B, T, M)
    assert recorder.created, "the recorder saw no ops: the check would prove nothing"
    assert any("allpole_triton" in name for name, _, _ in recorder.created), "the filter op was not recorded"
    full = [(name, n, nbytes) for name, n, nbytes in recorder.created if n >= B * T * M or nbytes >= B * T * M * 4]
    assert not full, f"(B, T, M)-sized tensors were created: {full}"
    largest_created = max(nbytes for _, _, nbytes in recorder.created)
    assert largest_created <= B * T * 4  # nothing larger than one float32 (B, T) signal
    assert largest_profiled < B * T * M * 4, f"an allocation of {largest_profiled} bytes"
    print(f"largest tensor created: {largest_created} bytes; largest profiled allocation: {largest_profiled} bytes")


def test_conjugate_and_negative_views_are_read_as_their_values():
    """x.conj() and -x views (lazy bits numpy and the kernels cannot read) give what their
    materialised values give, forward and backward, on every entry point."""
    from allpole_triton import linear_recurrence, state_space
    from allpole_triton.systems import FilterState, TransposedState, lfilter

    g = torch.Generator().manual_seed(0)
    draw = lambda *shape, scale=1.0: scale * torch.randn(*shape, generator=g, dtype=torch.complex128)  # noqa: E731
    x, a, zi, b = draw(2, 30), draw(2, 30, 2, scale=0.2), draw(2, 2), draw(2, 30, 3, scale=0.5)
    A, u = draw(2, 30, 2, 2, scale=0.3), draw(2, 30, 2)
    calls = {
        "allpole": (lambda x, a, zi: allpole(x, a, zi, return_zf=True), (x, a, zi)),
        "lfilter df1": (lambda x, b, a, zi: lfilter(x, b, a, FilterState(zi[:, :2], zi), return_zf=True)[0], (x, b, a, zi)),
        "lfilter tdf1": (lambda x, b, a, zi: lfilter(x, b, a, TransposedState(zi, zi), form="tdf1"), (x, b, a, zi)),
        "lfilter tdf2": (lambda x, b, a, zi: lfilter(x, b, a, zi, form="tdf2"), (x, b, a, zi)),
        "linear_recurrence": (lambda A, u, zi: linear_recurrence(A, u, zi), (A, u, zi)),
        "state_space": (lambda x, A, zi: state_space(x, A, zi[0], zi[1], None, zi), (x, A, zi)),
    }
    for name, (fn, inputs) in calls.items():
        plain = [t.clone().requires_grad_() for t in inputs]
        lazy = [t.clone().requires_grad_() for t in inputs]
        conj_viewed = [t.conj() for t in lazy]  # lazy views, against conj_physical's materialised values
        assert all(v.is_conj() for v in conj_viewed)
        expected_inputs = [torch.conj_physical(t) for t in plain]
        for got, want in zip(_outputs(fn(*conj_viewed)), _outputs(fn(*expected_inputs))):
            torch.testing.assert_close(got, want, rtol=1e-12, atol=1e-12, msg=name)
        loss = lambda outs: sum(o.abs().square().sum() for o in _outputs(outs))  # noqa: E731
        got = torch.autograd.grad(loss(fn(*conj_viewed)), lazy)
        want = torch.autograd.grad(loss(fn(*expected_inputs)), plain)
        for g_, w_ in zip(got, want):
            torch.testing.assert_close(g_, w_, rtol=1e-10, atol=1e-12, msg=name)
    neg = torch._neg_view(x.real.clone())
    assert neg.is_neg()
    torch.testing.assert_close(allpole(neg, a.real), allpole(-x.real, a.real))


def _outputs(result):
    if isinstance(result, torch.Tensor):
        return [result]
    flat = []
    for item in result:
        flat.extend(_outputs(item) if not isinstance(item, torch.Tensor) else [item])
    return flat
