"""The Triton chunked scan against the float64 loop and the Numba kernels.

Without a GPU the kernels run on CPU tensors under TRITON_INTERPRET=1 (set in conftest), with
16-sample chunks so that T in {1, L-1, L, 3L+5} crosses every chunk boundary case cheaply. With
a GPU the same tests also run on CUDA tensors with the compiled kernels.
"""
from __future__ import annotations

import pytest
import torch

from allpole_triton import allpole
from allpole_triton.op import triton_interpret
from conftest import random_signal, stable_coefficients
from test_allpole import assert_close, assert_close_to_rounding

pytest.importorskip("triton")
from allpole_triton.kernels import triton_scan  # noqa: E402

DEVICES = [d for d, ok in [("cpu", triton_interpret()), ("cuda", torch.cuda.is_available())] if ok]
L = triton_scan.CHUNK_INTERPRET
pytestmark = pytest.mark.skipif(not DEVICES, reason="needs CUDA or TRITON_INTERPRET=1")


def chunk_length(device: str, M: int = 2) -> int:
    """The chunk the kernels use for these (small) test sizes: on a GPU, the shortest in the table."""
    if device != "cuda":
        return L
    return triton_scan.FIRST_ORDER_CHUNK_MIN_GPU if M == 1 else triton_scan.CHUNK_MIN_GPU


def carry_group(device: str) -> int:
    return triton_scan.CARRY_GROUP_GPU if device == "cuda" else triton_scan.CARRY_GROUP_INTERPRET


def run_both(x, a, zi, g, backends=("triton", "numba")):
    """Forward output and all three gradients for each backend."""
    results = []
    for backend in backends:
        inputs = [t.clone().requires_grad_() for t in (x, a, zi)]
        y = allpole(*inputs, backend=backend if x.device.type == "cpu" or backend != "numba" else "naive")
        grads = torch.autograd.grad((y * g.conj()).real.sum(), inputs)
        results.append((y.detach(), *grads))
    return results


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("M", [1, 2, 3, 4, 8, 16, 33])
@pytest.mark.parametrize("T_of_L", [lambda L: 1, lambda L: L - 1, lambda L: L, lambda L: 3 * L + 5], ids=["1", "L-1", "L", "3L+5"])
def test_forward_and_backward_match_references(device, M, T_of_L):
    T = T_of_L(chunk_length(device, M))
    lead = (2,) if M > 8 else (3,)
    a = stable_coefficients(lead, T, M, seed=M + T).to(device)
    x, zi = random_signal((*lead, T)).to(device), random_signal((*lead, M), seed=5).to(device)
    g = random_signal((*lead, T), seed=6).to(device)
    y = allpole(x, a, zi, backend="triton")
    assert_close_to_rounding(y.cpu(), x.cpu(), a.cpu(), zi.cpu())
    triton_out, reference_out = run_both(x, a, zi, g, ("triton", "naive"))
    for fast, slow in zip(triton_out, reference_out):
        assert_close(fast.cpu(), slow.cpu(), torch.float64)


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("dtype", [torch.float32, torch.complex64, torch.complex128])
@pytest.mark.parametrize("M", [1, 3, 5])
def test_dtypes_match_numba(device, dtype, M):
    T = 3 * chunk_length(device, M) + 5
    wide = torch.complex128 if dtype.is_complex else torch.float64
    a = stable_coefficients((2,), T, M, dtype=wide, seed=M).to(dtype)
    x, zi, g = (random_signal(s, wide, seed=k).to(dtype) for k, s in enumerate([(2, T), (2, M), (2, T)]))
    assert_close_to_rounding(allpole(x.to(device), a.to(device), zi.to(device), backend="triton").cpu(), x, a, zi)
    fast, slow = run_both(x, a, zi, g)
    for f, s in zip(fast, slow):
        scale = s.abs().max().clamp(min=1)
        assert (f - s).abs().max() / scale < (1e-10 if dtype == torch.complex128 else 5e-4)


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("shapes", [
    ((2, 3), (2, 3), (2, 3)),  # x lead, a lead, zi lead
    ((), (), ()),
    ((4,), (1,), (4,)),  # one filter shared by every row: read with row stride 0
], ids=["2x3", "scalar", "shared"])
@pytest.mark.parametrize("Ta", ["T", 1], ids=["varying", "constant"])
@pytest.mark.parametrize("M", [1, 3])
def test_leading_shapes_and_constant_coefficients(device, shapes, Ta, M):
    T = 2 * chunk_length(device, M) + 3
    x_lead, a_lead, zi_lead = shapes
    a = stable_coefficients(a_lead, T if Ta == "T" else 1, M, seed=3).to(device)
    x, zi = random_signal((*x_lead, T)).to(device), random_signal((*zi_lead, M), seed=4).to(device)
    g = random_signal((*x_lead, T), seed=7).to(device)
    triton_out, reference_out = run_both(x, a, zi, g, ("triton", "naive"))
    for fast, slow in zip(triton_out, reference_out):
        assert fast.shape == slow.shape
        assert_close(fast.cpu(), slow.cpu(), torch.float64)


@pytest.mark.parametrize("device", DEVICES)
def test_streaming_and_zf(device):
    T, M = 3 * chunk_length(device) + 5, 4
    a = stable_coefficients((2,), T, M, seed=8).to(device)
    x, zi = random_signal((2, T)).to(device), random_signal((2, M), seed=9).to(device)
    whole, zf = allpole(x, a, zi, return_zf=True, backend="triton")
    first, state = allpole(x[:, :7], a[:, :7], zi, return_zf=True, backend="triton")
    rest, zf_pieces = allpole(x[:, 7:], a[:, 7:], state, return_zf=True, backend="triton")
    assert_close(torch.cat([first, rest], -1).cpu(), whole.cpu(), torch.float64)
    assert_close(zf_pieces.cpu(), zf.cpu(), torch.float64)


@pytest.mark.parametrize("device", DEVICES)
def test_gradgradcheck_through_triton(device):
    a = stable_coefficients((1,), 9, 2, seed=1).to(device)
    inputs = [t.to(device).requires_grad_() for t in (random_signal((1, 9)), a, random_signal((1, 2), seed=2))]
    fn = lambda *t: allpole(*t, backend="triton")
    assert torch.autograd.gradcheck(fn, inputs)
    assert torch.autograd.gradgradcheck(fn, inputs)


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16])
@pytest.mark.parametrize("M", [1, 2])
def test_low_precision_inputs_accumulate_in_float32(device, dtype, M):
    """16-bit tensors go into the kernels as they are; outputs and gradients come back in their
    dtype, within that dtype's rounding of the float64 result on the same (rounded) inputs."""
    T = 2 * chunk_length(device, M) + 3
    inputs = [t.to(dtype) for t in (random_signal((2, T)), stable_coefficients((2,), T, M, seed=1), random_signal((2, M), seed=2))]
    g = random_signal((2, T), seed=3).to(dtype)
    fast = run_both(*(t.to(device) for t in inputs), g.to(device), ("triton",))[0]
    exact = run_both(*(t.double() for t in inputs), g.double(), ("naive",))[0]
    for f, e in zip(fast, exact):
        assert f.dtype == dtype
        assert (f.double().cpu() - e).abs().max() <= 2e-2 * e.abs().max()


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("M", [1, 3, 20])
@pytest.mark.parametrize("complex_", [False, True], ids=["real", "complex"])
def test_carry_hierarchy_matches_a_sequential_carry_loop(device, M, complex_):
    """The hierarchical carry scan alone: 11 chunks in groups of 2 is four levels deep. M=20 takes
    the column-at-a-time group product, smaller M the broadcast one."""
    dtype = torch.complex128 if complex_ else torch.float64
    g = torch.Generator().manual_seed(M)
    B, n = 3, 11
    phi = torch.randn(B, n, M, M, dtype=dtype, generator=g) / (2 * M)
    z = torch.randn(B, n, M, dtype=dtype, generator=g)
    start = torch.randn(B, M, dtype=dtype, generator=g)
    expected, s = [], start
    for c in range(n):
        expected.append(s)
        s = (phi[:, c] @ s.unsqueeze(-1)).squeeze(-1) + z[:, c]
    plane = triton_scan._plane
    carry = torch.empty_like(plane(z)).to(device)
    triton_scan._scan_carries(
        plane(z).to(device), plane(phi).to(device), plane(start).to(device), carry, M, 2, complex_
    )
    carry = torch.view_as_complex(carry.cpu()) if complex_ else carry.cpu()
    torch.testing.assert_close(carry, torch.stack(expected, 1), rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("M", [1, 2, 16])
def test_long_sequence_many_chunks(device, M):
    """Enough chunks for at least two levels of carry groups, forward and backward."""
    T = max(9, carry_group(device) ** 2 + 1) * chunk_length(device, M) + 7
    a = stable_coefficients((1,), T, M, seed=M)
    x, zi, g = random_signal((1, T)), random_signal((1, M), seed=1), random_signal((1, T), seed=2)
    triton_out = run_both(*(t.to(device) for t in (x, a, zi, g)), ("triton",))[0]
    for fast, slow in zip(triton_out, run_both(x, a, zi, g, ("numba",))[0]):
        assert_close(fast.cpu(), slow, torch.float64)


@pytest.mark.parametrize("device", DEVICES)
def test_torch_compile_fullgraph_over_triton(device):
    T = chunk_length(device) + 3
    a = stable_coefficients((2,), T, 3, dtype=torch.float32, seed=2).to(device)
    x = random_signal((2, T), torch.float32).to(device)

    def loss_fn(x, a):
        return allpole(x, a, backend="triton").pow(2).mean()

    results = []
    for fn in (loss_fn, torch.compile(loss_fn, fullgraph=True, backend="aot_eager")):
        inputs = [t.clone().requires_grad_() for t in (x, a)]
        loss = fn(*inputs)
        loss.backward()
        results.append([loss.detach()] + [t.grad for t in inputs])
    for eager, compiled in zip(*results):
        torch.testing.assert_close(compiled, eager, rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("M", [1, 2, 16])
def test_gpu_chunk_length_fills_the_gpu_within_its_bounds(M):
    low, high = (
        (triton_scan.FIRST_ORDER_CHUNK_MIN_GPU, triton_scan.FIRST_ORDER_CHUNK_GPU) if M == 1
        else (triton_scan.CHUNK_MIN_GPU, triton_scan.CHUNK_GPU)
    )
    sms, wanted = 132, 132 * triton_scan.PROGRAMS_PER_SM
    previous, chosen = low, 0
    for rows, steps in [(1, 1), (1, 4096), (1, 65536), (2, 2**17), (16, 65536), (16, 2**18), (256, 2**20)]:
        chunk = triton_scan.gpu_chunk_length(M, rows, steps, sms)
        assert low <= chunk <= high and chunk & (chunk - 1) == 0
        assert chunk >= previous  # more work never gives shorter chunks
        previous = chunk
        if low < chunk < high:  # chosen, not clamped: the GPU gets its programs, and not twice over
            programs = rows * -(-steps // chunk)
            assert wanted <= programs < 2 * wanted
            chosen += 1
    assert chosen  # the sizes above reach the unclamped range
