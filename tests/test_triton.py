"""The Triton scan against the float64 loop and the Numba kernels.

Without a GPU the kernels run on CPU tensors under TRITON_INTERPRET=1 (set in conftest), with
two unrolled bodies per chunk and carry blocks of 4 chunks, so that T in {1, L-1, L, ...} and a
few dozen chunks cross every chunk, block and carry-piece boundary cheaply. With a GPU the same
tests also run on CUDA tensors with the compiled kernels and the GPU's launch table.
"""
from __future__ import annotations

import collections
import math
import random
import warnings

import pytest
import torch

from allpole_triton import allpole
from allpole_triton.kernels.naive import allpole_backward_naive, allpole_naive
from allpole_triton.op import triton_interpret
from conftest import random_signal, slow, stable_coefficients
from test_allpole import assert_close, assert_close_to_rounding, relative_error

pytest.importorskip("triton")
import triton  # noqa: E402
import triton.language as tl  # noqa: E402

from allpole_triton.kernels import triton_adjoint, triton_scan, triton_tiles  # noqa: E402

DEVICES = [d for d, ok in [("cpu", triton_interpret()), ("cuda", torch.cuda.is_available())] if ok]
pytestmark = pytest.mark.skipif(not DEVICES, reason="needs CUDA or TRITON_INTERPRET=1")


def chunk_length(device: str, M: int, rows: int = 1, T: int = 1) -> int:
    """The chunk the kernels use for this shape (on a GPU, what its launch table picks); orders
    that never chunk get a short length to test with."""
    if M > triton_scan.SINGLE_CHUNK_ORDER:
        return 16
    sms = torch.cuda.get_device_properties(0).multi_processor_count if device == "cuda" else None
    return triton_scan.launch_shape(M, rows, T, sms).chunk


def many_chunks(device: str, M: int) -> int:
    """A length whose carry covers three pieces, the last partial (interpreter), or several chunks (GPU)."""
    if device == "cuda":
        return 3 * chunk_length(device, M, 1, 1 << 20) + 5
    maps = 2 * triton_scan.CARRY_BLOCK_INTERPRET * triton_scan.CARRY_RUN_INTERPRET + 1  # block maps the carry walks
    chunks = maps * triton_scan.GROUP_INTERPRET + 1
    return chunks * triton_scan.CHUNK_INTERPRET * triton_scan.unroll(M) + 5


def run_both(x, a, zi, g, backends=("triton", "numba"), grad_a=True):
    """Forward output and the gradients (of x, a and zi; without ``grad_a`` of x and zi) for each backend,
    on the tensors as given: strides, storage offsets and expanded dims reach the kernels (a clone
    would hand them a dense copy of a strided view)."""
    results = []
    for backend in backends:
        inputs = [t.detach().requires_grad_(grad_a or k != 1) for k, t in enumerate((x, a, zi))]
        y = allpole(*inputs, backend=backend if x.device.type == "cpu" or backend != "numba" else "naive")
        grads = torch.autograd.grad((y * g.conj()).real.sum(), [t for t in inputs if t.requires_grad])
        results.append((y.detach(), *grads))
    return results


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("M", [2, 3, 16, 33, slow(1), slow(4), slow(8)])
@pytest.mark.parametrize("T_of_L", [lambda L: 1, lambda L: L - 1, lambda L: L, lambda L: 3 * L + 5], ids=["1", "L-1", "L", "3L+5"])
def test_forward_and_backward_match_references(device, M, T_of_L):
    T = T_of_L(chunk_length(device, M, 3, 1 << 20))
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
@pytest.mark.parametrize("M", [3, slow(1), slow(5)])
def test_dtypes_match_numba(device, dtype, M):
    T = 3 * chunk_length(device, M, 2, 1 << 20) + 5
    wide = torch.complex128 if dtype.is_complex else torch.float64
    a = stable_coefficients((2,), T, M, dtype=wide, seed=M).to(dtype)
    x, zi, g = (random_signal(s, wide, seed=k).to(dtype) for k, s in enumerate([(2, T), (2, M), (2, T)]))
    assert_close_to_rounding(allpole(x.to(device), a.to(device), zi.to(device), backend="triton").cpu(), x, a, zi)
    fast, slow = run_both(*(t.to(device) for t in (x, a, zi, g)))  # on a GPU, naive stands in for numba
    for f, s in zip(fast, slow):
        f, s = f.cpu(), s.cpu()
        scale = s.abs().max().clamp(min=1)
        assert (f - s).abs().max() / scale < (1e-10 if dtype == torch.complex128 else 5e-4)


LEAD_2X3 = ((2, 3), (2, 3), (2, 3))  # x lead, a lead, zi lead
LEAD_SCALAR = ((), (), ())
LEAD_SHARED = ((4,), (1,), (4,))  # one filter shared by every row: read with row stride 0


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("shapes, Ta", [
    pytest.param(LEAD_2X3, "T", id="2x3-varying"), slow(LEAD_2X3, 1, id="2x3-constant"),
    pytest.param(LEAD_SCALAR, "T", id="scalar-varying"), pytest.param(LEAD_SCALAR, 1, id="scalar-constant"),
    pytest.param(LEAD_SHARED, "T", id="shared-varying"), pytest.param(LEAD_SHARED, 1, id="shared-constant"),
])
@pytest.mark.parametrize("M", [3, slow(1)])
def test_leading_shapes_and_constant_coefficients(device, shapes, Ta, M):
    """Leading dims broadcast and flattened into rows, with coefficients varying over time or
    constant (2x3-constant, a constant set per row, runs in the full suite only: make test has it
    from test_strided_coefficients_without_copies' expanded_time)."""
    T = 2 * chunk_length(device, M, 4, 1 << 20) + 3
    x_lead, a_lead, zi_lead = shapes
    a = stable_coefficients(a_lead, T if Ta == "T" else 1, M, seed=3).to(device)
    x, zi = random_signal((*x_lead, T)).to(device), random_signal((*zi_lead, M), seed=4).to(device)
    g = random_signal((*x_lead, T), seed=7).to(device)
    triton_out, reference_out = run_both(x, a, zi, g, ("triton", "naive"))
    for fast, slow in zip(triton_out, reference_out):
        assert fast.shape == slow.shape
        assert_close(fast.cpu(), slow.cpu(), torch.float64)


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("M, dtype", [
    (2, torch.float32), (16, torch.float32), (8, torch.complex64), slow(4, torch.float32), slow(12, torch.complex64),
    slow(17, torch.float32), slow(17, torch.complex64), slow(33, torch.float32),
])
def test_constant_coefficients_in_every_kernel_family(device, M, dtype):
    """One coefficient set for every row and sample, which the kernels hold in registers from
    before the loop (_lane_constants) wherever a body's slots are static: short orders (scanned
    summaries), long ones (recursion groups; M=12 below its padded 16), and M=17 and 33, whose
    one-step bodies rotate them a slot a step (_next_slots; 33: one chunk a row), over many chunks,
    forward and all three gradients, in single precision against a float64 loop."""
    wide = torch.complex128 if dtype.is_complex else torch.float64
    T = 3 * chunk_length(device, M, 2, 1 << 20) + 5
    a = stable_coefficients((1,), 1, M, dtype=wide, seed=M, radius=0.95)
    x, zi, g = (random_signal(shape, wide, seed=k) for k, shape in enumerate([(2, T), (2, M), (2, T)], 11))
    fast, = run_both(*(t.to(dtype).to(device) for t in (x, a, zi, g)), ("triton",))
    reference, = run_both(x, a, zi, g, ("naive",))
    assert_close_to_rounding(fast[0].cpu(), x.to(dtype), a.to(dtype), zi.to(dtype))
    for name, got, expected in zip(("y", "grad_x", "grad_a", "grad_zi"), fast, reference):
        assert got.shape == expected.shape, name
        err = relative_error(got.cpu().to(wide), expected)
        assert err < 1e-3, f"{name}: relative error {err:.3g}"


@pytest.mark.parametrize("device", DEVICES)
def test_streaming_and_zf(device):
    T, M = 3 * chunk_length(device, 4, 2, 1 << 20) + 5, 4
    a = stable_coefficients((2,), T, M, seed=8).to(device)
    x, zi = random_signal((2, T)).to(device), random_signal((2, M), seed=9).to(device)
    whole, zf = allpole(x, a, zi, return_zf=True, backend="triton")
    first, state = allpole(x[:, :7], a[:, :7], zi, return_zf=True, backend="triton")
    rest, zf_pieces = allpole(x[:, 7:], a[:, 7:], state, return_zf=True, backend="triton")
    assert_close(torch.cat([first, rest], -1).cpu(), whole.cpu(), torch.float64)
    assert_close(zf_pieces.cpu(), zf.cpu(), torch.float64)


@pytest.mark.parametrize("device", DEVICES)
def test_gradgradcheck_through_triton(device):
    a = stable_coefficients((1,), 5, 2, seed=1).to(device)
    inputs = [t.to(device).requires_grad_() for t in (random_signal((1, 5)), a, random_signal((1, 2), seed=2))]
    fn = lambda *t: allpole(*t, backend="triton")
    assert torch.autograd.gradcheck(fn, inputs)
    # second order by random projections: the full Jacobian costs the interpreter 20 s here
    assert torch.autograd.gradgradcheck(fn, inputs, fast_mode=True)


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16])
@pytest.mark.parametrize("M", [1, 2])
def test_low_precision_inputs_accumulate_in_float32(device, dtype, M):
    """16-bit tensors go into the kernels as they are; outputs and gradients come back in their
    dtype, within that dtype's rounding of the float64 result on the same (rounded) inputs."""
    T = 2 * chunk_length(device, M, 2, 1 << 20) + 3
    inputs = [t.to(dtype) for t in (random_signal((2, T)), stable_coefficients((2,), T, M, seed=1), random_signal((2, M), seed=2))]
    g = random_signal((2, T), seed=3).to(dtype)
    fast = run_both(*(t.to(device) for t in inputs), g.to(device), ("triton",))[0]
    exact = run_both(*(t.double() for t in inputs), g.double(), ("naive",))[0]
    for f, e in zip(fast, exact):
        assert f.dtype == dtype
        assert (f.double().cpu() - e).abs().max() <= 2e-2 * e.abs().max()


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("M, complex_", [
    (1, False), (2, False), (5, False), (16, False), (5, True), (16, True),
    slow(4, False), slow(1, True), slow(2, True), slow(4, True),
])
def test_many_chunks_match_loops(device, M, complex_, monkeypatch):
    """Enough chunks for several carry blocks and carry pieces (short orders) or a long sequential
    carry walk (long orders), forward and backward, against plain float64 loops. Short orders:
    the carry fused into the finish (two pieces under the interpreter) for real rows and complex
    M=2, a carry launch (three pieces) for complex M=1 and 4. One row under the interpreter (its
    cost is per program)."""
    if device == "cpu":
        monkeypatch.setenv("ALLPOLE_TRITON_LAUNCH", f"fuse={0 if complex_ and M != 2 else 1}")
    assert_triton_matches_loops(device, 1 if device == "cpu" else 2, many_chunks(device, M), M, complex_)


def assert_triton_matches_loops(device: str, rows: int, T: int, M: int, complex_: bool, reference=None):
    """The Triton path's output and all three gradients on seeded float64 (complex128) inputs, within
    rounding of ``reference`` (plain loops by default) on the CPU, in float64 and in single precision."""
    dtype = torch.complex128 if complex_ else torch.float64
    reference = reference or loop_results
    a = stable_coefficients((rows,), T, M, dtype=dtype, seed=M)
    x, zi, g = (random_signal(shape, dtype, seed=k) for k, shape in enumerate([(rows, T), (rows, M), (rows, T)]))
    fast = run_both(*(t.to(device) for t in (x, a, zi, g)), ("triton",))[0]
    exact, single = (reference(*(t.to(w) for t in (x, a, zi, g))) for w in (dtype, single_of(dtype)))
    for f, slow, rough in zip(fast, exact, single):
        assert_within_rounding(f.cpu(), slow, rough)


@pytest.mark.skipif(not triton_interpret(), reason="forces the GPU's carry shape under the interpreter")
@pytest.mark.parametrize("M, complex_, longest, rows", [(2, False, True, 1), slow(3, True, True, 2), slow(1, False, True, 1), slow(2, True, True, 1),
                                                       slow(4, False, True, 1), slow(2, False, False, 1)])
def test_carry_at_gpu_shapes(monkeypatch, M, complex_, longest, rows):
    """The short-order carry with the runs a GPU uses (its longest, up to 8 maps, or a map per
    lane), over more maps than one piece holds, against float64 loops; complex M=3 over two rows
    (a carry program each)."""
    gpu_shape = triton_scan.carry_shape

    def at_gpu(M_, is_complex, n_maps, sms):  # 2 lanes, so that few maps make two pieces
        return 2, gpu_shape(M_, is_complex, 1 << 20, 132)[1] if longest else 1

    monkeypatch.setattr(triton_scan, "carry_shape", at_gpu)
    # the shortest chunks (one body), the carry a launch of its own
    monkeypatch.setenv("ALLPOLE_TRITON_LAUNCH", "chunk=1,group=2,fuse=0")
    lanes, run = at_gpu(M, complex_, 1 << 20, None)
    T = ((lanes * run + 1) * 2 + 1) * triton_scan.unroll(M) + 3  # a piece and a map (a part-piece, part-run), a part-chunk
    assert_triton_matches_loops("cpu", rows, T, M, complex_)


@pytest.mark.skipif(not triton_interpret(), reason="forces the GPU's fused-carry runs under the interpreter")
@pytest.mark.parametrize("M, complex_", [(2, False)])
def test_fused_carry_at_gpu_shapes(monkeypatch, M, complex_):
    """The carry fused into the finish with the GPU's runs (8 maps per lane at M=2) over 2 lanes,
    across two pieces, against float64 loops."""
    run = triton_scan.fused_carry_run(M, complex_, 1 << 20, 32, 132, forced=1)
    monkeypatch.setattr(triton_scan, "fused_carry_run", lambda *args, **kwargs: run)
    monkeypatch.setenv("ALLPOLE_TRITON_LAUNCH", "chunk=1,group=2")
    lanes = 2  # the finish's lanes per program: the group
    T = ((lanes * run + lanes + 2) * lanes + 1) * triton_scan.unroll(M) + 3  # a piece and a lane's run, and more
    assert_triton_matches_loops("cpu", 1, T, M, complex_)


@pytest.mark.skipif(not triton_interpret(), reason="forces a GPU's wide scan groups under the interpreter")
@pytest.mark.parametrize("complex_", [False, True], ids=["real", "complex"])
def test_wide_scan_groups_match_loops(monkeypatch, complex_):
    """Blocks of SCAN_GROUP_WIDE_GPU chunks (four warps per program on a GPU: the summaries' prefix
    scan and the fused carry's scan across them) over three blocks, forward and backward (the
    reverse kernels, which complex inputs keep on a GPU), against float64 loops."""
    wide = triton_scan.SCAN_GROUP_WIDE_GPU
    monkeypatch.setenv("ALLPOLE_TRITON_LAUNCH", f"chunk=1,group={wide},fuse=1")
    assert_triton_matches_loops("cpu", 1, (2 * wide + 5) * triton_scan.unroll(2) + 3, 2, complex_)


@pytest.mark.skipif(not triton_interpret(), reason="forces the single pass under the interpreter")
@pytest.mark.parametrize("M, complex_, extra, blocks", [
    (2, False, "", 6), (2, False, ",rows=1,adjoint=1", 6), slow(1, False, ",rows=1", 6), slow(2, True, "", 6),
    slow(1, False, "", 66), slow(4, False, ",rows=1", 6), slow(3, False, "", 6)])
def test_single_pass_matches_loops(monkeypatch, M, complex_, extra, blocks):
    """The summary run inside the finish (single_pass), its maps published (a bit a block) and
    composed by the later blocks of the row, over several blocks and two rows, forward and backward
    (the reverse kernels; with ``adjoint=1`` the forward scan on the adjoint's coefficient copy,
    which coalesced rows take), against float64 loops; 66 blocks a row (one row): three words of
    bits, which the two lanes of the interpreter's programs read in two rounds. Under the sanitizer: programs in
    reverse grid order (the tickets put them back in row order), each block's loads of the maps
    other programs stored allowed only after it acquired their bits, its own after its barrier."""
    monkeypatch.setenv("ALLPOLE_TRITON_LAUNCH", f"chunk=1,group=2,fuse=1,single=1{extra}")
    T = (2 * blocks - 1) * triton_scan.unroll(M) + 3  # blocks of 2 chunks, the last chunk part of one
    u = torch.zeros(2, T)
    for reverse in (False, True):
        launches, _ = triton_scan.plan(u, torch.zeros(2, T, M), torch.zeros(2, M), u, reverse=reverse,
                                       tail=torch.zeros(2, M) if reverse else None, y=u if reverse else None)
        assert launches[-1].constexprs["SINGLE_PASS"] and triton_scan._summary not in [l.kernel for l in launches]
    assert_triton_matches_loops("cpu", 2 if blocks < 32 else 1, T, M, complex_)


def test_single_pass_only_where_the_carry_is_fused(monkeypatch):
    """single=1 folds the summary into the finish where the finish composes the carry (STATE 4): one
    launch a forward, its ticket and each row's block bits scratch (a word per 32 blocks); with the carry a
    launch of its own, or one chunk a row, the launches stay as they were. Off by default."""
    u, a, zi, out, *_ = planned_on_meta(16, 1 << 16, 2, reverse=False)
    default = triton_scan.plan(u, a, zi, out, reverse=False, sms=132)[0]
    assert [l.kernel for l in default] == [triton_scan._summary, triton_scan._finish]
    assert not default[-1].constexprs["SINGLE_PASS"]
    monkeypatch.setenv("ALLPOLE_TRITON_LAUNCH", "single=1")
    scratch = triton_scan.Scratch()
    (finish,), _ = triton_scan.plan(u, a, zi, out, reverse=False, sms=132, scratch=scratch)
    sync = finish.args[finish.kernel.arg_names.index("sync_ptr")]
    n_blocks = finish.args[finish.kernel.arg_names.index("n_blocks")]
    assert finish.constexprs["SINGLE_PASS"] and finish.constexprs["STATE"] == 4
    assert sync.dtype == torch.int32 and sync.shape == (1 + 16 * -(-n_blocks // 32),) and finish.grid == 16 * n_blocks
    assert n_blocks > 32  # two words a row
    assert scratch.specs[-1][0] is torch.empty  # Launch.run zeroes it (test_single_pass_launches_run_again)
    assert {k: v for k, v in finish.constexprs.items() if k.startswith("SUMMARY_")} == {
        f"SUMMARY_{k}": v for k, v in default[0].constexprs.items() if k in ("TILE_STEPS", "ROWS", "TILE_ROWS")}
    monkeypatch.setenv("ALLPOLE_TRITON_LAUNCH", "single=1,fuse=0")
    assert [l.kernel for l in triton_scan.plan(u, a, zi, out, reverse=False, sms=132)[0]] == [
        triton_scan._summary, triton_scan._carry_short, triton_scan._finish]
    monkeypatch.setenv("ALLPOLE_TRITON_LAUNCH", "single=1,chunk=65536")
    (only,), _ = triton_scan.plan(u, a, zi, out, reverse=False, sms=132)
    assert only.constexprs["STATE"] == 1 and not only.constexprs["SINGLE_PASS"]


@pytest.mark.skipif(not triton_interpret(), reason="runs a kernel under the interpreter")
def test_single_pass_launches_run_again(monkeypatch):
    """A single pass's launch leaves its ticket past the grid and its bits set: Launch.run zeroes
    them first, so a launch planned once runs again (host_times and launch_times time launches that
    way) and gives the same output."""
    monkeypatch.setenv("ALLPOLE_TRITON_LAUNCH", "chunk=1,group=2,fuse=1,single=1")
    T = 7 * triton_scan.unroll(2) + 3
    x = random_signal((2, T), torch.float32, seed=1)
    a = stable_coefficients((2,), T, 2, dtype=torch.float32, seed=2)
    outputs = []
    launches, _ = triton_scan.plan(x, a, torch.zeros(2, 2), torch.empty_like(x), reverse=False)
    (finish,) = launches
    for _ in range(2):
        finish.run()
        outputs.append(finish.args[finish.kernel.arg_names.index("out_ptr")].clone())
    assert torch.equal(outputs[0], outputs[1])
    torch.testing.assert_close(outputs[0], allpole_naive(x.double(), a.double(), torch.zeros(2, 2, dtype=torch.float64)).float(),
                               rtol=1e-4, atol=1e-5)


@triton.jit
def _words_done_kernel(seen_ptr, out_ptr, block, LANES: tl.constexpr):
    word = tl.arange(0, LANES).to(tl.int64)
    tl.store(out_ptr + word, triton_scan._words_done(tl.load(seen_ptr + word), word, block).to(tl.int32))


@pytest.mark.skipif(not triton_interpret(), reason="runs a kernel under the interpreter")
def test_a_word_is_done_only_with_every_earlier_block_bit():
    """The single pass's wait (triton_scan._words_done): word w holds blocks 32 w .. 32 w + 31, and a
    block waits for the bits of the blocks below it, whatever the bits above (including bit 31,
    the int32 sign). Each block b below 70 missing from otherwise full words delays exactly the
    word holding it, for the blocks above b."""
    full = torch.full((4,), -1, dtype=torch.int32)
    for block in (0, 1, 31, 32, 33, 64, 70, 128):
        for missing in [None, 0, 5, 31, 32, 63, 64, 69]:
            seen = full.clone()
            if missing is not None:
                seen[missing // 32] &= ~(1 << (missing % 32)) if missing % 32 != 31 else 0x7FFFFFFF
            out = torch.empty(4, dtype=torch.int32)
            _words_done_kernel[(1,)](seen, out, block, LANES=4)
            want = [not (missing is not None and missing < block and missing // 32 == w) for w in range(4)]
            assert out.bool().tolist() == want, (block, missing)


@pytest.mark.skipif(not torch.cuda.is_available(), reason="the single pass's flags and tickets need a GPU to race")
@pytest.mark.parametrize("B, T, M", [(16, 1 << 16, 2), (1, 1 << 20, 1), (256, 4096, 4), (4, 1 << 18, 2)])
def test_single_pass_on_gpu(monkeypatch, B, T, M):
    """The single pass (ALLPOLE_TRITON_LAUNCH single=1) on the GPU's own launch shapes: every program
    waits for the earlier blocks of its row, with thousands of programs in flight. Its outputs and
    gradients against the two-launch path's (the same arithmetic: within float32 rounding of it,
    and in practice equal) and against Numba float64 loops, call after call, so that a race (a
    block composing a map before it was stored) shows as a difference or a hang."""
    a = stable_coefficients((B,), T, M, dtype=torch.float32, seed=7).cuda()
    x = random_signal((B, T), torch.float32, seed=1).cuda()
    grad_y = random_signal((B, T), torch.float32, seed=2).cuda()
    results = {}
    for single in (0, 1):
        monkeypatch.setenv("ALLPOLE_TRITON_LAUNCH", f"single={single}")
        got = []
        for _ in range(5):
            xs, as_ = x.clone().requires_grad_(), a.clone().requires_grad_()
            y = allpole(xs, as_, backend="triton")
            y.backward(grad_y)
            got.append([y.detach(), xs.grad, as_.grad])
        results[single] = got
        launches, _ = triton_scan.plan(x, a, x.new_zeros(B, M), torch.empty_like(x), reverse=False,
                                       sms=torch.cuda.get_device_properties(0).multi_processor_count)
        assert bool(launches[-1].constexprs["SINGLE_PASS"]) == bool(single) and len(launches) == 2 - single
    for call, got in enumerate(results[1]):
        for w, first, g in zip(results[0][0], results[1][0], got):
            assert torch.equal(g, first), f"call {call}: not what the first single pass gave"
            torch.testing.assert_close(g, w, rtol=1e-5, atol=1e-6 * w.abs().max().item(), msg=f"call {call}")
    assert_triton_matches_loops("cuda", B, T, M, False, reference=numba_results)


@pytest.mark.parametrize("B, T, M, complex_, group, launches, run", [
    (1, 1 << 20, 2, False, 128, 2, 2),  # 1023 one-warp blocks need the carry launch; 255 wide ones fuse
    (1, 1 << 20, 1, False, 128, 2, 2),  # 1023 one-warp maps would fuse, a long walk: wide
    (16, 1 << 16, 2, False, 32, 2, 2),  # 63 maps: one warp fuses them, two a lane (FUSED_SHORT_RUN)
    (1, 1 << 18, 2, False, 32, 2, 8),  # 255 maps: one warp, in the longest runs
    (256, 4096, 4, False, 32, 2, 2),
    (1, 1 << 20, 4, True, 32, 3, 0),  # complex M=4 never fuses (CARRY_NARROW_ELEMENTS): one warp, a carry launch
])
def test_gpu_scan_groups(B, T, M, complex_, group, launches, run):
    """On a GPU, short orders take blocks of four warps where one warp's would leave a row's carry to
    a launch of its own (or a long fused walk) and wide ones fuse it (scan_group); a fused carry
    composes runs of FUSED_SHORT_RUN maps a lane where a row's maps fit them, else the longest."""
    from allpole_triton.bench import model

    planned = model.pass_launches(B, T, M, False, torch.complex64 if complex_ else torch.float32)
    assert len(planned) == launches
    summary, finish = planned[0], planned[-1]
    assert summary.constexprs["BLOCK"] == finish.constexprs["BLOCK"] == group
    assert finish.constexprs["STATE"] == (3 if launches == 3 else 4)
    assert finish.constexprs["CARRY_RUN"] == run


@pytest.mark.skipif(not triton_interpret(), reason="forces the interpreter's carry placements")
@pytest.mark.parametrize("M, launch", [(2, "chunk=1,group=2,fuse=1"), (2, "chunk=1,group=2,fuse=0"), (16, ""),
                                       (2, "chunk=100000")])
def test_adjoint_starts_from_rest_whatever_zi_holds(monkeypatch, M, launch):
    """grad_x and grad_zi do not depend on zi: the adjoint recursion starts from rest. Every
    coefficient that reads a row's incoming state is masked in reversed time, so a finite zi
    wrongly entered there would vanish; an infinite one turns the gradients non-finite. Both carry
    placements of the short orders (fused into the finish, a launch of its own) and the long
    orders' carry, over many blocks, and rows of one chunk (no carry)."""
    monkeypatch.setenv("ALLPOLE_TRITON_LAUNCH", launch)
    T = 21 * triton_scan.unroll(M) + 3 if launch else many_chunks("cpu", M)  # short: 11 blocks of 2 chunks
    a = stable_coefficients((2,), T, M, seed=3)
    grad_y, y = random_signal((2, T), seed=1), random_signal((2, T), seed=2)
    zi = torch.full((2, M), math.inf, dtype=torch.float64)
    grad_x, grad_zi = torch.empty_like(grad_y), torch.empty_like(zi)
    triton_scan.allpole_backward(grad_y, a, y, zi, grad_x, grad_zi, None, False)
    want_x, want_zi, _ = allpole_backward_naive(grad_y, a, y, torch.zeros_like(zi))
    # M=16 over many chunks sits at 1e-10 of the float64 loop by rounding alone (1.14e-10 in one
    # environment, under 1e-10 in the one before, same code): held to the float32 loop's
    # amplification instead (a bound of 1.2e-8 there), as the other high-order float64 checks are
    single_x, single_zi, _ = allpole_backward_naive(*(t.float() for t in (grad_y, a, y, torch.zeros_like(zi))))
    assert_within_rounding(grad_x, want_x, single_x)
    assert_within_rounding(grad_zi, want_zi, single_zi)


FUSED_CARRY_CASES = [(1, 1 << 18, 1), (8, 1 << 17, 4)]
CARRY_PIECES_CASES = [(2, True), (3, True), (4, False), (4, True)]
WIDE_GROUPS_CASES = [(1, False), (2, False), (4, False), (2, True), (3, True)]
H100_SMS = 132  # the H200's too


def check_fused_carry_shape(rows: int, T: int, M: int, sms: int) -> int:
    """The shape test_fused_carry_on_gpu is for: more block maps than a scan group's lanes, in runs
    (returned)."""
    shape, maps = forward_block_maps(M, rows, T, sms)
    run = triton_scan.fused_carry_run(M, False, maps, shape.group, sms)
    assert maps > shape.group and run > 1, (shape, maps)
    return run


def check_carry_pieces_shape(M: int, complex_: bool, sms: int) -> None:
    """test_carry_pieces_on_gpu's shape (under its forced one-warp groups): a carry launch whose lanes
    each walk several maps."""
    shape, maps = forward_block_maps(M, 1, 1 << 20, sms, complex_)
    assert triton_scan.fused_carry_run(M, complex_, maps, shape.group, sms) is None
    lanes, run = triton_scan.carry_shape(M, complex_, maps, sms)
    assert lanes >= 128 and maps > lanes, (lanes, run)


def check_wide_groups_shape(M: int, complex_: bool, sms: int) -> None:
    """test_wide_scan_groups_on_gpu's shape: the table's four-warp groups, carry fused."""
    shape, maps = forward_block_maps(M, 1, 1 << 20, sms, complex_)
    assert shape.group == triton_scan.SCAN_GROUP_WIDE_GPU, shape
    assert triton_scan.fused_carry_run(M, complex_, maps, shape.group, sms) == triton_scan.FUSED_SHORT_RUN


def test_gpu_only_tests_still_reach_their_shapes(monkeypatch):
    """The GPU-only tests below are written for shapes of the launch table on an H100 or H200 (132
    SMs); a table change that moves a case off its shape fails here, on any machine, instead of in
    the next GPU session (the fourth H100 session found test_fused_carry_on_gpu's M=4 case at 31
    maps after chunks of 64 came in, f264f9b)."""
    monkeypatch.delenv("ALLPOLE_TRITON_LAUNCH", raising=False)
    runs = [check_fused_carry_shape(rows, T, M, H100_SMS) for rows, T, M in FUSED_CARRY_CASES]
    assert runs == [32, triton_scan.FUSED_SHORT_RUN], runs  # the longest run at M=1, and the short one
    for M, complex_ in WIDE_GROUPS_CASES:
        check_wide_groups_shape(M, complex_, H100_SMS)
    monkeypatch.setenv("ALLPOLE_TRITON_LAUNCH", f"group={triton_scan.SCAN_GROUP_GPU}")
    for M, complex_ in CARRY_PIECES_CASES:
        check_carry_pieces_shape(M, complex_, H100_SMS)


@pytest.mark.skipif(not torch.cuda.is_available(), reason="the GPU's own fused-carry shapes at full length need a GPU")
@pytest.mark.parametrize("rows, T, M", FUSED_CARRY_CASES)
def test_fused_carry_on_gpu(rows, T, M):
    """Rows of few blocks take the carry fused into the finish: one row of 2^18 samples at M=1
    (255 block maps of one-warp blocks: the longest runs, 32 maps on 8 of 32 lanes; at 2^20 the
    four-warp blocks of test_wide_scan_groups_on_gpu take runs of 2 on all 128 lanes) and 8 rows
    of 2^17 at M=4 (63 maps: runs of 2). Against Numba float64 loops on the CPU."""
    check_fused_carry_shape(rows, T, M, torch.cuda.get_device_properties(0).multi_processor_count)
    assert_triton_matches_loops("cuda", rows, T, M, False, reference=numba_results)


@pytest.mark.skipif(not torch.cuda.is_available(), reason="the GPU's own carry shapes at full length need a GPU")
@pytest.mark.parametrize("M, complex_", CARRY_PIECES_CASES)
def test_carry_pieces_on_gpu(monkeypatch, M, complex_):
    """One row of 2^20 samples in one-warp blocks (forced: the table takes four-warp ones there but
    for complex M=4, see test_wide_scan_groups_on_gpu): the short-order carry then scans 511-1023
    block maps (real M=4: 511, complex M=3: 910, on 132 SMs) over 128 or 256 lanes (up to eight
    warps), in runs of several maps per lane (complex M=2, 3; real M=4) or in pieces walked one
    after another (complex M=4), which no shorter test reaches there. Against Numba float64 loops
    on the CPU."""
    monkeypatch.setenv("ALLPOLE_TRITON_LAUNCH", f"group={triton_scan.SCAN_GROUP_GPU}")
    check_carry_pieces_shape(M, complex_, torch.cuda.get_device_properties(0).multi_processor_count)
    assert_triton_matches_loops("cuda", 1, 1 << 20, M, complex_, reference=numba_results)


@pytest.mark.skipif(not torch.cuda.is_available(), reason="the GPU's own scan groups at full length need a GPU")
@pytest.mark.parametrize("M, complex_", WIDE_GROUPS_CASES)
def test_wide_scan_groups_on_gpu(M, complex_):
    """One row of 2^20 samples as the table launches it: blocks of four warps (scan_group) whose
    carry the finish composes itself (real M=4: 127 maps on 132 SMs, since its chunks of 64, in
    runs of two on two warps; M=1 and 2 and complex M=2 and 3: 227-256 maps in runs of two, in all
    four warps), forward and backward. Against Numba float64 loops on the CPU."""
    check_wide_groups_shape(M, complex_, torch.cuda.get_device_properties(0).multi_processor_count)
    assert_triton_matches_loops("cuda", 1, 1 << 20, M, complex_, reference=numba_results)


def numba_results(x, a, zi, g):
    """(y, grad_x, grad_a, grad_zi) by the Numba CPU kernels: the reference at GPU lengths."""
    return run_both(x, a, zi, g, ("numba",))[0]


def forward_block_maps(M: int, rows: int, T: int, sms: int, complex_: bool = False) -> tuple:
    """(launch shape, block maps a row's forward carry composes: its blocks but the first) on a GPU."""
    shape = triton_scan.launch_shape(M, rows, T, sms, is_complex=complex_)
    return shape, -(-T // (shape.chunk * shape.group)) - 1


def single_of(dtype: torch.dtype) -> torch.dtype:
    return torch.complex64 if dtype.is_complex else torch.float32


def loop_results(x, a, zi, g):
    """(y, grad_x, grad_a, grad_zi) by plain loops in x's dtype."""
    y = allpole_naive(x, a, zi)
    grad_x, grad_zi, grad_a = allpole_backward_naive(g, a, y, zi)
    return y, grad_x, grad_a, grad_zi


def assert_within_rounding(fast, exact, single):
    """Double-precision results within 1e-10, or within the single-precision loop's error rescaled to
    double precision and widened 10^4 times: high orders with poles near the unit circle amplify
    rounding in any evaluation order, and the chunk maps (float64 for every input dtype) cancel
    more than a sequential float64 loop does. float32 inputs are held to 10x a float32 loop's
    error in test_triton_accuracy.py; here the point is a wrong index or lost term, which costs
    O(1)."""
    scale = exact.abs().max().clamp(min=1.0)
    amplification = float((single.to(exact.dtype) - exact).abs().max() / scale)
    bound = max(1e-10, 1e4 * amplification * torch.finfo(torch.float64).eps / torch.finfo(torch.float32).eps)
    error = float((fast - exact).abs().max() / scale)
    assert error <= bound, f"relative error {error:.3g} > {bound:.3g}"


@pytest.mark.parametrize("device", DEVICES)
def test_torch_compile_fullgraph_over_triton(device):
    T = chunk_length(device, 3, 2, 1 << 20) + 3
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


@pytest.mark.skipif(not torch.cuda.is_available(), reason="Inductor's CUDA graphs need a GPU")
def test_reduce_overhead_compile_on_gpu():
    """``torch.compile(mode="reduce-overhead")``, Inductor with CUDA graphs, over a forward and
    backward (the reversed-forward backward at M=2, 2^17 samples) matches eager on every call, the
    graphs' replays included: the README offers it for the host-bound shapes."""
    T, M = 1 << 16, 2
    a = stable_coefficients((2,), T, M, dtype=torch.float32, seed=4).cuda()
    x = random_signal((2, T), torch.float32).cuda()

    def loss_fn(x, a):
        return allpole(x, a, backend="triton").pow(2).mean()

    def step(fn):
        inputs = [t.clone().requires_grad_() for t in (x, a)]
        loss = fn(*inputs)
        loss.backward()
        return [loss.detach().clone()] + [t.grad.clone() for t in inputs]  # replays reuse graph memory

    eager = step(loss_fn)
    compiled = torch.compile(loss_fn, mode="reduce-overhead", fullgraph=True)
    for call in range(4):
        for want, got in zip(eager, step(compiled)):
            torch.testing.assert_close(got, want, rtol=1e-5, atol=1e-6, msg=f"call {call}")


def planned_on_meta(B, T, M, *, reverse, dtype=torch.float32, Ta=None, grad_a=True, aliased_out=False):
    """A pass's tensors on the meta device: (u, a, zi, out, tail, y, grad_a), the last three for
    the backward only; ``aliased_out``: out is u (a plan sees the two as one tensor)."""
    meta = torch.device("meta")
    u = torch.empty(B, T, dtype=dtype, device=meta)
    a = torch.empty(B, T if Ta is None else Ta, M, dtype=dtype, device=meta)
    zi = torch.empty(B, M, dtype=dtype, device=meta)
    out = u if aliased_out else torch.empty_like(u)
    if not reverse:
        return u, a, zi, out, None, None, None
    return u, a, zi, out, torch.empty_like(zi), torch.empty_like(u), torch.empty_like(a) if grad_a else None


def assert_same_launches(got, want, got_inputs, want_inputs):
    """Launch by launch: kernel, grid, constexprs, warps and scalars equal; each tensor argument is
    the same one of the pass's inputs, or a scratch tensor of the same shape, strides and dtype that
    is a fresh allocation (none of want's) and stands in for want's everywhere it appears."""
    position = {id(t): i for i, t in enumerate(want_inputs) if t is not None}
    got_position = {id(t): i for i, t in enumerate(got_inputs) if t is not None}
    scratch = {}
    assert len(got) == len(want)
    for g, w in zip(got, want):
        assert (g.kernel, g.grid, g.constexprs, g.num_warps, g.lanes, g.steps) == \
            (w.kernel, w.grid, w.constexprs, w.num_warps, w.lanes, w.steps)
        assert len(g.args) == len(w.args)
        for ga, wa in zip(g.args, w.args):
            if not isinstance(wa, torch.Tensor):
                assert ga == wa
            elif id(wa) in position:
                assert got_position.get(id(ga)) == position[id(wa)]
            else:
                assert id(ga) not in got_position and id(ga) != id(wa)
                assert (ga.shape, ga.stride(), ga.dtype, ga.device) == (wa.shape, wa.stride(), wa.dtype, wa.device)
                assert scratch.setdefault(id(wa), id(ga)) == id(ga)


@pytest.mark.parametrize("forced", ["", "adjoint=1", "chunk=256,group=16"])
def test_cached_plans_are_the_plans(monkeypatch, forced):
    """cached_plan, the driver's plan, against a fresh plan on the same and on new tensors of every
    kind of pass: GPU and interpreter shapes, forward and backward (reversed forward included), short
    and long orders, constant coefficients (a finishing step: never cached), complex (never cached)
    and 16-bit inputs, and an output given as the input tensor itself."""
    monkeypatch.setenv("ALLPOLE_TRITON_LAUNCH", forced)
    triton_scan._PLANS.clear()
    cases = [(B, T, M, reverse, dtype, Ta, aliased)
             for B, T in [(16, 1 << 16), (1, 1 << 20), (3, 37)] for M in (1, 2, 16) for reverse in (False, True)
             for dtype, Ta, aliased in [(torch.float32, None, False), (torch.bfloat16, None, False),
                                        (torch.float32, 1, False), (torch.complex64, None, False),
                                        (torch.float32, None, True)]]
    for sms in (132, None):
        for B, T, M, reverse, dtype, Ta, aliased in cases:
            kind = dict(reverse=reverse, dtype=dtype, Ta=Ta, aliased_out=aliased)
            first, second = planned_on_meta(B, T, M, **kind), planned_on_meta(B, T, M, **kind)
            names = ("tail", "y", "grad_a")

            def call(planner, tensors):
                return planner(*tensors[:4], reverse=reverse, sms=sms, **dict(zip(names, tensors[4:])))

            fresh, _ = call(triton_scan.plan, first)
            cached_before = len(triton_scan._PLANS)
            missed, _ = call(triton_scan.cached_plan, first)
            stored = len(triton_scan._PLANS) > cached_before
            assert stored == (dtype != torch.complex64 and not (reverse and Ta == 1)), (B, T, M, kind, sms)
            hit, finalize = call(triton_scan.cached_plan, second)
            assert_same_launches(missed, fresh, first, first)
            assert_same_launches(hit, fresh, second, first)
            assert finalize is triton_scan.NOTHING_TO_FINISH or not stored
    # a plan of out=u serves no call with an out of its own, and the reverse
    for aliased in (True, False):
        tensors = planned_on_meta(16, 1 << 16, 2, reverse=False, aliased_out=aliased)
        launches, _ = triton_scan.cached_plan(*tensors[:4], reverse=False, sms=132)
        assert launches[-1].args[0] is tensors[0] and launches[-1].args[5] is tensors[3]


def test_setting_a_plan_helper_forgets_the_cached_plans(monkeypatch):
    """A cached plan is dropped when any attribute of triton_scan is set (how the tests patch plan
    helpers and constants) and keyed by ALLPOLE_TRITON_LAUNCH, so no call runs a stale plan."""
    monkeypatch.delenv("ALLPOLE_TRITON_LAUNCH", raising=False)
    tensors = planned_on_meta(16, 1 << 16, 2, reverse=False)

    def chunk():
        finish = triton_scan.cached_plan(*tensors[:4], reverse=False, sms=132)[0][-1]
        return finish.args[finish.kernel.arg_names.index("chunk_len")]

    default = chunk()
    assert triton_scan._PLANS
    monkeypatch.setattr(triton_scan, "CHUNK_MAX_GPU", default // 2)
    assert not triton_scan._PLANS
    shape = triton_scan.launch_shape(2, 16, 1 << 16, 132)
    monkeypatch.setattr(triton_scan, "launch_shape", lambda *args, **kwargs: triton_scan.LaunchShape(
        2 * shape.chunk, shape.group, shape.block, shape.unroll))
    assert chunk() == 2 * shape.chunk
    monkeypatch.undo()
    assert chunk() == default
    monkeypatch.setenv("ALLPOLE_TRITON_LAUNCH", f"chunk={4 * default}")
    assert chunk() == 4 * default
    monkeypatch.setattr(triton_adjoint, "block_steps", triton_adjoint.block_steps)  # plans read it too
    assert not triton_scan._PLANS
    # a patch that lands while a plan is being made (another thread's) keeps that plan out
    plan = triton_scan.plan

    def patched_midway(*args, **kwargs):
        planned = plan(*args, **kwargs)
        monkeypatch.setattr(triton_scan, "CHUNK_MAX_GPU", triton_scan.CHUNK_MAX_GPU)
        return planned

    monkeypatch.setattr(triton_scan, "plan", patched_midway)
    chunk()
    assert not triton_scan._PLANS


class _FakeCompiled:
    """Stands in for Triton's CompiledKernel: ``kernel[grid](*every_parameter)``."""

    def __init__(self, calls):
        self.calls = calls

    def __getitem__(self, grid):
        return lambda *args: self.calls.append(("compiled", self, grid, args, {}))


class _FakeJit:
    """Stands in for a JIT function: ``kernel[grid](*args, **constexprs)`` compiles once per
    alignment of its tensors and returns the compiled kernel, as Triton's does."""

    arg_names = ["x_ptr", "n", "BLOCK", "M"]

    def __init__(self):
        self.calls, self.kernels = [], {}

    def __getitem__(self, grid):
        def run(*args, **kwargs):
            aligned = tuple(a.data_ptr() % 16 == 0 for a in args if isinstance(a, torch.Tensor))
            kernel = self.kernels.setdefault(aligned, _FakeCompiled(self.calls))
            self.calls.append(("jit", kernel, grid, args, kwargs))
            return kernel
        return run


def test_direct_launches_replay_the_compiled_kernel():
    """With a compiled-kernel table (DIRECT_LAUNCH), a launch goes through the JIT function the
    first time its tensors have an alignment, then straight to the kernel compiled for it with every
    parameter in order (constexprs by name after the positional ones; compile options such as
    enable_fp_fusion are no parameters); a wrapped launch (custom op) always takes the JIT path."""
    kernel = _FakeJit()
    x = torch.zeros(64)
    constexprs = {"M": 2, "BLOCK": 32, "enable_fp_fusion": True}
    compiled = triton_scan.CompiledKernels.of(kernel, (x, 7), constexprs, (0,))
    assert compiled.constants == (32, 2) and triton_scan.CompiledKernels.of(kernel, (x, 7), {"M": 2}, (0,)) is None
    table = compiled.kernels

    def launch(tensor, compiled=compiled, wrap=None):
        return triton_scan.Launch(kernel, 5, (tensor, 7), constexprs, 4, 0, 0, compiled).run(wrap)

    first = launch(x)
    assert [c[0] for c in kernel.calls] == ["jit"] and table == {(True,): first}
    assert kernel.calls[0][2:] == ((5,), (x, 7), dict(num_warps=4, **constexprs))
    assert launch(x) is first and launch(x) is first
    assert [c[0] for c in kernel.calls] == ["jit", "compiled", "compiled"]
    assert kernel.calls[-1][1:] == (first, (5, 1, 1), (x, 7, 32, 2), {})
    shifted = x[1:]  # 4 bytes past a 16-byte boundary: Triton compiles another kernel for it
    other = launch(shifted)
    assert other is not first and kernel.calls[-1][0] == "jit" and set(table) == {(True,), (False,)}
    assert launch(shifted) is other and kernel.calls[-1][:2] == ("compiled", other)
    launch(x, wrap=lambda k: k)
    launch(x, compiled=None)
    assert [c[0] for c in kernel.calls[-2:]] == ["jit", "jit"]


def test_triton_specialises_tensors_on_alignment_only():
    """What Launch._run_compiled keys its compiled kernels on: Triton tells tensors of one dtype
    apart by their 16-byte alignment alone (not strides, contiguity or offsets that keep it); the
    other arguments of a cached plan are fixed. Checked for the Triton installed; Triton 3.6, the
    GPU machines', gave the same keys (2026-11-28)."""
    libtriton = pytest.importorskip("triton._C.libtriton")
    if not hasattr(libtriton, "native_specialize_impl"):
        pytest.skip("this Triton specialises in Python")
    from triton.backends.compiler import BaseBackend

    def key(t):
        return libtriton.native_specialize_impl(BaseBackend, t, False, True, True)

    x = torch.zeros(64)
    assert key(x) == key(x[4:]) == key(x[::2]) == key(torch.zeros(4, 16).t()) != key(x[1:])
    assert [t.data_ptr() % 16 == 0 for t in (x, x[4:], x[::2], x[1:])] == [True, True, True, False]


@pytest.mark.parametrize("direct", [False, True])
def test_cached_plans_share_their_compiled_kernels(monkeypatch, direct):
    """Under DIRECT_LAUNCH a cached plan's replays share one compiled-kernel table per launch (the
    first call, which plans, launches through the JIT functions); without it they have none. A
    table's arguments are the ones Triton's own binding hands the launcher, in its order: every
    parameter, the constexprs after the positional ones (options such as enable_fp_fusion apart)."""
    from triton.backends.compiler import BaseBackend
    from triton.runtime.jit import JITFunction, create_function_from_signature

    def same(got, want):
        return [id(v) if isinstance(v, torch.Tensor) else v for v in got] == \
            [id(v) if isinstance(v, torch.Tensor) else v for v in want]

    monkeypatch.delenv("ALLPOLE_TRITON_LAUNCH", raising=False)
    monkeypatch.setattr(triton_scan, "DIRECT_LAUNCH", direct)
    for reverse in (False, True):
        calls = [planned_on_meta(16, 1 << 16, 2, reverse=reverse) for _ in range(3)]
        names = ("tail", "y", "grad_a")
        planned = [triton_scan.cached_plan(*t[:4], reverse=reverse, sms=132, **dict(zip(names, t[4:])))[0]
                   for t in calls]
        assert all(launch.compiled is None for launch in planned[0])
        for second, third in zip(planned[1], planned[2]):
            assert second.compiled is third.compiled
            if not direct:
                assert second.compiled is None
                continue
            assert second.compiled.kernels == {}
            assert second.compiled.tensors == tuple(k for k, v in enumerate(second.args) if isinstance(v, torch.Tensor))
            kernel = getattr(second.kernel, "fn", second.kernel)  # (an InterpretedFunction's own)
            jit = JITFunction(kernel)
            bound, _, _ = create_function_from_signature(jit.signature, jit.params, BaseBackend)(
                *second.args, **second.constexprs)
            assert same(bound.values(), (*second.args, *second.compiled.constants)), kernel.__name__


@pytest.mark.skipif(not torch.cuda.is_available(), reason="compiled kernels need a GPU")
@pytest.mark.parametrize("M", [2, 16])
def test_direct_launches_match_the_jit_launches_on_gpu(monkeypatch, M):
    """DIRECT_LAUNCH's replays give bitwise the outputs and gradients of launches through the JIT
    functions, call after call (the third call on is direct), for inputs on 16-byte boundaries and
    inputs 4 bytes off them (contiguous views one element into their buffers: one plan, which
    Triton compiles twice), forward and backward, short and long orders; and they did run direct."""
    T = 1 << 16
    a = stable_coefficients((3,), T, M, dtype=torch.float32, seed=5).cuda()
    x = random_signal((3, T), torch.float32).cuda()
    grad_y = random_signal((3, T), torch.float32).cuda()

    def placed(t, offset):
        return t.new_zeros(t.numel() + 1)[offset:offset + t.numel()].view(t.shape).copy_(t).requires_grad_()

    results = {}
    for direct in (False, True):
        monkeypatch.setattr(triton_scan, "DIRECT_LAUNCH", direct)  # (and forgets the cached plans)
        got = []
        for call in range(4):
            for offset in (0, 1):
                xs, as_ = placed(x, offset), placed(a, offset)
                assert (xs.data_ptr() % 16, as_.data_ptr() % 16) == (4 * offset, 4 * offset)
                y = allpole(xs, as_, backend="triton")
                y.backward(grad_y)
                got.append([y.detach(), xs.grad, as_.grad])
        results[direct] = got
        if direct:  # every cached plan has a launch that compiled for both alignments
            tables = [[launch.compiled for launch in template.launches] for template in triton_scan._PLANS.values()]
            assert tables and all(any(t is not None and len(t.kernels) == 2 for t in plan) for plan in tables)
    for call, (want, got) in enumerate(zip(results[False], results[True])):
        for w, g in zip(want, got):
            assert torch.equal(g, w), f"call {call // 2}, offset {call % 2}"


def test_plan_cache_keeps_the_recent_plans_under_threads(monkeypatch):
    """Least recently used plans go first (a plan hit every step stays), parameters are cached like
    tensors, and threads planning many signatures at once neither fail nor overfill the cache."""
    import sys
    import threading

    monkeypatch.delenv("ALLPOLE_TRITON_LAUNCH", raising=False)
    monkeypatch.setattr(triton_scan, "PLAN_CACHE_SIZE", 4)
    planned_lengths = []
    plan = triton_scan.plan
    monkeypatch.setattr(triton_scan, "plan", lambda u, *args, **kwargs: planned_lengths.append(u.shape[1])
                        or plan(u, *args, **kwargs))

    def call(T, parameter=False):
        u, a, zi, out, *_ = planned_on_meta(2, T, 2, reverse=False)
        a = torch.nn.Parameter(a, requires_grad=False) if parameter else a
        triton_scan.cached_plan(u, a, zi, out, reverse=False, sms=132)

    call(100)
    for T in range(101, 110):
        call(100)  # hit every time: never the least recently used
        call(T)
    assert planned_lengths.count(100) == 1 and len(triton_scan._PLANS) == 4
    call(200, parameter=True)
    call(200, parameter=True)
    assert planned_lengths.count(200) == 1
    errors = []

    def worker(first):
        try:
            for T in range(first, first + 200):
                call(T)
        except Exception as error:  # noqa: BLE001 - any failure of a thread fails the test
            errors.append(error)

    interval = sys.getswitchinterval()
    sys.setswitchinterval(1e-6)  # threads switch often enough to meet inside the cache
    try:
        threads = [threading.Thread(target=worker, args=(1000 * k,)) for k in range(1, 5)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
    finally:
        sys.setswitchinterval(interval)
    assert not errors and len(triton_scan._PLANS) <= 4


@pytest.mark.parametrize("M, complex_", [(1, False), (2, False), (3, False), (4, False), (2, True), (3, True)])
def test_short_chunks_stay_long_enough_for_a_fused_carry(M, complex_):
    """On a GPU (132 SMs, planned on meta tensors) long rows of short orders keep the carry in the
    finish: a row's chunk is the shortest that SHORT_LANES_PER_SM asks for and whose maps the finish
    still composes (STATE 4, no carry launch)."""
    sms = 132
    dtype = torch.complex64 if complex_ else torch.float32
    meta = torch.device("meta")
    grown = 0
    for B, T in [(1, 2**20), (1, 2**22), (1, 2**23), (1, 2**25), (4, 2**23), (16, 2**20)]:
        shape = triton_scan.launch_shape(M, B, T, sms, is_complex=complex_)
        whole = math.lcm(shape.unroll, M)
        u = torch.empty(B, T, dtype=dtype, device=meta)
        launches, _ = triton_scan.plan(u, torch.empty(B, T, M, dtype=dtype, device=meta),
                                       torch.empty(B, M, dtype=dtype, device=meta), torch.empty_like(u),
                                       reverse=False, sms=sms)
        assert [l.kernel for l in launches] == [triton_scan._summary, triton_scan._finish], (B, T)
        assert launches[-1].constexprs["STATE"] == 4
        asked = triton_scan.launch_shape(M, B, T, sms, is_complex=complex_, forced={"fuse": 1})
        if shape.chunk > asked.chunk:  # grown: one whole shorter would need the carry launch
            grown += 1
            assert triton_scan._fusing_group(M, complex_, -(-T // (shape.chunk - whole)), sms) is None
    assert grown or M <= 2 and not complex_  # the grid's real M <= 2 rows fuse as asked


@pytest.mark.parametrize("M", [1, 2, 3, 4, 5, 8, 16, 17, 20, 24, 31, 32, 33])
def test_gpu_launch_shape_rules(M):
    """Chunks are whole unrolled bodies, never shorter than the floor unless the row is shorter, grow
    with the work, and disappear (one chunk per row) once the rows alone fill the GPU."""
    sms, u = 132, triton_scan.unroll(M)
    previous = 0
    for rows, steps in [(1, 1), (1, 37), (1, 4096), (1, 65536), (16, 65536), (16, 2**18), (256, 2**20)]:
        shape = triton_scan.launch_shape(M, rows, steps, sms)
        assert shape.chunk % u == 0 and shape.chunk >= u
        n_chunks = -(-steps // shape.chunk)
        if n_chunks > 1:
            assert shape.chunk % M == 0  # a chunk's end state sits in the slots its start state did
            kind = "short" if triton_scan.is_short(M) else "long"
            assert shape.chunk >= triton_scan.CHUNK_MIN_GPU[kind]
            assert M <= triton_scan.SINGLE_CHUNK_ORDER
        # more work never gives shorter chunks on these shapes (long orders' whole waves may take one
        # up to WHOLE_WAVES_GROWTH shorter elsewhere, and a short row that stops fusing its carry
        # falls back to short chunks: see launch_shape)
        assert shape.chunk >= min(previous, steps)
        previous = shape.chunk
    lanes = triton_scan.SHORT_LANES_PER_SM if triton_scan.is_short(M) else triton_scan.LANES_PER_SM
    assert triton_scan.launch_shape(M, 132 * lanes, 4096, sms).chunk >= 4096
    # a forced chunk is kept (whole bodies), and a chunk grown for whole waves stays shorter than the
    # row, or is the row (one chunk, whole bodies)
    whole = math.lcm(u, M)
    if M <= triton_scan.SINGLE_CHUNK_ORDER:  # (at M=16, 56 bodies would grow to 63 unforced)
        assert triton_scan.launch_shape(M, 16, 2**20, sms, forced={"chunk": 56 * whole}).chunk == 56 * whole
    if M == 16:  # grown by at most WHOLE_WAVES_GROWTH (27 rows of 2^20 would fit one program an SM at 1680)
        assert triton_scan.launch_shape(M, 27, 2**20, sms).chunk == 896
    short_rows = triton_scan.launch_shape(M, 9000, 100, sms).chunk
    assert short_rows < 100 or short_rows == u * math.ceil(100 / u)


def test_forced_launch_shape(monkeypatch):
    monkeypatch.setenv("ALLPOLE_TRITON_LAUNCH", "chunk=250,group=16")
    shape = triton_scan.launch_shape(3, 1, 10**5, None)
    assert shape.chunk == 252 and shape.group == 16  # rounded up to whole unrolled bodies of 9 steps
    monkeypatch.setenv("ALLPOLE_TRITON_LAUNCH", "chunk=30")
    assert triton_scan.launch_shape(20, 1, 10**5, None).chunk == 40  # whole multiples of M above the unroll
    monkeypatch.setenv("ALLPOLE_TRITON_LAUNCH", "fuse=0")
    assert triton_scan.forced_launch() == {"fuse": 0}
    monkeypatch.setenv("ALLPOLE_TRITON_LAUNCH", "unroll=12,tile=4")
    assert triton_scan.launch_shape(3, 1, 10**5, None).unroll == 12
    assert triton_scan.launch_shape(20, 1, 10**5, None).unroll == 1  # above UNROLL_MAX_ORDER: ignored
    assert triton_scan.tile_steps(3, 12, 1, "_finish", False) == 4
    assert triton_scan.tile_steps(3, 10, 1, "_finish", False) == 0  # slots not static: no tiles
    for bad in ("chunk=0", "group=12", "group=2048", "fuse=2", "fused=1", "unroll=0", "unroll=128", "tile=3", "tile=1",
                "tile=128", "rows=2", "rows=-1"):
        monkeypatch.setenv("ALLPOLE_TRITON_LAUNCH", bad)
        with pytest.raises(ValueError, match="ALLPOLE_TRITON_LAUNCH"):
            triton_scan.launch_shape(3, 1, 10**5, None)
    monkeypatch.setenv("ALLPOLE_TRITON_LAUNCH", "unroll=8")
    with pytest.raises(ValueError, match="multiple of the order M=3"):
        triton_scan.launch_shape(3, 1, 10**5, None)


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("M, launch", [(1, "unroll=32,tile=32"), (2, "unroll=16,tile=16"), (3, "unroll=3,tile=0"),
                                       (8, "unroll=16,tile=8")])
def test_forced_unroll_and_tile_lengths_match_loops(monkeypatch, device, M, launch):
    """The bodies and tiles a GPU sweep may force (bench/tune_triton.py), longer and shorter than the
    table's, against float64 loops forward and backward (float64 inputs); every lane launch carries
    them."""
    monkeypatch.setenv("ALLPOLE_TRITON_LAUNCH", launch)
    forced = triton_scan.forced_launch()
    T = 3 * chunk_length(device, M, 2, 1 << 20) + 7
    a = stable_coefficients((2,), T, M, seed=M)
    x, zi, g = (random_signal(shape, seed=k) for k, shape in enumerate([(2, T), (2, M), (2, T)]))
    for reverse in (False, True):
        extra = {k: t.to(device) for k, t in dict(y=x, tail=zi, grad_a=a).items()} if reverse else {}
        launches, _ = triton_scan.plan(*(t.to(device) for t in (x, a, zi, x)), reverse=reverse,
                                       sms=triton_scan._sms(torch.device(device)), **extra)
        lane_launches = [item for item in launches if item.lanes and "U" in item.constexprs]
        assert lane_launches and all(item.constexprs["U"] == forced["unroll"] for item in lane_launches)
        finish = [item for item in launches if item.kernel is triton_scan._finish]
        assert [item.constexprs["TILE_STEPS"] for item in finish] == [forced["tile"]]
    y, *grads = run_both(*(t.to(device) for t in (x, a, zi, g)), ("triton",))[0]
    for fast, slow, rough in zip((y, *grads), loop_results(x, a, zi, g), loop_results(*(t.float() for t in (x, a, zi, g)))):
        assert_within_rounding(fast.cpu(), slow, rough)


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("M", [17, 20])
def test_orders_above_the_unroll_with_chunks_not_a_multiple_of_the_body(monkeypatch, device, M):
    """Above UNROLL_MAX_ORDER bodies are one step long, so only the rounding to whole multiples of
    M keeps a chunk's end state in its start slots: a forced 30-sample chunk (the GPU table gives
    e.g. 1024 for M=20) against float64 loops, forward and backward."""
    monkeypatch.setenv("ALLPOLE_TRITON_LAUNCH", "chunk=30,group=4")
    T = 4 * 30 + 7
    a = stable_coefficients((2,), T, M, seed=M)
    x, zi, g = (random_signal(shape, seed=k) for k, shape in enumerate([(2, T), (2, M), (2, T)]))
    y, *grads = run_both(*(t.to(device) for t in (x, a, zi, g)), ("triton",))[0]
    for fast, slow, rough in zip((y, *grads), loop_results(x, a, zi, g), loop_results(*(t.float() for t in (x, a, zi, g)))):
        assert_within_rounding(fast.cpu(), slow, rough)


def test_plans_use_one_dimensional_grids_with_int64_offsets():
    """Grids are 1-D (axes 1 and 2 stop at 65535): 6 minutes of 48 kHz audio in one row, M=2,
    and 2^31+ samples over many rows, planned on the meta device."""
    for B, T, M in [(1, 17_280_000, 2), (1, 17_280_000, 16), (4096, 2**20, 1)]:
        for reverse in (False, True):
            u, a, zi, out, tail, y, grad_a = planned_on_meta(B, T, M, reverse=reverse)
            launches, _ = triton_scan.plan(u, a, zi, out, reverse=reverse, sms=132, tail=tail, y=y, grad_a=grad_a)
            # the backward copies its coefficients first, at most two copies around the forward's
            # launches (triton_adjoint)
            assert 1 <= len(launches) <= (5 if reverse else 3)
            for launch in launches:
                assert isinstance(launch.grid, int) and 0 < launch.grid < 2**31


@pytest.mark.parametrize("device", DEVICES)
def test_few_compiled_variants_for_random_lengths(device, monkeypatch):
    """Lengths and strides are not specialised on (do_not_specialize), and the chunk is a runtime
    argument, so 20 random lengths reuse the same few kernel variants per pass."""
    from allpole_triton.bench import sm90

    keys = set()
    original = triton_scan.plan

    def recording_plan(*args, **kwargs):
        launches, finalize = original(*args, **kwargs)
        keys.update(map(sm90.variant_key, launches))
        return launches, finalize

    monkeypatch.setattr(triton_scan, "plan", recording_plan)
    if device == "cpu":  # the interpreter's runs cost seconds and prove nothing here: only plans count
        monkeypatch.setattr(triton_scan.Launch, "run", lambda self, wrap=None: None)
    rng = random.Random(0)
    low, high = (20, 200) if device == "cpu" else (2000, 200_000)
    for T in [rng.randrange(low, high) for _ in range(20)]:
        x = torch.randn(1, T, device=device, requires_grad=True)
        a = (0.1 * torch.randn(1, T, 2, device=device)).requires_grad_()
        allpole(x, a, backend="triton").sum().backward()
    # per pass: the summary and the finish with the carry fused in (and without its piece code for
    # rows of one block); on a GPU also the carry launch and a finish for it, for the longest T
    assert len(keys) <= 8 if device == "cuda" else len(keys) <= 6, sorted(keys)


@pytest.mark.parametrize("M", [1, 2, 4])
@pytest.mark.parametrize("B", [1, 16])
def test_few_gpu_variants_for_random_lengths(B, M):
    """The GPU's plans (132 SMs, planned on meta tensors) for 20 random lengths of a training run
    compile few variants per pass: the fused carry's run takes two values at most (FUSED_SHORT_RUN,
    or the longest), besides 0 for rows of one block. Rows whose lengths straddle scan_group's
    choice between one-warp and four-warp blocks compile both (16 rows at M=4: 11 variants, since
    short orders took SHORT_LANES_PER_SM)."""
    from allpole_triton.bench import model, sm90

    keys, runs = set(), collections.defaultdict(set)
    rng = random.Random(0)
    for T in [rng.randrange(2000, 200_000) for _ in range(20)]:
        for reverse in (False, True):
            for launch in model.pass_launches(B, T, M, reverse):
                keys.add(sm90.variant_key(launch))
                if launch.constexprs.get("CARRY_RUN"):
                    runs[reverse].add(launch.constexprs["CARRY_RUN"])
    assert all(len(r) <= 2 for r in runs.values()) and runs, runs
    assert len(keys) <= 11, sorted(keys)


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("view", ["transposed", "expanded_rows", "expanded_time"])
def test_strided_coefficients_without_copies(device, view):
    """Coefficients are read through their strides: a transposed (B, M, T) buffer, one filter
    expanded over rows, or one coefficient set expanded over time, all with gradients."""
    B, T, M = 3, 3 * chunk_length(device, 3, 3, 1 << 20) + 4, 3
    base = stable_coefficients((B,), T, M, seed=4).to(device)
    if view == "transposed":
        a = base.transpose(1, 2).contiguous().transpose(1, 2)
    elif view == "expanded_rows":
        a = base[:1].expand(B, T, M)
    else:
        a = base[:, :1].expand(B, T, M)
    assert not a.is_contiguous()
    x, zi, g = random_signal((B, T)).to(device), random_signal((B, M), seed=5).to(device), random_signal((B, T), seed=6).to(device)
    fast, slow = run_both(x, a, zi, g, ("triton", "naive"))
    for f, s in zip(fast, slow):
        assert_close(f.cpu(), s.cpu(), torch.float64)


@pytest.mark.parametrize("device", DEVICES)
def test_direct_calls_match_the_cuda_ops(device, monkeypatch):
    """Plain eager calls the kernels directly; traces, transforms and the profiler go through the
    ``triton_op`` s (``allpole_cuda``, ``allpole_backward_cuda``; on CPU tensors they run the
    interpreter). Both paths launch the same kernels: bitwise equal forward and backward, with the
    reverse kernels and with the forward on reversed time. Under the profiler a call shows the op."""
    from allpole_triton import op

    op.register_cuda_ops()
    T, M = 3 * chunk_length(device, 2, 2, 1 << 20) + 7, 2
    a = stable_coefficients((2,), T, M, seed=3).to(device)
    x, zi, g = (random_signal(shape, seed=k).to(device) for k, shape in enumerate([(2, T), (2, M), (2, T)]))
    y = op._triton_forward(x, a, zi)
    assert torch.equal(y, torch.ops.allpole_triton.allpole_cuda(x, a, zi))
    for adjoint in (0, 1):
        monkeypatch.setenv("ALLPOLE_TRITON_LAUNCH", f"adjoint={adjoint}")
        direct = op._triton_backward(g, a, y, zi, True)
        through_op = torch.ops.allpole_triton.allpole_backward_cuda(g, a, y, zi, True)
        assert all(torch.equal(d, o) for d, o in zip(direct, through_op)), adjoint
    with torch.profiler.profile() as profile:
        allpole(x, a, zi, backend="triton")
    names = {event.name for event in profile.events()}
    assert ("allpole_triton::allpole_cuda" if device == "cuda" else "allpole_triton::allpole") in names


@pytest.mark.skipif(torch.cuda.device_count() < 2, reason="needs two GPUs")
def test_launches_on_the_tensors_device():
    torch.cuda.set_device(0)
    x = torch.randn(2, 5000, device="cuda:1")
    a = 0.1 * torch.randn(2, 5000, 2, device="cuda:1")
    torch.testing.assert_close(allpole(x, a, backend="triton").cpu(), allpole(x.cpu(), a.cpu(), backend="numba"))


@pytest.mark.skipif(not triton_interpret(), reason="the interpreter's default is whole-tile loads")
@pytest.mark.parametrize("M, Ta, complex_, layout", [
    (2, 1, True, "contiguous"), (12, "T", True, "contiguous"), (16, "T", False, "transposed"),
    slow(1, "T", False, "contiguous"), slow(2, "T", False, "contiguous"), slow(5, "T", False, "transposed"),
    slow(8, 1, False, "contiguous"), slow(16, 1, False, "contiguous"),
])
def test_slot_by_slot_coefficient_loads_match_whole_tiles(monkeypatch, M, Ta, complex_, layout):
    """The compiler loads coefficients one circular-buffer slot at a time up to SPLIT_MAX_ORDER and,
    under Triton 3.6, accesses whole lane tiles lane axis first (triton_tiles: Triton 3.6 would
    otherwise spread the tile over the warp); the interpreter loads whole tiles as they are. All
    must give bit-identical results, forward and backward, for every coefficient layout."""
    import triton.language as tl

    from allpole_triton.kernels import triton_tiles

    dtype = torch.complex64 if complex_ else torch.float32
    T = 3 * chunk_length("cpu", M, 2, 1 << 20) + 7
    a = stable_coefficients((2,), T, M, dtype=dtype, seed=M)
    a = a[:, :1] if Ta == 1 else a
    if layout == "transposed":
        a = a.transpose(1, 2).contiguous().transpose(1, 2)
    x, zi, g = (random_signal(shape, dtype, seed=k) for k, shape in enumerate([(2, T), (2, M), (2, T)]))
    results = []
    # whole tiles as they are (the reference); slot by slot (only up to SPLIT_MAX_ORDER: above it
    # SPLIT_TILES changes nothing); whole tiles and the grad_a store lane axis first
    variants = [(False, False), (False, True)] + ([(True, False)] if M <= triton_scan.SPLIT_MAX_ORDER else [])
    for split, lanes_first in variants:
        monkeypatch.setattr(triton_scan, "SPLIT_TILES", tl.constexpr(split))
        monkeypatch.setattr(triton_tiles, "FIRST_AXIS_FASTEST", tl.constexpr(lanes_first))
        results.append(run_both(x, a, zi, g, ("triton",))[0])
    for other in results[1:]:
        for whole, sliced in zip(results[0], other):
            assert torch.equal(whole, sliced)


def assert_same_or_as_accurate(inputs, names, comparisons) -> None:
    """For each ``(reference, variants)`` of ``comparisons``, each of ``variants`` (label: results,
    in the order of ``names``) computes what ``reference`` computes: bit-identical under the
    interpreter and, compiled, up to CHAINED_MAX_ORDER. All are results on ``inputs``.

    Compiled, the sums of orders above CHAINED_MAX_ORDER reduce in an order that follows the layout
    Triton picks for the coefficients, which two load paths may not share: the first H100 run
    (Triton 3.6) found M=16 tiles not bitwise equal, with the same multiply-add counts in every
    variant's SASS, and the third found rows=1 at M=16 outside rtol 1e-4 of rows=0 (the test inputs
    put M=16 at 1e-3 of float64 either way). There the reference is held to a float32 loop's error
    (10x, as in test_triton_accuracy.py) against float64, each variant to twice the reference's:
    a wrong step costs O(1). A difference is reported as a warning. The two loops run once for all
    the comparisons."""
    x, a, zi, g = inputs
    M, dtype = a.shape[-1], x.dtype
    if x.device.type == "cpu" or M <= triton_scan.CHAINED_MAX_ORDER:
        for reference, variants in comparisons:
            for label, results in variants.items():
                for name, expected, got in zip(names, reference, results):
                    assert torch.equal(expected, got), f"{label}: {name} differs"
        return
    wide = torch.complex128 if dtype.is_complex else torch.float64
    single = torch.complex64 if dtype.is_complex else torch.float32
    exact = dict(zip(("y", "grad_x", "grad_a", "grad_zi"), loop_results(*(t.cpu().to(wide) for t in inputs))))
    rough = dict(zip(("y", "grad_x", "grad_a", "grad_zi"), loop_results(*(t.cpu().to(single) for t in inputs))))
    eps = torch.finfo(dtype).eps
    ratio = eps / torch.finfo(torch.float32).eps
    for reference, variants in comparisons:
        reference_errors = {}
        for name, expected in zip(names, reference):
            reference_errors[name] = float(relative_error(expected.cpu(), exact[name]))
            loop_error = float(relative_error(rough[name], exact[name]))
            assert reference_errors[name] <= (10 if ratio >= 1 else 1e4) * ratio * loop_error + 4 * eps, (
                f"{name} off by {reference_errors[name]:.3g} against float64 (a float32 loop: {loop_error:.3g})")
        for label, results in variants.items():
            for name, expected, got in zip(names, reference, results):
                error = float(relative_error(got.cpu(), exact[name]))
                assert error <= 2 * reference_errors[name] + 4 * eps, (
                    f"{label}: {name} off by {error:.3g} against float64 (the reference: {reference_errors[name]:.3g})")
                if not torch.equal(expected, got):
                    warnings.warn(f"M={M} {dtype} {label}: {name} not bitwise equal to the reference "
                                  f"({error:.3g} against {reference_errors[name]:.3g} from float64)")

@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("M, dtype, layout, grad_a", [
    (2, torch.bfloat16, "contiguous", True), (5, torch.float32, "transposed", True),
    (8, torch.float32, "broadcast", False), slow(1, torch.float32, "contiguous", True),
    slow(2, torch.float64, "contiguous", True), slow(3, torch.complex64, "contiguous", True),
    slow(16, torch.float32, "contiguous", True),
])
def test_coefficient_tiles_give_identical_results(monkeypatch, device, M, dtype, layout, grad_a):
    """Loading several steps' coefficients (and the finish's inputs) as one tile changes when they
    are loaded, not what is computed: tiles of 2, 4 and 16 steps and tiles longer than the unrolled
    body give bit-identical results to step-by-step loads under the interpreter (compiled: within a
    few units of rounding, any difference reported), forward and backward (with and without
    grad_a), over a partial last chunk and bodies that are not a power of two (M=3: 9 steps, M=5:
    10), for contiguous, strided and broadcast (stride-0 rows) coefficients. Every launch plan
    must carry the forced length, so that the comparison cannot pass by tiling nothing."""
    T = 3 * chunk_length(device, M, 2, 1 << 20) + 7
    a = stable_coefficients((2,), T, M, dtype=torch.complex64 if dtype.is_complex else torch.float32, seed=M)
    a = a.to(device=device, dtype=dtype)
    if layout == "transposed":
        a = a.transpose(1, 2).contiguous().transpose(1, 2)
    elif layout == "broadcast":
        a = a[:1].expand(2, T, M)
    x, zi, g = (random_signal(shape, dtype, seed=k).to(device) for k, shape in enumerate([(2, T), (2, M), (2, T)]))
    results = []
    for forced in (0, 2, 4, 16):
        monkeypatch.setenv("ALLPOLE_TRITON_LAUNCH", f"tile={forced}")
        for reverse in (False, True):
            launches, _ = triton_scan.plan(x, a, zi, torch.empty_like(x), reverse=reverse, sms=triton_scan._sms(x.device),
                                           y=x if reverse else None, tail=zi if reverse else None)
            assert {launch.constexprs["TILE_STEPS"] for launch in launches if launch.kernel is triton_scan._finish} == {forced}
        results.append(run_both(x, a, zi, g, ("triton",), grad_a)[0])
    names = ("y", "grad_x", "grad_a", "grad_zi") if grad_a else ("y", "grad_x", "grad_zi")
    tiled = {f"{forced}-step tiles": other for forced, other in zip((2, 4, 16), results[1:])}
    assert_same_or_as_accurate((x, a, zi, g), names, [(results[0], tiled)])


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("M, dtype", [(2, torch.float32), slow(16, torch.float32), slow(1, torch.float32),
                                      slow(2, torch.bfloat16), slow(3, torch.float32), slow(4, torch.float64)])
def test_coalesced_rows_give_identical_results(monkeypatch, device, M, dtype):
    """Reading a body's inputs, outputs and forward coefficient tiles as coalesced rows (one
    shared-memory transpose each) moves the same values to the same lanes: bit-identical to
    per-lane loads under the interpreter (compiled: up to CHAINED_MAX_ORDER, above which a step's
    sum follows the coefficients' layout, see test_coefficient_tiles_give_identical_results), with
    and without coefficient tiles, forward and backward with grad_a, over a partial last chunk and
    a body of 9 steps at M=3 (padded to rows of 16). Every plan must carry the forced rows."""
    T = 3 * chunk_length(device, M, 2, 1 << 20) + 7
    a = stable_coefficients((2,), T, M, seed=M).to(device=device, dtype=dtype).contiguous()
    x, zi, g = (random_signal(shape, dtype, seed=k).to(device) for k, shape in enumerate([(2, T), (2, M), (2, T)]))
    results = {}
    for launch in ("rows=0", "rows=1", "rows=0,tile=4", "rows=1,tile=4", "rows=1,tile=16"):
        monkeypatch.setenv("ALLPOLE_TRITON_LAUNCH", launch)
        for reverse in (False, True):
            launches, _ = triton_scan.plan(x, a, zi, torch.empty_like(x), reverse=reverse, sms=triton_scan._sms(x.device),
                                           y=x if reverse else None, tail=zi if reverse else None, grad_a=a if reverse else None)
            lane = [item for item in launches if "ROWS" in item.constexprs]
            assert lane and {item.constexprs["ROWS"] for item in lane} == {launch.startswith("rows=1")}
            for item in lane:  # coefficient tiles as rows wherever tiles_as_rows takes them
                kernel = item.kernel.__name__
                a_reverse = item.constexprs["REVERSE"] and not item.constexprs["A_COPY"]
                # contiguous real rows: 16-byte vectors at M a multiple of four, forward (finishes
                # below float64); pairs at M = 2 but in the reverse finish
                full = max(k for k in (1, 2, triton_scan.ROWS_VECTOR) if M % k == 0)
                vectors = (launch.startswith("rows=1") and full == triton_scan.ROWS_VECTOR and not a_reverse
                           and (kernel == "_summary" or dtype != torch.float64))
                expected = launch.startswith("rows=1") and triton_scan.tiles_as_rows(
                    True, M, a_reverse, kernel, vectors) and item.constexprs["TILE_STEPS"] > 0
                narrow = full < triton_scan.ROWS_VECTOR and not a_reverse and not (reverse and kernel == "_finish")
                alignment = triton_scan.ROWS_VECTOR if vectors else full if narrow else 1
                assert item.constexprs["TILE_ROWS"] == (alignment if expected else 0), (launch, kernel, reverse)
        results[launch] = run_both(x, a, zi, g, ("triton",), True)[0]
    # one chunk per row: the state from zi (forward) or from rest (adjoint), no summary
    short = (x[:, :5], a[:, :5].contiguous(), zi, g[:, :5])
    for launch in ("rows=0", "rows=1"):
        monkeypatch.setenv("ALLPOLE_TRITON_LAUNCH", launch)
        results["short " + launch] = run_both(*short, ("triton",), True)[0]
    names = ("y", "grad_x", "grad_a", "grad_zi")
    assert_same_or_as_accurate((x, a, zi, g), names, [
        (results["rows=0"], {"rows=1": results["rows=1"]}),
        (results["rows=0,tile=4"], {rows: results[rows] for rows in ("rows=1,tile=4", "rows=1,tile=16")}),
    ])
    assert_same_or_as_accurate(short, names, [(results["short rows=0"], {"short rows=1": results["short rows=1"]})])


def test_rows_alignment_rules():
    """Coefficient rows are loaded as vectors of the largest power of two (up to four elements)
    that divides M and that every lane's row starts at a multiple of: 16-byte vectors for (B, T, M)
    rows at M a multiple of four, pairs at M = 2 whatever T (its row stride 2T is always even), and
    never at M = 1, whose alignment would turn with T (twice the compiled variants for random
    lengths)."""
    for M, sa_row, chunk, expected in [(4, 4 * 1001, 64, 4), (16, 16 * 7, 1008, 4), (8, 8 * 3, 64, 4),
                                       (16, 16 * 7 + 1, 64, 1), (4, 4 * 1001 + 2, 64, 2), (2, 2 * 4096, 64, 2),
                                       (2, 2 * 4097, 64, 2), (2, 2 * 4096 + 1, 64, 1), (2, 2 * 4096, 33, 2),
                                       (1, 4096, 64, 1), (1, 4097, 64, 1), (4, 0, 64, 4)]:  # stride 0: one row broadcast
        assert triton_scan.rows_alignment(M, sa_row, chunk) == expected, (M, sa_row, chunk)


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("M", [2, 4, slow(16)])
def test_coefficient_rows_of_any_row_stride(monkeypatch, device, M):
    """Coefficient rows whose row stride is odd take scalar loads (TILE_ROWS 1), contiguous ones
    vectors (TILE_ROWS 4 from M = 4, 16 bytes; 2 at M = 2: a hint the compiled kernel trusts, a
    wrong one reads misaligned vectors on a GPU), also from a pointer off 16-byte alignment. All
    give the contiguous tensor's results, bit for bit under the interpreter, and within a float32
    loop's error of float64."""
    monkeypatch.setenv("ALLPOLE_TRITON_LAUNCH", "rows=1,tile=4")
    T = 3 * chunk_length(device, M, 2, 1 << 20) + 7
    dense = stable_coefficients((2,), T, M, seed=M).to(device=device, dtype=torch.float32)
    padded = torch.zeros(2, T * M + 1, device=device)  # rows T*M + 1 elements apart
    padded[:, :T * M] = dense.reshape(2, T * M)
    odd = padded.as_strided((2, T, M), (T * M + 1, M, 1))
    # rows a multiple of M elements apart from a pointer 4 bytes past 16-byte alignment: the hint
    # holds for the offsets, and Triton compiles such a pointer without its alignment
    shifted = torch.zeros(2 * T * M + 1, device=device)[1:].view(2, T, M)
    shifted.copy_(dense)
    assert torch.equal(odd, dense) and triton_scan.coefficient_layout(odd) == triton_scan.A_CONTIGUOUS
    assert shifted.data_ptr() % 16 == 4 and shifted.is_contiguous()
    x, zi, g = (random_signal(shape, torch.float32, seed=k).to(device) for k, shape in enumerate([(2, T), (2, M), (2, T)]))
    results = {}
    full = min(M, triton_scan.ROWS_VECTOR)
    for name, a, alignment in (("contiguous", dense, full), ("odd row stride", odd, 1), ("shifted pointer", shifted, full)):
        launches, _ = triton_scan.plan(x, a, zi, torch.empty_like(x), reverse=False, sms=triton_scan._sms(x.device))
        assert {launch.constexprs.get("TILE_ROWS") for launch in launches} - {None, 0} == {alignment}, name
        results[name] = run_both(x, a, zi, g, ("triton",), True)[0]
    assert_same_or_as_accurate((x, dense, zi, g), ("y", "grad_x", "grad_a", "grad_zi"),
                               [(results["contiguous"], {name: results[name] for name in ("odd row stride", "shifted pointer")})])


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("M", [4, slow(16)])
def test_vector_coefficient_rows_without_input_rows(monkeypatch, device, M):
    """Coefficient tiles as 16-byte vector rows in kernels that read their inputs lane by lane (on a
    GPU the M=16 finish, whose input rows spill): here every forward kernel, its inputs read lane
    by lane. Bit-identical to per-lane loads under the interpreter (the backward runs without them:
    its gradients check the forward's outputs)."""
    T = 3 * chunk_length(device, M, 2, 1 << 20) + 7
    a = stable_coefficients((2,), T, M, seed=M).to(device=device, dtype=torch.float32)
    x, zi, g = (random_signal(shape, torch.float32, seed=k).to(device) for k, shape in enumerate([(2, T), (2, M), (2, T)]))
    results = {}
    for launch in ("rows=0,tile=2", "rows=1,tile=2"):
        monkeypatch.setenv("ALLPOLE_TRITON_LAUNCH", launch)
        if launch.startswith("rows=1"):
            monkeypatch.setattr(triton_scan, "uses_rows", lambda *args, **kwargs: False)  # forgets kept plans
        launches, _ = triton_scan.plan(x, a, zi, torch.empty_like(x), reverse=False, sms=triton_scan._sms(x.device))
        lane = [item for item in launches if "ROWS" in item.constexprs]
        assert lane and not any(item.constexprs["ROWS"] for item in lane)
        expected = triton_scan.ROWS_VECTOR if launch.startswith("rows=1") else 0
        assert {item.constexprs["TILE_ROWS"] for item in lane} == {expected}, launch
        results[launch] = run_both(x, a, zi, g, ("triton",), True)[0]
    assert_same_or_as_accurate((x, a, zi, g), ("y", "grad_x", "grad_a", "grad_zi"),
                               [(results["rows=0,tile=2"], {"vector rows": results["rows=1,tile=2"]})])


def test_rows_of_2_31_steps_are_refused_by_name():
    """The kernels count a row's steps in int32: a plan of 2**31 steps or more (the backward adds M)
    raises a ValueError that names the length, where it would have wrapped around silently, before
    the backward allocates its reversed copies."""
    for B, T, M, reverse in [(1, 2**31, 1, False), (2, 2**31 - 2, 2, True)]:
        u, a, zi, out, tail, y, grad_a = planned_on_meta(B, T, M, reverse=reverse)
        with pytest.raises(ValueError, match=f"{T} samples per row"):
            triton_scan.plan(u, a, zi, out, reverse=reverse, sms=132, tail=tail, y=y, grad_a=grad_a)
    u, a, zi, out, *_ = planned_on_meta(1, 2**31 - 1, 2, reverse=False)
    assert triton_scan.plan(u, a, zi, out, reverse=False, sms=132)[0]


@triton.jit
def _rows_round_trip(src, tile_out, rows_out, S: tl.constexpr, P: tl.constexpr, Q: tl.constexpr, BLOCK: tl.constexpr):
    """Each lane's row of S through rows_to_lanes into a [P, Q] tile (entry e from column
    S-1-(e mod S)) and back through lanes_to_rows."""
    lane = tl.arange(0, BLOCK)
    offsets = lane[:, None] * S + tl.arange(0, S)[None, :]
    rows = triton_tiles.load_rows(src, offsets, offsets >= 0)
    entry = tl.arange(0, P)[:, None, None] * Q + tl.arange(0, Q)[None, :, None]
    column = S - 1 - entry % S
    tile = triton_tiles.rows_to_lanes(rows, column)
    tl.store(tile_out + lane[None, None, :] * (P * Q) + entry, tile)
    tl.store(rows_out + offsets, triton_tiles.lanes_to_rows(tile, column, S))


@pytest.mark.skipif(not triton_interpret(), reason="a layout-free check of the interpreter")
@pytest.mark.parametrize("lanes_first", [False, True])
def test_rows_reach_their_lanes_and_back(monkeypatch, lanes_first):
    """rows_to_lanes puts column column[e] of each lane's row at entry e, and lanes_to_rows puts it
    back, in both builds: lane axis last, and lane axis first (Triton 3.6's, which the interpreter
    would not run otherwise), for rows of 1 to 32 columns and entry tiles of several shapes (more
    entries than columns too, for rows_to_lanes: S-1-(e mod S) repeats them)."""
    monkeypatch.setattr(triton_tiles, "FIRST_AXIS_FASTEST", tl.constexpr(lanes_first))
    lanes = 4
    for S, P, Q in [(1, 1, 1), (2, 2, 1), (8, 8, 1), (16, 4, 4), (32, 2, 16), (4, 4, 2)]:
        src = torch.randn(lanes * S)
        tile, back = torch.zeros(lanes * P * Q), torch.zeros(lanes * S)
        _rows_round_trip[(1,)](src, tile, back, S, P, Q, lanes)
        entry = torch.arange(P * Q)
        assert torch.equal(tile.view(lanes, P * Q), src.view(lanes, S)[:, S - 1 - entry % S]), (S, P, Q)
        if P * Q == S:  # lanes_to_rows takes one entry per column
            assert torch.equal(back, src), (S, P, Q)


def test_rows_go_where_the_sm90_compile_keeps_them_in_registers(monkeypatch):
    """On a GPU rows are the default for real inputs with contiguous coefficients up to M=8, and
    above only in the forward summary; never for complex or strided coefficients; the interpreter
    keeps per-lane loads; ALLPOLE_TRITON_LAUNCH's rows forces either way where rows apply."""
    monkeypatch.delenv("ALLPOLE_TRITON_LAUNCH", raising=False)
    rows = triton_scan.uses_rows
    contiguous, strided = triton_scan.A_CONTIGUOUS, triton_scan.A_STRIDED
    for kernel in ("_summary", "_finish"):
        for reverse in (False, True):
            assert rows(kernel, contiguous, False, 132, 2, reverse) and rows(kernel, contiguous, False, 132, 8, reverse)
            assert not rows(kernel, contiguous, True, 132, 2, reverse) and not rows(kernel, strided, False, 132, 2, reverse)
            assert not rows(kernel, contiguous, False, None, 2, reverse)
            assert rows(kernel, contiguous, False, 132, 16, reverse) == (kernel == "_summary" and not reverse)
    # coefficient tiles as rows: powers of two only (the kernels' rows need M_PAD == M)
    as_rows = triton_scan.tiles_as_rows
    assert as_rows(True, 2, False, "_finish") and as_rows(True, 4, False, "_summary") and as_rows(True, 1, True, "_finish")
    assert not as_rows(True, 3, False, "_finish") and not as_rows(True, 3, False, "_summary")
    assert not as_rows(True, 2, True, "_finish") and not as_rows(False, 2, False, "_finish")
    assert as_rows(True, 16, False, "_summary") and not as_rows(True, 16, False, "_finish")
    monkeypatch.setenv("ALLPOLE_TRITON_LAUNCH", "rows=1")
    assert rows("_finish", contiguous, False, None, 16, True) and not rows("_finish", strided, False, None, 2, False)
    monkeypatch.setenv("ALLPOLE_TRITON_LAUNCH", "rows=0")
    assert not rows("_summary", contiguous, False, 132, 2, False)


def test_tile_lengths_follow_the_register_budget(monkeypatch):
    """Compiled, tiles are as long as the kernel's budget allows (at least 2 steps, at most the
    body); none for bodies that are not whole multiples of M; the interpreter tiles nothing."""
    monkeypatch.setattr(triton_scan, "_INTERPRETED", False)
    monkeypatch.setattr(triton_scan, "TILE_BUDGET", {("_finish", False): 256, ("_finish", True): 128,
                                                     ("_summary", False): 128, ("_summary", True): 0})
    assert triton_scan.tile_steps(16, 16, 1, "_finish", False) == 16
    assert triton_scan.tile_steps(16, 16, 1, "_finish", True) == 8
    assert triton_scan.tile_steps(16, 16, 2, "_finish", True) == 2
    assert triton_scan.tile_steps(16, 16, 4, "_finish", True) == 0
    assert triton_scan.tile_steps(8, 8, 2, "_summary", False) == 4
    assert triton_scan.tile_steps(3, 9, 1, "_finish", False) == 16
    assert triton_scan.tile_steps(16, 16, 2, "_summary", True) == 0
    assert triton_scan.tile_steps(17, 1, 1, "_finish", False) == 0
    monkeypatch.setattr(triton_scan, "_INTERPRETED", True)
    assert triton_scan.tile_steps(16, 16, 1, "_finish", False) == 0


def test_generated_affine_kernels_are_up_to_date():
    """kernels/triton_affine.py is what kernels/affine_codegen.py renders (rerun it after editing)."""
    import pathlib

    from allpole_triton.kernels import affine_codegen

    generated = pathlib.Path(triton_scan.__file__).with_name("triton_affine.py").read_text()
    assert generated == affine_codegen.render()


@pytest.mark.skipif("cpu" not in DEVICES, reason="sized for the interpreter's launch shapes")
@pytest.mark.parametrize("M, fuse", [(2, 0), (16, None)])
def test_stage_diagnostic_checks_every_launch(M, fuse, monkeypatch):
    """allpole_triton.bench.diagnose (the GPU session's first check) recovers every intermediate
    state from a float64 loop and finds them right here; against a perturbed reference it fails.
    (A carry fused into the finish, ``fuse=1``, has no stage of its own: its errors show in y.)"""
    from allpole_triton.bench import diagnose

    T = 5 * 4 * triton_scan.CHUNK_INTERPRET * triton_scan.unroll(M) + 3  # five carry blocks
    report = diagnose.check(2, T, M, device="cpu", fuse=fuse)
    assert set(report["stages"]) == {"summary", "carry", "y"}
    for stage, result in report["stages"].items():
        assert result["nonfinite"] == 0 and result["max_rel_err"] < 1e-5, (stage, result)

    real_loop = diagnose.sequential_loop
    monkeypatch.setattr(diagnose, "sequential_loop", lambda x, a: real_loop(x, a) * 1.001)
    report = diagnose.check(2, T, M, device="cpu", fuse=fuse)
    assert all(result["max_rel_err"] > 1e-5 for result in report["stages"].values())


@pytest.mark.skipif("cpu" not in DEVICES, reason="compares the interpreter's grouping with the GPU's")
@pytest.mark.parametrize("M, complex_", [(5, False), slow(16, False), slow(16, True), slow(32, False)])
def test_gpu_recursions_per_lane_give_identical_results(M, complex_, monkeypatch):
    """The interpreter runs all of a chunk's homogeneous recursions in one lane; the GPU splits them
    over groups of lanes (recursions_per_lane). Each recursion's arithmetic is the same either way:
    forward and backward results must be bitwise equal."""
    dtype = torch.complex64 if complex_ else torch.float32
    T = 3 * chunk_length("cpu", M, 2, 1 << 20) + 7
    a = stable_coefficients((2,), T, M, dtype=dtype, seed=M)
    x, zi, g = (random_signal(shape, dtype, seed=k) for k, shape in enumerate([(2, T), (2, M), (2, T)]))
    interpreter = run_both(x, a, zi, g, ("triton",))[0]
    gpu_choice = triton_scan.recursions_per_lane
    assert gpu_choice(M, complex_, None) > gpu_choice(M, complex_, 132)  # the two really differ
    monkeypatch.setattr(triton_scan, "recursions_per_lane", lambda M, c, sms: gpu_choice(M, c, 132))
    gpu = run_both(x, a, zi, g, ("triton",))[0]
    for left, right in zip(interpreter, gpu):
        assert torch.equal(left, right)
