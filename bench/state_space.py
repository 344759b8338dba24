"""state_space against philtorch 0.6.0's ``lpv.state_space``, forward and forward+backward, side by side.

    python bench/state_space.py [--orders 2 4] [--repeat 7]

float32, B=8, T=65536, dense time-varying A (B, T, M, M) (spectral norm below 1), x (B, T), B and
C of shape (M,). Calls alternate (ours, philtorch), each after an untimed torch workload; prints the
median and min per call and the ratio of medians.
"""
from __future__ import annotations

import argparse
import warnings

import torch

from allpole_triton.bench.timing import side_by_side
from allpole_triton import state_space

BATCH, T = 8, 65536


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--orders", type=int, nargs="+", default=[2, 4])
    parser.add_argument("--repeat", type=int, default=7)
    args = parser.parse_args()
    warnings.filterwarnings("ignore", module="philtorch")
    try:
        from philtorch.lpv import state_space as philtorch_state_space
    except ImportError:
        philtorch_state_space = None
        print("philtorch is not installed: timing ours alone")
    g = torch.Generator().manual_seed(0)
    print(f"float32, B={BATCH}, T={T}, ms per call: median (min)")
    for M in args.orders:
        A = torch.randn(BATCH, T, M, M, generator=g) * (0.9 / (2 * M ** 0.5))
        x, B, C = torch.randn(BATCH, T, generator=g), torch.randn(M, generator=g), torch.randn(M, generator=g)
        fns = {"ours": lambda A_, x_: state_space(x_, A_, B, C)}
        if philtorch_state_space:
            fns["philtorch"] = lambda A_, x_: philtorch_state_space(A_, x_, B, C)
        for backward in (False, True):
            label = f"M={M} {'fwd+bwd' if backward else 'fwd    '}"
            print(label + side_by_side(fns, (A, x), x, backward=backward, repeat=args.repeat), flush=True)

if __name__ == "__main__":
    main()
