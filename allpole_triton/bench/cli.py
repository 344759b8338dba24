"""``allpole-bench`` / ``python -m allpole_triton.bench``: sweep a grid, write CSV, Markdown, PNGs."""
from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import torch

from .backends import DEFAULT_FS, fs_backends, select
from .cases import COEFFS, PASSES, grid

QUICK = dict(B=[8], T=[1024, 8192], M=[1, 2, 16], repeat=3, budget=0.5, fs=[(128, 256), (128, 1024), (512, 2048)])
FULL = dict(B=[8], T=[4096, 16384, 65536], M=[1, 2, 16], repeat=7, budget=3.0, fs=list(DEFAULT_FS))
# The GPU grid the Triton issue asks for (cases that run out of memory are reported as errors).
FULL_GPU = dict(FULL, B=[1, 16, 256], T=[4096, 65536, 1048576], M=[1, 2, 4, 16])


def _fs_config(text: str) -> tuple[int, int]:
    try:
        hop, n_fft = (int(v) for v in text.split(":"))
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected HOP:N_FFT, got {text!r}") from None
    if n_fft < hop:
        raise argparse.ArgumentTypeError(f"n_fft must be >= hop, got {text!r}")
    return hop, n_fft


class _DefaultsFormatter(argparse.HelpFormatter):
    """Appends "(default: ...)" to an option's help unless the help already gives its default or the
    default says nothing (``None``, or the ``True``/``False`` of a flag)."""

    def _get_help_string(self, action):
        text = action.help or ""
        default = action.default
        if "default" in text or default in (None, True, False, argparse.SUPPRESS) or not action.option_strings:
            return text
        shown = " ".join(str(v) for v in default) if isinstance(default, (list, tuple)) else default
        return f"{text} (default: {shown})".strip()


def _fs_text(configs) -> str:
    return " ".join(f"{hop}:{n_fft}" for hop, n_fft in configs)


def _ints_text(values) -> str:
    return " ".join(str(v) for v in values)


def _preset_help(what: str, key: str) -> str:
    return (f"{what} (default {_ints_text(FULL[key])}, CUDA {_ints_text(FULL_GPU[key])}, "
            f"--quick {_ints_text(QUICK[key])})")


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="allpole-bench",
        description="Benchmark the exact time-varying all-pole filter against its peers and the "
        "frequency-sampling approximation; writes results.csv, report.md and PNG plots.",
        formatter_class=_DefaultsFormatter,
    )
    p.add_argument("--device", default=None, help="cpu or cuda[:i] (default: cuda if available, else cpu)")
    p.add_argument("--dtype", nargs="+", default=["float32"], choices=["float32", "float64"], help="data types")
    p.add_argument("-B", "--batch", dest="B", nargs="+", type=int, help=_preset_help("batch sizes", "B"))
    p.add_argument("-T", "--length", dest="T", nargs="+", type=int, help=_preset_help("lengths", "T"))
    p.add_argument("-M", "--order", dest="M", nargs="+", type=int, help=_preset_help("orders", "M"))
    p.add_argument("--passes", nargs="+", default=list(PASSES), choices=PASSES,
                   help="fwd: forward without autograd; fwdbwd: forward and backward")
    p.add_argument("--coeffs", nargs="+", default=list(COEFFS), choices=COEFFS,
                   help="tv: time-varying (B, T, M); lti: one constant set (where scipy/torchaudio run)")
    p.add_argument("--backends", nargs="+", default=["all"],
                   help="backend names or families (ours, torchlpc, philtorch, scipy, torchaudio, "
                   "accelerated-scan, fs, naive); default all")
    p.add_argument("--fs", nargs="+", type=_fs_config, metavar="HOP:N_FFT",
                   help=f"frequency-sampling configurations (default {_fs_text(FULL['fs'])}, "
                   f"--quick {_fs_text(QUICK['fs'])})")
    p.add_argument("--repeat", type=int, help="timed repetitions per case (median, min and spread reported; "
                   f"default {FULL['repeat']}, --quick {QUICK['repeat']}; on CUDA do_bench times for at least "
                   "max(100, 5 x repeat) ms)")
    p.add_argument("--timing", choices=["interleaved", "solo"], default="interleaved",
                   help="CPU: interleaved = the backends of a case take turns call by call, each call after a "
                   "fixed torch workload (as a model calls them); solo = each backend alone, call after call")
    p.add_argument("--warmup", type=int, default=1, help="untimed calls before timing (CPU)")
    p.add_argument("--budget", type=float, help="CPU seconds of timed calls per case and backend before "
                   "stopping short of --repeat (default 3, --quick 0.5)")
    p.add_argument("--quick", action="store_true",
                   help=f"a small grid: B {_ints_text(QUICK['B'])}, T {_ints_text(QUICK['T'])}, M {_ints_text(QUICK['M'])}, "
                   f"repeat {QUICK['repeat']}, budget {QUICK['budget']} s, fs {_fs_text(QUICK['fs'])}")
    p.add_argument("--out", type=Path, default=Path("bench-results"), help="output folder")
    p.add_argument("--no-memory", dest="memory", action="store_false", help="skip peak-memory runs")
    p.add_argument("--no-plots", dest="plots", action="store_false", help="skip PNG plots")
    p.add_argument("--no-progress", dest="progress", action="store_false",
                   help="no progress bars (timing and peak-memory phases)")
    p.add_argument("--list-backends", action="store_true", help="print backends and why any is skipped, then exit")
    p.add_argument("--model", action="store_true",
                   help="no timing: compile the Triton passes for sm_90 and print the static H100 model "
                   f"(default grid B {model_grid('B')}, T {model_grid('T')}, M {model_grid('M')}); "
                   "writes model.md and model.json to --out")
    p.add_argument("--json", action="store_true", help="with --model: print the model as JSON instead of Markdown")
    p.add_argument("--realtime", action="store_true",
                   help="no sweep: stream each audio system block by block (blocks 32-512, 44.1 and 48 kHz, one "
                   "thread) through process_block and its frozen processor; writes realtime.md/.json/.png to --out "
                   "(--repeat sets the timed blocks per case, default 300)")
    p.add_argument("--measured", type=Path, metavar="RESULTS_CSV",
                   help="with --model: put the Triton times of an allpole-bench results.csv beside the predictions")
    return p


def model_grid(key: str) -> list[int]:
    from .model import GRID

    return GRID[key]


def run_model(args) -> int:
    """``--model``: see :mod:`allpole_triton.bench.model`."""
    import os

    if os.environ.get("TRITON_INTERPRET") == "1":
        print("--model compiles kernels: unset TRITON_INTERPRET", file=sys.stderr)
        return 2
    from . import model, sm90
    from .report import read_csv

    if not sm90.toolchain_available():
        print("--model needs the ptxas and cuobjdump that Triton's CUDA backend ships", file=sys.stderr)
        return 2
    rows = model.run(B=args.B, T=args.T, M=args.M, progress=_progress_bar if args.progress else None)
    measured = model.measured_times(read_csv(args.measured)) if args.measured else None
    text = model.markdown(rows, measured)
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "model.json").write_text(json.dumps({"note": model.HEADER, "cases": rows}, indent=1) + "\n")
    (args.out / "model.md").write_text(text + "\n")
    print(json.dumps({"note": model.HEADER, "cases": rows}, indent=1) if args.json else text)
    return 0


def run_realtime(args) -> int:
    """``--realtime``: see :mod:`allpole_triton.bench.realtime`."""
    from . import realtime
    from .machine import machine_info

    machine = machine_info("cpu")
    progress = (lambda items: _progress_bar(items, "streaming")) if args.progress else None
    rows = realtime.run(calls=args.repeat or 300, progress=progress)
    calls = realtime.small_calls(calls=args.repeat or 300)
    text = realtime.markdown(rows, f"{machine['cpu']} ({machine['cpu_cores']} cores)")
    text += "\n\n" + realtime.small_calls_markdown(calls)
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "realtime.json").write_text(
        json.dumps({"machine": machine, "cases": rows, "small_calls": calls}, indent=1) + "\n"
    )
    (args.out / "realtime.md").write_text(text + "\n")
    if args.plots:
        try:
            realtime.plot(rows, args.out / "realtime.png")
        except ImportError as exc:
            print(f"plot skipped: {exc}", file=sys.stderr)
    print(text)
    return 0


def _progress_bar(items, desc: str = "compiling and modelling"):
    try:
        from tqdm import tqdm
    except ImportError:
        return items
    return tqdm(items, desc=desc, file=sys.stderr)


def main(argv=None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.model:
        return run_model(args)
    if args.realtime:
        return run_realtime(args)
    device = args.device or ("cuda" if torch.cuda.is_available() else "cpu")
    kind = torch.device(device).type
    if kind == "cuda" and not torch.cuda.is_available():
        parser.error(f"--device {device}: CUDA is not available here (torch {torch.__version__}, "
                     f"built with CUDA {torch.version.cuda}); use --device cpu")
    if kind not in ("cpu", "cuda"):
        parser.error(f"--device must be cpu or cuda, got {device!r}")
    preset = QUICK if args.quick else FULL_GPU if kind == "cuda" else FULL
    B, T, M = args.B or preset["B"], args.T or preset["T"], args.M or preset["M"]
    repeat = args.repeat or preset["repeat"]
    try:
        backends = select(args.backends, fs_backends(args.fs or preset["fs"]))
    except ValueError as exc:
        parser.error(str(exc))
    cases = grid(B=B, T=T, M=M, dtypes=args.dtype, passes=args.passes, coeffs=args.coeffs, device=device)

    if args.list_backends:
        for b in backends:
            reasons = [b.skip_reason(c) for c in cases]
            skipped = sorted(set(r for r in reasons if r), key=reasons.index)
            if not skipped:
                state = "runs"
            elif None in reasons:
                state = f"runs; skips {len([r for r in reasons if r])} of {len(cases)} cases: {'; '.join(skipped)}"
            else:
                state = f"skipped: {'; '.join(skipped)}"
            print(f"{b.name:18s} {b.family:16s} {state}")
        return 0

    from .machine import machine_info
    from .report import write_csv, write_report
    from .sweep import run_sweep

    args.out.mkdir(parents=True, exist_ok=True)
    machine = machine_info(device)
    if kind == "cpu":
        machine["timing"] = (
            "interleaved: backends take turns call by call, each call after an untimed torch workload "
            "(tanh, sin, sum over a signal-sized tensor)" if args.timing == "interleaved"
            else "solo: each backend alone, call after call"
        )
    print(f"{len(cases)} cases x {len(backends)} backends on {machine.get('gpu', machine['cpu'])} "
          f"({machine['cpu_cores']} cores) -> {args.out}", flush=True)
    rows = run_sweep(cases, backends, repeat=repeat, warmup=args.warmup, memory=args.memory,
                     interleaved=args.timing == "interleaved",
                     progress=args.progress, budget=args.budget or preset["budget"],
                     on_case=lambda rows: write_csv(rows, args.out / "results.csv"))
    write_csv(rows, args.out / "results.csv")
    (args.out / "machine.json").write_text(json.dumps(machine, indent=2) + "\n")
    plots = []
    if args.plots:
        try:
            from .plots import write_plots

            plots = write_plots(rows, args.out)
        except ImportError as exc:
            print(f"plots skipped: {exc}", file=sys.stderr)
    write_report(rows, machine, args.out / "report.md", plots)
    failed = [r for r in rows if r["status"] == "error"]
    for r in failed:
        print(f"error: {r['backend']} {r['pass']} B={r['B']} T={r['T']} M={r['M']}: {r['reason']}", file=sys.stderr)
    print(f"wrote {args.out / 'results.csv'}, {args.out / 'report.md'}"
          + "".join(f", {p}" for p in plots), flush=True)
    return 0
