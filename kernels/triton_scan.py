"""Triton kernels: the all-pole recursion as a chunked companion-matrix scan.

The state s[n] = (y[n], ..., y[n-M+1]) obeys s[n] = C[n] s[n-1] + e1 u[n]. Time is cut into
chunks of ``CHUNK`` samples and evaluated in three launches:

1. ``_chunk_summary``   grid (rows, chunks): from a zero state, each chunk's end state z_c and
   its transition Phi_c = C[end]...C[start], built by running M+1 recursions side by side
   (the driven one plus M homogeneous ones started from unit states): O(M^2) per sample,
   never a (B, T, M, M) tensor.
2. ``_carry_scan``      grid (rows,): s_c = Phi_c s_{c-1} + z_c across chunks, from zi.
3. ``_chunk_finish``    grid (rows, chunks): re-run each chunk from its true incoming state and
   write the outputs.

The backward (adjoint) is the same recursion in reversed time m = T-1-n over T+M steps, with
coefficients conj(a[n+i, i-1]) gathered by index inside the kernels (no flipped, padded or shifted
copies), grad_zi read off the last M steps, and grad_a = -lam[n] conj(y[n-i]) fused into phase 3.

The M most recent outputs live in a circular register buffer (slot t mod M holds y[t]), so a step
is a masked dot product and a ``where`` write; the coefficient vector is gathered in the matching
rotated order. Complex tensors run as real and imaginary planes. Offsets are int64.
"""
from __future__ import annotations

import torch
import triton
import triton.language as tl

# Shapes of the launch; small chunks keep the interpreter quick, real GPUs want longer ones.
CHUNK_GPU = 256
CHUNK_INTERPRET = 16


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
    if REVERSE:
        valid = m < T
        return _load(u_ptr, row * T + (T - 1 - m), valid, IS_COMPLEX)
    else:
        return _load(u_ptr, row * T + m, m >= 0, IS_COMPLEX)


@triton.jit
def _step_coefficients(
    a_ptr, a_row, m, slot, T, Ta, M, time_step,
    IS_COMPLEX: tl.constexpr, REVERSE: tl.constexpr,
):
    """Coefficients at step m in the circular buffer's order: slot p multiplies y[t], t = p mod M,
    which is tap i = ((m - 1 - p) mod M) + 1 of step m."""
    tap = (m - 1 - slot + M) % M + 1
    in_range = slot < M
    if REVERSE:
        # adjoint tap i at reversed time m reads conj(a[n+i, i-1]) with n = T-1-m
        t = T - 1 - m + tap
        in_range = in_range & (t >= 0) & (t < T)
    else:
        t = tap * 0 + m
    offset = (a_row * Ta + t * time_step) * M + tap - 1
    re, im = _load(a_ptr, offset, in_range, IS_COMPLEX)
    if REVERSE:
        im = -im
    return re, im


@triton.jit
def _chunk_summary(
    u_ptr, a_ptr, z_ptr, phi_ptr, T, steps, Ta, M, time_step, a_row_step, n_chunks,
    CHUNK: tl.constexpr, M_PAD: tl.constexpr, LANES: tl.constexpr,
    IS_COMPLEX: tl.constexpr, REVERSE: tl.constexpr,
):
    row = tl.program_id(0).to(tl.int64)
    chunk = tl.program_id(1).to(tl.int64)
    a_row = row * a_row_step
    start = chunk * CHUNK
    stop = tl.minimum(start + CHUNK, steps)
    lane = tl.arange(0, LANES)[:, None]
    slot = tl.arange(0, M_PAD)[None, :].to(tl.int64)
    # lane 0 is driven from a zero state; lane j >= 1 starts from unit state e_{j-1}: y[start-j] = 1
    unit_slot = (start - lane + M) % M
    h_re = tl.where((lane >= 1) & (lane <= M) & (slot == unit_slot), 1.0, 0.0)
    h_re = h_re.to(u_ptr.dtype.element_ty)
    h_im = tl.zeros_like(h_re)
    for m in range(start, stop):
        u_re, u_im = _step_input(u_ptr, row, m, T, IS_COMPLEX, REVERSE)
        c_re, c_im = _step_coefficients(a_ptr, a_row, m, slot, T, Ta, M, time_step, IS_COMPLEX, REVERSE)
        p_re, p_im = _mul(c_re, c_im, h_re, h_im, IS_COMPLEX)
        new_re = tl.where(lane == 0, u_re, 0.0) - tl.sum(p_re, axis=1)[:, None]
        h_re = tl.where(slot == m % M, new_re, h_re)
        if IS_COMPLEX:
            new_im = tl.where(lane == 0, u_im, 0.0) - tl.sum(p_im, axis=1)[:, None]
            h_im = tl.where(slot == m % M, new_im, h_im)
    # state component k = y[stop-1-k] sits in slot (stop-1-k) mod M
    k = (stop - 1 - slot + M) % M
    base = row * n_chunks + chunk
    keep = slot < M
    _store(z_ptr, base * M + k + 0 * lane, h_re, h_im, keep & (lane == 0), IS_COMPLEX)
    _store(phi_ptr, (base * M + k) * M + lane - 1, h_re, h_im, keep & (lane >= 1) & (lane <= M), IS_COMPLEX)


@triton.jit
def _carry_scan(
    z_ptr, phi_ptr, zi_ptr, carry_ptr, M, n_chunks,
    M_PAD: tl.constexpr, IS_COMPLEX: tl.constexpr, START_FROM_ZI: tl.constexpr,
):
    row = tl.program_id(0).to(tl.int64)
    i = tl.arange(0, M_PAD)[:, None].to(tl.int64)
    j = tl.arange(0, M_PAD)[None, :].to(tl.int64)
    keep = tl.arange(0, M_PAD) < M
    if START_FROM_ZI:
        s_re, s_im = _load(zi_ptr, row * M + tl.arange(0, M_PAD), keep, IS_COMPLEX)
    else:
        s_re = tl.zeros([M_PAD], dtype=z_ptr.dtype.element_ty)
        s_im = tl.zeros([M_PAD], dtype=z_ptr.dtype.element_ty)
    for c in range(n_chunks):
        base = row * n_chunks + c
        _store(carry_ptr, base * M + tl.arange(0, M_PAD), s_re, s_im, keep, IS_COMPLEX)
        f_re, f_im = _load(phi_ptr, (base * M + i) * M + j, (i < M) & (j < M), IS_COMPLEX)
        z_re, z_im = _load(z_ptr, base * M + tl.arange(0, M_PAD), keep, IS_COMPLEX)
        p_re, p_im = _mul(f_re, f_im, s_re[None, :], s_im[None, :], IS_COMPLEX)
        s_re = tl.sum(p_re, axis=1) + z_re
        if IS_COMPLEX:
            s_im = tl.sum(p_im, axis=1) + z_im


@triton.jit
def _chunk_finish(
    u_ptr, a_ptr, carry_ptr, out_ptr, tail_ptr, y_ptr, zi_ptr, grad_a_ptr,
    T, steps, Ta, M, time_step, a_row_step, n_chunks,
    CHUNK: tl.constexpr, M_PAD: tl.constexpr, IS_COMPLEX: tl.constexpr,
    REVERSE: tl.constexpr, GRAD_A: tl.constexpr, GRAD_A_PER_SAMPLE: tl.constexpr,
):
    """Forward: out = y. Reverse: out = grad_x, tail = grad_zi and, with GRAD_A, grad_a (per
    sample, or per chunk partial sums when a is constant over time)."""
    row = tl.program_id(0).to(tl.int64)
    chunk = tl.program_id(1).to(tl.int64)
    a_row = row * a_row_step
    start = chunk * CHUNK
    stop = tl.minimum(start + CHUNK, steps)
    slot = tl.arange(0, M_PAD).to(tl.int64)
    keep = slot < M
    # incoming state component k = y[start-1-k] goes to slot (start-1-k) mod M
    k = (start - 1 - slot + M) % M
    h_re, h_im = _load(carry_ptr, (row * n_chunks + chunk) * M + k, keep, IS_COMPLEX)
    ga_re = tl.zeros_like(h_re)
    ga_im = tl.zeros_like(h_re)
    for m in range(start, stop):
        u_re, u_im = _step_input(u_ptr, row, m, T, IS_COMPLEX, REVERSE)
        c_re, c_im = _step_coefficients(a_ptr, a_row, m, slot, T, Ta, M, time_step, IS_COMPLEX, REVERSE)
        p_re, p_im = _mul(c_re, c_im, h_re, h_im, IS_COMPLEX)
        new_re = u_re - tl.sum(p_re, axis=0)
        new_im = u_im - tl.sum(p_im, axis=0)
        h_re = tl.where(slot == m % M, new_re, h_re)
        if IS_COMPLEX:
            h_im = tl.where(slot == m % M, new_im, h_im)
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


def _plane(t: torch.Tensor) -> torch.Tensor:
    """Complex tensors are handed to the kernels as their interleaved real view."""
    return torch.view_as_real(t) if t.is_complex() else t


def _chunk_length(device: torch.device) -> int:
    return CHUNK_GPU if device.type == "cuda" else CHUNK_INTERPRET


def _scan(u, a, zi, out, *, reverse, tail=None, y=None, grad_a=None):
    """Run the three phases; see the module docstring. ``u`` is x (forward) or grad_y (reverse)."""
    B, T = u.shape
    Ba, Ta, M = a.shape
    steps = T + M if reverse else T
    chunk = _chunk_length(u.device)
    n_chunks = triton.cdiv(steps, chunk)
    m_pad = triton.next_power_of_2(M)
    lanes = triton.next_power_of_2(M + 1)
    is_complex = u.is_complex()
    real = u.real.dtype if is_complex else u.dtype
    summary_shape = (B, n_chunks, M, 2) if is_complex else (B, n_chunks, M)
    z = torch.empty(summary_shape, dtype=real, device=u.device)
    phi = torch.empty((B, n_chunks, M, *summary_shape[2:]), dtype=real, device=u.device)
    carry = torch.empty_like(z)
    time_step = 1 if Ta > 1 else 0
    a_row_step = 1 if Ba > 1 else 0
    u_, a_, zi_ = _plane(u), _plane(a), _plane(zi)
    _chunk_summary[(B, n_chunks)](
        u_, a_, z, phi, T, steps, Ta, M, time_step, a_row_step, n_chunks,
        CHUNK=chunk, M_PAD=m_pad, LANES=lanes, IS_COMPLEX=is_complex, REVERSE=reverse,
    )
    _carry_scan[(B,)](z, phi, zi_, carry, M, n_chunks, M_PAD=m_pad, IS_COMPLEX=is_complex, START_FROM_ZI=not reverse)
    per_sample = grad_a is not None and grad_a.shape[1] == T and Ta == T
    partial = None
    if grad_a is not None and not per_sample:
        partial = torch.empty((B, n_chunks, M, 2) if is_complex else (B, n_chunks, M), dtype=real, device=u.device)
    grad_a_target = grad_a if per_sample else partial
    _chunk_finish[(B, n_chunks)](
        u_, a_, carry, _plane(out), _plane(tail) if tail is not None else u_,
        _plane(y) if y is not None else u_, zi_,
        _plane(grad_a_target) if grad_a_target is not None else u_,
        T, steps, Ta, M, time_step, a_row_step, n_chunks,
        CHUNK=chunk, M_PAD=m_pad, IS_COMPLEX=is_complex, REVERSE=reverse,
        GRAD_A=grad_a is not None, GRAD_A_PER_SAMPLE=per_sample,
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
