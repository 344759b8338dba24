"""Triton kernels: the all-pole recursion as a chunked scan with independent recurrences on lanes.

The state s[n] = (y[n], ..., y[n-M+1]) obeys s[n] = C[n] s[n-1] + e1 u[n]. Every GPU thread (lane)
runs its own sequential recurrence with its state in registers, so a time step is M fused
multiply-adds and no cross-lane traffic. Time is cut into chunks only when the rows alone cannot
fill the GPU; then a pass is three launches, or two:

1. ``_summary``: each chunk's map s_in -> Phi s_in + z from its M+1 recursions (the driven one
   from a zero state, the M homogeneous ones from unit states), in float64 whatever the input
   dtype: Phi is a product of up to thousands of companion matrices, very non-normal, and
   applying it in float32 cancels catastrophically at high order with poles near the unit circle.
   A lane runs the driven recursion and R homogeneous ones, so each coefficient it converts to
   float64 serves R+1 recursions. Orders M <= 4 (``SCAN``): one lane per chunk holds all of them,
   and the lanes of a block of consecutive chunks prefix-compose their maps with
   ``tl.associative_scan``; higher orders store [Phi | z] column groups.
2. ``_carry_short`` / ``_carry_long``: the state entering each block (short) or chunk (long), one
   program per row, in float64: a scan of the block maps (log depth), or a walk over the chunks.
   Short orders whose rows hold few blocks skip this launch: each finish program composes the
   maps of the blocks before its own (``fused_carry_run``). There, with ``single_pass`` (opt-in
   until a GPU has run it), the finish computes its block's maps itself and takes the earlier
   blocks' once they are published: one Triton launch a pass, the inputs read from DRAM once.
3. ``_finish``: one lane per chunk re-runs the recursion from its true incoming state in the input's
   precision (float32 for 16-bit inputs) and writes the outputs (forward: y; reverse: grad_x,
   grad_zi and the fused grad_a).

With one chunk per row only the finish runs. The backward (adjoint) is the same recursion in
reversed time m = T-1-n over T+M steps, with coefficients conj(a[n+i, i-1]); grad_a[n, i-1] =
-lam[n] conj(y[n-i]). The reverse kernels (REVERSE) gather those coefficients by index, along a
diagonal, lane by lane (as rows at M=1, where the diagonal is a shifted row). On a GPU, real
time-varying coefficients (at M=1 strided ones only) instead take a copy of them as rows in step
order (``uses_reversed_forward``, triton_adjoint): the reverse kernels read it in place of a
(A_COPY) at orders 1, 2 and 4; at other orders the forward scan runs on it and on a reversed
copy of grad_y. At orders 1, 2 and 4 the finish writes grad_a, and reads the past outputs it
needs, as coalesced rows (GRAD_A_ROWS).

A lane's M past outputs sit in a circular buffer along an in-thread tile axis: slot p holds y[t]
for t = p (mod M), t counted from the chunk's start; a step gathers its coefficients in slot order,
multiplies, reduces in-thread and writes one slot (``_step``). Chunks and unrolled loop bodies are
whole multiples of M (orders up to 16), so inside a body every slot and every gathered offset is a
compile-time constant: loads with immediate offsets, no index arithmetic. Lanes load several steps'
coefficients at once, as one tile (``tile_steps``), so that their loads are in flight together. Per-lane tiles are
addressed with offsets that are not increasing along the tile axis, so Triton sees no contiguity
there and keeps the axis inside one thread (a contiguous one would be spread over a warp and
reduced with shuffles). Complex tensors run as real and imaginary planes. Offsets are int64;
grids are 1-D.

Read element by element, each warp access of a per-lane tile touches 32 lanes' cache lines, and
L1 passes one line per clock: the sm_90 model's L1 term, which put the first H100 run (Triton 3.6)
within 1.03-1.44x of its predictions. So real inputs with contiguous coefficients (``uses_rows``)
read each body's inputs and forward coefficient tiles, and write its outputs, as coalesced
[lanes, S] rows moved to and from the lanes through shared memory (``ROWS``,
``triton_tiles.rows_to_lanes``).
"""
from __future__ import annotations

import functools
import math
import os
import sys
import threading
from collections import OrderedDict
from collections.abc import Mapping
from dataclasses import dataclass, field
from types import MappingProxyType, ModuleType

import torch
import triton
import triton.language as tl

from . import triton_adjoint
from .triton_affine import block_state, carry_row, scan_store
from .triton_tiles import SPLIT_TILES, _INTERPRETED, _VERSION, load, load_tile, select, store, store_tile
from .triton_tiles import lanes_to_rows, load_rows, rows_to_lanes, store_rows
from .affine_codegen import SCAN_MAX_ORDER

# Fused multiply-adds round once instead of twice; pinned because Triton 3.10 flips the default.
_COMPILE = {"enable_fp_fusion": True}
# Lengths and strides (do_not_specialize below) change from call to call: specialising on them
# (== 1, % 16) would compile a new variant for most new T. Pointers keep their alignment
# specialisation.
_LENGTHS = ["T", "steps", "chunk_len", "n_chunks", "n_blocks", "n_lanes", "sa_row", "sa_time", "sa_tap"]
# Coefficient layouts (A_LAYOUT): how a step's taps are addressed. Contiguous (B, T, M) rows make
# every tap and unrolled step an immediate offset; constant coefficients are loaded once per lane.
A_CONSTANT, A_CONTIGUOUS, A_STRIDED = 0, 1, 2
# Coefficients come slot by slot (triton_tiles) up to this order: above it, the M loads of each of
# the M-step bodies make Triton's coalescing pass (quadratic in memory ops) take minutes per kernel.
SPLIT_MAX_ORDER: tl.constexpr = tl.constexpr(8)
# The compiler sums a step's products oldest first, one multiply-add chain (see _step), up to
# CHAINED_MAX_ORDER (at M=16 its M selects per step made an sm_90 compile of the summary or the
# finish take 50 s instead of a few); the interpreter, which pays per op, sums them in slot order
# unless a test turns this on.
CHAINED_SUMS: tl.constexpr = tl.constexpr(not _INTERPRETED)
CHAINED_MAX_ORDER: tl.constexpr = tl.constexpr(8)


@triton.jit
def _mul(ar, ai, br, bi, IS_COMPLEX: tl.constexpr):
    if IS_COMPLEX:
        return ar * br - ai * bi, ar * bi + ai * br
    else:
        return ar * br, ai


@triton.jit
def _lanes(row, chunk, block_start, local, valid, T, steps, chunk_len, sa_row, sa_time, M: tl.constexpr,
           A_LAYOUT: tl.constexpr, REVERSE: tl.constexpr, A_REVERSE: tl.constexpr, BLOCKED: tl.constexpr):
    """Per-lane setup: steps left in the lane's chunk (int32; 0 for padding lanes), the time n0 =
    T-1-start of its first step in reversed time (int32), and the int64 offsets of its first input
    sample and of its coefficients at that step (forward, or the adjoint's reversed-time copy: row
    ``start``; A_REVERSE: a[n0], each tap then adds i time steps).

    BLOCKED (one row and BLOCK consecutive chunks per program, the ``local``-th from block_start):
    the program's part is scalar and the lanes' parts int32, the low word of their int64 start
    (under 2**31 in a valid lane's row, see plan; padding lanes' offsets feed masked accesses only):
    64-bit compares, selects and products on every lane copy of a program were half the M=2
    forward summary's setup (sm_90, Triton 3.6: 563 instructions a program, 310 after). Otherwise
    (lanes of any rows) everything is int64 first."""
    if BLOCKED:
        wide_start = local.to(tl.int64) * chunk_len
        lane_start = wide_start.to(tl.int32)  # its low word: no register of its own
        remaining = tl.where(valid, tl.minimum((steps - block_start).to(tl.int32) - lane_start, chunk_len), 0)
        n0 = (T - 1 - block_start).to(tl.int32) - lane_start
        u_row = row * T + (T - 1 - block_start if REVERSE else block_start)
        a_row = row * sa_row + (T - 1 - block_start if A_REVERSE else block_start) * sa_time
        u_base = u_row + (-lane_start if REVERSE else lane_start).to(tl.int64)
        if A_LAYOUT == 1:
            a_lane = (-lane_start if A_REVERSE else lane_start).to(tl.int64) * M  # (B, T, M) rows: a constant stride
        else:
            a_lane = (-wide_start if A_REVERSE else wide_start) * sa_time
        a_base = a_row + a_lane
    else:
        start = chunk * chunk_len
        remaining = tl.where(valid, tl.minimum(steps - start, chunk_len), 0)
        n0 = T - 1 - start
        u_base = row * T + (T - 1 - start if REVERSE else start)
        a_base = row * sa_row + (T - 1 - start if A_REVERSE else start) * sa_time
    return remaining.to(tl.int32), n0.to(tl.int32), u_base, a_base


@triton.jit
def _body(u_base, a_base, t0, sa_time, M: tl.constexpr, A_LAYOUT: tl.constexpr, REVERSE: tl.constexpr,
          A_REVERSE: tl.constexpr):
    """64-bit offsets of the input and the coefficients at the first step of an unrolled body."""
    t = t0 + 0 * u_base  # int64 (t0 is a plain int under the interpreter)
    step = M if A_LAYOUT == 1 else sa_time
    u_body = u_base - t if REVERSE else u_base + t
    a_body = a_base - t * step if A_REVERSE else a_base + t * step
    return u_body, a_body


@triton.jit
def _drive(u_ptr, u_body, k: tl.constexpr, live, n, ACC: tl.constexpr, IS_COMPLEX: tl.constexpr, REVERSE: tl.constexpr):
    """u at step k of the unrolled body whose first sample is at ``u_body``: x forward; grad_y[n]
    (n = T-1-m) in reversed time, zero for the M grad_zi steps (n < 0). ``k`` is static, so it
    lands in the load's immediate offset."""
    if REVERSE:
        re, im = load(u_ptr, u_body - k, live & (n >= 0), IS_COMPLEX)
    else:
        re, im = load(u_ptr, u_body + k, live, IS_COMPLEX)
    return re.to(ACC), im.to(ACC)


@triton.jit
def _taps(index, pos, M: tl.constexpr):
    """The tap i that each entry of a coefficient tile holds, in the circular buffer's slot order at
    position ``pos`` (the slot the step writes): slot p holds y[t-i] with i = ((pos - p - 1) mod M) + 1,
    which decreases along the slots (with one wrap); entries p >= M are padding (tap M+1, never
    loaded). With a static ``pos`` every offset is a compile-time constant."""
    lag = pos - index
    return tl.where(index < M, tl.where(lag >= 1, lag, lag + M), M + 1)


@triton.jit
def _tap_offsets(tap, sa_time, sa_tap, M: tl.constexpr, A_LAYOUT: tl.constexpr, REVERSE: tl.constexpr):
    """Offset of tap i within a lane's step: i-1 taps along; in reversed time also i steps ahead."""
    if A_LAYOUT == 1:
        offset = (tap - 1).to(tl.int64)
        if REVERSE:
            offset += tap.to(tl.int64) * M  # a[n+i, i-1]
    else:
        offset = (tap - 1).to(tl.int64) * sa_tap
        if REVERSE:
            offset += tap.to(tl.int64) * sa_time
    return offset


@triton.jit
def _slot_coefficients(a_ptr, body, n, T, live, sa_time, sa_tap, pos, first: tl.constexpr, stride: tl.constexpr,
                       count: tl.constexpr, M: tl.constexpr, ACC: tl.constexpr, A_LAYOUT: tl.constexpr,
                       IS_COMPLEX: tl.constexpr, REVERSE: tl.constexpr):
    """The coefficients of slots first, first + stride, ... (count of them) as [BLOCK, count], one
    [BLOCK] load per slot joined along a new in-thread axis (no selects for the compiler to fold)."""
    if count == 1:
        if first < M:
            tap = (pos - first - 1 + M) % M + 1  # _taps for one slot
            if A_LAYOUT == 1:
                offset = tap - 1
                if REVERSE:
                    offset += tap * M
            else:
                offset = (tap - 1) * tl.cast(sa_tap, tl.int64)  # tl.cast: Inductor may pass a constant 1
                if REVERSE:
                    offset += tap * tl.cast(sa_time, tl.int64)
            if REVERSE:
                mask = live & (n + tap >= 0) & (n + tap < T)
            else:
                mask = live
            re, im = load(a_ptr, body + offset, mask, IS_COMPLEX)
            re = re.to(ACC)
            im = im.to(ACC)
        else:  # padding slot
            re = tl.zeros(body.shape, dtype=ACC)
            im = tl.zeros_like(re)
        return tl.reshape(re, [re.numel, 1]), tl.reshape(im, [im.numel, 1])
    else:
        # slots with the lowest index bit clear, then set: the join's new (last) axis is that bit
        e_re, e_im = _slot_coefficients(a_ptr, body, n, T, live, sa_time, sa_tap, pos, first, 2 * stride, count // 2,
                                        M, ACC, A_LAYOUT, IS_COMPLEX, REVERSE)
        o_re, o_im = _slot_coefficients(a_ptr, body, n, T, live, sa_time, sa_tap, pos, first + stride, 2 * stride,
                                        count // 2, M, ACC, A_LAYOUT, IS_COMPLEX, REVERSE)
        re = tl.join(e_re, o_re)
        im = tl.join(e_im, o_im)
        return tl.reshape(re, [re.shape[0], count]), tl.reshape(im, [im.shape[0], count])


@triton.jit
def _gather(a_ptr, body, tap_offset, mask, n, T, live, sa_time, sa_tap, pos, M_PAD: tl.constexpr, M: tl.constexpr,
            ACC: tl.constexpr, A_LAYOUT: tl.constexpr, IS_COMPLEX: tl.constexpr, REVERSE: tl.constexpr):
    """Every slot's coefficient (not conjugated) as a [M_PAD, 1, BLOCK] tile in ACC: on the compiler up
    to SPLIT_MAX_ORDER slot by slot (see triton_tiles), otherwise one load of the whole tile at
    ``body + tap_offset`` under ``mask`` (lane axis first under Triton 3.6)."""
    if SPLIT_TILES and M <= SPLIT_MAX_ORDER:
        re, im = _slot_coefficients(a_ptr, body, n, T, live, sa_time, sa_tap, pos, 0, 1, M_PAD, M, ACC, A_LAYOUT,
                                    IS_COMPLEX, REVERSE)
        return tl.permute(re, (1, 0))[:, None, :], tl.permute(im, (1, 0))[:, None, :]
    else:
        re, im = load_tile(a_ptr, body + tap_offset, mask, IS_COMPLEX)
        return re.to(ACC), im.to(ACC)


@triton.jit
def _coefficients(
    a_ptr, a_body, k: tl.constexpr, n, T, tap, tap_offset, live, sa_time, sa_tap, const_re, const_im, index, pos,
    M: tl.constexpr, ACC: tl.constexpr, A_LAYOUT: tl.constexpr, IS_COMPLEX: tl.constexpr, REVERSE: tl.constexpr,
):
    """Each entry's coefficient at step k of the unrolled body (coefficients of its first step at
    ``a_body``): tap i reads a[m, i-1] forward and conj(a[n+i, i-1]) with n = T-1-m in reversed
    time, zero outside [0, T). Constant coefficients (A_LAYOUT 0) come preloaded in const_*.
    How they are loaded: :func:`_gather`."""
    if REVERSE:
        t = n + tap
        inside = (tap <= M) & (t >= 0) & (t < T)
    if A_LAYOUT == 0:
        if REVERSE:
            return tl.where(inside, const_re, 0.0), tl.where(inside, const_im, 0.0)
        else:
            return const_re, const_im
    if A_LAYOUT == 1:
        step = k * M  # contiguous rows: static, so it lands in the load's immediate offset
    else:
        step = k * tl.cast(sa_time, tl.int64)  # a time-major buffer makes sa_time = B*M
    if REVERSE:
        body = a_body - step
        mask = live & inside
    else:
        body = a_body + step
        mask = live & (tap <= M)
    re, im = _gather(a_ptr, body, tap_offset, mask, n, T, live, sa_time, sa_tap, pos, index.shape[0], M, ACC, A_LAYOUT,
                     IS_COMPLEX, REVERSE)
    if REVERSE:
        im = -im
    return re, im


@triton.jit
def _tile_steps(first: tl.constexpr, STEPS: tl.constexpr, REVERSE: tl.constexpr):
    """The body step of each entry along a coefficient tile's step axis. Forward, ordered so that the
    offsets decrease along it (Triton then keeps the axis inside the thread, see triton_tiles). In
    reversed time a slot's offsets (a[n+i, i-1]) rise along it, by one tap per step with wraps of
    the circular buffer in between: Triton cannot see that through the tap arithmetic of
    :func:`_taps`, which is what keeps the axis in-thread there (the sm_90 compile check fails on
    cross-lane traffic in a lane loop)."""
    if REVERSE:
        return first + tl.arange(0, STEPS)[None, :, None]
    else:
        return first + STEPS - 1 - tl.arange(0, STEPS)[None, :, None]


@triton.jit
def _body_coefficients(a_ptr, a_base, n0, t0, remaining, T, sa_time, sa_tap, index, first: tl.constexpr,
                       STEPS: tl.constexpr, M: tl.constexpr, U: tl.constexpr, ACC: tl.constexpr,
                       A_LAYOUT: tl.constexpr, IS_COMPLEX: tl.constexpr, REVERSE: tl.constexpr,
                       ROWS: tl.constexpr = 0):
    """The coefficients of body steps first .. first+STEPS-1 (U a multiple of M, so slots are static)
    as one [M_PAD, STEPS, BLOCK] tile in ACC, entry (p, j) the coefficient slot p takes at step
    _tile_steps(...)[j] (not conjugated; zero past the body, the chunk or, in reversed time, [0, T)).
    Loaded before the first of those steps, so that all their loads are in flight together: see
    tile_steps. ``a_base``: the lane's coefficients at its chunk's first step (see _lanes). ROWS:
    0 for per-lane tiles, else a power of two every a_base is a multiple of (see rows_alignment)."""
    tl.static_assert(U % M == 0, "coefficient tiles need static slots: bodies of whole multiples of M")
    tl.static_assert(A_LAYOUT != 0, "constant coefficients are loaded once per lane, not in tiles")
    step = _tile_steps(first, STEPS, REVERSE)
    tap = _taps(index, step % M, M)
    if ROWS and not REVERSE and not IS_COMPLEX and A_LAYOUT == 1 and index.shape[0] == M:
        # the tile's STEPS x M coefficients are one contiguous row per lane: read coalesced (rows
        # need M a power of two)
        count: tl.constexpr = STEPS * M
        column = (step - first) * M + tap - 1
        lanes: tl.constexpr = a_base.shape[2]
        c = tl.arange(0, count)[None, :]
        c_step = first + c // M
        live = (c_step < U) & (t0 + c_step < tl.reshape(remaining, [lanes, 1]))
        base = tl.reshape(a_base, [lanes, 1])
        if ROWS > 1:
            base = tl.multiple_of(base, [ROWS, ROWS])
        rows = load_rows(a_ptr, base + first * M + c, live, t0 * M)
        re = rows_to_lanes(rows, column).to(ACC)
        return re, tl.zeros_like(re)
    if ROWS and REVERSE and not IS_COMPLEX and A_LAYOUT == 1 and index.shape[0] == M:
        # a[n+i, i-1] for the tile's steps spans STEPS + M - 1 whole time steps, each column one
        # entry's: one contiguous row per lane, from time n0 - t0 - lowest (the last step's tap 1)
        span: tl.constexpr = (STEPS + M - 1) * M
        count: tl.constexpr = triton.next_power_of_2(span)
        lowest: tl.constexpr = first + STEPS - 2
        column = (first + STEPS - 1 - step + tap - 1) * M + tap - 1
        lanes: tl.constexpr = a_base.shape[2]
        c = tl.arange(0, count)[None, :]
        c_tap = c % M + 1
        c_step = first + STEPS - 1 - c // M + c_tap - 1
        t = tl.reshape(n0, [lanes, 1]) - t0 - lowest + c // M
        live = ((c < span) & (c_step >= first) & (c_step < first + STEPS) & (c_step < U)
                & (t0 + c_step < tl.reshape(remaining, [lanes, 1])) & (t >= 0) & (t < T))
        rows = load_rows(a_ptr, tl.reshape(a_base, [lanes, 1]) - lowest * M + c, live, -t0 * M)
        re = rows_to_lanes(rows, column).to(ACC)
        return re, tl.zeros_like(re)
    _, a_body = _body(a_base, a_base, t0, sa_time, M, A_LAYOUT, REVERSE, REVERSE)
    tap_offset = _tap_offsets(tap, sa_time, sa_tap, M, A_LAYOUT, REVERSE)
    if A_LAYOUT == 1:
        along = step.to(tl.int64) * M
    else:
        along = step.to(tl.int64) * sa_time
    live = (step < U) & (t0 + step < remaining) & (tap <= M)
    if REVERSE:
        t = n0 - t0 - step + tap
        re, im = load_tile(a_ptr, a_body - along + tap_offset, live & (t >= 0) & (t < T), IS_COMPLEX)
    else:
        re, im = load_tile(a_ptr, a_body + along + tap_offset, live, IS_COMPLEX)
    return re.to(ACC), im.to(ACC)


@triton.jit
def _body_rows(base, t0, remaining, n0, U: tl.constexpr, U_PAD: tl.constexpr, REVERSE: tl.constexpr):
    """A body's samples as coalesced [BLOCK, U_PAD] rows (see triton_tiles.load_rows): their offsets
    from ``base`` (the body's first sample u_body, or the lane's u_base, for the caller to add the
    body's step t0 as load_rows says), which are live (forward: column c is step c; reversed time:
    step U_PAD-1-c, whose sample sits at u_body - k, and n < 0 is a grad_zi step with no sample),
    and the column of each entry of a [U_PAD, 1, BLOCK] body tile indexed like _finish's step_slot
    (U_PAD-1-e either way)."""
    lanes: tl.constexpr = base.shape[2]
    c = tl.arange(0, U_PAD)[None, :]
    first = tl.reshape(base, [lanes, 1])
    left = tl.reshape(remaining, [lanes, 1])
    if REVERSE:
        k = U_PAD - 1 - c
        offsets = first - (U_PAD - 1) + c
        live = (k < U) & (t0 + k < left) & (tl.reshape(n0, [lanes, 1]) - t0 - k >= 0)
    else:
        k = c
        offsets = first + c
        live = (k < U) & (t0 + k < left)
    column = U_PAD - 1 - tl.arange(0, U_PAD)[:, None, None]
    return offsets, live, column


@triton.jit
def _tile_coefficients(tile_re, tile_im, k: tl.constexpr, STEPS: tl.constexpr, REVERSE: tl.constexpr):
    """Step k's coefficients from the tile of :func:`_body_coefficients` that holds it (a static pick:
    register reads), conjugated in reversed time."""
    tile_step = _tile_steps(k - k % STEPS, STEPS, REVERSE)
    re = select(tile_re, tile_step == k, 1)
    im = select(tile_im, tile_step == k, 1)
    if REVERSE:
        im = -im
    return re, im


@triton.jit
def _lane_constants(a_ptr, a_base, valid, sa_time, sa_tap, index, M: tl.constexpr, ACC: tl.constexpr,
                    IS_COMPLEX: tl.constexpr, REVERSE: tl.constexpr):
    """A lane's constant coefficients (A_LAYOUT 0), loaded once before its loop, in the slot order
    of a step writing slot 0 (entry p: tap M-p; conjugated in reversed time): see _constants_at
    and _next_slots."""
    tap = _taps(index, 0, M)
    tap_offset = _tap_offsets(tap, sa_time, sa_tap, M, 0, REVERSE)
    re, im = _gather(a_ptr, a_base, tap_offset, valid & (tap <= M), a_base, 0, valid, 0, sa_tap, 0, index.shape[0], M,
                     ACC, 2, IS_COMPLEX, False)  # strided taps, no time step
    if REVERSE:
        im = -im
    return re, im


@triton.jit
def _take_slots(tile, source):
    """A static permutation of a tile's slot axis (its first, in-thread axis): entry p takes entry
    source[p], or zero where source[p] is -1 (``source``: [1, M_PAD, 1, 1]). Register renames where
    the result is used in place, M_PAD moves where it is carried across a run-time loop."""
    slots = tl.arange(0, tile.shape[0])[:, None, None, None]
    return tl.reshape(select(tile[:, None, :, :], slots == source, 0), tile.shape)


@triton.jit
def _constants_at(held, pos: tl.constexpr, M: tl.constexpr):
    """:func:`_lane_constants`' tile in the slot order of a step writing slot ``pos``: a static
    permutation of an in-thread axis (register renames). Reloading the tile every step instead
    made the M=16 forward with constant coefficients 3.5x slower than with time-varying ones on
    an H100 (bench/results/NVIDIA-H100-80GB-HBM3/peers, 2026-11-28; sm_90, Triton 3.6: its
    summary held 32 registers and spilled 1146 accesses a body)."""
    slots = tl.arange(0, held.shape[0])[None, :, None, None]
    return _take_slots(held, M - _taps(slots, pos, M))  # padding: tap M+1, source -1


@triton.jit
def _next_slots(held, M: tl.constexpr):
    """A held constant tile in the slot order of the next step (each slot takes its lower
    neighbour's tap, cyclically over the M slots; padding stays zero), for bodies whose slots are
    known only at run time: a rotation by a fixed permutation a step (carried across a run-time
    loop, so M_PAD register moves a step, not renames). A reload every step instead made each pass
    1.07-5.4x as long on the sm_90 model at M=17 (Triton 3.6, 16 x 65536), though the complex64
    M=17 reverse finish spills more this way (1303 accesses a body against 367; its pass is still
    faster)."""
    slots = tl.arange(0, held.shape[0])[None, :, None, None]
    return _take_slots(held, tl.where(slots < M, (slots + M - 1) % M, -1))


@triton.jit
def _step_coefficients(
    a_ptr, a_body, k: tl.constexpr, n, T, live, sa_time, sa_tap, index, pos, held_re, held_im,
    M: tl.constexpr, ACC: tl.constexpr, A_LAYOUT: tl.constexpr, IS_COMPLEX: tl.constexpr, REVERSE: tl.constexpr,
    STATIC: tl.constexpr,
):
    """Every slot's coefficient for step k of the body whose coefficients start at ``a_body``, the
    step writing slot ``pos`` (STATIC: a compile-time constant, as inside unrolled bodies of whole
    multiples of M). Constant coefficients come from the lane's held_* (:func:`_lane_constants`),
    in the slot order of position 0 when STATIC, otherwise already in this step's (the caller
    moves them on with :func:`_next_slots` after every step)."""
    tap = _taps(index, pos, M)
    # unread for constant coefficients, but Triton 3.6 compiles _coefficients past its early return
    # for them, where a scalar in its place fails (the sm_90 compile check)
    tap_offset = _tap_offsets(tap, sa_time, sa_tap, M, A_LAYOUT, REVERSE)
    if A_LAYOUT == 0:
        if STATIC:
            const_re = _constants_at(held_re, pos, M)
            const_im = held_im
            if IS_COMPLEX:
                const_im = _constants_at(held_im, pos, M)
        else:
            const_re, const_im = held_re, held_im
    else:
        const_re, const_im = 0.0, 0.0
    return _coefficients(a_ptr, a_body, k, n, T, tap, tap_offset, live, sa_time, sa_tap, const_re, const_im, index, pos,
                         M, ACC, A_LAYOUT, IS_COMPLEX, REVERSE)


@triton.jit
def _step(h_re, h_im, c_re, c_im, u_re, u_im, index, pos, M: tl.constexpr, STATIC: tl.constexpr,
          IS_COMPLEX: tl.constexpr):
    """One step on a circular buffer whose coefficients came gathered in slot order:
    y = u - sum(c * h); y goes to slot ``pos``. Returns (y, h).

    With a compile-time ``pos`` (STATIC) and CHAINED_SUMS (orders up to CHAINED_MAX_ORDER), the sum
    is one chain of multiply-adds from the oldest output (slot pos) to the newest (slot pos-1): only
    the newest waits for the previous step, and it enters last, so a step adds one multiply-add
    (two, complex) to the recursion's latency chain, where the in-thread reduction in slot order
    added up to M of them."""
    p_re, p_im = _mul(c_re, c_im, h_re, h_im, IS_COMPLEX)
    if STATIC and CHAINED_SUMS and M <= CHAINED_MAX_ORDER:
        y_re = u_re - select(p_re, index == pos % M, 0)
        if IS_COMPLEX:
            y_im = u_im - select(p_im, index == pos % M, 0)
        for i in tl.static_range(1, M):
            y_re -= select(p_re, index == (pos + i) % M, 0)
            if IS_COMPLEX:
                y_im -= select(p_im, index == (pos + i) % M, 0)
    else:
        y_re = u_re - tl.sum(p_re, axis=0, keep_dims=True)
        if IS_COMPLEX:
            y_im = u_im - tl.sum(p_im, axis=0, keep_dims=True)
    h_re = tl.where(index == pos, y_re, h_re)
    if IS_COMPLEX:
        h_im = tl.where(index == pos, y_im, h_im)
    else:
        y_im = y_re * 0
    return y_re, y_im, h_re, h_im


@triton.jit
def _shift_window(w, new, index, M: tl.constexpr, M_PAD: tl.constexpr):
    """The grad_a window (entry M_PAD-i holds y[n-i]) moved on to n-1: every entry takes its lower
    neighbour's value (y[n-1-i] was y[n-(i+1)]) and y[n-1-M] enters entry M_PAD-M. A static
    permutation over an in-thread axis (:func:`select`): register renames."""
    slots = tl.arange(0, M_PAD)[None, :, None, None]
    return tl.where(index == M_PAD - M, new, _take_slots(w, slots - 1))


@triton.jit
def _recurse(
    u_ptr, a_ptr, h_re, h_im, d_re, d_im, remaining, n0, u_base, a_base, valid, index, T, chunk_len, sa_time, sa_tap,
    M: tl.constexpr, U: tl.constexpr, A_LAYOUT: tl.constexpr, IS_COMPLEX: tl.constexpr, REVERSE: tl.constexpr,
    HOMOGENEOUS: tl.constexpr, DRIVEN: tl.constexpr, TILE_STEPS: tl.constexpr, ROWS: tl.constexpr,
    TILE_ROWS: tl.constexpr, A_COPY: tl.constexpr,
):
    """Run one chunk per lane in float64: the homogeneous recursions in h (zero input) and/or the
    driven one in d, sharing each step's coefficients, from the lanes of _lanes. Returns (h, d).
    ROWS: the body's inputs are read as coalesced rows (see triton_tiles.load_rows); TILE_ROWS: its
    coefficient tiles too. A_COPY (reversed time only): a holds the adjoint's coefficient rows in
    step order (see plan)."""
    tl.static_assert(not (ROWS and IS_COMPLEX), "coalesced rows carry real planes only")
    A_REVERSE: tl.constexpr = REVERSE and not A_COPY
    U_PAD: tl.constexpr = triton.next_power_of_2(U)
    if A_LAYOUT == 0:  # constant coefficients: held in registers (see _step_coefficients)
        held_re, held_im = _lane_constants(a_ptr, a_base, valid, sa_time, sa_tap, index, M, tl.float64, IS_COMPLEX,
                                           A_REVERSE)
    else:
        held_re, held_im = 0.0, 0.0
    for t0 in range(0, chunk_len, U):
        u_body, a_body = _body(u_base, a_base, t0, sa_time, M, A_LAYOUT, REVERSE, A_REVERSE)
        if DRIVEN and ROWS:
            offsets, body_live, column = _body_rows(u_base, t0, remaining, n0, U, U_PAD, REVERSE)
            u_rows = load_rows(u_ptr, offsets, body_live, -t0 if REVERSE else t0)
        if TILE_STEPS > 0:  # hoisted: with rows it loads while the input rows are in flight (see _finish)
            tile_re, tile_im = _body_coefficients(a_ptr, a_base, n0, t0, remaining, T, sa_time, sa_tap, index,
                                                  0, TILE_STEPS, M, U, tl.float64, A_LAYOUT, IS_COMPLEX, A_REVERSE,
                                                  TILE_ROWS)
        if DRIVEN and ROWS:
            ut = rows_to_lanes(u_rows, column).to(tl.float64)
        for k in tl.static_range(U):
            live = t0 + k < remaining
            n = n0 - t0 - k
            # the slot this step writes: static when bodies are whole multiples of M
            if U % M == 0:
                pos = k % M
            else:
                pos = (t0 + k) % M
            if TILE_STEPS > 0:
                if k % TILE_STEPS == 0 and k > 0:
                    tile_re, tile_im = _body_coefficients(a_ptr, a_base, n0, t0, remaining, T, sa_time, sa_tap, index,
                                                          k, TILE_STEPS, M, U, tl.float64, A_LAYOUT, IS_COMPLEX,
                                                          A_REVERSE, TILE_ROWS)
                c_re, c_im = _tile_coefficients(tile_re, tile_im, k, TILE_STEPS, A_REVERSE)
            else:
                c_re, c_im = _step_coefficients(a_ptr, a_body, k, n, T, live, sa_time, sa_tap, index, pos, held_re,
                                                held_im, M, tl.float64, A_LAYOUT, IS_COMPLEX, A_REVERSE, U % M == 0)
                if A_LAYOUT == 0 and U % M != 0:
                    held_re = _next_slots(held_re, M)
                    if IS_COMPLEX:
                        held_im = _next_slots(held_im, M)
            if DRIVEN and ROWS:  # the step each entry holds: column c is step c, reversed step U_PAD-1-c
                u_re = select(ut, (U_PAD - 1 - column if REVERSE else column) == k, 0)
                u_im = u_re * 0
            elif DRIVEN:
                u_re, u_im = _drive(u_ptr, u_body, k, live, n, tl.float64, IS_COMPLEX, REVERSE)
            if DRIVEN:
                _, _, d_re, d_im = _step(d_re, d_im, c_re, c_im, u_re, u_im, index, pos, M, U % M == 0, IS_COMPLEX)
            if HOMOGENEOUS:
                _, _, h_re, h_im = _step(h_re, h_im, c_re, c_im, 0.0, 0.0, index, pos, M, U % M == 0, IS_COMPLEX)
    return h_re, h_im, d_re, d_im


@triton.jit
def _block_maps(
    u_ptr, a_ptr, prefix_ptr, row, block, local, valid, remaining, n0, u_base, a_base, index, T, chunk_len, n_chunks,
    sa_time, sa_tap, M: tl.constexpr, R: tl.constexpr, U: tl.constexpr, BLOCK: tl.constexpr, A_LAYOUT: tl.constexpr,
    IS_COMPLEX: tl.constexpr, REVERSE: tl.constexpr, TILE_STEPS: tl.constexpr, ROWS: tl.constexpr,
    TILE_ROWS: tl.constexpr, A_COPY: tl.constexpr,
):
    """A short-order block's chunk maps (lane = chunk of the block, from _lanes in BLOCKED mode;
    all M+1 recursions on each step's coefficients), prefix-composed across the block's lanes; the
    inclusive prefixes stored at prefix[row, chunk] (see _summary's SCAN, and _finish's
    SINGLE_PASS). R = M_PAD recursions, the last M_PAD - M of them idle."""
    d_re = tl.zeros([index.shape[0], 1, BLOCK], dtype=tl.float64)
    d_im = tl.zeros_like(d_re)
    recursion = tl.arange(0, R)[None, :, None]
    # slot of y[start-1-q] (state component q) is M-1-q: the unit state of recursion r is there
    h_re = tl.where((index == M - 1 - recursion) & (recursion < M) & valid, 1.0, 0.0).to(tl.float64)
    h_im = tl.zeros_like(h_re)
    h_re, h_im, d_re, d_im = _recurse(
        u_ptr, a_ptr, h_re, h_im, d_re, d_im, remaining, n0, u_base, a_base, valid, index, T,
        chunk_len, sa_time, sa_tap, M, U, A_LAYOUT, IS_COMPLEX, REVERSE, True, True, TILE_STEPS, ROWS, TILE_ROWS,
        A_COPY,
    )
    pair = (row * n_chunks + block * BLOCK + local).reshape([BLOCK])
    scan_store(h_re, h_im, d_re, d_im, valid.reshape([BLOCK]), prefix_ptr, pair, M, IS_COMPLEX)


@triton.jit(do_not_specialize=_LENGTHS)
def _summary(
    u_ptr, a_ptr, out_ptr, T, steps, chunk_len, n_chunks, n_blocks, n_lanes, sa_row, sa_time, sa_tap,
    M: tl.constexpr, M_PAD: tl.constexpr, R: tl.constexpr, U: tl.constexpr, BLOCK: tl.constexpr,
    SCAN: tl.constexpr, A_LAYOUT: tl.constexpr, IS_COMPLEX: tl.constexpr, REVERSE: tl.constexpr,
    TILE_STEPS: tl.constexpr, ROWS: tl.constexpr, TILE_ROWS: tl.constexpr, A_COPY: tl.constexpr,
):
    """Each chunk's map s_in -> Phi s_in + z, in float64, from the driven recursion (from a zero state:
    z) and the homogeneous ones (recursion r from the unit state e_r, y[start-1-r] = 1: column r of
    Phi). A chunk's end state sits in the slots its start state did (chunks are whole multiples of M).

    SCAN (orders M <= 4, R = M_PAD): lane = chunk of a block of BLOCK consecutive chunks of one row,
    running all M+1 recursions on each step's coefficients; the lanes' maps are then prefix-composed
    and the inclusive prefixes stored. Otherwise each program is uniformly one group: group g < G
    runs homogeneous recursions gR .. gR+R-1 (storing those columns of Phi), group G the driven one
    (storing z), for BLOCK consecutive (row, chunk) lanes; n_lanes = rows x chunks. The G + 1
    programs of one block are consecutive (see summary_blocks), so they run together and all but one
    read the block's coefficients from L2.
    """
    A_REVERSE: tl.constexpr = REVERSE and not A_COPY
    pid = tl.program_id(0).to(tl.int64)
    index = tl.arange(0, M_PAD)[:, None, None]
    d_re = tl.zeros([M_PAD, 1, BLOCK], dtype=tl.float64)
    d_im = tl.zeros_like(d_re)
    if SCAN:
        row = pid // n_blocks
        block = pid % n_blocks
        local = tl.arange(0, BLOCK)[None, None, :]
        valid = local < (n_chunks - block * BLOCK).to(tl.int32)
        remaining, n0, u_base, a_base = _lanes(
            row, local, block * BLOCK * chunk_len, local, valid, T, steps, chunk_len, sa_row, sa_time, M, A_LAYOUT,
            REVERSE, A_REVERSE, True)
        _block_maps(u_ptr, a_ptr, out_ptr, row, block, local, valid, remaining, n0, u_base, a_base, index, T,
                    chunk_len, n_chunks, sa_time, sa_tap, M, R, U, BLOCK, A_LAYOUT, IS_COMPLEX, REVERSE, TILE_STEPS,
                    ROWS, TILE_ROWS, A_COPY)
    else:
        GROUPS: tl.constexpr = (M + R - 1) // R + 1  # summary_groups(M, R) on the host
        group = pid % GROUPS
        # % per_group changes no block of the grid; it bounds the lane numbers, so the compiler splits
        # them into rows and chunks with 32-bit divisions (without it, 64-bit ones: 1500 more
        # instructions before the loop, sm_90, Triton 3.6, M=16)
        per_group = tl.cdiv(n_lanes, BLOCK)
        pair = (pid // GROUPS % per_group) * BLOCK + tl.arange(0, BLOCK)[None, None, :]
        valid = pair < n_lanes
        row = pair // n_chunks
        chunk = pair % n_chunks
        size: tl.constexpr = M * (M + 1)
        q = M - 1 - index  # element (q, r) of a chunk's map sits at size - 1 - (q (M+1) + r)
        keep = valid & (index < M)
        # each branch sets its own lanes up: one _lanes call above both left the homogeneous loop of
        # the M=16 summary 118 spilled accesses a body (65 this way, sm_90, Triton 3.6), and b86bf37,
        # which hoisted it among other changes, measured 8% slower at 16 x 2^20 on an H100
        # (bench/ab_session.sh)
        if group * R >= M:
            remaining, n0, u_base, a_base = _lanes(row, chunk, 0, chunk, valid, T, steps, chunk_len, sa_row, sa_time, M,
                                                   A_LAYOUT, REVERSE, A_REVERSE, False)
            _, _, d_re, d_im = _recurse(
                u_ptr, a_ptr, d_re, d_im, d_re, d_im, remaining, n0, u_base, a_base, valid, index, T, chunk_len,
                sa_time, sa_tap, M, U, A_LAYOUT, IS_COMPLEX, REVERSE, False, True, TILE_STEPS, ROWS, TILE_ROWS, A_COPY,
            )
            store(out_ptr, pair * size + (size - 1 - (q * (M + 1) + M)), d_re, d_im, keep, IS_COMPLEX)
        else:
            recursion = group * R + tl.arange(0, R)[None, :, None]
            h_re = tl.where((index == M - 1 - recursion) & (recursion < M) & valid, 1.0, 0.0).to(tl.float64)
            h_im = tl.zeros_like(h_re)
            remaining, n0, u_base, a_base = _lanes(row, chunk, 0, chunk, valid, T, steps, chunk_len, sa_row, sa_time, M,
                                                   A_LAYOUT, REVERSE, A_REVERSE, False)
            h_re, h_im, _, _ = _recurse(
                u_ptr, a_ptr, h_re, h_im, d_re, d_im, remaining, n0, u_base, a_base, valid, index, T, chunk_len,
                sa_time, sa_tap, M, U, A_LAYOUT, IS_COMPLEX, REVERSE, True, False, TILE_STEPS, ROWS, TILE_ROWS, A_COPY,
            )
            store(out_ptr, pair * size + (size - 1 - (q * (M + 1) + recursion)), h_re, h_im, keep & (recursion < M), IS_COMPLEX)


# from_rest is an argument, not a constexpr, so that the forward and adjoint passes share a variant
@triton.jit(do_not_specialize=["n_chunks", "n_blocks", "group", "from_rest"])
def _carry_short(
    prefix_ptr, zi_ptr, block_in_ptr, n_chunks, n_blocks, group, from_rest,
    M: tl.constexpr, BLOCK: tl.constexpr, RUN: tl.constexpr, IS_COMPLEX: tl.constexpr,
):
    """The state entering every block of row program_id (float64), from the blocks' maps; the row
    starts from zi, or from rest (from_rest 1: the adjoint; zi_ptr unread)."""
    row = tl.program_id(0).to(tl.int64)
    carry_row(prefix_ptr, zi_ptr, block_in_ptr, row, n_chunks, n_blocks, group, from_rest, BLOCK, RUN,
              M, IS_COMPLEX)


@triton.jit
def _chunk_map(map_ptr, row, c, n_chunks, q, r, component, keep, M: tl.constexpr, IS_COMPLEX: tl.constexpr):
    """Chunk c's map of one row: Phi as an [M_PAD, M_PAD] tile and z as [M_PAD] (zeros past the
    row's last chunk, so a load ahead of the walk needs no branch)."""
    size = M * (M + 1)
    base = row * n_chunks + c
    # masks shaped like the tiles (the interpreter rejects a scalar mask broadcast into a block)
    f_mask = (q * 0 + c < n_chunks) & (q < M) & (r < M)
    z_mask = (component * 0 + c < n_chunks) & keep
    f_re, f_im = load(map_ptr, base * size + size - 1 - (q * (M + 1) + r), f_mask, IS_COMPLEX)
    z_re, z_im = load(map_ptr, base * size + size - 1 - (component * (M + 1) + M), z_mask, IS_COMPLEX)
    return f_re, f_im, z_re, z_im


@triton.jit(do_not_specialize=["n_chunks", "from_rest"])
def _carry_long(
    map_ptr, zi_ptr, carry_ptr, n_chunks, from_rest,
    M: tl.constexpr, M_PAD: tl.constexpr, IS_COMPLEX: tl.constexpr,
):
    """carry[row, c] = the state entering chunk c: s <- Phi_c s + z_c, sequentially (float64), from zi
    or from rest (from_rest 1: the adjoint; zi_ptr unread).

    The maps do not depend on s, so each is loaded two chunks ahead of its use: a step's chain is its
    matrix-vector product alone, not an L2 round trip plus the product."""
    row = tl.program_id(0).to(tl.int64)
    q = tl.arange(0, M_PAD)[:, None].to(tl.int64)
    r = tl.arange(0, M_PAD)[None, :].to(tl.int64)
    component = tl.arange(0, M_PAD).to(tl.int64)
    keep = component < M
    # a mask shaped like the tile (the interpreter rejects a scalar mask broadcast into a block)
    s_re, s_im = load(zi_ptr, row * M + component, keep & (component * 0 + from_rest == 0), IS_COMPLEX)
    s_re = s_re.to(tl.float64)
    s_im = s_im.to(tl.float64)
    f_re, f_im, z_re, z_im = _chunk_map(map_ptr, row, 0, n_chunks, q, r, component, keep, M, IS_COMPLEX)
    g_re, g_im, w_re, w_im = _chunk_map(map_ptr, row, 1, n_chunks, q, r, component, keep, M, IS_COMPLEX)
    for c in range(0, n_chunks):
        h_re, h_im, v_re, v_im = _chunk_map(map_ptr, row, c + 2, n_chunks, q, r, component, keep, M, IS_COMPLEX)
        store(carry_ptr, (row * n_chunks + c) * M + component, s_re, s_im, keep, IS_COMPLEX)
        p_re, p_im = _mul(f_re, f_im, s_re[None, :], s_im[None, :], IS_COMPLEX)
        s_re = tl.sum(p_re, axis=1) + z_re
        if IS_COMPLEX:
            s_im = tl.sum(p_im, axis=1) + z_im
        f_re, f_im, z_re, z_im = g_re, g_im, w_re, w_im
        g_re, g_im, w_re, w_im = h_re, h_im, v_re, v_im


@triton.jit
def _lane_load(ptr, offset, mask, IS_COMPLEX: tl.constexpr, TILE: tl.constexpr):
    """A per-lane tile's load: through triton_tiles.load_tile with TILE, plain otherwise."""
    if TILE:
        return load_tile(ptr, offset, mask, IS_COMPLEX)
    else:
        return load(ptr, offset, mask, IS_COMPLEX)


@triton.jit
def _incoming_state(
    zi_ptr, carry_ptr, prefix_ptr, row, chunk, chunk_in_block, block, n_chunks, n_blocks, valid, index,
    M: tl.constexpr, M_PAD: tl.constexpr, ACC: tl.constexpr, STATE: tl.constexpr, IS_COMPLEX: tl.constexpr,
    BLOCK: tl.constexpr, CARRY_RUN: tl.constexpr, FROM_REST: tl.constexpr, ROWS: tl.constexpr,
):
    """The state entering each lane's chunk as its [M_PAD, 1, BLOCK] circular buffer (component q,
    y[start-1-q], in slot M-1-q), in ACC.

    STATE 0: zero (the adjoint starts from rest); 1: zi (one chunk per row); 2: carry[row, chunk]
    (long orders); 3: block_in[row, block] mapped through the block's prefix up to the previous
    chunk (short orders); 4: as 3, with the block's incoming state composed here from the previous
    blocks' maps (the carry fused in, runs of CARRY_RUN maps per lane, no maps with CARRY_RUN 0;
    from zi, or from rest with FROM_REST) instead of read from a carry launch's output.
    """
    q = M - 1 - index
    keep = valid & (index < M)
    # load_tile is a plain load under Triton 3.9 and the interpreter. Under 3.6 a plain load here
    # set the state's layout with its slot axis across the warp: with rows (no per-lane loads in
    # the loop to set it back) every step then reduced with shuffles (192 per body of the M=2
    # forward finish), so zi and carry tiles go through it with ROWS (without, complex M=16 spilled
    # 4.6 KB through it). The prefix P always does: plain, the P s sum below became a shuffle
    # butterfly, rounded differently from the in-thread chain that rows got (H100: rows=0 and
    # rows=1 not bitwise equal at M=4, float64) and 5x the instructions.
    if STATE == 0:
        s_re = tl.zeros(index.shape, dtype=ACC) + tl.zeros(valid.shape, dtype=ACC)
        s_im = tl.zeros_like(s_re)
    elif STATE == 1:
        s_re, s_im = _lane_load(zi_ptr, row * M + q, keep, IS_COMPLEX, ROWS)
    elif STATE == 2:
        s_re, s_im = _lane_load(carry_ptr, (row * n_chunks + chunk) * M + q, keep, IS_COMPLEX, ROWS)
    else:
        # s = P s_block + w with P, w the inclusive prefix of the block's chunks before this one
        r = tl.arange(0, M_PAD * 2)[None, :, None]  # r == M is the w column
        if STATE == 3:
            # block states are stored component-reversed (see triton_affine.carry_row)
            b_re, b_im = load(carry_ptr, (row * n_blocks + block) * M + (M - 1 - r), valid & (r < M), IS_COMPLEX)
            b_re = tl.where(r == M, 1.0, b_re)
        else:
            b_re, b_im = block_state(prefix_ptr, zi_ptr, row, block, n_chunks, BLOCK, row * 0 + FROM_REST, r,
                                     BLOCK, CARRY_RUN, M, IS_COMPLEX)
        size: tl.constexpr = M * (M + 1)
        previous = valid & (chunk_in_block > 0)
        element = q * (M + 1) + r
        p_re, p_im = load_tile(prefix_ptr, (row * n_chunks + chunk - 1) * size + size - 1 - element,
                                previous & (index < M) & (r <= M), IS_COMPLEX)
        t_re, t_im = _mul(p_re, p_im, b_re, b_im, IS_COMPLEX)
        own_re = tl.sum(tl.where(r == q, b_re, 0.0), axis=1)[:, None, :]
        s_re = tl.where(previous, tl.sum(t_re, axis=1)[:, None, :], own_re)
        if IS_COMPLEX:
            own_im = tl.sum(tl.where(r == q, b_im, 0.0), axis=1)[:, None, :]
            s_im = tl.where(previous, tl.sum(t_im, axis=1)[:, None, :], own_im)
        else:
            s_im = s_re * 0
    return s_re.to(ACC), s_im.to(ACC)


@triton.jit
def _past_output(y_ptr, zi_ptr, row, T, j, mask, M: tl.constexpr, ACC: tl.constexpr, IS_COMPLEX: tl.constexpr,
                 TILE: tl.constexpr = False):
    """y[j] of the forward pass, from zi[-1-j] for -M <= j < 0. TILE: a lane tile whose j decrease
    along its in-thread axis (loaded lane axis first, see triton_tiles.load_tile)."""
    from_zi = mask & (j < 0) & (j >= -M)
    if TILE:
        y_re, y_im = load_tile(y_ptr, row * T + j, mask & (j >= 0), IS_COMPLEX)
        # the tl.where hides the zi offsets' contiguity (they increase as j decreases)
        z_re, z_im = load_tile(zi_ptr, tl.where(from_zi, row * M + (-1 - j), 0), from_zi, IS_COMPLEX)
    else:
        y_re, y_im = load(y_ptr, row * T + j, mask & (j >= 0), IS_COMPLEX)
        z_re, z_im = load(zi_ptr, row * M + (-1 - j), from_zi, IS_COMPLEX)
    return (y_re + z_re).to(ACC), (y_im + z_im).to(ACC)


@triton.jit
def _lane_rows(row, u_body):
    """Each lane's row as a [BLOCK, 1] column beside its coalesced rows (``row`` is one scalar for
    a whole program with STATE >= 3, a [1, 1, BLOCK] tile otherwise)."""
    return tl.reshape(row + 0 * u_body, [u_body.shape[2], 1])


@triton.jit
def _past_rows(y_ptr, zi_ptr, row, u_body, n0, lowest, t0, remaining, T, M: tl.constexpr, U_PAD: tl.constexpr):
    """The forward outputs a reversed-time body's grad_a needs, y[n-i] for its steps' n = n0-t0-k
    (k < U_PAD) and taps i = 1..M, as coalesced rows (y[j] from zi[-1-j] for -M <= j < 0): [BLOCK, W]
    rows whose column c holds time n0 - t0 - (U_PAD-1) - M + c, and the column of each entry
    (i-1, k) of a [M, U_PAD, 1] tile (for triton_tiles.rows_to_lanes). The rows come in two parts
    to be added where they are used: y, and zi (zero where j >= 0), which only bodies that reach
    j < 0 load (a branch the whole program takes: ``lowest`` is its least n0)."""
    lanes: tl.constexpr = u_body.shape[2]
    W: tl.constexpr = triton.next_power_of_2(U_PAD + M - 1)
    c = tl.arange(0, W)[None, :]
    first = -(U_PAD - 1) - M  # column 0's time, from the body's first step n0 - t0 (u_body)
    time = tl.reshape(n0, [lanes, 1]) - t0 + first + c
    # (no time < T: the latest is n0 - t0 - 1 < T, the step before the body's first)
    wanted = (c < U_PAD + M - 1) & (tl.reshape(remaining, [lanes, 1]) > t0) & (time >= -M)
    rows = tl.load(y_ptr + (tl.reshape(u_body, [lanes, 1]) + first + c), mask=wanted & (time >= 0), other=0.0)
    zi_rows = tl.zeros_like(rows)
    if lowest - t0 + first < 0:
        from_zi = wanted & (time < 0)
        # the tl.where hides the zi offsets' direction (they fall as time rises)
        zi_rows = tl.load(zi_ptr + tl.where(from_zi, _lane_rows(row, u_body) * M + (-1 - time), 0), mask=from_zi,
                          other=0.0)
    step = tl.arange(0, U_PAD)[None, :, None]
    tap = tl.arange(0, M)[:, None, None] + 1
    return rows, zi_rows, (U_PAD - 1 + M) - step - tap


@triton.jit
def _publish_block(published, block):
    """Set block's bit in its row's words (bit b % 32 of word b // 32) with release semantics: what
    the program stored before (after a barrier: every thread's stores) becomes visible to a
    program that reads the word with acquire semantics (the bits are set by read-modify-writes,
    which continue each earlier release's sequence, so one acquire read sees every block whose bit
    it finds set)."""
    tl.atomic_or(published + block // 32, (1 << (block % 32)).to(tl.int32), sem="release", scope="gpu")


@triton.jit
def _words_done(seen, word, block):
    """Whether word ``word`` of a row's bits, holding ``seen``, has the bits of every block below
    ``block`` that it holds (blocks 32 word .. 32 word + 31)."""
    wanted = tl.minimum(tl.maximum(block - word * 32, 0), 32)
    need = ((tl.full(word.shape, 1, tl.int64) << wanted) - 1).to(tl.int32)  # 32 bits: -1
    return (seen & need) == need


@triton.jit
def _wait_for_blocks(published, block, LANES: tl.constexpr):
    """Wait until the bits of blocks 0 .. block-1 are all set in the row's words (see
    _publish_block), then a barrier: what those blocks stored before setting their bits is visible
    to every thread of the program. Each lane polls one word a round (words l, l + LANES, ...: a
    one-warp program covers 1024 blocks in one round) with plain volatile loads, and reads it once
    with acquire semantics when its bits are all there: an acquire atomic invalidates the SM's L1,
    which polling with it would do every round for every program on the SM. The acquire read sees
    at least the bits the poll saw (bits are only ever set), so it synchronises with each of their
    blocks."""
    word = tl.arange(0, LANES).to(tl.int64)
    pending = word * 32 < block
    while tl.max(pending.to(tl.int32), axis=0) > 0:
        seen = tl.load(published + word, mask=pending, other=0, volatile=True)
        done = pending & _words_done(seen, word, block)
        tl.atomic_or(published + word, 0, mask=done, sem="acquire", scope="gpu")
        word = tl.where(done, word + LANES, word)
        pending = word * 32 < block
    tl.debug_barrier()


@triton.jit(do_not_specialize=_LENGTHS)
def _finish(
    u_ptr, a_ptr, zi_ptr, carry_ptr, prefix_ptr, out_ptr, tail_ptr, y_ptr, grad_a_ptr, sync_ptr,
    T, steps, chunk_len, n_chunks, n_blocks, n_lanes, sa_row, sa_time, sa_tap,
    M: tl.constexpr, M_PAD: tl.constexpr, U: tl.constexpr, U_PAD: tl.constexpr, BLOCK: tl.constexpr,
    STATE: tl.constexpr, COMPUTE: tl.constexpr, A_LAYOUT: tl.constexpr, IS_COMPLEX: tl.constexpr,
    REVERSE: tl.constexpr, GRAD_A: tl.constexpr, GRAD_A_PER_SAMPLE: tl.constexpr, GATHER_GRAD_A: tl.constexpr,
    CARRY_RUN: tl.constexpr, TILE_STEPS: tl.constexpr, ROWS: tl.constexpr, TILE_ROWS: tl.constexpr,
    A_COPY: tl.constexpr, GRAD_A_ROWS: tl.constexpr, SINGLE_PASS: tl.constexpr, SUMMARY_TILE_STEPS: tl.constexpr,
    SUMMARY_ROWS: tl.constexpr, SUMMARY_TILE_ROWS: tl.constexpr,
):
    """Lane = chunk: run it from its incoming state and write the outputs. Forward: out = y.
    Reverse: out = grad_x, tail = grad_zi and, with GRAD_A, grad_a (per sample, or per-chunk
    partial sums when a is constant over time). Short orders (STATE 3, 4) lay lanes out by block.

    A body's outputs are stored after all of its steps: the compiler cannot move a load above a
    store that may alias it, so a store after each step made every later step of the body wait a
    whole memory latency for its loads (the sm_90 model's in-order issue of the compiled loop).
    Per-sample grad_a is gathered too when its [window, step] tiles fit (GATHER_GRAD_A, see plan);
    otherwise each step stores its own. With TILE_STEPS (see tile_steps) the body's inputs and past
    outputs are loaded at its start and its coefficients TILE_STEPS steps at a time. ROWS (real
    inputs): the body's inputs and outputs go as coalesced rows (see triton_tiles.load_rows);
    TILE_ROWS: its coefficient tiles too (see tiles_as_rows; 0: not, else the alignment of every lane's
    row, see rows_alignment). A_COPY (reversed time): a holds the
    adjoint's coefficient rows in step order (see plan). GRAD_A_ROWS (with ROWS, per-sample grad_a,
    M a power of two): each body's grad_a and the past outputs it needs go as coalesced rows too.

    SINGLE_PASS (STATE 4): no summary launch before this one. Each program first runs its block's
    summary (_block_maps, with the SUMMARY_* loads), publishes it (a bit in its row's words of
    sync[1:], cdiv(n_blocks, 32) a row, after its prefixes), waits for the bits of its row's
    earlier blocks and composes their maps as STATE 4 does; its lanes' second read of the inputs
    then comes from cache instead of DRAM. Programs take their blocks in the order they start (a
    ticket, sync[0]), so a program waits only for blocks whose programs are already running: no
    deadlock, whatever order the GPU starts them in. Launch.run zeroes sync before each launch."""
    tl.static_assert(not (ROWS and IS_COMPLEX), "coalesced rows carry real planes only")
    tl.static_assert(not SINGLE_PASS or STATE == 4, "a single pass composes its block's incoming state itself")
    tl.static_assert(not GRAD_A_ROWS or (ROWS and REVERSE and GRAD_A_PER_SAMPLE and not GATHER_GRAD_A
                                         and U % M == 0 and M == M_PAD), "grad_a rows: see plan")
    A_REVERSE: tl.constexpr = REVERSE and not A_COPY
    acc: tl.constexpr = COMPUTE
    if SINGLE_PASS:
        pid = tl.atomic_add(sync_ptr, 1, sem="relaxed", scope="gpu").to(tl.int64)  # orders nothing: a count
    else:
        pid = tl.program_id(0).to(tl.int64)
    local = tl.arange(0, BLOCK)[None, None, :]
    if STATE >= 3:
        row = pid // n_blocks
        block = pid % n_blocks
        chunk = block * BLOCK + local
        valid = local < (n_chunks - block * BLOCK).to(tl.int32)
    else:
        pair = pid * BLOCK + local
        valid = pair < n_lanes
        row = pair // n_chunks
        chunk = pair % n_chunks
        block = chunk * 0
    remaining, n0, u_base, a_base = _lanes(
        row, chunk, block * BLOCK * chunk_len, local, valid, T, steps, chunk_len, sa_row, sa_time, M, A_LAYOUT, REVERSE,
        A_REVERSE, STATE >= 3)
    index = tl.arange(0, M_PAD)[:, None, None]
    if SINGLE_PASS:
        _block_maps(u_ptr, a_ptr, prefix_ptr, row, block, local, valid, remaining, n0, u_base, a_base, index, T,
                    chunk_len, n_chunks, sa_time, sa_tap, M, M_PAD, U, BLOCK, A_LAYOUT, IS_COMPLEX, REVERSE,
                    SUMMARY_TILE_STEPS, SUMMARY_ROWS, SUMMARY_TILE_ROWS, A_COPY)
        published = sync_ptr + 1 + row * ((n_blocks + 31) // 32)
        tl.debug_barrier()  # every lane's prefix stored before the bit says so
        _publish_block(published, block)
        _wait_for_blocks(published, block, BLOCK)
    h_re, h_im = _incoming_state(
        zi_ptr, carry_ptr, prefix_ptr, row, chunk, local, block, n_chunks, n_blocks, valid, index,
        M, M_PAD, acc, STATE, IS_COMPLEX, BLOCK, CARRY_RUN, 1 if REVERSE else 0, ROWS,
    )
    if REVERSE and ROWS:
        lowest = tl.min(tl.reshape(tl.where(valid, n0, T), [BLOCK]))  # (padding lanes would reach zi)
    if REVERSE and GRAD_A and not GRAD_A_ROWS:
        # grad_a[n, i-1] = -lam[n] conj(y[n-i]) over a window of past outputs, entry M_PAD-i holding
        # y[n-i]: unrolled bodies shift it (one new value per step), a plain loop reloads it
        window = M_PAD - index  # the tap of each entry
        w_re, w_im = _past_output(y_ptr, zi_ptr, row, T, n0 - window, valid & (window <= M) & (n0 >= 0), M, acc, IS_COMPLEX)
        ga_re = tl.zeros([M_PAD, 1, BLOCK], dtype=acc)
        ga_im = tl.zeros_like(ga_re)
    # a body's outputs gathered step by step (step k in entry step_slot == k), stored after the
    # body: offsets decreasing along the tile, so that Triton keeps it inside the thread
    if REVERSE:
        step_slot = tl.arange(0, U_PAD)[:, None, None]  # grad_x[n] for n = n0 - t0 - k: decreasing in k
    else:
        step_slot = U_PAD - 1 - tl.arange(0, U_PAD)[:, None, None]  # y[start + t0 + k]
    grad_step = tl.arange(0, U_PAD)[None, :, None]
    if A_LAYOUT == 0:  # constant coefficients: held in registers (see _step_coefficients)
        held_re, held_im = _lane_constants(a_ptr, a_base, valid, sa_time, sa_tap, index, M, acc, IS_COMPLEX, A_REVERSE)
    else:
        held_re, held_im = 0.0, 0.0
    for t0 in range(0, chunk_len, U):
        u_body, a_body = _body(u_base, a_base, t0, sa_time, M, A_LAYOUT, REVERSE, A_REVERSE)
        out_re = tl.zeros([U_PAD, 1, BLOCK], dtype=acc)
        out_im = tl.zeros_like(out_re)
        body_live = (step_slot < U) & (t0 + step_slot < remaining)
        n_slot = n0 - t0 - step_slot  # n of each entry in reversed time (unused forward)
        if ROWS:
            # all of a body's global loads go before its first shared-memory transpose, which waits
            # for its own input: a load issued after a transpose started only once that wait ended,
            # so the two latencies added up (sm_90 SASS, the model's in-order issue of the loop)
            # forward, pointers kept across the loop (see load_rows: 48 fewer instructions a body
            # at M=2); the reverse finish, whose past outputs and grad_a take rows from u_body too,
            # has no registers to spare for them (sm_90, Triton 3.6: M=1 212 registers against 193,
            # a tenth of its resident lanes)
            along = 0 if REVERSE else t0
            offsets, rows_live, column = _body_rows(u_body if REVERSE else u_base, t0, remaining, n0, U, U_PAD, REVERSE)
            u_rows = load_rows(u_ptr, offsets, rows_live, along)
            if GRAD_A_ROWS:
                past_rows, past_zi, past_column = _past_rows(y_ptr, zi_ptr, row, u_body, n0, lowest, t0, remaining, T,
                                                             M, U_PAD)
            elif REVERSE and GRAD_A and U > 1 and TILE_STEPS > 0:
                pt_re, pt_im = _past_output(y_ptr, zi_ptr, row, T, n_slot - 1 - M, body_live, M, acc, IS_COMPLEX, True)
            if TILE_STEPS > 0:
                tile_re, tile_im = _body_coefficients(a_ptr, a_base, n0, t0, remaining, T, sa_time, sa_tap, index,
                                                      0, TILE_STEPS, M, U, acc, A_LAYOUT, IS_COMPLEX, A_REVERSE,
                                                      TILE_ROWS)
            ut_re = rows_to_lanes(u_rows, column).to(acc)
            ut_im = ut_re * 0
        elif TILE_STEPS > 0:  # the body's inputs (and grad_a's past outputs) loaded first, as one tile each
            if REVERSE:  # (n < 0: the grad_zi steps, driven by zero)
                ut_re, ut_im = load_tile(u_ptr, u_body - step_slot, body_live & (n_slot >= 0), IS_COMPLEX)
                if GRAD_A and U > 1:
                    pt_re, pt_im = _past_output(y_ptr, zi_ptr, row, T, n_slot - 1 - M, body_live, M, acc, IS_COMPLEX, True)
            else:
                ut_re, ut_im = load_tile(u_ptr, u_body + step_slot, body_live, IS_COMPLEX)
            ut_re = ut_re.to(acc)
            ut_im = ut_im.to(acc)
        if GATHER_GRAD_A:
            gg_re = tl.zeros([M_PAD, U_PAD, BLOCK], dtype=acc)
            gg_im = tl.zeros_like(gg_re)
        if GRAD_A_ROWS:
            lam = tl.zeros([1, U_PAD, BLOCK], dtype=acc)  # step k's output in entry k
        for k in tl.static_range(U):
            live = t0 + k < remaining
            n = n0 - t0 - k
            # the slot this step writes: static when bodies are whole multiples of M
            if U % M == 0:
                pos = k % M
            else:
                pos = (t0 + k) % M
            if ROWS or TILE_STEPS > 0:
                u_re = select(ut_re, step_slot == k, 0)
                u_im = select(ut_im, step_slot == k, 0)
            else:
                u_re, u_im = _drive(u_ptr, u_body, k, live, n, acc, IS_COMPLEX, REVERSE)
            if TILE_STEPS > 0:
                if k % TILE_STEPS == 0 and not (ROWS and k == 0):
                    tile_re, tile_im = _body_coefficients(a_ptr, a_base, n0, t0, remaining, T, sa_time, sa_tap, index,
                                                          k, TILE_STEPS, M, U, acc, A_LAYOUT, IS_COMPLEX, A_REVERSE,
                                                          TILE_ROWS)
                c_re, c_im = _tile_coefficients(tile_re, tile_im, k, TILE_STEPS, A_REVERSE)
            else:
                c_re, c_im = _step_coefficients(a_ptr, a_body, k, n, T, live, sa_time, sa_tap, index, pos, held_re,
                                                held_im, M, acc, A_LAYOUT, IS_COMPLEX, A_REVERSE, U % M == 0)
                if A_LAYOUT == 0 and U % M != 0:
                    held_re = _next_slots(held_re, M)
                    if IS_COMPLEX:
                        held_im = _next_slots(held_im, M)
            y_re, y_im, h_re, h_im = _step(h_re, h_im, c_re, c_im, u_re, u_im, index, pos, M, U % M == 0, IS_COMPLEX)
            out_re = tl.where(step_slot == k, y_re, out_re)
            if IS_COMPLEX:
                out_im = tl.where(step_slot == k, y_im, out_im)
            if GRAD_A_ROWS:
                lam = tl.where(grad_step == k, y_re, lam)
            elif REVERSE and GRAD_A:
                sample = live & (n >= 0) & (window <= M)
                if U == 1:
                    w_re, w_im = _past_output(y_ptr, zi_ptr, row, T, n - window, sample, M, acc, IS_COMPLEX)
                g_re, g_im = _mul(y_re, y_im, w_re, -w_im, IS_COMPLEX)
                if GATHER_GRAD_A:
                    gg_re = tl.where(grad_step == k, -g_re, gg_re)
                    if IS_COMPLEX:
                        gg_im = tl.where(grad_step == k, -g_im, gg_im)
                elif GRAD_A_PER_SAMPLE:
                    store_tile(grad_a_ptr, (u_body - k) * M + (window - 1), -g_re, -g_im, sample, IS_COMPLEX)
                else:
                    ga_re -= tl.where(sample, g_re, 0.0)
                    ga_im -= tl.where(sample, g_im, 0.0)
                if U > 1:
                    if TILE_STEPS > 0:
                        new_re = select(pt_re, step_slot == k, 0)
                        new_im = select(pt_im, step_slot == k, 0)
                    else:
                        new_re, new_im = _past_output(y_ptr, zi_ptr, row, T, n - 1 - M, live, M, acc, IS_COMPLEX)
                    w_re = _shift_window(w_re, new_re, index, M, M_PAD)
                    if IS_COMPLEX:
                        w_im = _shift_window(w_im, new_im, index, M, M_PAD)
        if ROWS:
            lanes: tl.constexpr = u_body.shape[2]
            out_rows = lanes_to_rows(out_re, column, U_PAD)
            store_rows(out_ptr, offsets, out_rows, rows_live, along)
            if REVERSE:
                if lowest - t0 - (U - 1) < 0:
                    # grad_zi[-1-n] for the last M steps (n < 0), from the same rows, only in the
                    # bodies that reach them (a branch the whole program takes); the tl.where hides
                    # the offsets' direction (they fall as n rises)
                    k_of = U_PAD - 1 - tl.arange(0, U_PAD)[None, :]
                    n_of = tl.reshape(n0, [lanes, 1]) - t0 - k_of
                    tail = (k_of < U) & (t0 + k_of < tl.reshape(remaining, [lanes, 1])) & (n_of < 0)
                    tl.store(tail_ptr + tl.where(tail, _lane_rows(row, u_body) * M + (-1 - n_of), 0), out_rows, mask=tail)
            if GRAD_A_ROWS:
                # grad_a[n, i-1] = -lam[n] y[n-i]: entry (i-1, k) of the body's [M, U_PAD] tile, a row
                # of U_PAD x M values per lane from time n0 - t0 - (U_PAD-1) on (step U_PAD-1-c // M)
                past = rows_to_lanes(past_rows + past_zi, past_column).to(acc)
                ga_column = (U_PAD - 1 - grad_step) * M + index
                c = tl.arange(0, U_PAD * M)[None, :]
                k_of = U_PAD - 1 - c // M
                # n = n0 - t0 - k >= 0 folded into the lane's bound: one compare an entry (with the
                # grad_zi branch above and _past_rows' mask, the M=1 reverse finish's body went from
                # 700 to 549 instructions and 193 to 159 registers, sm_90 model, Triton 3.6; the same
                # fold in _body_rows as well put M=4's latency chain 35% longer)
                ga_live = (k_of < U) & (t0 + k_of < tl.minimum(tl.reshape(remaining, [lanes, 1]),
                                                                tl.reshape(n0, [lanes, 1]) + 1))
                tl.store(grad_a_ptr + ((tl.reshape(u_body, [lanes, 1]) - (U_PAD - 1)) * M + c),
                         lanes_to_rows(-(lam * past), ga_column, U_PAD * M), mask=ga_live)
        elif REVERSE:
            store_tile(out_ptr, u_body - step_slot, out_re, out_im, body_live & (n_slot >= 0), IS_COMPLEX)
        else:
            store_tile(out_ptr, u_body + step_slot, out_re, out_im, body_live, IS_COMPLEX)
        if REVERSE and not ROWS:
            # grad_zi[-1-n] for the last M steps (n < 0); the tl.where hides the offsets' contiguity
            tail = body_live & (n_slot < 0)
            store_tile(tail_ptr, tl.where(tail, row * M + (-1 - n_slot), 0), out_re, out_im, tail, IS_COMPLEX)
        if REVERSE:
            if GATHER_GRAD_A:
                n_step = n0 - t0 - grad_step
                sampled = (grad_step < U) & (t0 + grad_step < remaining) & (n_step >= 0) & (window <= M)
                store_tile(grad_a_ptr, (u_body - grad_step) * M + (window - 1), gg_re, gg_im, sampled, IS_COMPLEX)
    if REVERSE and GRAD_A and not GRAD_A_PER_SAMPLE:
        store(grad_a_ptr, (row * n_chunks + chunk) * M + (window - 1), ga_re, ga_im, valid & (window <= M), IS_COMPLEX)


# ----------------------------------------------------------------------------------------------
# Launch shapes and the driver


@dataclass(frozen=True)
class LaunchShape:
    """How a pass is cut: ``chunk`` samples per lane (``chunk >= steps``: one chunk per row),
    ``group`` consecutive chunks per block of the short-order carry scan (their lanes share a
    program), ``block`` lanes per program everywhere else, ``unroll`` steps per unrolled loop body."""

    chunk: int
    group: int
    block: int
    unroll: int


def warps_for(lanes_per_program: int) -> int:
    return max(1, min(8, lanes_per_program // 32))


# On a GPU: lanes wanted in flight (per SM), the chunk-length bounds, and the lanes per program.
# A long-order chunk's map is M(M+1) float64 (2176 bytes at M=16: half of what 64 samples move with
# time-varying float32 coefficients, input and output; four times it with constant ones). Chunks
# of 64 rather than 128 steps halve the latency-bound lane chains of short rows (sm_90 model,
# T=4096, forward+backward: M=16 189 -> 136 us at B=1, 297 -> 239 at B=256; M=8 141 -> 103 and
# 158 -> 122), and 32 gained at most 10% more there (M=8, B=256: lost 9%).
LANES_PER_SM = 256
# Short orders (M <= 4) want four times as many where their rows are long enough: a lane's chain
# waits for memory once per body, and a pass that streams from DRAM stretches those waits with its
# own traffic (the model's queued_seconds, fitted to the fifth H100 session, where the M=2 forward
# at 16 x 2^20 ran 1.57-1.68x its former max-of-bounds prediction with 8 one-warp programs an SM).
# More, shorter lanes shorten each chain. sm_90 model (Triton 3.6), 2^24 samples (16 x 2^20 and
# 256 x 65536), against 256 lanes: forward M=1 210 -> 166 us, M=2 255 -> 214, M=4 442 -> 350;
# forward+backward M=1 512 -> 426, M=2 717 -> 634, M=4 1281 -> 1044 (3.37 -> 2.75x the floor);
# 512 lanes gained less at M >= 2 forward+backward. Below about 2^20 samples the chunk stays at its
# floor, and a row's chunks stay few enough for the finish to compose its carry (_fusing_chunk).
SHORT_LANES_PER_SM = 1024
# From M=4 a short chunk grows to WIDE_MAPS_CHUNK steps while the GPU still holds
# WIDE_MAPS_LANES_PER_SM lanes an SM: its map (M(M+1) float64, 160 bytes at M=4) is a fifth of what
# a 32-sample chunk moves. sm_90 model (Triton 3.6), M=4 at 2^20 samples: chunks of 64,
# forward+backward 68.9-71.6 -> 65.4-66.1 us (2.9-3.0 -> 2.75-2.78x the floor); at M <= 2 chunks of
# 64 lost 12-43% at 2^20 samples. Shorter rows keep chunks of 32 (64 for every row of at least 4096
# samples made M=4 at 4096 and 65536 samples 44-55% slower).
WIDE_MAPS_ORDER = 4
WIDE_MAPS_CHUNK = 64
WIDE_MAPS_LANES_PER_SM = 128
CHUNK_MIN_GPU = {"short": 32, "long": 64}
CHUNK_MAX_GPU = 4096  # short orders, before rounding up to whole bodies (4104 at M=3: bodies of 9)
# The long-order carry walks a row's chunks one after another while each summary and finish lane
# walks its chunk's steps: with n chunks the chains are n carry steps and steps / n lane steps
# long, balanced at n = sqrt(steps / cost) with ``cost`` a carry step's time over a lane step's
# (summary and finish together). In the sm_90 model (allpole_triton.bench.model, Triton 3.6,
# M=16, one row) a carry step (a matrix-vector product, its map loaded two chunks ahead) takes
# about 350 cycles and a lane step about 450 since lanes load coefficient tiles (tile_steps; 1100
# before, when each step waited for its coefficients), so cost 0.75; modelled forward+backward,
# B=1, T=2^20: M=16 1078 us at the former cost of 0.3, 1009 at 0.75; M=8 952 and 816 (on the
# model grid's long orders 0.5 and 1 are within 7% of 0.75, 0.3 up to 17% slower, 1.5 up to 8%
# slower with one row and 9% faster at B=16, T=2^20).
# To be calibrated on a GPU (bench/tune_triton.py sweeps the chunk length it sets).
LONG_CARRY_STEP_COST = 0.75
BLOCK_GPU = 128
# Lanes per program of the short-order scan (its summaries' prefix scan and its finish): one warp,
# or four (SCAN_GROUP_WIDE_GPU) where that lets the finish compose a row's carry itself (see
# scan_group). On the first GPU run (H200, Triton 3.6, an older kernel) blocks of 128 lanes gave a
# non-finite M=2 output at B=16, T=2^20, cause unknown; on the first H100 run (2026-11-26, before
# coalesced rows) the stage diagnostic's groups of 16, 32 and 128 all passed at M = 1-4 (B=16,
# T=2^20: 16 maps a row, so only the first warp of a fused carry's scan held any). Rows of many
# blocks passed on the fifth H100 session (test_wide_scan_groups_on_gpu, one row of 2^20 samples,
# M = 1-4), maps in all four warps only for complex M=3 (227 maps in runs of two); since
# FUSED_SHORT_RUN, M = 1 and 2 (real and complex) hold maps in all four warps there too (not yet
# run on a GPU; the test now has real M=2 as well).
SCAN_GROUP_GPU = 32
SCAN_GROUP_WIDE_GPU = 128
CARRY_BLOCK_GPU = 256  # lanes of the short-order carry (one program per row), each walking a run of blocks
CARRY_RUN_ELEMENTS = 80  # map elements per unrolled run (compile time)
CARRY_RUN_MAX = 8
CARRY_NARROW_ELEMENTS = 40  # maps this large take half the lanes and runs of one (complex M=4: 1248 bytes of stack at 256 lanes)
CARRY_BLOCK_INTERPRET = CARRY_RUN_INTERPRET = 2  # so that small tests cross runs and pieces
# The carry fused into the finish (see fused_carry_run): map elements per lane run (unrolled, so
# compile time), and the pieces the interpreter may walk (so that small tests cross them).
FUSED_RUN_ELEMENTS = 64
# ... and the run of rows whose maps fit two a lane (16 x 65536, 63 maps on 32 lanes: with the
# longest run, 8 a lane, 24 of the 32 lanes composed identities only). sm_90 model (Triton 3.6),
# forward thread-instructions per sample below 2^24 samples: M=1 54.2 -> 43.4, M=2 73.8 -> 67.8
# (forward+backward M=1 173-200 -> 151-176, M=2 11.5-13.5 fewer); predicted times equal or up to
# 3.3% shorter. Runs of one as well gained at most 1% more at T=4096, for one more variant.
FUSED_SHORT_RUN = 2
FUSED_PIECES_INTERPRET = 2
# The interpreter: short chunks and carry blocks of 4 chunks, so that small tests cross every
# boundary and carry level; large lane blocks elsewhere, since its cost is per op and program.
CHUNK_INTERPRET = 2  # unrolled bodies per chunk
GROUP_INTERPRET = 4
BLOCK_INTERPRET = 128
# The adjoint finish gathers a body's per-sample grad_a in registers up to this many (more spilled:
# complex128 at M=8 took 255 registers and a stack in the sm_90 compile)
GATHER_MAX_REGISTERS = 64
SINGLE_CHUNK_ORDER = 32  # above this order every row is one chunk (summaries would be M^2 per lane)


UNROLL_MAX_ORDER = 16


def cdiv(a: int, b: int) -> int:
    """ceil(a / b) for the host-side plan (triton.cdiv is a constexpr function in newer Triton, which
    unwraps its arguments on every call: 10 such calls were a third of a plan's 100 us)."""
    return -(-a // b)


def next_power_of_2(n: int) -> int:
    """The smallest power of two >= n (1 for n <= 1), for the host-side plan (see cdiv)."""
    return 1 << max(n - 1, 0).bit_length()


def unroll(M: int) -> int:
    """Steps per unrolled loop body: a multiple of M (so every circular-buffer slot is static) of
    about 8 steps, up to order UNROLL_MAX_ORDER; above, a plain loop (a static body of M steps with
    every step's loads hoisted spills registers at M=16)."""
    if M > UNROLL_MAX_ORDER:
        return 1
    return M * max(1, round(8 / M))


# Coefficient tiles (see _body_coefficients): registers a kernel may spend on one, counted as
# M_PAD x steps x words^2 (words: 32-bit registers per value, real and imaginary parts counted;
# squared because a wide lane's other tiles, its state and outputs, grow with it too). Set from the
# sm_90 compile of orders 1-16 in float32, float64 and complex64 (Triton 3.6): the largest tile
# that did not spill. The float64 summaries hold tiles only forward (backward, at M=16, a 2-step
# tile spilled and took 25% longer per body) and the short-order scans' summaries none (their
# bodies already issue every load first: no gain at any tile length), unless as rows (see
# tiles_as_rows), which the L1 term counts.
# Newer Triton (3.9) sinks the forward finish's tile loads back to their steps (M=16: 64 registers
# whatever the tile, 12466 cycles per body without one, 18200 with 16 steps): none there.
TILE_BUDGET = {("_summary", False): 128, ("_summary", True): 0,
               ("_finish", False): 256 if _VERSION < (3, 7) else 0, ("_finish", True): 128}
# The interpreter, which pays per element, loads step by step (a step's pick from a tile costs it a
# pass over the whole tile: tiles doubled the Triton tests' time) unless ALLPOLE_TRITON_LAUNCH's
# tile forces them; tests/test_triton.py checks them bit for bit against step-by-step loads.


# Coalesced rows (ROWS, see triton_tiles.load_rows) load a tile in one access, which the compiler
# cannot sink back to its steps, in either direction: the register budget holds under every Triton.
ROWS_TILE_BUDGET = {"_summary": 128, "_finish": 256}
# Coefficient tiles go as rows up to this order, and in the summaries above SPLIT_MAX_ORDER (rows
# need M a power of two). sm_90 compiles (Triton 3.6 and 3.9, forward, B=16, T=2^20): at M=8 the
# finish's tile as rows spilled 4 KB and the summary's 150-180 B; at M=16 the finish's took 4000
# instructions per body (1135 step by step), while the summary, whose float64 recursions spill
# either way, went from 10.7 to 1.5 ms in the model's L1 term (its 980 B of spills counted).
ROWS_TILE_MAX_ORDER = 4
# In reversed time a tile's coefficients a[n+i, i-1] span STEPS + M - 1 time steps, padded to a
# power of two: as rows they spilled 48-672 B at M=2 and 4 (tiles of 4 or 8 steps, Triton 3.6
# and 3.9), none at M=1.
ROWS_REVERSE_TILE_MAX_ORDER = 1


def tiles_as_rows(rows: bool, M: int, reverse: bool, kernel: str, vectors: bool = False) -> bool:
    """Whether a kernel loads its coefficient tiles as rows (the kernels' TILE_ROWS): with its inputs
    as rows (``rows``) up to the orders above; forward, wherever they load as 16-byte vectors
    (``vectors``, see rows_alignment), with or without input rows, up to UNROLL_MAX_ORDER. Only for
    M a power of two, as the kernels require."""
    if not _power_of_2(M):
        return False
    if reverse:
        return rows and M <= ROWS_REVERSE_TILE_MAX_ORDER
    if vectors and M <= UNROLL_MAX_ORDER:
        return True
    return rows and (M <= ROWS_TILE_MAX_ORDER or (kernel == "_summary" and M > SPLIT_MAX_ORDER.value))


# Coefficient rows whose every lane starts at a multiple of this many elements are loaded as 16-byte
# vectors (the hint tl.multiple_of; Triton checks the pointer's own alignment). At M=16 the forward
# summary's scalar row loads each kept a 64-bit pointer across the loop: 255 registers and 896 B
# of stack, 65 spilled accesses a homogeneous body and 247 a driven one; as vectors 144 B, 0 and
# 20, and 1512 and 1352 instructions a body instead of 1715 and 1746 (sm_90, Triton 3.6).
# As vectors they no longer spill at M=8 (finish and summary) nor in the M=16 finish, which
# reads its inputs lane by lane (its input rows spill): there the sm_90 model's L1 term, which put
# the H100's M=16 finish within 0.92-0.96x, falls 4.5x (16 x 2^20: 1327 -> 406 us, memory-bound).
ROWS_VECTOR = 4
# Their tiles' register budget (as TILE_BUDGET): sm_90, Triton 3.6, forward, the M=16 finish spilled
# 33 accesses a body with 4-step tiles, none with 2. The finish whose incoming states come from the
# carry launch (STATE 3, rows of ~2^28 samples at M=4) spilled 48 B at M=4 with 8-step tiles, none
# with VECTOR_TILE_CARRIED_MAX; 4-step tiles everywhere would cost the other M=4 finishes up to 7%
# in the sm_90 model (more waits on their latency chain, shorter rows per L1 wavefront).
VECTOR_TILE_BUDGET = {"_summary": 128, "_finish": 32}
VECTOR_TILE_CARRIED_MAX = 4


def rows_alignment(M: int, sa_row: int, chunk: int) -> int:
    """The largest power of two up to ROWS_VECTOR that every lane's first coefficient of contiguous
    rows (row x sa_row + chunk start x M, plus whole bodies and tiles of M-step rows) is a multiple
    of: the kernels' TILE_ROWS, the alignment they hint (tl.multiple_of) for vector loads. Only
    powers of two that divide M, which (B, T, M) rows always keep whatever T: at M = 1 a power
    above 1 would turn with T (twice the compiled variants for a training run of random lengths).
    ROWS_VECTOR (16-byte vectors for float32) for contiguous rows from M = 4; 2 at M = 2, where each
    step's coefficient pair is one vector (a body's mask changes every M entries, so no wider vector
    would load anyway), and for longer orders whose row stride is 2 modulo 4."""
    alignment = ROWS_VECTOR
    while alignment > 1 and (M % alignment or sa_row % alignment or chunk * M % alignment):
        alignment //= 2
    return alignment


def tile_steps(M: int, body: int, words: int, kernel: str, reverse: bool, rows: bool = False,
               vectors: bool = False, *, forced: Mapping[str, int] | None = None) -> int:
    """Steps whose coefficients a lane loads together, as one tile, before the first of them (0:
    each step loads its own as it comes): the longest power of two up to the unrolled body whose
    tile fits the kernel's TILE_BUDGET, at least 2. Compiled, each step's loads were otherwise
    issued just before the step that uses them, so every step waited a whole memory latency (sm_90
    model, Triton 3.6, one row of 2^20 samples at M=16, float32: the forward finish took 13457
    cycles per 16-step body, 2811 with a 16-step tile). Only for bodies whose slots are static."""
    if body % M:
        return 0
    forced = _forced(forced).get("tile")
    if forced is not None:
        return forced
    if _INTERPRETED:
        return 0
    as_rows = tiles_as_rows(rows, M, reverse, kernel, vectors)  # vectors change nothing in reverse
    if as_rows and vectors and not reverse:
        budget = VECTOR_TILE_BUDGET[kernel]
    elif as_rows:
        budget = ROWS_TILE_BUDGET[kernel]
    else:
        budget = TILE_BUDGET[(kernel, reverse)]
    fits = budget // (next_power_of_2(M) * words * words)
    steps = min(next_power_of_2(body), 1 << max(0, fits.bit_length() - 1))
    return steps if steps >= 2 else 0


def recursions_per_lane(M: int, is_complex: bool, sms: int | None) -> int:
    """Homogeneous recursions per summary lane for orders above SCAN_MAX_ORDER: on a GPU as many as
    keep the lane's float64 state at 32 values (real and imaginary parts counted; its coefficients
    are converted to float64 once for all of them; more spills registers in the sm_90 compile check).
    The interpreter (``sms`` None) pays per op, not per register: one lane runs them all. Each
    recursion's arithmetic is the same whichever lane runs it (tests/test_triton.py checks bitwise)."""
    m_pad = next_power_of_2(M)
    if sms is None:
        return m_pad
    return max(1, min(m_pad, 32 // (m_pad * (2 if is_complex else 1))))


def summary_groups(M: int, R: int) -> int:
    """Programs per lane block of a long-order summary (see _summary's GROUPS): cdiv(M, R) groups of
    R homogeneous recursions, and the driven one."""
    return cdiv(M, R) + 1


def summary_blocks(groups: int, blocks: int) -> list[int]:
    """The lane block each program of a long-order summary runs, in program order: a block's
    ``groups`` programs (its recursion groups, see _summary) are consecutive, so they run at once
    and share the block's coefficients in L2. With the groups outermost (before this order) every
    group streamed all coefficients once the grid outgrew a round of resident programs: the
    sm_90 model's refetched bytes, nine times the coefficients at M=16 over 256 x 65536."""
    return [program // groups for program in range(groups * blocks)]


def _map_elements(M: int, is_complex: bool) -> int:
    """float64 values in one block map [Phi | z] (real and imaginary parts counted)."""
    return M * (M + 1) * (2 if is_complex else 1)


def _longest_run(elements: int, budget: int) -> int:
    """The longest power-of-two run of maps whose elements fit ``budget`` (at least 1)."""
    return 1 << max(1, budget // elements).bit_length() - 1


def carry_shape(M: int, is_complex: bool, n_maps: int, sms: int | None) -> tuple[int, int]:
    """(lanes, run) of the short-order carry over ``n_maps`` block maps on a GPU: a map per lane
    while the maps fit the widest program, runs of maps once they outnumber its lanes (each run
    composed serially, so the pieces walked one after another cover runs, not maps). A run is
    unrolled, and the sm_90 compile time grows steeply with the run times the map's size (real
    M=4: 2 s at a run of 4, 54 s at 8; complex M=4: 6 s at 1, 28 s at 2, 217 s at 4): up to
    CARRY_RUN_ELEMENTS elements per run, so runs of 8 maps at M <= 2 and of 4 at M=4. The scan
    across lanes dominates a piece (at M=4 each of its levels is a 4x4 composition, and the warps'
    totals are combined one by one), so one piece of 256 lanes x 4 beats two of 256 x 2 (sm_90
    model, B=1, T=2^20, M=4: 5.9 against 8.1 us per carry; 255 registers, and 8 bytes of stack
    under Triton 3.9, none under 3.6; complex M=3 at runs of 2: 16 bytes under 3.9). Complex
    M=4 (a map is 80 float64 registers, and a run holds two) keeps 128 lanes and runs of one:
    376-432 bytes of stack there, 576 at runs of 2, 1248 at 256 lanes."""
    if sms is None:
        return CARRY_BLOCK_INTERPRET, CARRY_RUN_INTERPRET
    elements = _map_elements(M, is_complex)
    narrow = elements >= CARRY_NARROW_ELEMENTS
    longest = 1 if narrow else min(CARRY_RUN_MAX, _longest_run(elements, CARRY_RUN_ELEMENTS))
    widest = CARRY_BLOCK_GPU // 2 if narrow else CARRY_BLOCK_GPU
    run = 1
    while run < longest and n_maps > widest * run:
        run *= 2
    # a program of one warp when there are few maps to scan
    return min(widest, max(32, next_power_of_2(cdiv(n_maps, run)))), run


def fused_carry_run(M: int, is_complex: bool, n_maps: int, lanes: int, sms: int | None,
                    forced: int | None = None) -> int | None:
    """Maps per lane run when the finish composes each block's incoming state itself from the
    ``n_maps`` maps before its row's last block (STATE 4), or None where the carry is a launch of
    its own. Fusing saves that launch and its chain, but every finish program then reads the maps
    of the blocks before it (about n_maps^2 / 2 per row, all L2-resident) and waits for one piece
    (a load round, RUN compositions, a scan across its lanes) per LANES x RUN maps. On a GPU it is
    fused while a row's maps fit one piece of the longest run (FUSED_RUN_ELEMENTS map elements:
    32 maps at M=1, 8 at M=2, 2 at M=4), except maps of CARRY_NARROW_ELEMENTS (complex M=4: the
    scan of its 80 float64 registers a lane put the adjoint finish at 255 registers and 80 bytes
    of stack under Triton 3.9). The run is FUSED_SHORT_RUN where the maps fit that many a lane,
    the longest one otherwise: the run is a constexpr of the finish, so two values rather than
    one per length keep the variants few (test_few_gpu_variants_for_random_lengths). Rows of one
    block have no maps and get run 0, a finish without the piece code (which costs registers: 120
    against 61 at M=4 under Triton 3.9). ``forced`` (the launch variable's ``fuse``) picks either way; the
    interpreter fuses up to FUSED_PIECES_INTERPRET pieces of short runs, so that tests cross
    pieces and runs."""
    if forced == 0:
        return None
    if sms is None:
        run, pieces = CARRY_RUN_INTERPRET, FUSED_PIECES_INTERPRET
    else:
        elements = _map_elements(M, is_complex)
        if elements >= CARRY_NARROW_ELEMENTS and not forced:  # the variant spills even where it runs no piece
            return None
        run, pieces = _longest_run(elements, FUSED_RUN_ELEMENTS), 1
    if not (forced or n_maps <= lanes * run * pieces):
        return None
    if sms is not None and n_maps <= lanes * FUSED_SHORT_RUN:
        run = min(run, FUSED_SHORT_RUN)
    return run if n_maps else 0


def is_short(M: int) -> bool:
    return M <= SCAN_MAX_ORDER


def single_pass(forced: Mapping[str, int] | None = None) -> bool:
    """Whether a short-order pass whose carry is fused into the finish (STATE 4) also runs its
    summary there (_finish's SINGLE_PASS): one Triton launch a pass instead of two (Launch.run
    zeroes its flags first, a torch fill), and the inputs read from DRAM once, the lanes' second
    read hitting the cache. Each program waits for the earlier
    blocks of its row to publish their maps (flags with release and acquire semantics, blocks taken
    in start order), which the interpreter, running programs one after another, cannot exercise:
    so it is off unless ALLPOLE_TRITON_LAUNCH's ``single`` turns it on, until a GPU has run
    test_single_pass_on_gpu."""
    return _forced(forced).get("single", 0) == 1


def forced_launch() -> Mapping[str, int]:
    """``ALLPOLE_TRITON_LAUNCH="chunk=256,group=16"`` forces the chunk length (rounded up to whole
    bodies, a multiple of lcm(unroll, M)) and the chunks per carry block on any device, e.g. the GPU's shapes under the
    interpreter; ``fuse=0`` or ``fuse=1`` forces the short-order carry into a launch of its own or
    into the finish (see fused_carry_run). ``unroll=U`` forces the steps per loop body (a multiple
    of M; orders above UNROLL_MAX_ORDER ignore it) and ``tile=S`` the steps per coefficient tile
    (see tile_steps), and ``rows=0`` or ``rows=1`` whether real contiguous inputs are read as
    coalesced rows (see uses_rows), so that a GPU session can time what the model cannot settle
    (bench/tune_triton.py). :data:`FORCED_LAUNCH_KEYS` lists the values each key takes. The
    mapping is read-only and shared: a plan reads it a dozen times, a copy each time cost 1 us."""
    return _parse_forced_launch(os.environ.get("ALLPOLE_TRITON_LAUNCH", ""))


def _forced(forced: Mapping[str, int] | None) -> Mapping[str, int]:
    """A helper's ``forced`` argument: what its plan read, or the environment's when called alone."""
    return forced_launch() if forced is None else forced


def _power_of_2(n: int) -> bool:
    return n > 0 and not n & (n - 1)


# ALLPOLE_TRITON_LAUNCH's keys: which values each takes, and how to say so
FORCED_LAUNCH_KEYS = {
    "chunk": (lambda n: n >= 1, "a positive integer"),
    "group": (lambda n: _power_of_2(n) and n <= 1024, "a block of lanes, a power of two up to 1024"),
    "fuse": (lambda n: n in (0, 1), "0 (a carry launch) or 1 (the carry fused into the finish)"),
    "unroll": (lambda n: 1 <= n <= 64, "the steps of one unrolled body, 1 to 64"),
    "tile": (lambda n: n == 0 or (_power_of_2(n) and 2 <= n <= 64), "0 (no tiles) or a power of two from 2 to 64"),
    "rows": (lambda n: n in (0, 1), "0 (per-lane loads) or 1 (coalesced rows, real contiguous inputs only)"),
    "adjoint": (lambda n: n in (0, 1), "0 (the reverse kernels) or 1 (the forward scan on reversed time, real "
                                       "time-varying coefficients only)"),
    "single": (lambda n: n in (0, 1), "0 (a summary launch) or 1 (the summary in the finish, where the carry is "
                                      "fused: see single_pass)"),
}


@functools.lru_cache(maxsize=16)
def _parse_forced_launch(text: str) -> Mapping[str, int]:
    """ALLPOLE_TRITON_LAUNCH's items, parsed once per text (a plan reads them several times)."""
    forced = {}
    text = text.strip()
    if not text:
        return MappingProxyType(forced)
    for item in text.split(","):
        key, _, value = item.partition("=")
        key, value = key.strip(), value.strip()
        if key not in FORCED_LAUNCH_KEYS:
            raise ValueError(f"ALLPOLE_TRITON_LAUNCH: expected items key=value with keys {', '.join(FORCED_LAUNCH_KEYS)}, "
                             f"got {text!r}")
        valid, what = FORCED_LAUNCH_KEYS[key]
        if not value.isdigit() or not valid(int(value)):
            raise ValueError(f"ALLPOLE_TRITON_LAUNCH: {key} is {what}; got {value!r} in {text!r}")
        forced[key] = int(value)
    return MappingProxyType(forced)


ROWS_MAX_ORDER = 8  # rows for every lane kernel up to this order; above, the forward summary's only


def uses_rows(kernel: str, layout: int, is_complex: bool, sms: int | None, M: int, reverse: bool, *,
              forced: Mapping[str, int] | None = None) -> bool:
    """Whether ``kernel`` reads its inputs and forward coefficient tiles, and writes its outputs, as
    coalesced rows (triton_tiles.load_rows): real inputs with contiguous (B, T, M) coefficients, on
    a GPU, where the sm_90 model puts every lane kernel read element by element at the L1's limit
    (one wavefront per element: 32 lines per warp access; the first H100 run's times within
    1.03-1.44x of it). Up to ROWS_MAX_ORDER every lane kernel; above, only the forward summary
    (the M=16 one: 10.7 -> 1.5 ms modelled), since elsewhere at M=16 the rows' transposes made
    kernels spill (sm_90: the finish 16-336 B, the adjoint summary and finish 80-112 B, with Triton
    3.9 or 3.6) for a small share of their accesses. The interpreter, which pays per op, keeps
    per-lane loads unless ALLPOLE_TRITON_LAUNCH's ``rows`` forces them; tests/test_triton.py runs
    both."""
    if not rows_possible(layout, is_complex, sms, forced=forced):
        return False
    if _forced(forced).get("rows") is not None:
        return True
    return M <= ROWS_MAX_ORDER or (kernel == "_summary" and not reverse)


def rows_possible(layout: int, is_complex: bool, sms: int | None, *, forced: Mapping[str, int] | None = None) -> bool:
    """Whether anything may be read as coalesced rows: real inputs with contiguous coefficients, on a
    GPU (the interpreter only where ALLPOLE_TRITON_LAUNCH's ``rows`` forces them; ``rows=0`` turns
    them off everywhere)."""
    if is_complex or layout != A_CONTIGUOUS:
        return False
    forced = _forced(forced).get("rows")
    return bool(forced) if forced is not None else sms is not None


# B*T from which short orders take the reversed path on a GPU (see uses_reversed_forward; M=1
# only with strided coefficients, not modelled since the copy of a alone)
REVERSED_MIN_SAMPLES = {1: 1 << 17, 2: 1 << 20, 3: 1 << 17, 4: 1 << 19}


def uses_reversed_forward(rows: int, a: torch.Tensor, T: int, is_complex: bool, sms: int | None, *,
                          forced: Mapping[str, int] | None = None) -> bool:
    """Whether the backward runs as the forward scan on reversed time (triton_adjoint): real
    time-varying coefficients, on a GPU, where the reverse kernels read the coefficients a[n+i, i-1]
    of each step along a diagonal, lane by lane (the H100's backward at M=16 took 24 of 32.7 ms of a
    forward+backward pass), so an extra copy of them in reversed-time rows costs less. Constant
    coefficients would turn into time-varying ones, and complex inputs take no rows: both keep the
    reverse kernels. So do short orders (M <= SCAN_MAX_ORDER) below REVERSED_MIN_SAMPLES[M]
    samples, where the copies cost more than the diagonal loads save (sm_90 model, Triton 3.6,
    forward+backward, direct against copied: B*T = 2^18, M=2 29.4 against 32.1 us, M=4 34.0
    against 37.4; 2^19 31.9 against 33.5 and 47.1 against 41.0; 2^20 49.7 against 44.7 and 85.5
    against 70.7; M=3, which keeps both copies, 38.8 against 38.7 at 2^17 and 54.0 against 50.5
    at 2^18; orders 1, 2 and 4 run the reverse kernels on the copy, see fuses_adjoint). The
    thresholds of M=2 and 4 hold under the model's refitted latencies (2026-11-28, B=16): M=2 35.4
    against 38.4 us at 2^19, 50.1 against 44.7 at 2^20; M=4 40.5 against 40.6 at 2^18, 47.6 against
    43.4 at 2^19. M=3's does not: the copies win from 2^15 on there (45.6 against 41.3 us), which
    no GPU has measured; the value stays until one does.
    ALLPOLE_TRITON_LAUNCH's ``adjoint`` forces either way (the interpreter's default is the reverse
    kernels; tests/test_triton_adjoint.py forces the reversed forward). Nor does M=1 where the
    reverse kernels read their coefficients as rows too (tiles_as_rows, contiguous coefficients):
    with grad_a written as rows they need no copy (sm_90 model, forward+backward at 2^20 samples:
    2.51-2.57x the floor, 2.97-3.03x with the copy; 2.94-2.99x and 3.39-3.43x with the refitted
    latencies)."""
    if is_complex or a.shape[1] != T:
        return False
    forced = _forced(forced)
    if forced.get("adjoint") is not None:
        return bool(forced["adjoint"])
    if sms is None:
        return False
    M = a.shape[-1]
    if forced.get("tile") != 0 and tiles_as_rows(uses_rows("_finish", coefficient_layout(a), is_complex, sms, M, True,
                                                           forced=forced), M, True, "_finish"):
        return False
    return not is_short(M) or rows * T >= REVERSED_MIN_SAMPLES[M]


def body_steps(M: int, *, forced: Mapping[str, int] | None = None) -> int:
    """Steps per unrolled loop body: :func:`unroll`, or ALLPOLE_TRITON_LAUNCH's ``unroll``."""
    forced = _forced(forced).get("unroll")
    if forced is None or M > UNROLL_MAX_ORDER:
        return unroll(M)
    if forced % M:
        raise ValueError(f"ALLPOLE_TRITON_LAUNCH: unroll must be a multiple of the order M={M} (every "
                         f"circular-buffer slot static), got {forced}")
    return forced


# A longer chunk is taken only where it cuts the busiest SM's work by this share (ties keep the
# shorter chunk: more programs resident to hide latency), and up to this growth: two programs
# resident on one SM took 1.6-1.8x one alone on the H100 (the M=16 finish), so halving the programs
# an SM runs by doubling their chunk gains little where they fit at once.
WHOLE_WAVES_GAIN = 0.05
WHOLE_WAVES_GROWTH = 1.25


def _whole_waves(chunk: int, whole: int, rows: int, steps: int, sms: int) -> int:
    """The long-order chunk, at least ``chunk``, that minimises the busiest SM's share of the
    finish: programs (BLOCK_GPU lanes) are dealt out whole, so with P of them that SM runs ceil(P /
    sms) programs of ``chunk`` steps. On the H100 the M=16 forward finish of 16 x 2^20 took 2161
    us on 147 programs (chunks of 896), 1.8x its one-row time per step: the 15 SMs with two
    programs set its time. Here chunks of 1008 give 131 programs, one an SM (sm_90 model: 2355 ->
    1324 us); the summary's programs (its recursion groups per block) fall from 11 to 9 an SM."""
    programs = cdiv(rows * cdiv(steps, chunk), BLOCK_GPU)
    best, best_work = chunk, cdiv(programs, sms) * chunk
    for per_sm in range(cdiv(programs, sms) - 1, 0, -1):
        chunks_per_row = per_sm * sms * BLOCK_GPU // rows
        if chunks_per_row < 1:
            break
        longer = whole * cdiv(cdiv(steps, chunks_per_row), whole)
        if longer >= steps or longer > WHOLE_WAVES_GROWTH * chunk:
            break
        if per_sm * longer <= (1 - WHOLE_WAVES_GAIN) * best_work:
            best, best_work = longer, per_sm * longer
    return best


FUSED_NARROW_MAPS_MAX = 256  # maps per row that a one-warp finish composes itself before wider groups win


def scan_group(M: int, is_complex: bool, n_chunks: int, sms: int) -> int:
    """Chunks per carry block of the short-order scan on a GPU: one warp's (SCAN_GROUP_GPU), unless
    a row's blocks would then need the carry launch, or more than FUSED_NARROW_MAPS_MAX maps for the
    finish to compose, while blocks of SCAN_GROUP_WIDE_GPU chunks let the finish compose them itself
    (fused_carry_run): a quarter of the maps, and a launch and its chain fewer. sm_90 model (Triton
    3.6), one row of 2^20 samples, forward+backward: M=1 47.6 -> 41.2 us (1023 maps fused either
    way), M=2 74.5 -> 52.7, M=4 136 -> 81; rows of few blocks keep one warp (256 rows of 4096
    samples, M=4: 77.6 us, 90.3 with 128 lanes, whose cross-warp scans cost more than the maps they
    save; 16 rows of 65536, 63 maps: within 1% either way)."""
    return _fusing_group(M, is_complex, n_chunks, sms) or SCAN_GROUP_GPU


def _fusing_group(M: int, is_complex: bool, n_chunks: int, sms: int) -> int | None:
    """The carry block (chunks) whose row of ``n_chunks`` chunks the finish composes itself: one
    warp's while its maps stay few, four warps' otherwise; None where neither fuses."""
    narrow = cdiv(n_chunks, SCAN_GROUP_GPU) - 1
    if narrow <= FUSED_NARROW_MAPS_MAX and fused_carry_run(M, is_complex, narrow, SCAN_GROUP_GPU, sms) is not None:
        return SCAN_GROUP_GPU
    wide = cdiv(n_chunks, SCAN_GROUP_WIDE_GPU) - 1
    if fused_carry_run(M, is_complex, wide, SCAN_GROUP_WIDE_GPU, sms) is not None:
        return SCAN_GROUP_WIDE_GPU
    return None


def _fusing_chunk(chunk: int, whole: int, M: int, is_complex: bool, steps: int, sms: int) -> int:
    """The shortest short-order chunk from ``chunk`` up (multiples of ``whole``, up to CHUNK_MAX_GPU
    rounded up to one) whose rows still compose their carry in the finish; ``chunk`` where none
    does (fewer maps never stop a row from fusing, so a binary search finds it). With a carry
    launch either way, short chunks win: one row of 134742017 samples at M=4, forward, 2759 us
    with chunks of 1000, 3148 with 4096, against 2735 fused at 4096 for one sample fewer (sm_90
    model, Triton 3.6), so the chunk falls 4x there while the time does not jump.
    SHORT_LANES_PER_SM's chunks cut a long row into more maps than a fused finish composes, and the
    carry launch that took over (one program walking a row's maps) lost more than the shorter
    chains gained: sm_90 model, one row of 2^22 samples, forward M=4 118 -> 155 us, M=3 139 ->
    225, complex M=2 273 -> 359 (a review's plans, sixteenth session)."""
    longest = whole * cdiv(min(CHUNK_MAX_GPU, steps), whole)  # as launch_shape rounds: up to whole bodies
    if _fusing_group(M, is_complex, cdiv(steps, chunk), sms) or not _fusing_group(M, is_complex, cdiv(steps, longest), sms):
        return chunk
    short, fused = chunk // whole, longest // whole  # in wholes: the one fails, the other fuses
    while fused - short > 1:
        middle = (short + fused) // 2
        if _fusing_group(M, is_complex, cdiv(steps, middle * whole), sms):
            fused = middle
        else:
            short = middle
    return fused * whole


def launch_shape(M: int, rows: int, steps: int, sms: int | None, *, is_complex: bool = False,
                 forced: Mapping[str, int] | None = None) -> LaunchShape:
    """The launch for order M over ``rows`` rows of ``steps`` steps; ``sms`` is None for the interpreter.

    Chunks exist only to make lanes: with enough rows each row is one chunk and the pass is a single
    launch. Otherwise the chunk shrinks until the GPU holds ``LANES_PER_SM`` lanes per SM
    (``SHORT_LANES_PER_SM`` at short orders), down to a floor below which the per-chunk maps would
    cost more than the samples. A short order's chunk then grows to WIDE_MAPS_CHUNK from M=4 where
    lanes remain, and to the shortest whose row still composes its carry in the finish
    (:func:`_fusing_chunk`); a long order's grows, by up to WHOLE_WAVES_GROWTH, where that deals
    its programs out to the SMs more evenly (:func:`_whole_waves`; so a little more work may take
    a slightly shorter chunk, as may one more sample where a short row stops fusing).
    """
    forced = _forced(forced)
    u = body_steps(M, forced=forced)
    kind = "short" if is_short(M) else "long"
    if sms is None:
        chunk, group, block = CHUNK_INTERPRET * u, GROUP_INTERPRET, BLOCK_INTERPRET
    else:
        group, block = SCAN_GROUP_GPU, BLOCK_GPU
        per_sm = SHORT_LANES_PER_SM if kind == "short" else LANES_PER_SM
        wanted = max(1, rows * steps // (per_sm * sms))
        if kind == "long":  # no CHUNK_MAX_GPU: a chunk's map is M(M+1) float64, so no more than lanes need
            balance = math.ceil(steps / max(1, math.isqrt(int(steps / LONG_CARRY_STEP_COST))))
            chunk = max(wanted, CHUNK_MIN_GPU[kind], balance)
        else:
            if M >= WIDE_MAPS_ORDER:
                wanted = max(wanted, min(WIDE_MAPS_CHUNK, rows * steps // (WIDE_MAPS_LANES_PER_SM * sms)))
            chunk = min(max(wanted, CHUNK_MIN_GPU[kind]), CHUNK_MAX_GPU)
    # a chunk ends with its state in the slots it started in only after a whole number of M steps
    whole = math.lcm(u, M)
    chunk = whole * math.ceil(forced.get("chunk", chunk) / whole)
    if M > SINGLE_CHUNK_ORDER or chunk >= steps:
        chunk = u * math.ceil(max(steps, 1) / u)
    if sms is not None and kind == "long" and chunk < steps and "chunk" not in forced:
        chunk = _whole_waves(chunk, whole, rows, steps, sms)
    if sms is not None and kind == "short" and chunk < steps and not {"chunk", "group", "fuse"} & forced.keys():
        chunk = _fusing_chunk(chunk, whole, M, is_complex, steps, sms)
    if sms is not None:  # few lanes: programs of one warp, not of BLOCK_GPU lanes mostly idle
        block = min(block, max(32, next_power_of_2(rows * cdiv(steps, chunk))))
        # a forced carry placement keeps one-warp blocks: scan_group picks a width for the placement
        # it expects (and four warps with a carry launch, fuse=0, never ran on a GPU)
        if kind == "short" and not {"group", "fuse"} & forced.keys():
            group = scan_group(M, is_complex, cdiv(steps, chunk), sms)
    return LaunchShape(chunk=chunk, group=forced.get("group", group), block=block, unroll=u)


def _plane(t: torch.Tensor) -> torch.Tensor:
    """Complex tensors are handed to the kernels as their interleaved real view."""
    return torch.view_as_real(t) if t.is_complex() else t


def _sms(device: torch.device) -> int | None:
    if device.type != "cuda":
        return None
    return torch.cuda.get_device_properties(device).multi_processor_count


def _coefficient_strides(a: torch.Tensor) -> tuple[int, int, int]:
    """a's (row, time, tap) strides, 0 along size-1 (broadcast) dims."""
    return tuple(s if n > 1 else 0 for s, n in zip(a.stride(), a.shape))


def coefficient_layout(a: torch.Tensor) -> int:
    """The kernels' A_LAYOUT for coefficients ``a`` (rows, T or 1, M)."""
    _, sa_time, sa_tap = _coefficient_strides(a)
    M = a.shape[-1]
    if a.shape[1] == 1:
        return A_CONSTANT
    if sa_time == M and (sa_tap == 1 or M == 1):
        return A_CONTIGUOUS
    return A_STRIDED


@dataclass
class CompiledKernels:
    """A cached plan's launch as the JIT function compiled it, for launches that skip the JIT
    function's per-launch binding, specialisation and cache lookup (DIRECT_LAUNCH). In a plan's
    template every argument but the tensors is fixed, and Triton specialises a tensor on its dtype
    (part of the plan's key) and its 16-byte alignment only, so the tensors' alignments pick the
    kernel."""

    tensors: tuple[int, ...]  # positions of the tensor arguments
    constants: tuple  # the constexpr parameters' values, in the kernel's order (after the positional ones)
    kernels: dict = field(default_factory=dict)  # the tensors' alignments -> compiled kernel

    @staticmethod
    def of(kernel, args: tuple, constexprs: Mapping[str, object], tensors: tuple[int, ...]) -> CompiledKernels | None:
        """For a launch of ``kernel`` with ``args`` (tensors at positions ``tensors``); None where
        a parameter after the positional ones is not among ``constexprs``."""
        names = kernel.arg_names[len(args):]
        if not set(names) <= constexprs.keys():
            return None
        return CompiledKernels(tensors, tuple(constexprs[name] for name in names))


@dataclass
class Launch:
    """One kernel launch of a pass: what the driver runs, the compile check compiles and the
    performance model (allpole_triton.bench.model) counts."""

    kernel: object
    grid: int
    args: tuple
    constexprs: Mapping[str, object]  # read-only where a cached plan shares it
    num_warps: int
    lanes: int  # independent recurrences (0: not a lane kernel)
    steps: int  # sequential steps per lane (loop iterations of the kernel's main loop)
    compiled: CompiledKernels | None = None  # shared by a cached plan's replays (DIRECT_LAUNCH)

    def run(self, wrap=None):
        """Launch it; ``wrap`` wraps the kernel first (``torch.library.wrap_triton`` under a custom
        op). Returns what the launch returns (the compiled kernel). A single-pass finish's ticket and
        block bits are zeroed first, so that the launch can run again (host_times and launch_times
        time launches planned once)."""
        if self.constexprs.get("SINGLE_PASS"):
            self.args[self.kernel.arg_names.index("sync_ptr")].zero_()
        if wrap is None and self.compiled is not None:
            return self._run_compiled()
        kernel = wrap(self.kernel) if wrap else self.kernel
        return kernel[(self.grid,)](*self.args, num_warps=self.num_warps, **self.constexprs)

    def _run_compiled(self):
        """Launch the kernel compiled for these tensors' alignments; the first launch of each
        alignment goes through the JIT function, which compiles it (see CompiledKernels). What the
        JIT function checks on every launch is then not seen again: Triton's knobs (debug,
        instrumentation) and the globals the kernels read. Under the device guard of the pass
        (allpole_forward, allpole_backward), as the kernel was loaded on the tensors' device."""
        args, compiled = self.args, self.compiled
        key = tuple([args[i].data_ptr() % 16 == 0 for i in compiled.tensors])
        kernel = compiled.kernels.get(key)
        if kernel is None:
            kernel = self.kernel[(self.grid,)](*args, num_warps=self.num_warps, **self.constexprs)
            if hasattr(kernel, "result"):  # Triton 3.9 under AsyncCompileMode: a future
                kernel = kernel.result()
            if kernel is not None:  # (None under the interpreter)
                compiled.kernels[key] = kernel
            return kernel
        # every parameter in order, as the JIT function binds them (the launcher skips constexprs)
        kernel[(self.grid, 1, 1)](*args, *compiled.constants)
        return kernel


def plan(u, a, zi, out, *, reverse, tail=None, y=None, grad_a=None, sms=None, scratch=None, a_copy=False):
    """The launches of one pass and a finishing step (the constant-coefficient grad_a sum; otherwise
    :data:`NOTHING_TO_FINISH`).

    ``u`` is x (forward) or grad_y (reverse); ``a`` may have any strides (0 along broadcast rows or
    time); ``sms`` is the GPU's multiprocessor count (None: interpreter shapes). Tensors may live on
    the meta device, which is how the compile check and the model plan a launch without a GPU.
    ``scratch`` (a :class:`Scratch`) allocates the pass's own tensors and records them for
    :func:`cached_plan`. ``a_copy`` (reverse only): ``a`` holds the adjoint's coefficient rows in
    step order, b[row, k, i-1] = a[row, T-1-k+i, i-1] over T + M steps (triton_adjoint), which the
    kernels read as the forward reads its own (``A_COPY``).
    """
    forced = forced_launch()  # read once: an environment read costs 1-2 us, and a plan asks a dozen times
    if u.shape[1] + (a.shape[-1] if reverse else 0) >= 2**31:  # the kernels count a row's steps in int32
        raise ValueError(f"{'grad_y' if reverse else 'x'} has {u.shape[1]} samples per row: the Triton scan runs rows "
                         f"of fewer than 2**31 steps, T of the forward and T + M of the backward (M={a.shape[-1]}; "
                         f"got shape {tuple(u.shape)})")
    scratch = Scratch() if scratch is None else scratch
    if reverse and not a_copy and uses_reversed_forward(u.shape[0], a, u.shape[1], u.is_complex(), sms, forced=forced):
        return _plan_reversed(u, a, zi, out, tail, y, grad_a, sms, scratch, forced)
    B, T = u.shape
    M = a.shape[-1]
    steps = T + M if reverse else T
    is_complex = u.is_complex()
    shape = launch_shape(M, B, steps, sms, is_complex=is_complex, forced=forced)
    n_chunks = cdiv(steps, shape.chunk)
    planes = (2,) if is_complex else ()
    real = u.real.dtype if is_complex else u.dtype
    compute = tl.float64 if real == torch.float64 else tl.float32
    sa_row, sa_time, sa_tap = _coefficient_strides(a)
    u_, a_, zi_ = _plane(u), _plane(a), _plane(zi)
    common = dict(M=M, M_PAD=next_power_of_2(M), IS_COMPLEX=is_complex, **_COMPILE)
    layout = coefficient_layout(a)
    loops = dict(U=shape.unroll, A_LAYOUT=layout, REVERSE=reverse, A_COPY=a_copy)
    a_reverse = reverse and not a_copy  # coefficients read along the adjoint's diagonal
    vectors_possible = rows_possible(layout, is_complex, sms, forced=forced)

    def loads(kernel: str, *, tiles_only_as_rows: bool = False, carried: bool = False) -> dict:
        """A lane kernel's ROWS, TILE_ROWS and TILE_STEPS (each decided once: a plan is host time).
        Rows step through a chunk in int32 (a body's t0 x M, see triton_tiles.load_rows).
        ``carried``: a finish that loads its incoming states (STATE 3, see VECTOR_TILE_CARRIED_MAX)."""
        stepped = shape.chunk * M < 2**31
        rows = uses_rows(kernel, layout, is_complex, sms, M, a_reverse, forced=forced) and stepped
        # float64 finishes keep their tiles: the vector budget, sized on float32 compiles, left
        # them none at M >= 8 (a memory latency a step again)
        alignment = rows_alignment(M, sa_row, shape.chunk) if vectors_possible and stepped and not a_reverse else 1
        vectors = alignment == ROWS_VECTOR and (kernel == "_summary" or compute != tl.float64)
        # narrower vectors (M = 2) but in the reverse finish, which gains nothing from them (sm_90
        # model, Triton 3.6, 16 x 2^20: 164 -> 168 registers, its latency chain 39% longer; before
        # 6851bb4, 187 -> 218 and its pass 13% slower at 256 x 65536)
        narrow = alignment if alignment < ROWS_VECTOR and not (reverse and kernel == "_finish") else 1
        steps = 0
        if layout != A_CONSTANT:  # constant coefficients are loaded once per lane
            wide = kernel == "_summary" or compute == tl.float64
            steps = tile_steps(M, shape.unroll, (2 if is_complex else 1) * (2 if wide else 1), kernel, a_reverse, rows,
                               vectors, forced=forced)
        tile_rows = tiles_as_rows(rows, M, a_reverse, kernel, vectors) and steps > 0
        if tile_rows and vectors and carried and "tile" not in forced:
            steps = min(steps, VECTOR_TILE_CARRIED_MAX)
        return dict(ROWS=rows, TILE_ROWS=(ROWS_VECTOR if vectors else narrow) if tile_rows else 0,
                    TILE_STEPS=steps if tile_rows or not tiles_only_as_rows else 0)

    def maps(*size):  # summaries and carries are float64 whatever the input dtype
        return scratch.empty((*size, *planes), torch.float64, u.device)

    launches = []
    carry = prefix = sync = u_  # placeholders for pointers a variant does not read
    n_blocks, n_lanes, fused_run = 1, B * n_chunks, 0
    summary_loads = dict(TILE_STEPS=0, ROWS=0, TILE_ROWS=0)
    single = False
    if n_chunks == 1:
        state = 0 if reverse else 1
    elif is_short(M):
        state = 3
        n_blocks = cdiv(n_chunks, shape.group)
        prefix = maps(B * n_chunks, M * (M + 1))
        summary_loads = loads("_summary", tiles_only_as_rows=True)
        run = fused_carry_run(M, is_complex, n_blocks - 1, shape.group, sms, forced.get("fuse"))
        single = run is not None and single_pass(forced)
        if single:
            sync = scratch.empty((1 + B * cdiv(n_blocks, 32),), torch.int32, u.device)  # a ticket, each row's bits
        else:
            launches.append(Launch(
                _summary, B * n_blocks,
                (u_, a_, prefix, T, steps, shape.chunk, n_chunks, n_blocks, B * n_chunks, sa_row, sa_time, sa_tap),
                dict(BLOCK=shape.group, R=next_power_of_2(M), SCAN=True, **summary_loads, **common, **loops),
                warps_for(shape.group), B * n_chunks, shape.chunk,
            ))
        if run is not None:
            state, fused_run = 4, run
        else:
            carry = maps(B * n_blocks, M)
            carry_block, run = carry_shape(M, is_complex, n_blocks - 1, sms)
            launches.append(Launch(
                _carry_short, B, (prefix, zi_, carry, n_chunks, n_blocks, shape.group, int(reverse)),
                dict(M=M, BLOCK=carry_block, RUN=run, IS_COMPLEX=is_complex, **_COMPILE),
                warps_for(carry_block), 0, cdiv(n_blocks - 1, carry_block * run),
            ))
    else:
        state = 2
        summaries = maps(B * n_chunks, M * (M + 1))
        R = recursions_per_lane(M, is_complex, sms)
        pairs = B * n_chunks
        groups = summary_groups(M, R)
        launches.append(Launch(
            _summary, groups * cdiv(pairs, shape.block),
            (u_, a_, summaries, T, steps, shape.chunk, n_chunks, 1, pairs, sa_row, sa_time, sa_tap),
            dict(BLOCK=shape.block, R=R, SCAN=False, **loads("_summary"), **common, **loops), warps_for(shape.block),
            pairs * groups, shape.chunk,
        ))
        carry = maps(B * n_chunks, M)
        launches.append(Launch(_carry_long, B, (summaries, zi_, carry, n_chunks, int(reverse)), dict(common), 4, 0, n_chunks))
    per_sample = grad_a is not None and (a_copy or a.shape[1] == T)
    partial = None
    if grad_a is not None and not per_sample:  # constant coefficients: per-chunk partial sums
        wide = torch.float64 if compute == tl.float64 else torch.float32
        partial = scratch.empty((B * n_chunks, M, *planes), wide, u.device)
    grad_a_target = grad_a if per_sample else partial
    u_pad = next_power_of_2(shape.unroll)
    # registers of a body's gathered grad_a: window x steps, times planes, times words per value
    gathered = next_power_of_2(M) * u_pad * (2 if is_complex else 1) * (2 if compute == tl.float64 else 1)
    block = shape.group if state >= 3 else shape.block
    finish_loads = loads("_finish", carried=state == 3)
    grad_a_rows = reverse and per_sample and finish_loads["ROWS"] and grad_a_fits_rows(M)
    launches.append(Launch(
        _finish, B * n_blocks if state >= 3 else cdiv(n_lanes, block),
        (u_, a_, zi_, carry, prefix, _plane(out), _plane(tail) if tail is not None else u_,
         _plane(y) if y is not None else u_, _plane(grad_a_target) if grad_a_target is not None else u_, sync,
         T, steps, shape.chunk, n_chunks, n_blocks, n_lanes, sa_row, sa_time, sa_tap),
        dict(BLOCK=block, STATE=state, COMPUTE=compute, GRAD_A=grad_a is not None, U_PAD=u_pad,
             GRAD_A_PER_SAMPLE=per_sample, GRAD_A_ROWS=grad_a_rows,
             GATHER_GRAD_A=reverse and per_sample and not grad_a_rows and gathered <= GATHER_MAX_REGISTERS,
             CARRY_RUN=fused_run, **finish_loads, **common, **loops, SINGLE_PASS=single,
             **{f"SUMMARY_{key}": value if single else 0 for key, value in summary_loads.items()}),
        warps_for(block), n_lanes, shape.chunk,
    ))

    if partial is None:
        return launches, NOTHING_TO_FINISH

    def finalize():
        sums = partial.reshape(B, n_chunks, M, *planes).sum(1)
        grad_a.copy_((torch.view_as_complex(sums) if is_complex else sums).unsqueeze(1))

    return launches, finalize


def NOTHING_TO_FINISH() -> None:
    """The finishing step of a pass whose launches write everything."""


FUSED_ADJOINT_MAX_ORDER = 4


def grad_a_fits_rows(M: int) -> bool:
    """Whether a reverse finish with rows writes grad_a as rows (GRAD_A_ROWS): M a power of two
    (lanes_to_rows) up to FUSED_ADJOINT_MAX_ORDER (its [M, 8] tile and past outputs in registers)."""
    return _power_of_2(M) and M <= FUSED_ADJOINT_MAX_ORDER


def fuses_adjoint(M: int, sms: int | None, forced: Mapping[str, int] | None = None) -> bool:
    """Whether the reversed backward copies the coefficients alone and runs the reverse kernels on
    the copy (``a_copy``), their finish writing grad_x, grad_zi and grad_a itself, grad_a and its
    past outputs as coalesced rows (GRAD_A_ROWS), rather than the forward scan on reversed copies
    of grad_y and a followed by ``_adjoint_outputs``: a launch and a zero fill fewer, and no grad_y
    copy or lam round trip (sm_90 model, Triton 3.6, forward+backward at B=16, T=65536, M=2: 106
    -> 90 bytes a sample, 52.7 -> 44.7 us, 3.43 -> 2.90x the memory floor). Needs the finish's
    rows (real inputs, see uses_rows) and M a power of two up to FUSED_ADJOINT_MAX_ORDER, where
    the body's [M, 8] grad_a tile and its past outputs stay in registers (at M=4 the finish holds
    255 and spills 24-32 bytes of stack, 80-96 before 6851bb4: sm_90, Triton 3.6)."""
    return grad_a_fits_rows(M) and uses_rows("_finish", A_CONTIGUOUS, False, sms, M, False, forced=forced)


def _plan_reversed(grad_y, a, zi, grad_x, grad_zi, y, grad_a, sms, scratch, forced):
    """The backward over L = T + M steps of reversed time with the coefficients copied into rows
    in step order (triton_adjoint). Short orders (:func:`fuses_adjoint`): the reverse kernels on
    that copy, which read grad_y and write grad_x, grad_zi and grad_a in place. Otherwise the
    forward scan on reversed rows of grad_y and the copy, from rest, and lam read back into grad_x,
    grad_zi and grad_a."""
    B, T = grad_y.shape
    rows_a, M = a.shape[0], a.shape[-1]
    L = T + M
    block = triton_adjoint.block_steps(M)
    b = scratch.empty((rows_a, L, M), a.dtype, a.device)
    sa_row, sa_time, sa_tap = _coefficient_strides(a)
    n_in, n_out = cdiv(L, block), cdiv(T, block)
    common = dict(M=M, M_PAD=next_power_of_2(M), BLOCK=block, **_COMPILE)
    if fuses_adjoint(M, sms, forced):
        launches = [Launch(triton_adjoint._reversed_inputs, rows_a * n_in,
                           (grad_y, a, grad_y, b, T, L, n_in, rows_a, sa_row, sa_time, sa_tap),
                           dict(INPUT=False, **common), 4, 0, 0)]
        more, finalize = plan(grad_y, b, zi, grad_x, reverse=True, tail=grad_zi, y=y, grad_a=grad_a, sms=sms,
                              scratch=scratch, a_copy=True)
        return launches + more, finalize
    g = scratch.empty((B, L), grad_y.dtype, grad_y.device)
    # lam in float32 for 16-bit inputs, so that grad_a = -lam y is formed from lam unrounded
    lam = scratch.empty((B, L), torch.float32 if grad_y.element_size() < 4 else grad_y.dtype, grad_y.device)
    rest = scratch.zeros(zi.shape, zi.dtype, zi.device)
    launches = [Launch(triton_adjoint._reversed_inputs, B * n_in,
                       (grad_y, a, g, b, T, L, n_in, rows_a, sa_row, sa_time, sa_tap), dict(INPUT=True, **common),
                       4, 0, 0)]
    forward, finalize = plan(g, b, rest, lam, reverse=False, sms=sms, scratch=scratch)
    launches += forward
    launches.append(Launch(triton_adjoint._adjoint_outputs, B * n_out,
                           (lam, y, zi, grad_x, grad_zi, grad_a if grad_a is not None else lam, T, L, n_out),
                           dict(GRAD_A=grad_a is not None, **common), 4, 0, 0))
    return launches, finalize


class Scratch:
    """Allocates a plan's own tensors (maps, carries, the reversed backward's rows) and records how,
    in order, so that :func:`cached_plan` can allocate the same again for the next call."""

    def __init__(self):
        self.tensors: list[torch.Tensor] = []
        self.specs: list[tuple] = []

    def empty(self, size, dtype: torch.dtype, device: torch.device) -> torch.Tensor:
        return self._record(torch.empty, tuple(size), dtype, device)

    def zeros(self, size, dtype: torch.dtype, device: torch.device) -> torch.Tensor:
        return self._record(torch.zeros, tuple(size), dtype, device)

    def _record(self, allocate, size, dtype, device) -> torch.Tensor:
        tensor = allocate(size, dtype=dtype, device=device)
        self.tensors.append(tensor)
        self.specs.append((allocate, size, dtype, device))
        return tensor


@dataclass(frozen=True)
class _Template:
    """A plan's launches with their tensor arguments as slots: ("input", i) of the pass's tensors,
    ("scratch", j) of its Scratch's allocations; other arguments ("value", v)."""

    launches: tuple[Launch, ...]
    scratch: tuple  # Scratch.specs


_PLANS: OrderedDict[tuple, _Template] = OrderedDict()  # least recently used first
_PLANS_LOCK = threading.Lock()
_plans_generation = 0  # bumped by every patch: a plan made before one is not stored after it
PLAN_CACHE_SIZE = 256  # signatures kept; a training run with random lengths keeps its most recent ones
# Opt-in until a GPU has run it (ALLPOLE_TRITON_DIRECT_LAUNCH=1, read at import): a cached plan's
# replays launch the kernels the JIT function compiled for them (Launch._run_compiled), not through
# it. Its per-launch Python took 34-56 us of the 1.35-1.42 ms a forward+backward at M=2 spent on the
# H200's host (host_times.csv, 2026-11-27), where the GPU needed about as long. Only on NVIDIA
# GPUs and the Triton versions whose binding it was checked against (3.6, 3.9: every parameter,
# constexprs included, goes to the launcher; before 3.3 only the others did), and not on ROCm,
# whose Triton also specialises a tensor on its storage's size (buffer loads).
DIRECT_LAUNCH = (os.environ.get("ALLPOLE_TRITON_DIRECT_LAUNCH", "") == "1" and _VERSION >= (3, 6)
                 and torch.version.hip is None)


def _forget_plans() -> None:
    global _plans_generation
    with _PLANS_LOCK:
        _PLANS.clear()
        _plans_generation += 1


class _PlansForgetPatches(ModuleType):
    """The class of this module and of triton_adjoint: setting or deleting any of their attributes
    (monkeypatch.setattr of a plan helper or constant, as the tests do) empties the plan cache, so
    that no plan outlives what it was made of."""

    def __setattr__(self, name, value):
        super().__setattr__(name, value)
        _forget_plans()

    def __delattr__(self, name):
        super().__delattr__(name)
        _forget_plans()


for _module in (sys.modules[__name__], triton_adjoint):
    _module.__class__ = _PlansForgetPatches


def _template(launches, inputs, scratch: Scratch) -> _Template | None:
    """``launches`` with their tensors as slots, or None where a tensor is neither one of ``inputs``
    nor one of ``scratch``'s (a view made inside the plan: complex planes)."""
    slots = {id(t): ("input", i) for i, t in enumerate(inputs) if t is not None}
    slots.update({id(t): ("scratch", j) for j, t in enumerate(scratch.tensors)})
    kept = []
    for launch in launches:
        if any(isinstance(arg, torch.Tensor) and id(arg) not in slots for arg in launch.args):
            return None
        args = tuple(slots[id(arg)] if isinstance(arg, torch.Tensor) else ("value", arg) for arg in launch.args)
        tensors = tuple(k for k, (kind, _) in enumerate(args) if kind != "value")
        compiled = CompiledKernels.of(launch.kernel, args, launch.constexprs, tensors) if DIRECT_LAUNCH else None
        kept.append(Launch(launch.kernel, launch.grid, args, MappingProxyType(dict(launch.constexprs)),
                           launch.num_warps, launch.lanes, launch.steps, compiled))
    return _Template(tuple(kept), tuple(scratch.specs))


_PLAIN_TENSORS = (torch.Tensor, torch.nn.Parameter)


def _describe(t: torch.Tensor | None):
    return None if t is None else (t.shape, t.stride(), t.dtype, t.device)


def cached_plan(u, a, zi, out, *, reverse, tail=None, y=None, grad_a=None, sms=None):
    """:func:`plan`, kept per pass signature (the tensors' shapes, strides, dtypes and devices, the
    pass, the GPU, ALLPOLE_TRITON_LAUNCH, which arguments are one tensor). The plans of a
    forward+backward cost 0.22-0.26 ms of host time on the H200's host (host_times.csv, 2026-11-27),
    nearly what its six launches cost; a replay allocates the scratch again and fills in the
    tensors. Passes with a finishing step (constant coefficients' grad_a) and complex ones (their
    planes are views made in the plan) are planned every time, as are tensor subclasses other than
    parameters (fake tensors under torch.compile)."""
    inputs = (u, a, zi, out, tail, y, grad_a)
    if u.is_complex() or any(t is not None and type(t) not in _PLAIN_TENSORS for t in inputs):
        return plan(u, a, zi, out, reverse=reverse, tail=tail, y=y, grad_a=grad_a, sms=sms)
    ids = [id(t) for t in inputs]
    aliases = tuple(ids.index(i) for i in ids)  # which arguments are one tensor (placeholders in a template)
    key = (reverse, sms, os.environ.get("ALLPOLE_TRITON_LAUNCH", ""), aliases, *map(_describe, inputs))
    with _PLANS_LOCK:
        template = _PLANS.get(key)
        if template is not None:
            _PLANS.move_to_end(key)
        generation = _plans_generation
    if template is None:
        scratch = Scratch()
        launches, finalize = plan(u, a, zi, out, reverse=reverse, tail=tail, y=y, grad_a=grad_a, sms=sms,
                                  scratch=scratch)
        if finalize is NOTHING_TO_FINISH and (template := _template(launches, inputs, scratch)) is not None:
            with _PLANS_LOCK:
                if generation == _plans_generation:  # else a patch came while planning
                    _PLANS[key] = template
                    while len(_PLANS) > max(PLAN_CACHE_SIZE, 0):
                        _PLANS.popitem(last=False)
        return launches, finalize
    tensors = {"input": inputs, "scratch": [allocate(size, dtype=dtype, device=device)
                                            for allocate, size, dtype, device in template.scratch]}
    return [Launch(launch.kernel, launch.grid,
                   tuple(tensors[kind][i] if kind != "value" else i for kind, i in launch.args),
                   launch.constexprs, launch.num_warps, launch.lanes, launch.steps, launch.compiled)
            for launch in template.launches], NOTHING_TO_FINISH


def _scan(u, a, zi, out, *, reverse, tail=None, y=None, grad_a=None, launch=None):
    """Run one pass. ``launch`` wraps each kernel before it is launched (``torch.library.wrap_triton``
    under the CUDA custom op)."""
    launches, finalize = cached_plan(u, a, zi, out, reverse=reverse, tail=tail, y=y, grad_a=grad_a, sms=_sms(u.device))
    for item in launches:
        item.run(launch)
    finalize()


def allpole_forward(x: torch.Tensor, a: torch.Tensor, zi: torch.Tensor, y: torch.Tensor, launch=None) -> None:
    """Write y (B, T) from x (B, T), a (Ba, Ta, M) (any strides), zi (B, M); one dtype."""
    with torch.cuda.device(x.device) if x.device.type == "cuda" else _null():
        _scan(x, a, zi, y, reverse=False, launch=launch)


def allpole_backward(grad_y, a, y, zi, grad_x, grad_zi, grad_a, need_grad_a: bool, launch=None) -> None:
    """Write grad_x (B, T), grad_zi (B, M) and, if asked, grad_a (B, Ta, M)."""
    with torch.cuda.device(grad_y.device) if grad_y.device.type == "cuda" else _null():
        _scan(grad_y, a, zi, grad_x, reverse=True, tail=grad_zi, y=y, grad_a=grad_a if need_grad_a else None, launch=launch)


class _null:
    def __enter__(self):
        return None

    def __exit__(self, *exc):
        return False
