"""Loads, stores and entry reads shared by the Triton scans, and when to load coefficients slot by slot.

A lane's state and coefficients are [P, Q, BLOCK] tiles whose first two axes live inside one
thread; only the lane axis (the last) is spread over threads. Triton chooses a load's or store's
layout from the contiguity of its pointer tile (none of a lane tile's axes is contiguous), and
Triton 3.6 (the GPU machines' version) breaks ties towards the first axis, later versions towards
the last: accessed as it is, a tile spreads its in-thread slot axis over the warp under 3.6, and
every step then pays a shared-memory layout conversion (the sm_90 compile showed up to 5x the
instructions per step). So under 3.6 the tiles accessed inside the scans' loops (a step's
coefficients, the grad_a window) go through :func:`load_tile` / :func:`store_tile`, which access
them transposed, lane axis first; the transposes are register renames. Up to
``triton_scan.SPLIT_MAX_ORDER`` the scans also load each step's coefficients one slot at a time, as
[BLOCK] vectors joined along a new in-thread axis (``triton_scan._gather``); at higher orders that
makes Triton's coalescing pass take minutes per kernel.
"""
from __future__ import annotations

import os
import re

import triton
import triton.language as tl

_INTERPRETED = os.environ.get("TRITON_INTERPRET", "0").strip().lower() in ("1", "true", "on", "yes")
_VERSION = tuple(int(v) for v in re.match(r"(\d+)\.(\d+)", triton.__version__).groups())
# The interpreter has no layouts, and one whole-tile load there costs what one slot's does, so it
# keeps whole-tile loads (tests/test_triton.py runs the slot-by-slot loads under the interpreter too).
SPLIT_TILES: tl.constexpr = tl.constexpr(not _INTERPRETED)
# Which axis Triton's coalescing pass makes fastest among axes of equal contiguity (all of a lane
# tile's: its offsets increase along none): Triton 3.6 the first, later versions the last.
FIRST_AXIS_FASTEST: tl.constexpr = tl.constexpr(_VERSION < (3, 7) and not _INTERPRETED)


@triton.jit
def load(ptr, offset, mask, IS_COMPLEX: tl.constexpr):
    """(re, im) of element ``offset``; complex tensors are passed as their real view. ``mask`` None:
    unpredicated loads (the caller keeps every offset in bounds)."""
    if IS_COMPLEX:
        re = _load_plane(ptr + 2 * offset, mask)
        im = _load_plane(ptr + 2 * offset + 1, mask)
    else:
        re = _load_plane(ptr + offset, mask)
        im = tl.zeros_like(re)
    return re, im


@triton.jit
def _load_plane(pointer, mask):
    if mask is None:
        return tl.load(pointer)
    else:
        return tl.load(pointer, mask=mask, other=0.0)


@triton.jit
def _lanes_first(tile):
    """A [P, Q, BLOCK] tile as [BLOCK, Q, P], so that the lane axis comes first."""
    return tl.permute(tile, (2, 1, 0))


@triton.jit
def load_tile(ptr, offset, mask, IS_COMPLEX: tl.constexpr):
    """:func:`load` of a [P, Q, BLOCK] lane tile, accessed with the lane axis (the only one spread
    over threads) where the coalescing pass puts its fastest axis."""
    if FIRST_AXIS_FASTEST:
        if mask is None:
            re, im = load(ptr, _lanes_first(offset), None, IS_COMPLEX)
        else:
            mask = tl.broadcast_to(mask, offset.shape)  # never wider than the pointers
            re, im = load(ptr, _lanes_first(offset), _lanes_first(mask), IS_COMPLEX)
        return _lanes_first(re), _lanes_first(im)
    else:
        return load(ptr, offset, mask, IS_COMPLEX)


@triton.jit
def store_tile(ptr, offset, re, im, mask, IS_COMPLEX: tl.constexpr):
    """:func:`store` of a [P, Q, BLOCK] lane tile, lane axis fastest (see :func:`load_tile`)."""
    if FIRST_AXIS_FASTEST:
        # values and mask take the pointers' shape (an error if wider, as a plain store would be)
        mask = tl.broadcast_to(mask, offset.shape)
        re = tl.broadcast_to(re, offset.shape)
        im = tl.broadcast_to(im, offset.shape)
        store(ptr, _lanes_first(offset), _lanes_first(re), _lanes_first(im), _lanes_first(mask), IS_COMPLEX)
    else:
        store(ptr, offset, re, im, mask, IS_COMPLEX)


@triton.jit
def store(ptr, offset, re, im, mask, IS_COMPLEX: tl.constexpr):
    if IS_COMPLEX:
        tl.store(ptr + 2 * offset, re, mask=mask)
        tl.store(ptr + 2 * offset + 1, im, mask=mask)
    else:
        tl.store(ptr + offset, re, mask=mask)


@triton.jit
def _bits(x):
    """A float tensor's bits as the integer of its width (32 or 64 bits: a 16-bit sum would be
    promoted to 32 bits)."""
    tl.static_assert(x.dtype.primitive_bitwidth >= 32, "select: 32- or 64-bit tiles only")
    if x.dtype.primitive_bitwidth == 64:
        return x.to(tl.int64, bitcast=True)
    else:
        return x.to(tl.int32, bitcast=True)


@triton.jit
def select(tile, keep, axis: tl.constexpr):
    """The entry of ``tile`` where ``keep`` holds along ``axis`` (at most one; none gives +0.0), the
    axis kept with size 1. Selected and summed on the bits: with static ``keep`` it folds to a
    register read. (A float select-and-sum does not: Triton 3.6 turns a -0.0 constant into +0.0,
    and x + 0.0 is not x, so every pick cost an add.)"""
    return tl.sum(tl.where(keep, _bits(tile), 0), axis=axis, keep_dims=True).to(tile.dtype, bitcast=True)


@triton.jit
def pick(tile, i: tl.constexpr, j: tl.constexpr):
    """Entry (i, j) of every lane's float [P, Q, BLOCK] tile, as [BLOCK]."""
    ii = tl.arange(0, tile.shape[0])[:, None, None]
    jj = tl.arange(0, tile.shape[1])[None, :, None]
    return tl.reshape(select(select(tile, ii == i, 0), jj == j, 1), [tile.shape[2]])


# Coalesced rows: a per-lane tile read element by element costs L1 a wavefront per element (a warp
# touches 32 lanes' lines at once: the sm_90 model's L1 term, which matched the first H100 run).
# Read instead as [lanes, S] rows, threads along each lane's S consecutive elements, a warp's access
# touches a few lines; one shared-memory transpose then hands the values to their lanes. The
# transpose is what tl.split compels: its operand's last axis must sit inside a thread.


@triton.jit
def load_rows(ptr, offsets, mask, step=0):
    """ptr[offsets[l, c] + step] for [BLOCK, S] ``offsets`` (each lane's row, contiguous along its
    last axis, so that Triton coalesces along it) under ``mask``; real tensors only. In a loop, pass
    loop-invariant int64 offsets and the body's int32 ``step`` (a multiple of the loop variable, the
    one int32 offset the sm_90 compile check lets through): added in that order (Triton merges only
    offsets of one type), the compiler keeps each access's pointer across the loop and adds the step
    with one multiply-add, where one sum took a 64-bit add and shift per access (the M=2 forward
    finish's loop: 152 instructions instead of 200, sm_90, Triton 3.6)."""
    return tl.load((ptr + offsets) + step, mask=mask, other=0.0)


@triton.jit
def store_rows(ptr, offsets, values, mask, step=0):
    """The store of :func:`load_rows`: ptr[offsets[l, c] + step] = values under ``mask``."""
    tl.store((ptr + offsets) + step, values, mask=mask)


@triton.jit
def rows_to_lanes(rows, column):
    """The in-thread lane tile whose entry e is rows[:, column[e]]: ``rows`` [BLOCK, S] (S a power of
    two), ``column`` a static [P, Q, 1] int tile, the result [P, Q, BLOCK]. Entries whose column is
    not in [0, S) get some row's value: the caller zeroes them. Halved by tl.split down to single
    columns, then put in place by static selects (register renames); under Triton 3.6 built lane
    axis first (see load_tile: otherwise the selects spread the slot axes over the warp)."""
    if FIRST_AXIS_FASTEST:
        return _lanes_first(_rows_to_lanes(rows, _lanes_first(column), 0, 1, True))
    else:
        return _rows_to_lanes(rows, column, 0, 1, False)


@triton.jit
def _rows_to_lanes(rows, column, first: tl.constexpr, stride: tl.constexpr, LANES_FIRST: tl.constexpr):
    """rows_to_lanes over the columns first + stride * q of the original rows (column q here)."""
    count: tl.constexpr = rows.shape[1]
    if count == 1:
        if LANES_FIRST:
            return tl.reshape(rows, [rows.shape[0], 1, 1])
        else:
            return tl.reshape(rows, [1, 1, rows.shape[0]])
    else:
        even, odd = tl.split(tl.reshape(rows, [rows.shape[0], count // 2, 2]))
        e = _rows_to_lanes(even, column, first, 2 * stride, LANES_FIRST)
        o = _rows_to_lanes(odd, column, first + stride, 2 * stride, LANES_FIRST)
        return tl.where(column % (2 * stride) == first, e, o)


@triton.jit
def lanes_to_rows(tile, column, count: tl.constexpr):
    """The inverse of :func:`rows_to_lanes`: [BLOCK, count] rows whose column c is the entry of the
    [P, Q, BLOCK] lane tile with column[e] == c (zero if none), built by tl.join (lane axis first
    under Triton 3.6, as there)."""
    if FIRST_AXIS_FASTEST:
        return _lanes_to_rows(_lanes_first(tile), _lanes_first(column), count, 0, 1, True)
    else:
        return _lanes_to_rows(tile, column, count, 0, 1, False)


@triton.jit
def _lanes_to_rows(tile, column, count: tl.constexpr, first: tl.constexpr, stride: tl.constexpr,
                   LANES_FIRST: tl.constexpr):
    """lanes_to_rows of the columns first + stride * c (column c here)."""
    if count == 1:
        picked = tl.where(column == first, _bits(tile), 0)
        if LANES_FIRST:
            pick = tl.sum(tl.sum(picked, axis=2), axis=1)
        else:
            pick = tl.sum(tl.sum(picked, axis=0), axis=0)
        pick = pick.to(tile.dtype, bitcast=True)
        return tl.reshape(pick, [pick.shape[0], 1])
    else:
        e = _lanes_to_rows(tile, column, count // 2, first, 2 * stride, LANES_FIRST)
        o = _lanes_to_rows(tile, column, count // 2, first + stride, 2 * stride, LANES_FIRST)
        joined = tl.join(e, o)
        return tl.reshape(joined, [joined.shape[0], count])
