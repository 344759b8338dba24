"""Sweep the Triton launch shape (chunk length, chunks per carry block) on a GPU.

    python bench/tune_triton.py -B 1 16 256 -T 4096 65536 1048576 -M 1 2 4 16

For every shape, times the launch table's own choice ("table") and each forced candidate
(ALLPOLE_TRITON_LAUNCH="chunk=C,group=G"), forward and forward+backward (fp32, time-varying
coefficients), side by side in one run, and prints CSV: copy the winners into the table in
``kernels/triton_scan.py`` (LANES_PER_SM, CHUNK_MIN_GPU, CHUNK_MAX_GPU, LONG_CARRY_STEP_COST,
BLOCK_GPU). Needs CUDA: under the interpreter the numbers mean nothing.
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
    p.add_argument("--chunks", nargs="+", type=int, default=[32, 64, 128, 256, 1024])
    p.add_argument("--groups", nargs="+", type=int, default=[32, 128], help="chunks per carry block (M <= 4)")
    args = p.parse_args()
    if not torch.cuda.is_available():
        raise SystemExit("tune_triton.py needs a CUDA device")
    sms = torch.cuda.get_device_properties(0).multi_processor_count
    print("B,T,M,launch,chunk,group,forward_ms,forward_backward_ms")
    for B, T, M in itertools.product(args.B, args.T, args.M):
        if B * T * M > 2**30:  # coefficients of 4 GiB and more: skip
            continue
        g = torch.Generator().manual_seed(0)
        x = torch.randn(B, T, generator=g).cuda().requires_grad_()
        a = stable_coefficients(B, T, M, generator=g, dtype=torch.float32).cuda().requires_grad_()
        table = triton_scan.launch_shape(M, B, T, sms)
        candidates = [("table", None)] + [
            (f"chunk={c},group={gr}", (c, gr)) for c, gr in itertools.product(args.chunks, args.groups if triton_scan.is_short(M) else [128])
        ]
        for name, forced in candidates:
            if forced:
                os.environ["ALLPOLE_TRITON_LAUNCH"] = f"chunk={forced[0]},group={forced[1]}"
            else:
                os.environ.pop("ALLPOLE_TRITON_LAUNCH", None)
            shape = triton_scan.launch_shape(M, B, T, sms)
            forward, both = _time_pair(x, a)
            print(f"{B},{T},{M},{name},{shape.chunk},{shape.group},{1e3 * forward:.4f},{1e3 * both:.4f}", flush=True)
        os.environ.pop("ALLPOLE_TRITON_LAUNCH", None)
        del x, a, table


if __name__ == "__main__":
    main()
