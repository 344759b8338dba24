"""Triton kernels: the dense linear recurrence ``h[n] = A[n] @ h[n-1] + u[n]`` as a chunked scan.

Every lane (GPU thread) runs one sequential recurrence with its M-vector state in registers, along
an in-thread tile axis, so a step is an M x M matrix-vector product inside the thread: no
cross-lane traffic. A step streams A[n] in column by column, adding column j times state entry j
(``triton_tiles.select``: a register, not a reduction) into two partial sums, so a lane holds its
state, the sums and one column, never the M x M tile (which at M = 16 spilled 1-7 KB per lane). Time is cut
into chunks only when the rows alone cannot fill the GPU; then a pass is three launches of
``_dense_scan``:

1. summary: for each (row, chunk) but a row's last, M+1 lanes run the chunk in float64: M homogeneous recursions
   from the unit states (the columns of the chunk's transition product Phi) and the driven one
   from rest (its zero-state response z). Phi is a product of up to thousands of matrices, and
   composing it in float32 cancels where poles sit near the unit circle, as in the all-pole scan.
2. carry: one lane per row walks its chunks, s <- Phi s + z, in float64, writing the state that
   enters each chunk. A dense map composes in M^3, so this walk is sequential: a row gets at most
   about sqrt(T) chunks, which balances the walk's length against the finish's.
3. finish: one lane per (row, chunk) re-runs the recursion from its true incoming state in the
   input's precision and writes h.

With one chunk per row only the finish runs. Complex recurrences run as real ones of twice the
order, and the adjoint as this forward recurrence in reversed time (allpole_triton.recurrence).
Real orders up to ``MAX_ORDER``. The strides inside a step (A's two matrix axes, u's state axis)
are compile-time constants, so every load of a step is one instruction at an immediate offset from
the step's base, unpredicated: a lane past its chunk's end re-reads its last step (and keeps its
state), padding entries of orders that are not powers of two read entry M-1 (and are never used).
Offsets are int64; grids are 1-D.
"""
from __future__ import annotations

import math

import torch
import triton
import triton.language as tl

from .triton_scan import _COMPILE, LANES_PER_SM, Launch, _null, _sms, cdiv, forced_launch, next_power_of_2, warps_for
from .triton_tiles import load_tile, select, store_tile

# Lengths and strides change from call to call: no == 1 / % 16 specialisation (one variant per dtype
# and order, whatever T).
_LENGTHS = ["steps", "chunk_len", "n_chunks", "n_lanes", "sa_row", "sa_time", "su_first", "su_row", "su_time",
            "so_row", "so_time"]
# Complex order 8 runs as real order 16; a step body is M loads and M multiply-adds per state entry,
# unrolled (compile time grows as M^2).
MAX_ORDER = 16
STEPS_PER_ITERATION = 2  # steps per unrolled loop body: the next step's loads issue during this one's sums
CHUNK_MIN_GPU = 64
CHUNK_INTERPRET = 8  # short chunks, so that small tests cross chunk boundaries
BLOCK_GPU = 128
BLOCK_INTERPRET = 128


@triton.jit
def _advance(h, a_ptr, a_at, u_ptr, u_at, live, component, column, M: tl.constexpr, ACC: tl.constexpr,
             SA_I: tl.constexpr, SA_J: tl.constexpr, SU_I: tl.constexpr, SUMMARY: tl.constexpr):
    """One step of every lane: ``A[n] @ h + u[n]``; in the summary u drives only the lanes of
    column M. A lane that is not ``live`` keeps its state. ``a_at``/``u_at`` ([BLOCK]) locate the
    step's A and u, ``component`` ([M_PAD, 1, 1], decreasing: see the stores) the state entries."""
    entry = tl.minimum(component, M - 1)  # static: padding entries read entry M-1
    u, _ = load_tile(u_ptr, u_at[None, None, :] + entry * SU_I, None, False)
    if SUMMARY:
        u = tl.where((column == M)[None, None, :], u, 0.0)
    even = u.to(ACC)
    odd = tl.zeros_like(even)
    for j in tl.static_range(M):
        a, _ = load_tile(a_ptr, a_at[None, None, :] + (entry * SA_I + j * SA_J), None, False)
        if j % 2 == 0:
            even += a.to(ACC) * select(h, component == j, 0)
        else:
            odd += a.to(ACC) * select(h, component == j, 0)
    return tl.where(live[None, None, :], even + odd, h)


@triton.jit
def _store_state(out_ptr, at, component, stride, h, live, M: tl.constexpr):
    """State entry i of every live lane to ``out[at + i * stride]``."""
    store_tile(out_ptr, at[None, None, :] + component * stride, h.to(out_ptr.dtype.element_ty), h,
               (component < M) & live[None, None, :], False)


@triton.jit(do_not_specialize=_LENGTHS)
def _dense_scan(
    a_ptr, u_ptr, h0_ptr, carry_ptr, out_ptr, steps, chunk_len, n_chunks, n_lanes,
    sa_row, sa_time, su_first, su_row, su_time, so_row, so_time,
    M: tl.constexpr, M_PAD: tl.constexpr, SUMMARY: tl.constexpr, ACC: tl.constexpr,
    SA_I: tl.constexpr, SA_J: tl.constexpr, SU_I: tl.constexpr, U: tl.constexpr, BLOCK: tl.constexpr,
):
    """Lanes are (row, chunk) pairs, times M+1 columns for the summary. The summary writes each
    chunk's map [Phi | z] to ``out (pairs, M, M+1)``; otherwise every step's state goes to
    ``out[row * so_row + n * so_time + i]``, from the incoming state ``h0[row]`` (first chunk) or
    ``carry[row, chunk - 1]`` (what the carry wrote for the chunk before; ``carry (R, n_chunks - 1, M)``).
    Entry (i, j) of a step's A is at ``i * SA_I + j * SA_J``, entry i of its u at ``i * SU_I``."""
    lane = tl.program_id(0).to(tl.int64) * BLOCK + tl.arange(0, BLOCK)
    valid = lane < n_lanes
    lane = tl.where(valid, lane, 0)  # padding lanes read lane 0's inputs and store nothing
    columns = M + 1 if SUMMARY else 1
    column = (columns - 1) - lane % columns  # decreasing along the lanes: see the summary's store
    pair = lane // columns
    row = pair // n_chunks
    chunk = pair % n_chunks
    start = chunk * chunk_len
    last = tl.minimum(steps - start, chunk_len) - 1  # the chunk's last step (a chunk is never empty)
    remaining = tl.where(valid, last + 1, 0)
    # the state entry each tile entry holds, in decreasing order: Triton then sees no contiguity
    # along the in-thread axis and keeps it inside the thread (stores of M contiguous values per
    # lane would otherwise spread over the warp and go through shared memory)
    component = (M_PAD - 1 - tl.arange(0, M_PAD)).to(tl.int64)[:, None, None]
    if SUMMARY:  # unit states; the driven lane (column M) starts from rest
        h = ((component == column[None, None, :]) & (component < M)).to(ACC)
    else:
        first = (chunk == 0)[None, None, :]
        h0, _ = load_tile(h0_ptr, row[None, None, :] * M + component, (component < M) & (valid[None, None, :] & first), False)
        carried, _ = load_tile(carry_ptr, (pair - row - 1)[None, None, :] * M + component,  # carry[row, chunk - 1]
                               (component < M) & (valid[None, None, :] & ~first), False)
        h = tl.where(first, h0.to(ACC), carried.to(ACC))
    a_row = row * sa_row
    u_row = su_first + row * su_row
    o_row = row * so_row
    for t in range(0, chunk_len, U):
        for k in tl.static_range(U):
            live = t + k < remaining
            n = start + tl.minimum(t + k, last)  # past the end: the last step again (in bounds)
            h = _advance(h, a_ptr, a_row + n * sa_time, u_ptr, u_row + n * su_time, live, component, column,
                         M, ACC, SA_I, SA_J, SU_I, SUMMARY)
            if not SUMMARY:
                _store_state(out_ptr, o_row + n * so_time, component, 1, h, live, M)
    if SUMMARY:  # column `column` of the chunk's map (increasing along the lanes, these stores of
        # odd orders would be contiguous: Triton vectorised them and spread the state over two warps)
        _store_state(out_ptr, pair * (M * (M + 1)) + column, component, M + 1, h, valid, M)


def chunk_length(rows: int, T: int, sms: int | None) -> int:
    """Samples per chunk (``>= T``: one chunk per row). On a GPU chunks exist only to make lanes:
    as long as the GPU still holds ``LANES_PER_SM`` lanes per SM without them, down to a floor, and
    no shorter than sqrt(T) (the carry walks a row's chunks in sequence, the finish a chunk's steps).
    ``ALLPOLE_TRITON_LAUNCH="chunk=N"`` forces it on any device."""
    if sms is None:
        chunk = CHUNK_INTERPRET
    else:
        chunk = max(rows * T // (LANES_PER_SM * sms), CHUNK_MIN_GPU, math.isqrt(T))
    chunk = min(forced_launch().get("chunk", chunk), max(T, 1))  # one chunk: no masked steps past T
    return STEPS_PER_ITERATION * math.ceil(chunk / STEPS_PER_ITERATION)


def lanes_per_program(lanes: int, sms: int | None) -> int:
    """Lanes per program: whole warps, one per program when four-warp programs would leave SMs idle."""
    if sms is None:
        return BLOCK_INTERPRET
    return BLOCK_GPU if lanes >= BLOCK_GPU * sms else 32


def plan(A: torch.Tensor, u: torch.Tensor, h0: torch.Tensor, h: torch.Tensor, sms: int | None = None) -> list[Launch]:
    """The launches of a forward pass over real rows: ``A (Ra, Ta, M, M)`` (Ra in {1, R}, Ta in
    {1, T}; its matrices row- or column-major, else copied so), ``u``/``h (R, T, M)`` and
    ``h0 (R, M)`` contiguous. Tensors may live on the meta device (how the compile check and the
    model plan without a GPU)."""
    R, T, M = u.shape
    if A.stride()[2:] not in ((M, 1), (1, M)) and M > 1:  # the matrix strides are compile-time constants
        # rows or time broadcast with stride 0 stay broadcast: only their first matrix is copied
        A = A[: 1 if A.stride(0) == 0 else None, : 1 if A.stride(1) == 0 else None].contiguous()
    chunk = chunk_length(R, T, sms)
    n_chunks = cdiv(T, chunk)
    sa_row, sa_time = (s if n > 1 else 0 for s, n in zip(A.stride()[:2], A.shape[:2]))
    sa_i, sa_j = A.stride()[2:] if M > 1 else (1, 1)
    compute = tl.float64 if u.dtype == torch.float64 else tl.float32
    common = dict(M=M, M_PAD=next_power_of_2(M), U=STEPS_PER_ITERATION, **_COMPILE)

    def launch(args: tuple, lanes: int, steps: int, summary: bool, acc, strides: tuple[int, int, int]) -> Launch:
        block = lanes_per_program(lanes, sms)
        constexprs = dict(SUMMARY=summary, ACC=acc, BLOCK=block, SA_I=strides[0], SA_J=strides[1], SU_I=strides[2], **common)
        return Launch(_dense_scan, cdiv(lanes, block), args, constexprs, warps_for(block), lanes, steps)

    launches = []
    carry = h0
    if n_chunks > 1:
        # maps of every chunk but a row's last (the carry never needs the state leaving a row)
        mapped = n_chunks - 1
        maps = torch.empty(R * mapped, M, M + 1, dtype=torch.float64, device=u.device)
        lanes = R * mapped * (M + 1)
        launches.append(launch(
            (A, u, h0, h0, maps, T, chunk, mapped, lanes, sa_row, sa_time, 0, T * M, M, 0, 0),
            lanes, chunk, True, tl.float64, (sa_i, sa_j, 1),
        ))
        carry = torch.empty(R, mapped, M, dtype=torch.float64, device=u.device)
        # the carry reads each map as a step's A and its z column (entries M, 2M+1, ...) as its u
        stride = M * (M + 1)
        launches.append(launch(
            (maps, maps, h0, h0, carry, mapped, mapped, 1, R, mapped * stride, stride, M, mapped * stride, stride,
             mapped * M, M),
            R, mapped, False, tl.float64, (M + 1, 1, M + 1),
        ))
    launches.append(launch(
        (A, u, h0, carry, h, T, chunk, n_chunks, R * n_chunks, sa_row, sa_time, 0, T * M, M, T * M, M),
        R * n_chunks, chunk, False, compute, (sa_i, sa_j, 1),
    ))
    return launches


def dense_forward(A: torch.Tensor, u: torch.Tensor, h0: torch.Tensor, h: torch.Tensor, launch=None) -> None:
    """Write ``h (R, T, M)`` from real ``A (Ra, Ta, M, M)``, ``u (R, T, M)``, ``h0 (R, M)`` (see
    :func:`plan`). ``launch`` wraps each kernel (``torch.library.wrap_triton`` under a custom op)."""
    with torch.cuda.device(u.device) if u.device.type == "cuda" else _null():
        for item in plan(A, u, h0, h, sms=_sms(u.device)):
            item.run(launch)
