"""linear_recurrence with dense transitions: measured forward time beside the sm_90 model's prediction.

    python bench/recurrence.py [--device cuda] [-B 1 16 256] [-T 65536 1048576] [-M 2 4 8] [--repeat 20]

float32, time-varying A (B, T, M, M) with spectral radius below 1, u (B, T, M). Prints CSV: the
median and min time per call (CUDA events around each call, after a warm-up call), and, where
Triton's sm_90 toolchain is there, the model's predicted time for the same case
(allpole_triton.bench.model, pass ``dense``), which is how the first GPU calibrates it.
"""
from __future__ import annotations

import argparse
import statistics

import torch

from allpole_triton import linear_recurrence
from allpole_triton.bench.timing import time_each


def timed(fn, device: torch.device, repeat: int) -> list[float]:
    fn()  # compiles
    return time_each(fn, device, repeat)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("-B", type=int, nargs="+", default=[1, 16, 256])
    parser.add_argument("-T", type=int, nargs="+", default=[65536, 1 << 20])
    parser.add_argument("-M", type=int, nargs="+", default=[2, 4, 8])
    parser.add_argument("--repeat", type=int, default=20)
    parser.add_argument("--no-model", action="store_true",
                        help="times only (the sm_90 compiles of the predictions take minutes; `make model` has them)")
    args = parser.parse_args()
    device = torch.device(args.device)
    try:
        from allpole_triton.bench import model, sm90

        predict = sm90.toolchain_available() and not args.no_model
    except ImportError:
        predict = False
    cache: dict = {}
    g = torch.Generator(device=device).manual_seed(0)
    print("B,T,M,median_us,min_us,predicted_us")
    for M in args.M:
        for B in args.B:
            for T in args.T:
                if B * T * M * M * 4 > 8e9:  # A alone past 8 GB
                    continue
                # random A scaled so that its spectral norm stays below 1: a stable recurrence
                A = torch.randn(B, T, M, M, generator=g, device=device) * (0.9 / (2 * M ** 0.5))
                u = torch.randn(B, T, M, generator=g, device=device)
                times = timed(lambda: linear_recurrence(A, u), device, args.repeat)
                predicted = model.model_case(B, T, M, "dense", cache).totals()["predicted_us"] if predict else float("nan")
                print(f"{B},{T},{M},{1e6 * statistics.median(times):.1f},{1e6 * min(times):.1f},{predicted:.1f}", flush=True)
                del A, u


if __name__ == "__main__":
    main()
