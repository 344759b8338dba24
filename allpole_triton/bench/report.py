"""Writers: results.csv (one row per backend and case) and report.md (tables per case)."""
from __future__ import annotations

import csv
import math
from itertools import groupby
from pathlib import Path

FIELDS = (
    "backend", "family", "exact", "coeffs", "pass", "B", "T", "M", "dtype", "device",
    "status", "reason", "time_s", "time_min_s", "ns_per_sample", "speedup_vs_torchlpc", "gb_per_s",
    "copy_fraction", "peak_mem_bytes", "esr_db", "hop", "n_fft", "repeat",
)
_INT = {"B", "T", "M", "hop", "n_fft", "repeat"}
_FLOAT = {"time_s", "time_min_s", "ns_per_sample", "speedup_vs_torchlpc", "gb_per_s", "copy_fraction", "peak_mem_bytes", "esr_db"}
CASE_FIELDS = ("coeffs", "pass", "B", "T", "M", "dtype", "device")


def write_csv(rows: list[dict], path) -> Path:
    """One line per row, columns :data:`FIELDS`; missing values are empty cells."""
    path = Path(path)
    with path.open("w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=FIELDS, extrasaction="ignore")
        writer.writeheader()
        for row in rows:
            writer.writerow({k: _cell(row.get(k)) for k in FIELDS})
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


def _num(v, fmt: str, suffix: str = "") -> str:
    if v is None or (isinstance(v, float) and math.isnan(v)):
        return "–"
    return format(v, fmt) + suffix


def _mem(nbytes) -> str:
    if nbytes is None or (isinstance(nbytes, float) and math.isnan(nbytes)):
        return "–"
    return f"{nbytes / 2**20:.1f} MiB"


def _esr(v) -> str:
    if v is None or (isinstance(v, float) and math.isnan(v)):
        return "–"
    return "exact (−∞)" if v == -math.inf else f"{v:.1f}"


def case_key(row: dict) -> tuple:
    return tuple(row[k] for k in CASE_FIELDS)


def _order(row: dict) -> tuple:  # time-varying first, then forward before forward+backward
    return (row["coeffs"] != "tv",) + case_key(row)


def markdown_table(rows: list[dict]) -> str:
    """A table of one case: backend, ns/sample, speed-up vs torchlpc, GB/s, % of copy BW,
    peak memory and ESR (dB, against the float64 exact filter)."""
    gpu = any(r.get("copy_fraction") is not None for r in rows)
    head = ["backend", "ns/sample", "speed-up vs torchlpc", "GB/s"] + (["% of copy BW"] if gpu else [])
    head += ["peak mem", "ESR (dB)"]
    lines = ["| " + " | ".join(head) + " |", "|" + "|".join(["---"] + ["---:"] * (len(head) - 1)) + "|"]
    for r in sorted((r for r in rows if r["status"] == "ok"), key=lambda r: r["ns_per_sample"]):
        cells = [r["backend"], _num(r["ns_per_sample"], ".2f"), _num(r.get("speedup_vs_torchlpc"), ".2f", "×"),
                 _num(r.get("gb_per_s"), ".2f")]
        if gpu:
            cells.append(_num(None if r.get("copy_fraction") is None else 100 * r["copy_fraction"], ".1f", "%"))
        cells += [_mem(r.get("peak_mem_bytes")), _esr(r.get("esr_db"))]
        lines.append("| " + " | ".join(str(c) for c in cells) + " |")
    return "\n".join(lines)


def markdown_report(rows: list[dict], machine: dict, plots=()) -> str:
    """report.md: machine, one table per case, skipped backends with their reasons, plots."""
    out = ["# allpole-triton benchmark", ""]
    out += [f"- **{k}**: {v}" for k, v in machine.items()]
    out += ["", "Times are medians; ns/sample = time / (B·T); speed-up vs torchlpc = torchlpc time / "
            "backend time (>1 is faster); GB/s counts the bytes an ideal kernel moves (x, a, y; plus "
            "grad_y, y, a, grad_x, grad_a for the backward); peak mem is the CPU peak-RSS growth "
            "(subprocess) or the CUDA peak allocation of one call; ESR is the error against the exact "
            "filter in float64 (FS = frequency-sampling approximation, hop/n_fft in its name).", ""]
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
        out += [f"## {label}, B={B}, T={T}, M={M}, {dtype}, {device}, {kind}", "", markdown_table(group), ""]
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
