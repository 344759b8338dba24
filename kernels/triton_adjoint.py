"""The backward pass as the forward scan on reversed time.

The adjoint of y[n] = x[n] - sum_i a[n, i-1] y[n-i] is the recursion

    lam[n] = grad_y[n] - sum_{i=1..M} a[n+i, i-1] lam[n+i],   n = T-1 .. -M,

with grad_x[n] = lam[n], grad_zi[i] = lam[-1-i] and grad_a[n, i-1] = -lam[n] y[n-i]. Counted in
reversed time k = T-1-n it is the forward recursion over L = T + M steps with input
g[k] = grad_y[T-1-k] (zero from k = T on) and coefficient rows b[k, i-1] = a[T-1-k+i, i-1] (zero
where that time lies outside [0, T)), from a zero state. triton_scan's reverse kernels run it in
place, but read their coefficients along that diagonal one lane at a time: the H100 (2026-11-27,
B=16, T=2^20, float32) took 24 of the 32.7 ms of a forward+backward pass at M=16 there. So on a
GPU real time-varying coefficients take a copy of b as contiguous rows (``_reversed_inputs``):

- orders 1, 2 and 4 (``triton_scan.fuses_adjoint``) copy b alone, and the reverse kernels run on
  it in step order (``A_COPY``): they read grad_y and write grad_x, grad_zi and grad_a themselves,
  grad_a and the past outputs it needs as coalesced rows (``GRAD_A_ROWS``). Three launches with
  the carry fused. (M=1 with contiguous coefficients needs no copy: its diagonal is a shifted
  row, which the reverse kernels read as rows);
- other orders copy g too, the forward scan runs on g and b with everything the forward has
  (coalesced rows, coefficient tiles as rows), and ``_adjoint_outputs`` reads lam back in time
  order and writes grad_x, grad_zi and grad_a (one pass).

Writing grad_a from the finish lane by lane was tried first and left out: the sm_90 model (Triton
3.6) put forward+backward at B=16, T=2^20, M=2 at 797 us against 577 us with ``_adjoint_outputs``,
each warp access of a lane's grad_a tile or y window touching 32 cache lines. As rows, with the
grad_y and lam copies gone, the same pass is predicted at 485 us, and at 2^20 samples (B=16,
T=65536) at 44.7 us against 52.7 (2.90x the memory floor against 3.43x).
"""
from __future__ import annotations

import torch
import triton
import triton.language as tl

def block_steps(M: int) -> int:
    """Steps per program of the two copy kernels: 256, fewer as the [steps, taps] tiles widen (at
    most 32 values a thread; at M=64 a 256-step tile spilled 3 KB, sm_90, Triton 3.6)."""
    return max(32, min(256, 4096 // triton.next_power_of_2(M)))
_LENGTHS = ["T", "L", "n_blocks", "a_rows", "sa_row", "sa_time", "sa_tap"]


@triton.jit(do_not_specialize=_LENGTHS)
def _reversed_inputs(
    g_ptr, a_ptr, g_out, b_out, T, L, n_blocks, a_rows, sa_row, sa_time, sa_tap,
    M: tl.constexpr, M_PAD: tl.constexpr, BLOCK: tl.constexpr, INPUT: tl.constexpr,
):
    """With INPUT, g_out[row, k] = grad_y[row, T-1-k]; for the first a_rows rows, b_out[row, k, i-1]
    = a[row, T-1-k+i, i-1]; both zero outside [0, T), over blocks of BLOCK steps k < L."""
    pid = tl.program_id(0)
    row = (pid // n_blocks).to(tl.int64)
    k = (pid % n_blocks).to(tl.int64) * BLOCK + tl.arange(0, BLOCK)
    live = k < L
    source = T - 1 - k
    if INPUT:
        g = tl.load(g_ptr + row * T + source, mask=live & (source >= 0), other=0.0)
        tl.store(g_out + row * L + k, g, mask=live)
    if row < a_rows:
        tap = tl.arange(0, M_PAD)[None, :].to(tl.int64)  # i - 1
        time = source[:, None] + 1 + tap
        inside = live[:, None] & (tap < M)
        coefficient = tl.load(a_ptr + row * sa_row + time * sa_time + tap * sa_tap,
                              mask=inside & (time >= 0) & (time < T), other=0.0)
        tl.store(b_out + (row * L + k)[:, None] * M + tap, coefficient, mask=inside)


@triton.jit(do_not_specialize=_LENGTHS)
def _adjoint_outputs(
    lam_ptr, y_ptr, zi_ptr, grad_x_ptr, grad_zi_ptr, grad_a_ptr, T, L, n_blocks,
    M: tl.constexpr, M_PAD: tl.constexpr, GRAD_A: tl.constexpr, BLOCK: tl.constexpr,
):
    """From lam in reversed time (lam_ptr[row, k] = lam[T-1-k], k < L): grad_x[n] = lam[n],
    grad_zi[i] = lam[-1-i] and, with GRAD_A, grad_a[n, i-1] = -lam[n] y[n-i] (y[-1-i] = zi[i]),
    computed in float32 (float64 for float64 inputs) and stored in the output's dtype."""
    pid = tl.program_id(0)
    row = (pid // n_blocks).to(tl.int64)
    block = pid % n_blocks
    n = block.to(tl.int64) * BLOCK + tl.arange(0, BLOCK)
    live = n < T
    lam = tl.load(lam_ptr + row * L + (T - 1 - n), mask=live, other=0.0)
    tl.store(grad_x_ptr + row * T + n, lam, mask=live)
    tap = tl.arange(0, M_PAD)
    if block == 0:
        first = tap < M
        tl.store(grad_zi_ptr + row * M + tap, tl.load(lam_ptr + (row * L + T + tap), mask=first, other=0.0), mask=first)
    if GRAD_A:
        i = tap[None, :] + 1
        past = n[:, None] - i
        inside = live[:, None] & (i <= M)
        y = tl.load(y_ptr + row * T + past, mask=inside & (past >= 0), other=0.0)
        z = tl.load(zi_ptr + row * M + (-1 - past), mask=inside & (past < 0), other=0.0)
        wide = tl.float64 if lam.dtype == tl.float64 else tl.float32
        product = -lam.to(wide)[:, None] * tl.where(past >= 0, y, z).to(wide)
        tl.store(grad_a_ptr + (row * T + n)[:, None] * M + i - 1, product, mask=inside)
