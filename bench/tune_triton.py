"""Sweep the Triton launch shape (chunk length, chunks per carry block, body and tile lengths) on a GPU.

    python bench/tune_triton.py -B 1 16 256 -T 4096 65536 1048576 -M 1 2 4 16

For every shape, times the launch table's own choice ("table") and each forced candidate
(ALLPOLE_TRITON_LAUNCH="chunk=C,group=G", then "unroll=U" and "tile=S" on the table's chunks),
forward and forward+backward (fp32, time-varying coefficients), side by side in one run, and
prints CSV: copy the winners into the table in ``kernels/triton_scan.py`` (LANES_PER_SM,
CHUNK_MIN_GPU, CHUNK_MAX_GPU, LONG_CARRY_STEP_COST, BLOCK_GPU, unroll, TILE_BUDGET). Needs CUDA:
under the interpreter the numbers mean nothing.

Open questions it settles: whether the backward's copy of the coefficients in reversed time pays
(``adjoint=0`` times the reverse kernels on a itself, ``adjoint=1`` the copy's path, against the
table's; the sm_90 model's thresholds are triton_scan.REVERSED_MIN_SAMPLES); where coalesced rows (``rows``) pay (the 2026-11-27 H100
run was host-bound at M=2 and did not reach M=16); whether longer bodies help the short orders;
whether the M=16 forward finish wants 8 or 16-step tiles.
"""
from __future__ import annotations

import argparse
import itertools
import os

import torch

from allpole_triton import allpole
from allpole_triton.bench.cases import stable_coefficients
from allpole_triton.bench.timing import time_cuda
from allpole_triton.kernels import triton_scan


def _time_pair(x: torch.Tensor, a: torch.Tensor) -> tuple[float, float]:
    forward = time_cuda(lambda: allpole(x, a, backend="triton"))[0]

    def both():
        y = allpole(x, a, backend="triton")
        torch.autograd.grad(y.sum(), (x, a))

    return forward, time_cuda(both)[0]


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0], formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    p.add_argument("-B", nargs="+", type=int, default=[1, 16, 256])
    p.add_argument("-T", nargs="+", type=int, default=[4096, 65536, 1048576])
    p.add_argument("-M", nargs="+", type=int, default=[1, 2, 4, 16])
    p.add_argument("--chunks", nargs="*", type=int, default=[32, 64, 128, 256, 1024], help="none: the table's")
    p.add_argument("--groups", nargs="+", type=int, default=[32, 128], help="chunks per carry block (M <= 4)")
    p.add_argument("--unrolls", nargs="*", type=int, default=[8, 16, 32],
                   help="steps per loop body (the short orders' multiples of M)")
    p.add_argument("--tiles", nargs="*", type=int, default=[0, 4, 8, 16], help="steps per coefficient tile")
    p.add_argument("--adjoint", nargs="*", type=int, default=[0], choices=[0, 1],
                   help="the backward's path: 0 the reverse kernels on a, 1 a reversed copy of a (orders 1, 2, 4: the "
                        "reverse kernels on it; others: the forward scan on reversed time)")
    p.add_argument("--rows", nargs="*", type=int, default=[0, 1], choices=[0, 1],
                   help="coalesced rows off (0) or on (1) in every lane kernel (the table: where the compile allows)")
    args = p.parse_args()
    if not torch.cuda.is_available():
        raise SystemExit("tune_triton.py needs a CUDA device")
    sms = torch.cuda.get_device_properties(0).multi_processor_count
    print("B,T,M,launch,chunk,group,unroll,forward_ms,forward_backward_ms")
    for B, T, M in itertools.product(args.B, args.T, args.M):
        if B * T * M > 2**30:  # coefficients of 4 GiB and more: skip
            continue
        g = torch.Generator().manual_seed(0)
        x = torch.randn(B, T, generator=g).cuda().requires_grad_()
        a = stable_coefficients(B, T, M, generator=g, dtype=torch.float32).cuda().requires_grad_()
        table = triton_scan.launch_shape(M, B, T, sms)
        candidates = ["table"] + [f"adjoint={v}" for v in args.adjoint] + [f"rows={r}" for r in args.rows] + [
            f"chunk={c},group={gr}" for c, gr in itertools.product(args.chunks, args.groups if triton_scan.is_short(M) else [128])
        ]
        if triton_scan.is_short(M):  # longer bodies at M=16 take minutes to compile
            candidates += [f"unroll={u}" for u in args.unrolls if u % M == 0 and u != table.unroll]
        candidates += [f"tile={t}" for t in args.tiles]
        for name in candidates:
            if name == "table":
                os.environ.pop("ALLPOLE_TRITON_LAUNCH", None)
            else:
                os.environ["ALLPOLE_TRITON_LAUNCH"] = name
            shape = triton_scan.launch_shape(M, B, T, sms)
            forward, both = _time_pair(x, a)
            print(f"{B},{T},{M},{name.replace(',', ' ')},{shape.chunk},{shape.group},{shape.unroll},"
                  f"{1e3 * forward:.4f},{1e3 * both:.4f}", flush=True)
        os.environ.pop("ALLPOLE_TRITON_LAUNCH", None)
        del x, a, table


if __name__ == "__main__":
    main()
