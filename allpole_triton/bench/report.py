"""Writers: results.csv (one row per backend and case) and report.md (tables per case)."""
from __future__ import annotations

import csv
import math
import os
from itertools import groupby
from pathlib import Path

from .cases import KNOT_SPACING, RADIUS

FIELDS = (
    "backend", "family", "exact", "coeffs", "pass", "B", "T", "M", "dtype", "device",
    "status", "reason", "time_s", "time_min_s", "time_max_s", "spread", "ns_per_sample", "speedup_vs_torchlpc",
    "gb_per_s", "copy_fraction", "peak_mem_bytes", "esr_db", "max_err", "loop_esr_db", "loop_max_err",
    "hop", "n_fft", "repeat",
)
_INT = {"B", "T", "M", "hop", "n_fft", "repeat"}
_FLOAT = {"time_s", "time_min_s", "time_max_s", "spread", "ns_per_sample", "speedup_vs_torchlpc", "gb_per_s",
          "copy_fraction", "peak_mem_bytes", "esr_db", "max_err", "loop_esr_db", "loop_max_err"}
CASE_FIELDS = ("coeffs", "pass", "B", "T", "M", "dtype", "device")
SPREAD_FLAG = 0.5  # rows whose (max - min) / median time exceeds this are flagged as noisy


def write_csv(rows: list[dict], path) -> Path:
    """One line per row, columns :data:`FIELDS`; missing values are empty cells. Written whole and
    then renamed, so that a run stopped mid-write leaves the previous file."""
    path = Path(path)
    partial = path.with_name(path.name + ".part")
    with partial.open("w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=FIELDS, extrasaction="ignore")
        writer.writeheader()
        for row in rows:
            writer.writerow({k: _cell(row.get(k)) for k in FIELDS})
    os.replace(partial, path)
    return path


def _cell(v):
    if v is None or (isinstance(v, float) and math.isnan(v)):
        return ""
    if isinstance(v, float):
        return f"{v:.6g}"
    return v


def read_csv(path) -> list[dict]:
    """Rows of :func:`write_csv` with numbers parsed back (empty cells -> ``None``)."""
    rows = []
    with Path(path).open(newline="") as f:
        for raw in csv.DictReader(f):
            row = {}
            for k, v in raw.items():
                if v == "":
                    row[k] = None
                elif k in _INT:
                    row[k] = int(v)
                elif k in _FLOAT:
                    row[k] = float(v)
                elif k == "exact":
                    row[k] = v == "True"
                else:
                    row[k] = v
            rows.append(row)
    return rows


def _missing(v) -> bool:
    return v is None or (isinstance(v, float) and math.isnan(v))


def _num(v, fmt: str, suffix: str = "") -> str:
    if _missing(v):
        return "–"
    return format(v, fmt) + suffix


def _mem(nbytes) -> str:
    if _missing(nbytes):
        return "–"
    return f"{nbytes / 2**20:.1f} MiB"


def _esr(v) -> str:
    if _missing(v):
        return "–"
    return "exact (−∞)" if v == -math.inf else f"{v:.1f}"


def _err(v) -> str:
    if _missing(v):
        return "–"
    return "0" if v == 0 else f"{v:.1e}"


def _spread(row: dict) -> str:
    """(max - min) / median in percent, flagged with ⚠ above :data:`SPREAD_FLAG`."""
    v = row.get("spread")
    if _missing(v):
        return "–"
    return f"{100 * v:.0f}%" + (" ⚠" if v > SPREAD_FLAG else "")


def _vs_loop(row: dict) -> str:
    err, loop = row.get("max_err"), row.get("loop_max_err")
    if _missing(err) or _missing(loop) or loop == 0:
        return "–"
    return f"{err / loop:.2f}×"


def case_key(row: dict) -> tuple:
    return tuple(row[k] for k in CASE_FIELDS)


def _order(row: dict) -> tuple:  # time-varying first, then forward before forward+backward
    return (row["coeffs"] != "tv",) + case_key(row)


def markdown_table(rows: list[dict]) -> str:
    """A table of one case: backend, ns/sample (median, min and spread of the timed calls),
    speed-up vs torchlpc, GB/s, % of copy BW (GPU), peak memory, ESR (dB) and relative max error
    against the float64 sequential loop, and that error over the float32 sequential loop's."""
    gpu = any(r.get("copy_fraction") is not None for r in rows)
    head = ["backend", "ns/sample", "min", "spread", "speed-up vs torchlpc", "GB/s"] + (["% of copy BW"] if gpu else [])
    head += ["peak mem", "ESR (dB)", "max err", "÷ loop err"]
    lines = ["| " + " | ".join(head) + " |", "|" + "|".join(["---"] + ["---:"] * (len(head) - 1)) + "|"]
    for r in sorted((r for r in rows if r["status"] == "ok"), key=lambda r: r["ns_per_sample"]):
        samples = r["B"] * r["T"]
        ns_min = None if _missing(r.get("time_min_s")) else 1e9 * r["time_min_s"] / samples
        cells = [r["backend"], _num(r["ns_per_sample"], ".2f"), _num(ns_min, ".2f"), _spread(r),
                 _num(r.get("speedup_vs_torchlpc"), ".2f", "×"), _num(r.get("gb_per_s"), ".2f")]
        if gpu:
            cells.append(_num(None if r.get("copy_fraction") is None else 100 * r["copy_fraction"], ".1f", "%"))
        cells += [_mem(r.get("peak_mem_bytes")), _esr(r.get("esr_db")), _err(r.get("max_err")), _vs_loop(r)]
        lines.append("| " + " | ".join(str(c) for c in cells) + " |")
    return "\n".join(lines)


def _loop_line(rows: list[dict], dtype: str) -> str | None:
    """The float32 (case dtype) sequential loop's own error on the case's inputs."""
    ok = [r for r in rows if r["status"] == "ok" and not _missing(r.get("loop_max_err"))]
    if not ok:
        return None
    if dtype == "float64":
        return "The reference is the float64 sequential loop itself (a float64 filter is compared with another float64 order)."
    r = ok[0]
    return (f"A plain {dtype} sequential loop on these inputs: max err {_err(r['loop_max_err'])}, "
            f"ESR {_esr(r.get('loop_esr_db'))} dB.")


LEGEND = (
    "A “–” cell is a value not measured for that row: *peak mem* on CPU is measured at the largest T "
    "of the sweep only (none at all with `--no-memory`); *speed-up* needs a torchlpc time for the "
    "same case; *÷ loop err* needs a non-zero error of the sequential loop (float64 cases compare "
    "with the reference itself); *min* and *spread* need timed calls. ⚠ marks a spread above "
    f"{100 * SPREAD_FLAG:.0f}%: the calls of that row varied a lot (a busy machine), so treat its "
    "median with care or rerun it."
)


def markdown_report(rows: list[dict], machine: dict, plots=()) -> str:
    """report.md: machine, one table per case, skipped backends with their reasons, plots."""
    out = ["# allpole-triton benchmark", ""]
    out += [f"- **{k}**: {v}" for k, v in machine.items()]
    out += ["", "Times are medians of the timed calls, with the fastest call (*min*) and the *spread* "
            "(max − min) / median beside them; ns/sample = time / (B·T); speed-up vs torchlpc = torchlpc "
            "time / backend time (>1 is faster); GB/s counts the bytes an ideal kernel moves (x, a, y; plus "
            "grad_y, y, a, grad_x, grad_a for the backward); peak mem is the CPU peak-RSS growth "
            "(subprocess) or the CUDA peak allocation of one call. Errors are of the forward output "
            "against a float64 sequential loop on the same inputs: ESR = 10·log10(Σe² / Σy²) and "
            "*max err* = max|e| / max|y|; *÷ loop err* divides that max err by the max err of a plain "
            "sequential loop in the case's dtype (terms newest first, no fused multiply-add), the "
            "rounding error any filter of that precision pays (FS = frequency-sampling approximation, "
            "hop/n_fft in its name). Filters: speech-LPC-like poles of radius "
            f"{RADIUS[0]} to {RADIUS[1]}, new positions every {KNOT_SPACING} samples "
            "(`allpole_triton.bench.cases.case_coefficients`).", "", LEGEND, ""]
    if any(r.get("peak_mem_bytes") is not None for r in rows if r["device"] == "cpu"):
        out += ["CPU peak memory is measured at the largest T of the sweep only.", ""]
    ordered = sorted(rows, key=_order)
    for key, group in groupby(ordered, key=case_key):
        group = list(group)
        if not any(r["status"] == "ok" for r in group):
            continue
        coeffs, pass_, B, T, M, dtype, device = key
        kind = "time-varying" if coeffs == "tv" else "constant coefficients"
        label = "forward" if pass_ == "fwd" else "forward+backward"
        out += [f"## {label}, B={B}, T={T}, M={M}, {dtype}, {device}, {kind}", ""]
        loop = _loop_line(group, dtype)
        if loop:
            out += [loop, ""]
        out += [markdown_table(group), ""]
    noisy = [r for r in rows if r["status"] == "ok" and not _missing(r.get("spread")) and r["spread"] > SPREAD_FLAG]
    if noisy:
        out += [f"{len(noisy)} of {sum(r['status'] == 'ok' for r in rows)} timings are flagged ⚠ "
                f"(spread above {100 * SPREAD_FLAG:.0f}%).", ""]
    skipped = sorted({(r["backend"], r["reason"]) for r in rows if r["status"] != "ok"})
    if skipped:
        out += ["## Not run", ""]
        out += [f"- {b}: {reason}" for b, reason in skipped]
        out.append("")
    for plot in plots:
        out += [f"![{Path(plot).stem}]({Path(plot).name})", ""]
    return "\n".join(out)


def write_report(rows: list[dict], machine: dict, path, plots=()) -> Path:
    path = Path(path)
    path.write_text(markdown_report(rows, machine, plots), encoding="utf-8")
    return path
