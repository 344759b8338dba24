"""Time the allpole_triton found on sys.path, for an A/B of two commits on one GPU (see ab_session.sh).

Prints one JSON line per case and pass: forward (no grad) and forward+backward, float32,
time-varying coefficients, CUDA-event times of ``--repeat`` calls after three warm-up calls.
Uses only what every version has (``allpole`` and ``bench.cases.stable_coefficients``), so that an
older tree runs it unchanged. ``--warm`` compiles every case and times nothing.
"""
from __future__ import annotations

import argparse
import json
import statistics
import sys

import torch

import allpole_triton
from allpole_triton import allpole
from allpole_triton.bench.cases import stable_coefficients


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("label", help="names the tree in the output (e.g. base, head)")
    parser.add_argument("--case", nargs=3, type=int, action="append", metavar=("B", "T", "M"),
                        help="a case to time (repeatable); default: the A/B grid below")
    parser.add_argument("--repeat", type=int, default=15)
    parser.add_argument("--warm", action="store_true", help="compile every case, time nothing")
    args = parser.parse_args(argv)
    cases = args.case or [(16, 1 << 20, M) for M in (1, 2, 4, 16)] + [(16, 1 << 16, 16), (1, 1 << 16, 16)]
    print(f"# {args.label}: {allpole_triton.__file__}", file=sys.stderr)
    device = torch.device("cuda")
    for B, T, M in cases:
        g = torch.Generator().manual_seed(0)
        x = torch.randn(B, T, generator=g).to(device)
        a = stable_coefficients(B, T, M, generator=g, dtype=torch.float32).to(device).requires_grad_()
        zi = torch.zeros(B, M, device=device)
        grad_y = torch.randn(B, T, generator=g).to(device)

        def forward():
            with torch.no_grad():
                allpole(x, a, zi, backend="triton")

        def forward_backward():
            allpole(x, a, zi, backend="triton").backward(grad_y)

        for name, call in (("fwd", forward), ("fwdbwd", forward_backward)):
            call()
            torch.cuda.synchronize()
            if args.warm:
                continue
            for _ in range(3):
                call()
            times = []
            for _ in range(args.repeat):
                start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
                start.record()
                call()
                end.record()
                torch.cuda.synchronize()
                times.append(start.elapsed_time(end))
            print(json.dumps(dict(tree=args.label, pass_=name, B=B, T=T, M=M, median_ms=statistics.median(times),
                                  min_ms=min(times), max_ms=max(times))), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
