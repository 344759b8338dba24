"""Triton kernels: the all-pole recursion as a chunked companion-matrix scan.

The state s[n] = (y[n], ..., y[n-M+1]) obeys s[n] = C[n] s[n-1] + e1 u[n]. Time is cut into
chunks of ``CHUNK`` samples and evaluated in three launches:

1. ``_chunk_summary``   grid (rows, chunks): from a zero state, each chunk's end state z_c and
   its transition Phi_c = C[end]...C[start], built by running M+1 recursions side by side
   (the driven one as a vector, the M homogeneous ones from unit states as an M x M tile):
   O(M^2) per sample, never a (B, T, M, M) tensor.
2. ``_carry_scan``      grid (rows, groups): s_c = Phi_c s_{c-1} + z_c across chunks, from zi.
   With many chunks this is hierarchical: ``_carry_compose`` folds groups of chunks into one
   (w, Psi) pair each, the group carries are scanned the same way, and the groups are then
   finished in parallel, so long sequences with few rows keep the GPU busy.
3. ``_chunk_finish``    grid (rows, chunks): re-run each chunk from its true incoming state and
   write the outputs.

For M = 1 phases 1 and 3 are ``_first_order_summary`` / ``_first_order_finish``: each chunk is one
``tl.associative_scan`` over affine maps s -> -a[n] s + x[n] instead of a sequential loop.

The backward (adjoint) is the same recursion in reversed time m = T-1-n over T+M steps, with
coefficients conj(a[n+i, i-1]) gathered by index inside the kernels (no flipped, padded or shifted
copies), grad_zi read off the last M steps, and grad_a = -lam[n] conj(y[n-i]) fused into phase 3.

The M most recent outputs live in a circular register buffer (slot t mod M holds y[t]), so a step
is a masked dot product and a ``where`` write; the coefficient vector is gathered in the matching
rotated order. Complex tensors run as real and imaginary planes; float16/bfloat16 are loaded as
they are and accumulated in float32 (chunk summaries and carries too). Offsets are int64.
"""
from __future__ import annotations

import torch
import triton
import triton.language as tl

# Launch shapes (see _launch_shape): small chunks keep the interpreter quick, GPUs want longer ones.
CHUNK_GPU, CHUNK_MIN_GPU = 256, 64
FIRST_ORDER_CHUNK_GPU, FIRST_ORDER_CHUNK_MIN_GPU = 1024, 256
PROGRAMS_PER_SM = 8
CARRY_GROUP_GPU = 16
LOOP_STAGES_GPU = 1
CHUNK_INTERPRET = 16
CARRY_GROUP_INTERPRET = 2
# Fused multiply-adds round once instead of twice; pinned because Triton 3.10 flips the default.
_COMPILE = {"enable_fp_fusion": True}


@triton.jit
def _load(ptr, offset, mask, IS_COMPLEX: tl.constexpr):
    """(re, im) of element ``offset``; complex tensors are passed as their real view."""
    if IS_COMPLEX:
        re = tl.load(ptr + 2 * offset, mask=mask, other=0.0)
        im = tl.load(ptr + 2 * offset + 1, mask=mask, other=0.0)
    else:
        re = tl.load(ptr + offset, mask=mask, other=0.0)
        im = tl.zeros_like(re)
    return re, im


@triton.jit
def _store(ptr, offset, re, im, mask, IS_COMPLEX: tl.constexpr):
    if IS_COMPLEX:
        tl.store(ptr + 2 * offset, re, mask=mask)
        tl.store(ptr + 2 * offset + 1, im, mask=mask)
    else:
        tl.store(ptr + offset, re, mask=mask)


@triton.jit
def _mul(ar, ai, br, bi, IS_COMPLEX: tl.constexpr):
    if IS_COMPLEX:
        return ar * br - ai * bi, ar * bi + ai * br
    else:
        return ar * br, ai


@triton.jit
def _step_input(u_ptr, row, m, T, IS_COMPLEX: tl.constexpr, REVERSE: tl.constexpr):
    """Drive u[m]: x[m] forward; grad_y[T-1-m] in reversed time (zero for the M grad_zi steps)."""
    t = T - 1 - m if REVERSE else m
    return _load(u_ptr, row * T + t, m < T, IS_COMPLEX)


@triton.jit
def _step_coefficients(
    a_ptr, a_row, m, pos, slot, T, Ta, M, time_step,
    IS_COMPLEX: tl.constexpr, REVERSE: tl.constexpr,
):
    """Coefficients at step m in the circular buffer's order: slot p multiplies y[t], t = p mod M,
    which is tap i = ((m - 1 - p) mod M) + 1 of step m. ``pos`` = m mod M is kept by the caller
    as a counter, so the loop does no 64-bit remainders."""
    lag = pos - slot
    tap = tl.where(lag >= 1, lag, lag + M)
    # adjoint tap i at reversed time m reads conj(a[n+i, i-1]) with n = T-1-m
    t = T - 1 - m + tap if REVERSE else tap * 0 + m
    in_range = (slot < M) & (t >= 0) & (t < T)
    offset = (a_row * Ta + t * time_step) * M + tap - 1
    re, im = _load(a_ptr, offset, in_range, IS_COMPLEX)
    if REVERSE:
        im = -im
    return re, im


@triton.jit
def _recursion_step(u_re, u_im, c_re, c_im, h_re, h_im, slot, pos, IS_COMPLEX: tl.constexpr):
    """y = u - sum_i c_i y_past on the circular buffer h: returns (y, h with y written to slot pos)."""
    p_re, p_im = _mul(c_re, c_im, h_re, h_im, IS_COMPLEX)
    new_re = u_re - tl.sum(p_re, axis=0)
    new_im = u_im - tl.sum(p_im, axis=0)
    h_re = tl.where(slot == pos, new_re, h_re)
    if IS_COMPLEX:
        h_im = tl.where(slot == pos, new_im, h_im)
    return new_re, new_im, h_re, h_im


@triton.jit
def _apply_transition(phi_ptr, base, M, i, j, s_re, s_im, z_re, z_im, IS_COMPLEX: tl.constexpr):
    """Phi_c s + z_c for chunk ``base``; also returns the loaded Phi_c tile."""
    f_re, f_im = _load(phi_ptr, (base * M + i) * M + j, (i < M) & (j < M), IS_COMPLEX)
    p_re, p_im = _mul(f_re, f_im, s_re[None, :], s_im[None, :], IS_COMPLEX)
    out_re = tl.sum(p_re, axis=1) + z_re
    out_im = tl.sum(p_im, axis=1) + z_im if IS_COMPLEX else s_im
    return out_re, out_im, f_re, f_im


@triton.jit
def _chunk_summary(
    u_ptr, a_ptr, z_ptr, phi_ptr, T, steps, Ta, M, time_step, a_row_step, n_chunks,
    CHUNK: tl.constexpr, M_PAD: tl.constexpr, STAGES: tl.constexpr,
    IS_COMPLEX: tl.constexpr, REVERSE: tl.constexpr,
):
    row = tl.program_id(0).to(tl.int64)
    chunk = tl.program_id(1).to(tl.int64)
    a_row = row * a_row_step
    start = chunk * CHUNK
    stop = tl.minimum(start + CHUNK, steps)
    slot = tl.arange(0, M_PAD)
    lane = tl.arange(0, M_PAD)[:, None]
    acc = z_ptr.dtype.element_ty  # float32 for 16-bit inputs
    # d: the driven recursion from a zero state. h: lane j is the homogeneous recursion from unit
    # state e_j (y[start-1-j] = 1), so its end state is column j of Phi_c.
    d_re = tl.zeros([M_PAD], dtype=acc)
    d_im = tl.zeros([M_PAD], dtype=acc)
    unit_slot = (start - 1 - lane + M) % M
    h_re = tl.where((lane < M) & (slot[None, :] == unit_slot), 1.0, 0.0).to(acc)
    h_im = tl.zeros_like(h_re)
    pos = (start % M).to(tl.int32)
    for m in tl.range(start, stop, num_stages=STAGES):
        u_re, u_im = _step_input(u_ptr, row, m, T, IS_COMPLEX, REVERSE)
        c_re, c_im = _step_coefficients(a_ptr, a_row, m, pos, slot, T, Ta, M, time_step, IS_COMPLEX, REVERSE)
        _, _, d_re, d_im = _recursion_step(u_re, u_im, c_re, c_im, d_re, d_im, slot, pos, IS_COMPLEX)
        q_re, q_im = _mul(c_re[None, :], c_im[None, :], h_re, h_im, IS_COMPLEX)
        h_re = tl.where(slot[None, :] == pos, -tl.sum(q_re, axis=1)[:, None], h_re)
        if IS_COMPLEX:
            h_im = tl.where(slot[None, :] == pos, -tl.sum(q_im, axis=1)[:, None], h_im)
        pos = tl.where(pos == M - 1, 0, pos + 1)
    # state component k = y[stop-1-k] sits in slot (stop-1-k) mod M
    k = (stop - 1 - slot + M) % M
    base = row * n_chunks + chunk
    keep = slot < M
    _store(z_ptr, base * M + k, d_re, d_im, keep, IS_COMPLEX)
    _store(phi_ptr, (base * M + k[None, :]) * M + lane, h_re, h_im, keep[None, :] & (lane < M), IS_COMPLEX)


@triton.jit
def _carry_scan(
    z_ptr, phi_ptr, start_ptr, carry_ptr, M, n_chunks, group,
    M_PAD: tl.constexpr, IS_COMPLEX: tl.constexpr,
):
    """carry[c] = s_{c-1} for the ``group`` chunks of program (row, g), from start[row, g]."""
    row = tl.program_id(0).to(tl.int64)
    g = tl.program_id(1).to(tl.int64)
    n_groups = tl.num_programs(1).to(tl.int64)
    i = tl.arange(0, M_PAD)[:, None].to(tl.int64)
    j = tl.arange(0, M_PAD)[None, :].to(tl.int64)
    keep = tl.arange(0, M_PAD) < M
    s_re, s_im = _load(start_ptr, (row * n_groups + g) * M + tl.arange(0, M_PAD), keep, IS_COMPLEX)
    s_re = s_re.to(carry_ptr.dtype.element_ty)  # zi may be 16-bit; carries are float32 then
    s_im = s_im.to(carry_ptr.dtype.element_ty)
    first = g * group
    for c in range(first, tl.minimum(first + group, n_chunks)):
        base = row * n_chunks + c
        _store(carry_ptr, base * M + tl.arange(0, M_PAD), s_re, s_im, keep, IS_COMPLEX)
        z_re, z_im = _load(z_ptr, base * M + tl.arange(0, M_PAD), keep, IS_COMPLEX)
        s_re, s_im, _, _ = _apply_transition(phi_ptr, base, M, i, j, s_re, s_im, z_re, z_im, IS_COMPLEX)


@triton.jit
def _carry_compose(
    z_ptr, phi_ptr, w_ptr, psi_ptr, M, n_chunks, group,
    M_PAD: tl.constexpr, IS_COMPLEX: tl.constexpr,
):
    """One level up the carry hierarchy: for the ``group`` chunks of program (row, g), the
    zero-state end state w and the transition Psi = Phi_last ... Phi_first (M^3 per chunk,
    against M^2 * CHUNK for the chunk itself).

    Up to M_PAD = 16 the product is one broadcast multiply and a single reduction (one short
    dependency chain per chunk); above, one column k of Phi at a time, so only M x M tiles sit in
    registers.
    """
    row = tl.program_id(0).to(tl.int64)
    g = tl.program_id(1).to(tl.int64)
    n_groups = tl.num_programs(1).to(tl.int64)
    r = tl.arange(0, M_PAD).to(tl.int64)
    i = r[:, None]
    j = r[None, :]
    keep = r < M
    acc = w_ptr.dtype.element_ty
    w_re = tl.zeros([M_PAD], dtype=acc)
    w_im = tl.zeros([M_PAD], dtype=acc)
    psi_re = tl.where((i == j) & (i < M), 1.0, 0.0).to(acc)
    psi_im = tl.zeros_like(psi_re)
    first = g * group
    for c in range(first, tl.minimum(first + group, n_chunks)):
        base = row * n_chunks + c
        z_re, z_im = _load(z_ptr, base * M + r, keep, IS_COMPLEX)
        if M_PAD <= 16:
            w_re, w_im, f_re, f_im = _apply_transition(phi_ptr, base, M, i, j, w_re, w_im, z_re, z_im, IS_COMPLEX)
            q_re, q_im = _mul(f_re[:, :, None], f_im[:, :, None], psi_re[None, :, :], psi_im[None, :, :], IS_COMPLEX)
            psi_re = tl.sum(q_re, axis=1)
            if IS_COMPLEX:
                psi_im = tl.sum(q_im, axis=1)
        else:
            next_w_re, next_w_im = z_re, z_im
            next_re = tl.zeros_like(psi_re)
            next_im = tl.zeros_like(psi_re)
            for k in range(M):
                col_re, col_im = _load(phi_ptr, (base * M + r) * M + k, keep, IS_COMPLEX)
                wk_re = tl.sum(tl.where(r == k, w_re, 0.0), axis=0)
                wk_im = tl.sum(tl.where(r == k, w_im, 0.0), axis=0)
                q_re, q_im = _mul(col_re, col_im, wk_re, wk_im, IS_COMPLEX)
                next_w_re += q_re
                next_w_im += q_im
                row_re = tl.sum(tl.where(i == k, psi_re, 0.0), axis=0)[None, :]
                row_im = tl.sum(tl.where(i == k, psi_im, 0.0), axis=0)[None, :]
                q_re, q_im = _mul(col_re[:, None], col_im[:, None], row_re, row_im, IS_COMPLEX)
                next_re += q_re
                next_im += q_im
            w_re, w_im, psi_re, psi_im = next_w_re, next_w_im, next_re, next_im
    out = row * n_groups + g
    _store(w_ptr, out * M + r, w_re, w_im, keep, IS_COMPLEX)
    _store(psi_ptr, (out * M + i) * M + j, psi_re, psi_im, (i < M) & (j < M), IS_COMPLEX)


@triton.jit
def _chunk_finish(
    u_ptr, a_ptr, carry_ptr, out_ptr, tail_ptr, y_ptr, zi_ptr, grad_a_ptr,
    T, steps, Ta, M, time_step, a_row_step, n_chunks,
    CHUNK: tl.constexpr, M_PAD: tl.constexpr, STAGES: tl.constexpr, IS_COMPLEX: tl.constexpr,
    REVERSE: tl.constexpr, GRAD_A: tl.constexpr, GRAD_A_PER_SAMPLE: tl.constexpr,
):
    """Forward: out = y. Reverse: out = grad_x, tail = grad_zi and, with GRAD_A, grad_a (per
    sample, or per chunk partial sums when a is constant over time)."""
    row = tl.program_id(0).to(tl.int64)
    chunk = tl.program_id(1).to(tl.int64)
    a_row = row * a_row_step
    start = chunk * CHUNK
    stop = tl.minimum(start + CHUNK, steps)
    slot = tl.arange(0, M_PAD)
    keep = slot < M
    # incoming state component k = y[start-1-k] goes to slot (start-1-k) mod M
    k = (start - 1 - slot + M) % M
    h_re, h_im = _load(carry_ptr, (row * n_chunks + chunk) * M + k, keep, IS_COMPLEX)
    ga_re = tl.zeros_like(h_re)
    ga_im = tl.zeros_like(h_re)
    pos = (start % M).to(tl.int32)
    for m in tl.range(start, stop, num_stages=STAGES):
        u_re, u_im = _step_input(u_ptr, row, m, T, IS_COMPLEX, REVERSE)
        c_re, c_im = _step_coefficients(a_ptr, a_row, m, pos, slot, T, Ta, M, time_step, IS_COMPLEX, REVERSE)
        new_re, new_im, h_re, h_im = _recursion_step(u_re, u_im, c_re, c_im, h_re, h_im, slot, pos, IS_COMPLEX)
        pos = tl.where(pos == M - 1, 0, pos + 1)
        if REVERSE:
            n = T - 1 - m
            _store(out_ptr, row * T + n, new_re, new_im, n >= 0, IS_COMPLEX)
            _store(tail_ptr, row * M + (m - T), new_re, new_im, n < 0, IS_COMPLEX)
            if GRAD_A:
                # grad_a[n, i-1] = -lam[n] conj(y[n-i]); y[n-i] from zi when n < i
                tap = slot + 1
                past = n - tap
                live = keep & (past + tap >= 0)  # n >= 0, as a tensor mask
                from_y = live & (past >= 0)
                from_zi = live & (past < 0)
                y_re, y_im = _load(y_ptr, row * T + past, from_y, IS_COMPLEX)
                z_re, z_im = _load(zi_ptr, row * M + (-1 - past), from_zi, IS_COMPLEX)
                g_re, g_im = _mul(new_re, new_im, y_re + z_re, -(y_im + z_im), IS_COMPLEX)
                if GRAD_A_PER_SAMPLE:
                    _store(grad_a_ptr, (row * T + n) * M + slot, -g_re, -g_im, live, IS_COMPLEX)
                else:
                    ga_re -= g_re
                    ga_im -= g_im
        else:
            _store(out_ptr, row * T + m, new_re, new_im, m < T, IS_COMPLEX)
    if REVERSE and GRAD_A and not GRAD_A_PER_SAMPLE:
        _store(grad_a_ptr, (row * n_chunks + chunk) * M + slot, ga_re, ga_im, keep, IS_COMPLEX)


@triton.jit
def _compose_affine(a1, b1, a2, b2):
    """(a, b) is the map s -> a s + b; the result applies (a1, b1) first, then (a2, b2)."""
    return a2 * a1, a2 * b1 + b2


@triton.jit
def _compose_affine_complex(a1_re, a1_im, b1_re, b1_im, a2_re, a2_im, b2_re, b2_im):
    return (
        a2_re * a1_re - a2_im * a1_im,
        a2_re * a1_im + a2_im * a1_re,
        a2_re * b1_re - a2_im * b1_im + b2_re,
        a2_re * b1_im + a2_im * b1_re + b2_im,
    )


@triton.jit
def _first_order_prefix(
    u_ptr, a_ptr, acc_ptr, row, a_row, start, steps, T, Ta, time_step,
    CHUNK: tl.constexpr, IS_COMPLEX: tl.constexpr, REVERSE: tl.constexpr,
):
    """M = 1: the chunk's steps as affine maps s -> -c[m] s + u[m], prefix-composed with
    ``tl.associative_scan``. Reversed time is done by index arithmetic (``reverse=True`` has
    given wrong results upstream). Steps past the end are the identity, so the last prefix is
    the chunk's (transition, zero-state end state)."""
    m = start + tl.arange(0, CHUNK).to(tl.int64)
    live = m < steps
    acc = acc_ptr.dtype.element_ty
    u_re, u_im = _step_input(u_ptr, row, m, T, IS_COMPLEX, REVERSE)
    c_re, c_im = _step_coefficients(a_ptr, a_row, m, 0, 0, T, Ta, 1, time_step, IS_COMPLEX, REVERSE)
    f_re = tl.where(live, -c_re.to(acc), 1.0)
    f_im = -c_im.to(acc)
    u_re = u_re.to(acc)
    u_im = u_im.to(acc)
    if IS_COMPLEX:
        f_re, f_im, u_re, u_im = tl.associative_scan((f_re, f_im, u_re, u_im), 0, _compose_affine_complex)
    else:
        f_re, u_re = tl.associative_scan((f_re, u_re), 0, _compose_affine)
    return m, live, f_re, f_im, u_re, u_im


@triton.jit
def _last(v, m, start, CHUNK: tl.constexpr):
    return tl.sum(tl.where(m == start + CHUNK - 1, v, 0.0), axis=0)


@triton.jit
def _first_order_summary(
    u_ptr, a_ptr, z_ptr, phi_ptr, T, steps, Ta, M, time_step, a_row_step, n_chunks,
    CHUNK: tl.constexpr, M_PAD: tl.constexpr, STAGES: tl.constexpr,
    IS_COMPLEX: tl.constexpr, REVERSE: tl.constexpr,
):
    """``_chunk_summary`` for M = 1 (same arguments)."""
    row = tl.program_id(0).to(tl.int64)
    chunk = tl.program_id(1).to(tl.int64)
    start = chunk * CHUNK
    m, live, f_re, f_im, z_re, z_im = _first_order_prefix(
        u_ptr, a_ptr, z_ptr, row, row * a_row_step, start, steps, T, Ta, time_step, CHUNK, IS_COMPLEX, REVERSE,
    )
    base = row * n_chunks + chunk
    _store(z_ptr, base, _last(z_re, m, start, CHUNK), _last(z_im, m, start, CHUNK), True, IS_COMPLEX)
    _store(phi_ptr, base, _last(f_re, m, start, CHUNK), _last(f_im, m, start, CHUNK), True, IS_COMPLEX)


@triton.jit
def _first_order_finish(
    u_ptr, a_ptr, carry_ptr, out_ptr, tail_ptr, y_ptr, zi_ptr, grad_a_ptr,
    T, steps, Ta, M, time_step, a_row_step, n_chunks,
    CHUNK: tl.constexpr, M_PAD: tl.constexpr, STAGES: tl.constexpr, IS_COMPLEX: tl.constexpr,
    REVERSE: tl.constexpr, GRAD_A: tl.constexpr, GRAD_A_PER_SAMPLE: tl.constexpr,
):
    """``_chunk_finish`` for M = 1 (same arguments and outputs)."""
    row = tl.program_id(0).to(tl.int64)
    chunk = tl.program_id(1).to(tl.int64)
    start = chunk * CHUNK
    m, live, f_re, f_im, z_re, z_im = _first_order_prefix(
        u_ptr, a_ptr, carry_ptr, row, row * a_row_step, start, steps, T, Ta, time_step, CHUNK, IS_COMPLEX, REVERSE,
    )
    base = row * n_chunks + chunk
    s_re, s_im = _load(carry_ptr, base + m * 0, live, IS_COMPLEX)
    p_re, p_im = _mul(f_re, f_im, s_re, s_im, IS_COMPLEX)
    v_re = z_re + p_re
    v_im = z_im + p_im
    if REVERSE:
        n = T - 1 - m
        _store(out_ptr, row * T + n, v_re, v_im, live & (n >= 0), IS_COMPLEX)
        _store(tail_ptr, row + m * 0, v_re, v_im, live & (n < 0), IS_COMPLEX)
        if GRAD_A:
            # grad_a[n, 0] = -lam[n] conj(y[n-1]); y[-1] = zi[0]
            sample = live & (n >= 0)
            y_re, y_im = _load(y_ptr, row * T + n - 1, sample & (n >= 1), IS_COMPLEX)
            zi_re, zi_im = _load(zi_ptr, row + m * 0, sample & (n == 0), IS_COMPLEX)
            g_re, g_im = _mul(v_re, v_im, y_re + zi_re, -(y_im + zi_im), IS_COMPLEX)
            g_re = tl.where(sample, -g_re, 0.0)
            g_im = tl.where(sample, -g_im, 0.0)
            if GRAD_A_PER_SAMPLE:
                _store(grad_a_ptr, row * T + n, g_re, g_im, sample, IS_COMPLEX)
            else:
                _store(grad_a_ptr, base, tl.sum(g_re, axis=0), tl.sum(g_im, axis=0), True, IS_COMPLEX)
    else:
        _store(out_ptr, row * T + m, v_re, v_im, live, IS_COMPLEX)


def _plane(t: torch.Tensor) -> torch.Tensor:
    """Complex tensors are handed to the kernels as their interleaved real view."""
    return torch.view_as_real(t) if t.is_complex() else t


def _launch_shape(device: torch.device, M: int, rows: int, steps: int) -> tuple[int, int, int]:
    """(chunk length, chunks per carry-scan program, software-pipeline stages of the sequential
    loops) for order M.

    On the interpreter: tiny chunks and groups, so short tests cross every boundary and every
    level of the carry hierarchy. On a GPU: a starting table, not yet tuned on hardware
    (``bench/tune_triton.py`` sweeps it). Stages > 1 prefetch each step's inputs through shared
    memory (cp.async), which hides load latency when few programs run but costs about 30
    instructions per step when many do.
    """
    if device.type != "cuda":
        return CHUNK_INTERPRET, CARRY_GROUP_INTERPRET, 1
    sms = torch.cuda.get_device_properties(device).multi_processor_count
    return gpu_chunk_length(M, rows, steps, sms), CARRY_GROUP_GPU, LOOP_STAGES_GPU


def gpu_chunk_length(M: int, rows: int, steps: int, sms: int) -> int:
    """The longest chunk (a power of two within the table's bounds) that still gives every SM
    ``PROGRAMS_PER_SM`` (row, chunk) programs: long chunks mean fewer carries, but a short
    sequence with few rows needs short chunks to fill the GPU. M = 1 runs one
    ``tl.associative_scan`` per chunk, so its chunk is a vector length, not a sequential loop."""
    low, high = (FIRST_ORDER_CHUNK_MIN_GPU, FIRST_ORDER_CHUNK_GPU) if M == 1 else (CHUNK_MIN_GPU, CHUNK_GPU)
    fill = max(1, rows * steps // (PROGRAMS_PER_SM * sms))
    return min(max(1 << (fill.bit_length() - 1), low), high)  # the power of two at or below fill


def _warps(M: int) -> dict[str, int]:
    """Warps per kernel: about 16 register-tile elements per thread, since a sequential step is
    latency bound and a small tile reduces fastest inside one warp. tests/test_triton_compile.py
    compiles every kernel for sm_90 with these and checks for register spills."""
    per_tile = lambda tile: max(1, min(8, tile // 512))
    m_pad = triton.next_power_of_2(M)
    compose = m_pad**3 if m_pad <= 16 else m_pad**2  # see _carry_compose
    if M == 1:
        return {"summary": 4, "finish": 4, "carry": 1, "compose": 1}
    return {"summary": per_tile(m_pad**2), "finish": 1, "carry": per_tile(m_pad**2), "compose": per_tile(compose)}


def _scan_carries(z, phi, start, carry, M, group, is_complex):
    """carry[:, c] = the state entering chunk c, from start (B, M): s_c = Phi_c s_{c-1} + z_c.

    Few chunks: one sequential program per row. Many: groups of ``group`` chunks are composed in
    parallel, the group carries are scanned the same way (recursively), and the groups are then
    finished in parallel, so long sequences with few rows still fill the GPU.
    """
    B, n_chunks = z.shape[:2]
    m_pad = triton.next_power_of_2(M)
    warps = _warps(M)
    if n_chunks <= group:
        _carry_scan[(B, 1)](z, phi, start, carry, M, n_chunks, n_chunks, M_PAD=m_pad, IS_COMPLEX=is_complex, num_warps=warps["carry"], **_COMPILE)
        return
    n_groups = triton.cdiv(n_chunks, group)
    w = z.new_empty((B, n_groups, *z.shape[2:]))
    psi = phi.new_empty((B, n_groups, *phi.shape[2:]))
    _carry_compose[(B, n_groups)](z, phi, w, psi, M, n_chunks, group, M_PAD=m_pad, IS_COMPLEX=is_complex, num_warps=warps["compose"], **_COMPILE)
    group_start = torch.empty_like(w)
    _scan_carries(w, psi, start, group_start, M, group, is_complex)
    _carry_scan[(B, n_groups)](z, phi, group_start, carry, M, n_chunks, group, M_PAD=m_pad, IS_COMPLEX=is_complex, num_warps=warps["carry"], **_COMPILE)


def _scan(u, a, zi, out, *, reverse, tail=None, y=None, grad_a=None):
    """Run the three phases; see the module docstring. ``u`` is x (forward) or grad_y (reverse)."""
    B, T = u.shape
    Ba, Ta, M = a.shape
    steps = T + M if reverse else T
    chunk, group, stages = _launch_shape(u.device, M, B, steps)
    n_chunks = triton.cdiv(steps, chunk)
    m_pad = triton.next_power_of_2(M)
    is_complex = u.is_complex()
    real = u.real.dtype if is_complex else u.dtype
    acc = torch.float32 if real in (torch.float16, torch.bfloat16) else real
    planes = (2,) if is_complex else ()

    def summary_buffer(*shape):
        return torch.empty((B, *shape, *planes), dtype=acc, device=u.device)

    z, phi, carry = summary_buffer(n_chunks, M), summary_buffer(n_chunks, M, M), summary_buffer(n_chunks, M)
    start = summary_buffer(M).zero_() if reverse else _plane(zi)
    time_step = 1 if Ta > 1 else 0
    a_row_step = 1 if Ba > 1 else 0
    u_, a_, zi_ = _plane(u), _plane(a), _plane(zi)
    summary, finish = (_first_order_summary, _first_order_finish) if M == 1 else (_chunk_summary, _chunk_finish)
    warps = _warps(M)
    summary[(B, n_chunks)](
        u_, a_, z, phi, T, steps, Ta, M, time_step, a_row_step, n_chunks,
        CHUNK=chunk, M_PAD=m_pad, STAGES=stages, IS_COMPLEX=is_complex, REVERSE=reverse, num_warps=warps["summary"], **_COMPILE,
    )
    _scan_carries(z, phi, start, carry, M, group, is_complex)
    per_sample = grad_a is not None and grad_a.shape[1] == T and Ta == T
    partial = summary_buffer(n_chunks, M) if grad_a is not None and not per_sample else None
    grad_a_target = grad_a if per_sample else partial
    finish[(B, n_chunks)](
        u_, a_, carry, _plane(out), _plane(tail) if tail is not None else u_,
        _plane(y) if y is not None else u_, zi_,
        _plane(grad_a_target) if grad_a_target is not None else u_,
        T, steps, Ta, M, time_step, a_row_step, n_chunks,
        CHUNK=chunk, M_PAD=m_pad, STAGES=stages, IS_COMPLEX=is_complex,
        REVERSE=reverse, GRAD_A=grad_a is not None, GRAD_A_PER_SAMPLE=per_sample, num_warps=warps["finish"], **_COMPILE,
    )
    if partial is not None:
        sums = partial.sum(1)
        grad_a.copy_((torch.view_as_complex(sums) if is_complex else sums).unsqueeze(1))


def allpole_forward(x: torch.Tensor, a: torch.Tensor, zi: torch.Tensor, y: torch.Tensor) -> None:
    """Write y (B, T) from x (B, T), a (Ba, Ta, M), zi (B, M); all contiguous, one dtype."""
    _scan(x, a, zi, y, reverse=False)


def allpole_backward(grad_y, a, y, zi, grad_x, grad_zi, grad_a, need_grad_a: bool) -> None:
    """Write grad_x (B, T), grad_zi (B, M) and, if asked, grad_a (B, Ta, M)."""
    _scan(grad_y, a, zi, grad_x, reverse=True, tail=grad_zi, y=y, grad_a=grad_a if need_grad_a else None)
