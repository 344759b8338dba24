"""The interpreter sanitizer (tests/interpreter_sanitizer.py) catches what it says it catches, so
that every Triton test run under it also checks for these GPU-only failures."""
from __future__ import annotations

import ast
import math
from pathlib import Path

import pytest
import torch

from allpole_triton.op import triton_interpret

pytestmark = pytest.mark.skipif(not triton_interpret(), reason="the sanitizer patches Triton's interpreter")
triton = pytest.importorskip("triton")
import triton.language as tl  # noqa: E402



@triton.jit
def _shifted_copy(src_ptr, dst_ptr, n, shift, BLOCK: tl.constexpr):
    offsets = tl.program_id(0) * BLOCK + tl.arange(0, BLOCK)
    keep = offsets < n
    tl.store(dst_ptr + offsets, tl.load(src_ptr + offsets + shift, mask=keep), mask=keep)


@triton.jit
def _reads_previous_program(out_ptr):
    """Program p writes p + out[p - 1]: right only if programs run in grid order."""
    p = tl.program_id(0)
    previous = tl.load(out_ptr + p - 1, mask=p > 0, other=0.0)
    tl.store(out_ptr + p, previous + p)


@triton.jit
def _hinted_gather(src_ptr, dst_ptr, start):
    """dst[i] = src[start + 4i], the offsets hinted as multiples of 4 (as the kernels hint their
    lanes' row starts)."""
    offsets = tl.multiple_of(start + 4 * tl.arange(0, 4), 4)
    tl.store(dst_ptr + tl.arange(0, 4), tl.load(src_ptr + offsets))


def test_false_alignment_hint_is_caught():
    """tl.multiple_of is a promise the compiled kernel vectorises on: a false one is flagged."""
    src, dst = torch.arange(20, dtype=torch.float32), torch.zeros(4)
    _hinted_gather[(1,)](src, dst, 4)
    assert torch.equal(dst, src[4::4])
    with pytest.raises(Exception, match=r"_hinted_gather: a multiple_of\(4\) hint is false for 4 of 4 values"):
        _hinted_gather[(1,)](src, dst, 2)


@pytest.mark.parametrize("dtype", [torch.float32, torch.float16])
def test_in_bounds_copy_passes(dtype):
    """Programs storing neighbouring 2-byte elements share no element: no race."""
    src = torch.arange(10, dtype=dtype)
    dst = torch.zeros(10, dtype=dtype)
    _shifted_copy[(3,)](src, dst, 10, 0, BLOCK=4)
    assert torch.equal(dst, src)


@pytest.mark.parametrize("shift", [1, -1])
def test_out_of_bounds_load_is_caught(shift):
    src, dst = torch.arange(10, dtype=torch.float32), torch.zeros(10)
    with pytest.raises(Exception, match=r"_shifted_copy: 1 of \d+ active loads are out of bounds"):
        _shifted_copy[(3,)](src, dst, 10, shift, BLOCK=4)


def test_view_bounds_not_storage_bounds():
    """A view's reach ends where its sizes and strides end, though its storage goes on."""
    storage = torch.arange(12, dtype=torch.float32)
    with pytest.raises(Exception, match="out of bounds"):
        _shifted_copy[(3,)](storage[:10], torch.zeros(10), 10, 1, BLOCK=4)


@triton.jit
def _stores_twice(out_ptr, SAME: tl.constexpr):
    """Every program stores element 0; with SAME, each one stores its own element twice."""
    p = tl.program_id(0)
    if SAME:
        tl.store(out_ptr + p, 1.0)
        tl.store(out_ptr + p, 2.0)
    else:
        tl.store(out_ptr, 1.0)


@triton.jit
def _reads_own_store(out_ptr):
    tl.store(out_ptr + tl.program_id(0), 1.0)
    tl.store(out_ptr + 4 + tl.program_id(0), tl.load(out_ptr + tl.program_id(0)))


@triton.jit
def _reads_upper_half(out_ptr):
    """Program 1 stores float64 element 0; program 0 loads its upper four bytes as a float32."""
    p = tl.program_id(0)
    if p == 1:
        tl.store(out_ptr, 1.0)
    else:
        halves = out_ptr.to(tl.pointer_type(tl.float32), bitcast=True)
        tl.store(out_ptr + 1, tl.load(halves + 1).to(tl.float64))


def test_programs_run_in_reverse_order():
    """Program p reads program p - 1's store: in reverse order, before that store, which the store
    then flags as a race."""
    out = torch.zeros(4)
    _reads_previous_program[(1,)](out)
    with pytest.raises(Exception, match="program 0 stores 1 elements that program 1 loaded"):
        _reads_previous_program[(2,)](out)


def test_cross_program_stores_are_flagged():
    out = torch.zeros(4)
    _stores_twice[(4,)](out, SAME=True)  # one program storing its own element again is fine
    assert out.tolist() == [2.0] * 4
    with pytest.raises(Exception, match="program 0 stores 1 elements that program 1 stored"):
        _stores_twice[(2,)](out, SAME=False)


@triton.jit
def _all_read_then_one_writes(out_ptr):
    """Every program loads element 0; program 0 then stores it."""
    p = tl.program_id(0)
    value = tl.load(out_ptr)
    tl.store(out_ptr + 1 + p, value)
    if p == 0:
        tl.store(out_ptr, value + 1.0)


def test_store_after_loads_by_several_programs_is_flagged():
    """Program 0 runs last (reverse order) and its own load is the last one: the others' count too."""
    with pytest.raises(Exception, match="program 0 stores 1 elements that several programs loaded"):
        _all_read_then_one_writes[(3,)](torch.zeros(4))


def test_reading_own_store_is_flagged():
    with pytest.raises(Exception, match="program 0 loads 1 elements that itself stored"):
        _reads_own_store[(1,)](torch.zeros(8))


@triton.jit
def _reads_own_store_after_barrier(out_ptr, BARRIER: tl.constexpr):
    tl.store(out_ptr + tl.program_id(0), 1.0)
    if BARRIER:
        tl.debug_barrier()
    tl.store(out_ptr + 4 + tl.program_id(0), tl.load(out_ptr + tl.program_id(0)))


def test_reading_own_store_after_a_barrier_passes():
    out = torch.zeros(8)
    _reads_own_store_after_barrier[(2,)](out, BARRIER=True)
    assert out.tolist() == [1.0, 1.0, 0.0, 0.0, 1.0, 1.0, 0.0, 0.0]
    with pytest.raises(Exception, match="loads 1 elements that itself stored"):
        _reads_own_store_after_barrier[(2,)](torch.zeros(8), BARRIER=False)


@triton.jit
def _publishes_then_reads(data_ptr, flag_ptr, out_ptr, PUBLISH: tl.constexpr, READ: tl.constexpr,
                          LATE: tl.constexpr, BARRIERS: tl.constexpr):
    """Program 1 stores data, passes a barrier (BARRIERS), then sets a flag with sem PUBLISH;
    program 0 (run after it: reverse order) reads the flag with sem READ, passes a barrier
    (BARRIERS), then reads the data. LATE: program 1 stores more data after its flag, which program
    0 reads instead."""
    p = tl.program_id(0)
    if p == 1:
        tl.store(data_ptr, 3.0)
        if BARRIERS:
            tl.debug_barrier()
        tl.atomic_xchg(flag_ptr, 1, sem=PUBLISH)
        if LATE:
            tl.store(data_ptr + 1, 4.0)
    else:
        ready = tl.atomic_add(flag_ptr, 0, sem=READ)
        if BARRIERS:
            tl.debug_barrier()
        tl.store(out_ptr, tl.load(data_ptr + (1 if LATE else 0)) + ready)


def _publish_then_read(publish: str, read: str, late: bool = False, barriers: bool = True) -> float:
    out = torch.zeros(1)
    _publishes_then_reads[(2,)](torch.zeros(2), torch.zeros(1, dtype=torch.int32), out, PUBLISH=publish, READ=read,
                                LATE=late, BARRIERS=barriers)
    return out.item()


@pytest.mark.parametrize("publish, read", [("release", "acquire"), ("acq_rel", "acq_rel")])
def test_release_then_acquire_lets_loads_through(publish, read):
    """A store before a program's barrier and release, read after another's acquire of that address
    and a barrier, is synchronised (the single pass's published words, _finish's SINGLE_PASS)."""
    assert _publish_then_read(publish, read) == 4.0


@pytest.mark.parametrize("publish, read, late, barriers", [
    ("relaxed", "acquire", False, True), ("release", "relaxed", False, True), ("release", "acquire", True, True),
    ("release", "acquire", False, False)])
def test_unsynchronised_loads_are_flagged(publish, read, late, barriers):
    """Without a release or an acquire, a race; a store after the release is not published by it;
    without the barriers, one thread's atomic orders neither the other threads' stores nor their
    loads."""
    with pytest.raises(Exception, match="program 0 loads 1 elements that program 1 stored"):
        _publish_then_read(publish, read, late, barriers)


@triton.jit
def _two_publish_then_one_reads(data_ptr, bits_ptr, out_ptr):
    """Programs 2 and 1 (reverse order) each store a datum, pass a barrier, then set their bit of
    one word with a release read-modify-write; program 0 reads the word with acquire semantics,
    passes a barrier, then reads both data."""
    p = tl.program_id(0)
    if p > 0:
        tl.store(data_ptr + p, p * 1.0)
        tl.debug_barrier()
        tl.atomic_or(bits_ptr, 1 << p, sem="release")
    else:
        seen = tl.atomic_or(bits_ptr, 0, sem="acquire")
        tl.debug_barrier()
        tl.store(out_ptr, tl.load(data_ptr + 1) + tl.load(data_ptr + 2) + seen)


def test_an_acquire_sees_every_release_of_an_address_before_it():
    """Read-modify-writes continue each earlier release's sequence: reading the word's latest value
    synchronises with both programs that set a bit (the single pass's published words)."""
    out = torch.zeros(1)
    _two_publish_then_one_reads[(3,)](torch.zeros(3), torch.zeros(1, dtype=torch.int32), out)
    assert out.item() == 1.0 + 2.0 + 6


def test_empty_is_nan():
    assert torch.empty(3).isnan().all() and torch.zeros(2).new_empty(2).isnan().all()
    assert torch.empty_like(torch.zeros(2, dtype=torch.complex64)).isnan().all()
    assert torch.empty(2, dtype=torch.int64).dtype == torch.int64  # integers untouched


@triton.jit
def _masked_sum(src_ptr, out_ptr, n, OTHER: tl.constexpr, BLOCK: tl.constexpr):
    offsets = tl.arange(0, BLOCK)
    if OTHER:
        values = tl.load(src_ptr + offsets, mask=offsets < n, other=0.0)
    else:
        values = tl.load(src_ptr + offsets, mask=offsets < n)
    tl.store(out_ptr, tl.sum(values, axis=0))


def test_masked_off_lanes_without_other_are_nan():
    out = torch.zeros(1)
    _masked_sum[(1,)](torch.ones(3), out, 3, OTHER=True, BLOCK=4)
    assert out.item() == 3.0
    _masked_sum[(1,)](torch.ones(3), out, 3, OTHER=False, BLOCK=4)
    assert math.isnan(out.item())


def test_elements_wider_than_a_word_are_tracked_whole():
    """A float64 store covers four words: a float32 load of its upper half by another program is a race."""
    with pytest.raises(Exception, match="program 0 loads 1 elements that program 1 stored"):
        _reads_upper_half[(2,)](torch.zeros(4, dtype=torch.float64))


def masked_loads_without_other(source: str) -> list[int]:
    """Lines of ``tl.load`` calls with a mask and no ``other`` (a GPU leaves those lanes undefined;
    the sanitizer cannot poison them, see interpreter_sanitizer)."""
    lines = []
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.Call) and ast.unparse(node.func) == "tl.load":
            keywords = {k.arg for k in node.keywords}
            if ("mask" in keywords or len(node.args) > 1) and "other" not in keywords and len(node.args) < 3:
                lines.append(node.lineno)
    return lines


def test_masked_loads_have_other():
    assert masked_loads_without_other("tl.load(p, mask=m)\ntl.load(p, m)\ntl.load(p, mask=m, other=0.0)\ntl.load(p)") == [1, 2]
    kernels = Path(__file__).parents[1] / "kernels"
    sources = {path.name: path.read_text() for path in kernels.glob("triton_*.py")}  # triton_affine.py included
    assert len(sources) >= 4
    assert {name: masked_loads_without_other(text) for name, text in sources.items()} == {name: [] for name in sources}
