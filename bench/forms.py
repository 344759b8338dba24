"""lfilter's four direct forms against philtorch 0.6.0's ``lpv.lfilter``, forward+backward, side by side.

    python bench/forms.py [--orders 2 8] [--repeat 5]

float32, B=8, T=65536, time-varying b (B, T, K+1) and a (B, T, M) with K = M; every call of ours is
followed by philtorch's on the same inputs (each after an untimed torch workload), and the script
prints the median and min per call and the ratio of medians. philtorch runs each form on the
backend that has it (tdf2: ssm; the others: torchlpc, its faster one here).
"""
from __future__ import annotations

import argparse

import torch

from allpole_triton.bench.timing import side_by_side
from allpole_triton.systems import lfilter

B, T = 8, 65536
PHILTORCH_BACKEND = {"df1": "torchlpc", "df2": "torchlpc", "tdf1": "torchlpc", "tdf2": "ssm"}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--orders", type=int, nargs="+", default=[2, 8])
    parser.add_argument("--repeat", type=int, default=5)
    args = parser.parse_args()
    try:
        from philtorch.lpv import lfilter as philtorch_lfilter
    except ImportError:
        philtorch_lfilter = None
        print("philtorch is not installed: timing ours alone")
    g = torch.Generator().manual_seed(0)
    print(f"float32, B={B}, T={T}, forward+backward, ms per call: median (min)")
    for order in args.orders:
        x = torch.randn(B, T, generator=g)
        b = 0.5 * torch.randn(B, T, order + 1, generator=g)
        a = (0.6 / order) * (2 * torch.rand(B, T, order, generator=g) - 1)
        for form in ("df1", "df2", "tdf1", "tdf2"):
            def ours(x_, b_, a_):
                return lfilter(x_, b_, a_, form=form)

            def theirs(x_, b_, a_):
                return philtorch_lfilter(b_, a_, x_, form=form, backend=PHILTORCH_BACKEND[form])

            fns = {"ours": ours} | ({"philtorch": theirs} if philtorch_lfilter else {})
            print(f"K=M={order} {form:5s}" + side_by_side(fns, (x, b, a), x, backward=True, repeat=args.repeat), flush=True)

if __name__ == "__main__":
    main()
