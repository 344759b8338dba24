"""Loads, stores and entry reads shared by the Triton scans, and when to load coefficients slot by slot.

A lane's state and coefficients are [P, Q, BLOCK] tiles whose first two axes live inside one
thread; only the lane axis (the last) is spread over threads. Triton chooses a load's layout from
the contiguity of its pointer tile, and Triton 3.6 (the GPU machines' version) breaks ties towards
the first axis: a whole-tile load spreads the in-thread slot axis over the warp, and every step then
pays a shared-memory layout conversion (the sm_90 compile showed up to 5x the instructions per
step). So on the compiler the scans load each step's coefficients one slot at a time, as [BLOCK]
vectors joined along a new in-thread axis (``triton_scan._gather``), up to
``triton_scan.SPLIT_MAX_ORDER``; other tiles are still accessed whole.
"""
from __future__ import annotations

import os

import triton
import triton.language as tl

# The interpreter has no layouts, and one whole-tile load there costs what one slot's does, so it
# keeps whole-tile loads (tests/test_triton.py runs the slot-by-slot loads under the interpreter too).
SPLIT_TILES: tl.constexpr = tl.constexpr(os.environ.get("TRITON_INTERPRET", "0") != "1")


@triton.jit
def load(ptr, offset, mask, IS_COMPLEX: tl.constexpr):
    """(re, im) of element ``offset``; complex tensors are passed as their real view."""
    if IS_COMPLEX:
        re = tl.load(ptr + 2 * offset, mask=mask, other=0.0)
        im = tl.load(ptr + 2 * offset + 1, mask=mask, other=0.0)
    else:
        re = tl.load(ptr + offset, mask=mask, other=0.0)
        im = tl.zeros_like(re)
    return re, im


@triton.jit
def store(ptr, offset, re, im, mask, IS_COMPLEX: tl.constexpr):
    if IS_COMPLEX:
        tl.store(ptr + 2 * offset, re, mask=mask)
        tl.store(ptr + 2 * offset + 1, im, mask=mask)
    else:
        tl.store(ptr + offset, re, mask=mask)


@triton.jit
def pick(tile, i: tl.constexpr, j: tl.constexpr):
    """Entry (i, j) of every lane's float [P, Q, BLOCK] tile, as [BLOCK]."""
    ii = tl.arange(0, tile.shape[0])[:, None, None]
    jj = tl.arange(0, tile.shape[1])[None, :, None]
    return tl.sum(tl.sum(tl.where((ii == i) & (jj == j), tile, -0.0), axis=0), axis=0)
