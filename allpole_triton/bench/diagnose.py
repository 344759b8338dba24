"""Stage-by-stage check of the Triton forward scan against a float64 loop: which launch goes wrong.

The first GPU run (H200, Triton 3.6) found the M = 2 output not finite at B=16, T=2^20 while the
same shapes pass under the interpreter. This runs a pass's launches one at a time on the real
device and checks every intermediate buffer against the float64 sequential loop's states:

- short orders (M <= 4): each chunk's inclusive block prefix (P, w) must map the state entering its
  block to the state leaving the chunk; the carry, when it is a launch of its own (not fused into
  the finish, where y checks it), must hold the state entering each block;
- long orders: each chunk's map (Phi, z) must map the state entering it to the state leaving it;
  the carry must hold the state entering each chunk;
- then the output y.

For each stage it prints the count of non-finite entries and the largest error relative to
max |y|. ``--group`` sweeps the lanes per program of the short-order scan (its prefix scan runs
over that many lanes: 1 warp up to 32, several above); ``--fuse 0`` puts the short-order carry in a
launch of its own, ``--fuse 1`` into the finish (default: as the launch table decides).

    python -m allpole_triton.bench.diagnose --device cuda -B 16 -T 1048576 -M 1 2 3 4 16
"""
from __future__ import annotations

import argparse
import functools
import hashlib
import json
import os
import sys

import torch

from .backends import sequential_loop
from .cases import case_coefficients


def _states(y: torch.Tensor, starts: torch.Tensor, M: int) -> torch.Tensor:
    """(B, len(starts), M): the state entering each start, component q = y[start-1-q] (0 before 0)."""
    q = torch.arange(M)
    idx = starts[:, None] - 1 - q[None, :]
    padded = torch.cat([torch.zeros(y.shape[0], 1, dtype=y.dtype), y], dim=1)
    return padded[:, (idx + 1).clamp(min=0)] * (idx >= 0)


def _maps(buffer: torch.Tensor, B: int, n: int, M: int) -> tuple[torch.Tensor, torch.Tensor]:
    """(P (B, n, M, M), w (B, n, M)) from the kernels' reversed [Phi | z] layout (see _summary)."""
    size = M * (M + 1)
    flat = buffer.detach().double().cpu().reshape(B, n, size).flip(-1).reshape(B, n, M, M + 1)
    return flat[..., :M], flat[..., M]


@functools.lru_cache(maxsize=1)
def _inputs(B: int, T: int, M: int, seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    """White noise through the benchmark's filters; one filter trajectory for all rows (generating
    B of them at order 16 takes half a minute)."""
    gen = torch.Generator().manual_seed(seed)
    a = case_coefficients(1, T, M, generator=gen).expand(B, T, M).contiguous()
    return torch.randn(B, T, generator=gen, dtype=torch.float64), a


def check(B: int, T: int, M: int, *, device: str, group: int | None = None, fuse: int | None = None,
          sms: int | None = None, seed: int = 0, dump: str | None = None) -> dict:
    """Run the forward launches of one (B, T, M) float32 case one at a time; return per-stage
    ``{stage: {"nonfinite": int, "max_rel_err": float}}`` plus the launch shape and, compiled, each
    kernel's PTX hash (``dump``: also write the PTX there, to diff against a compile elsewhere)."""
    from ..kernels import triton_scan

    previous = os.environ.get("ALLPOLE_TRITON_LAUNCH")
    forced = dict(triton_scan.forced_launch())  # the caller's, with group and fuse set here on top
    forced.update({key: value for key, value in (("group", group), ("fuse", fuse)) if value is not None})
    if forced:
        os.environ["ALLPOLE_TRITON_LAUNCH"] = ",".join(f"{key}={value}" for key, value in forced.items())
    try:
        x64, a64 = _inputs(B, T, M, seed)
        x, a = x64.float().to(device), a64.float().contiguous().to(device)
        zi = torch.zeros(B, M, device=device)
        y = torch.full((B, T), float("nan"), device=device)
        if sms is None and x.device.type == "cuda":
            sms = torch.cuda.get_device_properties(x.device).multi_processor_count
        shape = triton_scan.launch_shape(M, B, T, sms)
        with torch.cuda.device(x.device) if x.device.type == "cuda" else triton_scan._null():
            launches, finalize = triton_scan.plan(x, a, zi, y, reverse=False, sms=sms)
            ref = sequential_loop(x.cpu().double(), a.cpu().double())
            scale = ref.abs().max().item()
            n_chunks = -(-T // shape.chunk)
            report = {"B": B, "T": T, "M": M, "chunk": shape.chunk, "group": shape.group,
                      "n_chunks": n_chunks, "stages": {}, "ptx_sha256": {}}

            def record(name, got, want):
                got = got.detach().double().cpu()
                bad = int((~torch.isfinite(got)).sum())
                err = (got - want).abs().nan_to_num(float("inf")).max().item() / scale if got.numel() else 0.0
                report["stages"][name] = {"nonfinite": bad, "max_rel_err": err}

            for launch in launches:
                name = launch.kernel.fn.__name__ if hasattr(launch.kernel, "fn") else str(launch.kernel)
                compiled = launch.run()
                ptx = getattr(compiled, "asm", {}).get("ptx") if compiled is not None else None
                if ptx:
                    report["ptx_sha256"][name] = hashlib.sha256(ptx.encode()).hexdigest()[:16]
                    if dump:
                        os.makedirs(dump, exist_ok=True)
                        with open(os.path.join(dump, f"{name}_M{M}_group{shape.group}.ptx"), "w") as f:
                            f.write(ptx)
                if x.device.type == "cuda":
                    torch.cuda.synchronize()
                chunk_starts = torch.arange(n_chunks) * shape.chunk
                if name == "_summary":
                    P, w = _maps(launch.args[2], B, n_chunks, M)
                    ends = torch.clamp(chunk_starts + shape.chunk, max=T)
                    if triton_scan.is_short(M):  # inclusive prefixes from each block's start
                        block_of = torch.arange(n_chunks) // shape.group
                        entering = _states(ref, block_of * shape.group * shape.chunk, M)
                    else:
                        entering = _states(ref, chunk_starts, M)
                    mapped = (P @ entering.unsqueeze(-1)).squeeze(-1) + w
                    full = ends < T  # the last chunk's tail runs past T
                    record("summary", mapped[:, full], _states(ref, ends[full], M))
                elif name in ("_carry_short", "_carry_long"):
                    carry = launch.args[2].detach().double().cpu()
                    if name == "_carry_short":
                        n_blocks = -(-n_chunks // shape.group)
                        got = carry.reshape(B, n_blocks, M).flip(-1)  # stored component-reversed
                        want = _states(ref, torch.arange(n_blocks) * shape.group * shape.chunk, M)
                    else:
                        got = carry.reshape(B, n_chunks, M)
                        want = _states(ref, chunk_starts, M)
                    record("carry", got, want)
            finalize()
            record("y", y, ref)
        return report
    finally:  # the caller's own forced launch, if any, comes back
        if previous is None:
            os.environ.pop("ALLPOLE_TRITON_LAUNCH", None)
        else:
            os.environ["ALLPOLE_TRITON_LAUNCH"] = previous


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                     formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("-B", type=int, default=16)
    parser.add_argument("-T", type=int, default=1 << 20)
    parser.add_argument("-M", type=int, nargs="+", default=[1, 2, 3, 4, 16])
    parser.add_argument("--group", type=int, nargs="+", default=[0, 16, 128],
                        help="lanes per program of the short-order scan to try (0: the launch table's)")
    parser.add_argument("--fuse", type=int, choices=[0, 1], help="force the short-order carry's placement")
    parser.add_argument("--json", help="also write the reports here")
    parser.add_argument("--dump", help="write each compiled kernel's PTX into this folder")
    args = parser.parse_args(argv)
    reports, worst = [], 0.0
    for M in args.M:
        for group in args.group if M <= 4 else [0]:
            report = check(args.B, args.T, M, device=args.device, group=group or None, fuse=args.fuse, dump=args.dump)
            reports.append(report)
            stages = "  ".join(f"{k}: {v['nonfinite']} non-finite, err {v['max_rel_err']:.2e}"
                               for k, v in report["stages"].items())
            print(f"M={M:2d} chunk={report['chunk']:5d} group={report['group']:4d}  {stages}", flush=True)
            worst = max([worst] + [v["max_rel_err"] for v in report["stages"].values()])
    if args.json:
        with open(args.json, "w") as f:
            json.dump(reports, f, indent=1)
    return 0 if worst < 1e-4 else 1


if __name__ == "__main__":
    sys.exit(main())
