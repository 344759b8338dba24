"""Sweep the Triton launch table (chunk length, carry group, loop stages) on a GPU.

    python bench/tune_triton.py --device cuda -B 1 16 256 -T 4096 65536 1048576 -M 1 2 4 16

Prints forward and forward+backward times (fp32, time-varying coefficients) for every
candidate, side by side in one run, as CSV; copy the winners into ``CHUNK_GPU``,
``FIRST_ORDER_CHUNK_GPU``, ``CARRY_GROUP_GPU`` and ``LOOP_STAGES_GPU`` in
``kernels/triton_scan.py``. Needs CUDA (under the interpreter the numbers mean nothing).
"""
from __future__ import annotations

import argparse
import itertools

import torch

from allpole_triton import allpole
from allpole_triton.bench.cases import stable_coefficients
from allpole_triton.bench.timing import time_cuda
from allpole_triton.kernels import triton_scan


def _time_pair(B: int, T: int, M: int, device: str) -> tuple[float, float]:
    g = torch.Generator().manual_seed(0)
    x = torch.randn(B, T, generator=g).to(device).requires_grad_()
    a = stable_coefficients(B, T, M, generator=g, dtype=torch.float32).to(device).requires_grad_()
    forward = time_cuda(lambda: allpole(x, a, backend="triton"))[0]

    def both():
        y = allpole(x, a, backend="triton")
        torch.autograd.grad(y.sum(), (x, a))

    return forward, time_cuda(both)[0]


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--device", default="cuda")
    p.add_argument("-B", nargs="+", type=int, default=[1, 16, 256])
    p.add_argument("-T", nargs="+", type=int, default=[4096, 65536, 1048576])
    p.add_argument("-M", nargs="+", type=int, default=[1, 2, 4, 16])
    p.add_argument("--chunks", nargs="+", type=int, default=[32, 64, 128, 256, 512])
    p.add_argument("--first-order-chunks", nargs="+", type=int, default=[256, 512, 1024, 2048, 4096])
    p.add_argument("--groups", nargs="+", type=int, default=[4, 8, 16, 32, 64])
    p.add_argument("--stages", nargs="+", type=int, default=[1, 3, 6], help="software-pipeline stages (M > 1)")
    args = p.parse_args()
    if not args.device.startswith("cuda"):
        raise SystemExit("tune_triton.py needs a CUDA device")
    print("B,T,M,chunk,group,stages,forward_ms,forward_backward_ms")
    for B, T, M in itertools.product(args.B, args.T, args.M):
        if B * T * M > 2**31:  # (B, T, M) coefficients would not fit comfortably
            continue
        chunks = args.first_order_chunks if M == 1 else args.chunks
        stages = [1] if M == 1 else args.stages
        for chunk, group, stage in itertools.product(chunks, args.groups, stages):
            # a fixed chunk: both bounds of the table's range set to the candidate
            triton_scan.CHUNK_GPU = triton_scan.CHUNK_MIN_GPU = chunk
            triton_scan.FIRST_ORDER_CHUNK_GPU = triton_scan.FIRST_ORDER_CHUNK_MIN_GPU = chunk
            triton_scan.CARRY_GROUP_GPU = group
            triton_scan.LOOP_STAGES_GPU = stage
            forward, both = _time_pair(B, T, M, args.device)
            print(f"{B},{T},{M},{chunk},{group},{stage},{1e3 * forward:.4f},{1e3 * both:.4f}", flush=True)


if __name__ == "__main__":
    main()
