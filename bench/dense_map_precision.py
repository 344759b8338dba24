"""Why the dense scan's chunk maps are float64: float32 maps against the accuracy bar.

    python bench/dense_map_precision.py [-M 8 16] [-T 2048] [--chunks 16 64 256]

A chunked scan of ``h[n] = A[n] h[n-1] + u[n]`` composes each chunk's transitions into a map
``Phi = A[end] ... A[start]``. ``tl.dot`` (the Triton primitive for such products from order 16)
has no float64, so a ``tl.dot`` summary would form Phi in float32. This script runs the chunked
scan in torch ops with the maps formed in float32 and in float64 (carries in float64, the chunks
finished in float32 either way) on companion matrices of all-pole filters whose poles all sit at
one radius (0.9, 0.99, 0.999), float32 inputs, and prints each one's error against a float64 loop
as a multiple of a float32 sequential loop's error. The bar (GPU scan issue): within 10x.
"""
from __future__ import annotations

import argparse

import torch

from allpole_triton.bench.cases import stable_coefficients
from allpole_triton.recurrence import linear_recurrence_naive

RADII = (0.9, 0.99, 0.999)


def companion_inputs(T: int, M: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """float32 companion transitions (T, M, M), one row per pole radius, driven in the first component."""
    g = torch.Generator().manual_seed(M)
    a = torch.cat([stable_coefficients(1, T, M, radius=(r, r), generator=g) for r in RADII])
    A = torch.zeros(len(RADII), T, M, M, dtype=torch.float64)
    A[:, :, 0, :] = -a
    A[:, :, 1:, :-1] = torch.eye(M - 1, dtype=torch.float64)
    u = torch.zeros(len(RADII), T, M, dtype=torch.float64)
    u[..., 0] = torch.randn(len(RADII), T, generator=g, dtype=torch.float64)
    return A.float(), u.float(), torch.randn(len(RADII), M, generator=g).float()


def chunked(A: torch.Tensor, u: torch.Tensor, h0: torch.Tensor, chunk: int, map_dtype: torch.dtype) -> torch.Tensor:
    """The chunked scan with maps [Phi | z] formed in ``map_dtype``, carries in float64."""
    R, T, M = u.shape
    n = -(-T // chunk)
    pad = n * chunk - T
    if pad:
        A = torch.cat([A, torch.eye(M).expand(R, pad, M, M)], dim=1)
        u = torch.cat([u, u.new_zeros(R, pad, M)], dim=1)
    steps_A, steps_u = A.reshape(R, n, chunk, M, M), u.reshape(R, n, chunk, M)
    phi = torch.eye(M, dtype=map_dtype).expand(R, n, M, M)
    z = steps_u.new_zeros(R, n, M, dtype=map_dtype)
    for t in range(chunk):
        step = steps_A[:, :, t].to(map_dtype)
        phi = step @ phi
        z = (step @ z.unsqueeze(-1)).squeeze(-1) + steps_u[:, :, t].to(map_dtype)
    phi, z = phi.double(), z.double()
    state, starts = h0.double(), []
    for c in range(n):
        starts.append(state)
        state = (phi[:, c] @ state.unsqueeze(-1)).squeeze(-1) + z[:, c]
    h, out = torch.stack(starts, dim=1).float(), []
    for t in range(chunk):
        h = (steps_A[:, :, t] @ h.unsqueeze(-1)).squeeze(-1) + steps_u[:, :, t]
        out.append(h)
    return torch.stack(out, dim=2).reshape(R, n * chunk, M)[:, :T]


def row_errors(actual: torch.Tensor, exact: torch.Tensor) -> list[float]:
    return ((actual.double() - exact).abs().flatten(1).amax(1) / exact.abs().flatten(1).amax(1)).tolist()


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("-M", nargs="+", type=int, default=[8, 16])
    p.add_argument("-T", type=int, default=2048)
    p.add_argument("--chunks", nargs="+", type=int, default=[16, 64, 256])
    args = p.parse_args()
    print(f"T={args.T}; error / float32 loop's error at pole radius {', '.join(map(str, RADII))}")
    for M in args.M:
        A, u, h0 = companion_inputs(args.T, M)
        exact = linear_recurrence_naive(A.double(), u.double(), h0.double())
        loop = row_errors(linear_recurrence_naive(A, u, h0), exact)
        print(f"M={M:2d} float32 loop error: " + ", ".join(f"{e:.1e}" for e in loop))
        for chunk in args.chunks:
            for map_dtype in (torch.float32, torch.float64):
                ratios = [e / l for e, l in zip(row_errors(chunked(A, u, h0, chunk, map_dtype), exact), loop)]
                name = str(map_dtype).replace("torch.", "")
                print(f"     chunk {chunk:4d}, {name} maps: " + ", ".join(f"{r:9.3g}" for r in ratios))


if __name__ == "__main__":
    main()
