"""PNG plots of a sweep: time vs T, speed-up vs M, and the FS error/time trade-off."""
from __future__ import annotations

from collections import defaultdict
from pathlib import Path


def _pyplot():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def _ok(rows):
    return [r for r in rows if r["status"] == "ok"]


def _pick(values, prefer):
    values = sorted(set(values))
    return prefer if prefer in values else values[len(values) // 2]


def _at_one_shape(rows, **fixed):
    """Rows at one B and dtype (8 and float32 when swept) plus ``fixed``; returns (rows, B, dtype)."""
    B = _pick([r["B"] for r in rows], 8)
    dtype = _pick([r["dtype"] for r in rows], "float32")
    fixed = dict(fixed, B=B, dtype=dtype)
    return [r for r in rows if all(r[k] == v for k, v in fixed.items())], B, dtype


def _panels_by_pass(rows, x: str, y: str, skip=()):
    """A figure with one axis per pass; yields (ax, pass title, {backend: points sorted by x})."""
    passes = sorted({r["pass"] for r in rows}, key=["fwd", "fwdbwd"].index)
    fig, axes = _pyplot().subplots(1, len(passes), figsize=(6 * len(passes), 4.5), squeeze=False)
    panels = []
    for ax, pass_ in zip(axes[0], passes):
        series = defaultdict(list)
        for r in rows:
            if r["pass"] == pass_ and r["backend"] not in skip:
                series[r["backend"]].append((r[x], r[y]))
        title = "forward" if pass_ == "fwd" else "forward+backward"
        panels.append((ax, title, {name: sorted(pts) for name, pts in sorted(series.items())}))
    return fig, panels


def _colors(rows) -> dict[str, str]:
    """One colour per backend, the same in every panel (the panels share one legend)."""
    return {name: f"C{i % 10}" for i, name in enumerate(sorted({r["backend"] for r in rows}))}


def _line_style(backend: str) -> str:
    return "x--" if "fs" in backend else "o-"


def plot_time_vs_T(rows, path, M=None) -> Path | None:
    """ns/sample against T per backend, one panel per pass (time-varying case, fixed M, B, dtype)."""
    rows = [r for r in _ok(rows) if r["coeffs"] == "tv"]
    if not rows:
        return None
    M = M if M is not None else _pick([r["M"] for r in rows], 2)
    rows, B, dtype = _at_one_shape(rows, M=M)
    fig, panels = _panels_by_pass(rows, "T", "time_s")
    colors = _colors(rows)
    for ax, title, series in panels:
        for name, pts in series.items():
            ax.loglog([p[0] for p in pts], [p[1] * 1e3 for p in pts], _line_style(name), label=name,
                      color=colors[name])
        ax.set_xlabel("T (samples)")
        ax.set_ylabel("time (ms)")
        ax.set_title(f"{title}, B={B}, M={M}, {dtype}")
        _ticks_at(ax, sorted({r["T"] for r in rows}), _samples_label)
        ax.grid(True, which="both", alpha=0.3)
    _figure_legend(fig, [ax for ax, _, _ in panels])
    return _save(fig, path)


def plot_speedup_vs_M(rows, path) -> Path | None:
    """Speed-up over torchlpc against M per backend, at the largest T (time-varying case)."""
    rows = [r for r in _ok(rows) if r["coeffs"] == "tv" and r.get("speedup_vs_torchlpc")]
    if not rows:
        return None
    T = max(r["T"] for r in rows)
    rows, B, dtype = _at_one_shape(rows, T=T)
    fig, panels = _panels_by_pass(rows, "M", "speedup_vs_torchlpc", skip=("torchlpc",))
    colors = _colors(rows)
    for ax, title, series in panels:
        for name, pts in series.items():
            ax.plot([p[0] for p in pts], [p[1] for p in pts], _line_style(name), label=name, color=colors[name])
        ax.axhline(1.0, color="k", lw=0.8, ls=":", label="torchlpc")
        ax.set_xscale("log", base=2)
        ax.set_yscale("log")
        ax.set_xlabel("order M")
        ax.set_ylabel("speed-up vs torchlpc (×)")
        ax.set_title(f"{title}, B={B}, T={T}, {dtype}")
        _ticks_at(ax, sorted({r["M"] for r in rows}), lambda v: f"{v:g}")
        ax.grid(True, which="both", alpha=0.3)
    _figure_legend(fig, [ax for ax, _, _ in panels])
    return _save(fig, path)


def plot_fs_tradeoff(rows, path) -> Path | None:
    """ESR (dB) against forward time: FS configurations next to the exact backends, one legend
    entry per point (no labels on the data, which overlap wherever points are close)."""
    rows = [r for r in _ok(rows) if r["pass"] == "fwd" and r["coeffs"] == "tv" and r.get("esr_db") is not None]
    fs = [r for r in rows if r["family"] == "fs"]
    if not fs:
        return None
    T = max(r["T"] for r in fs)
    M = _pick([r["M"] for r in fs], 2)
    rows = [r for r in rows if r["T"] == T and r["M"] == M]
    rows.sort(key=lambda r: (r["family"] == "fs", r.get("hop") or 0, r.get("n_fft") or 0, r["backend"]))
    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(6.5, 4.5))
    exact_markers, fs_markers = iter("osD^v<>phP*" * 3), iter("xX+1234" * 3)
    for i, r in enumerate(rows):
        is_fs = r["family"] == "fs"
        esr = max(r["esr_db"], -200.0)  # an exact match (-inf) is drawn at the floor
        label = f"FS hop {r['hop']}, N {r['n_fft']}" if is_fs else r["backend"]
        ax.scatter(r["time_s"] * 1e3, esr, marker=next(fs_markers if is_fs else exact_markers), s=45,
                   color=f"C{i % 10}", label=f"{label}: {esr:.0f} dB")
    ax.set_xscale("log")
    ax.set_xlabel("forward time (ms)")
    ax.set_ylabel("ESR vs float64 loop (dB)")
    B, dtype = rows[0]["B"], rows[0]["dtype"]
    ax.set_title(f"FS approximation vs exact, B={B}, T={T}, M={M}, {dtype}")
    ax.grid(True, which="both", alpha=0.3)
    ax.legend(fontsize=8, loc="center left", bbox_to_anchor=(1.02, 0.5), frameon=False)
    return _save(fig, path)


def write_plots(rows, out_dir) -> list[Path]:
    """All three plots under ``out_dir`` (those with data); needs matplotlib."""
    out_dir = Path(out_dir)
    made = [
        plot_time_vs_T(rows, out_dir / "time_vs_T.png"),
        plot_speedup_vs_M(rows, out_dir / "speedup_vs_M.png"),
        plot_fs_tradeoff(rows, out_dir / "fs_error_vs_time.png"),
    ]
    return [p for p in made if p is not None]


def _samples_label(v: float) -> str:
    v = int(v)
    if v >= 1 << 20 and v % (1 << 20) == 0:
        return f"{v >> 20}M"
    if v >= 1 << 10 and v % (1 << 10) == 0:
        return f"{v >> 10}k"
    return str(v)


def _ticks_at(ax, values, label) -> None:
    """Major ticks at the measured values only (log axes otherwise crowd 3×10⁴ next to 4×10⁴)."""
    from matplotlib.ticker import FixedLocator, NullFormatter, NullLocator

    ax.xaxis.set_major_locator(FixedLocator(values))
    ax.set_xticklabels([label(v) for v in values])
    ax.xaxis.set_minor_locator(NullLocator())
    ax.xaxis.set_minor_formatter(NullFormatter())


def _figure_legend(fig, axes) -> None:
    """One legend for all panels, outside them on the right, so that it never covers data."""
    handles = {}
    for ax in axes:
        for handle, label in zip(*ax.get_legend_handles_labels()):
            handles.setdefault(label, handle)
    if handles:
        fig.legend(list(handles.values()), list(handles), fontsize=8, loc="center left",
                   bbox_to_anchor=(1.0, 0.5), frameon=False)


def _save(fig, path) -> Path:
    import matplotlib.pyplot as plt

    fig.tight_layout()
    fig.savefig(path, dpi=120, bbox_inches="tight")
    plt.close(fig)
    return Path(path)
