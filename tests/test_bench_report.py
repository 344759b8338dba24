"""The benchmark's writers, FS error measurement, case construction and CLI (fast)."""
from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from allpole_triton import allpole
from allpole_triton.bench import BACKENDS, Backend, Case, main, stable_coefficients
from allpole_triton.bench.backends import sequential_loop
from allpole_triton.bench.cases import Inputs, case_coefficients
from allpole_triton.bench.cli import build_parser
from allpole_triton.bench.memory import measure_cpu
from allpole_triton.bench.report import markdown_report, markdown_table, read_csv, write_csv
from allpole_triton.bench.sweep import add_speedups, errors, reference
from allpole_triton.bench.timing import Timing
from allpole_triton.fs import fs_filter
from allpole_triton.metrics import esr_db


def _row(backend, time_s, **kw):
    row = dict(backend=backend, family=backend, exact=True, coeffs="tv", pass_="fwd", B=8, T=1024, M=2,
               dtype="float32", device="cpu", status="ok", reason="", time_s=time_s,
               time_min_s=None if time_s is None else 0.9 * time_s, time_max_s=None if time_s is None else 1.1 * time_s,
               spread=None if time_s is None else 0.2,
               ns_per_sample=None if time_s is None else 1e9 * time_s / 8192, gb_per_s=1.0, peak_mem_bytes=2.0 * 2**20,
               esr_db=-140.0, max_err=2e-7, loop_esr_db=-138.0, loop_max_err=4e-7,
               hop=None, n_fft=None, repeat=5)
    row["pass"] = row.pop("pass_")
    row.update(kw)
    return row


@pytest.fixture
def rows():
    rows = [
        _row("torchlpc", 4e-3),
        _row("numba", 1e-3),
        _row("fs-h128-n256", 2e-3, family="fs", exact=False, esr_db=-12.5, max_err=0.3, hop=128, n_fft=256,
             peak_mem_bytes=math.nan, spread=0.8),
        _row("scipy", None, status="skipped", reason="scipy takes constant coefficients only", ns_per_sample=None,
             gb_per_s=None, peak_mem_bytes=None, esr_db=None, max_err=None, loop_esr_db=None, loop_max_err=None),
        _row("numba", 3e-3, M=16),  # another case, no torchlpc there
    ]
    add_speedups(rows)
    return rows


def test_speedups_are_per_case(rows):
    assert rows[0]["speedup_vs_torchlpc"] == pytest.approx(1.0)
    assert rows[1]["speedup_vs_torchlpc"] == pytest.approx(4.0)
    assert rows[2]["speedup_vs_torchlpc"] == pytest.approx(2.0)
    assert rows[3]["speedup_vs_torchlpc"] is None  # skipped
    assert rows[4]["speedup_vs_torchlpc"] is None  # no baseline for M=16


def test_csv_round_trip(rows, tmp_path):
    path = write_csv(rows, tmp_path / "results.csv")
    text = path.read_text()
    assert text.splitlines()[0].startswith("backend,family,exact,coeffs,pass,B,T,M,dtype,device,status")
    back = read_csv(path)
    assert len(back) == len(rows)
    assert back[1]["backend"] == "numba" and back[1]["B"] == 8 and back[1]["M"] == 2
    assert back[1]["time_s"] == pytest.approx(1e-3) and back[1]["speedup_vs_torchlpc"] == pytest.approx(4.0)
    assert back[1]["exact"] is True and back[2]["exact"] is False
    assert back[2]["hop"] == 128 and back[2]["n_fft"] == 256 and back[2]["esr_db"] == pytest.approx(-12.5)
    assert back[2]["peak_mem_bytes"] is None  # NaN -> empty cell -> None
    assert back[3]["status"] == "skipped" and back[3]["reason"] == "scipy takes constant coefficients only"
    assert back[3]["time_s"] is None
    assert back[1]["time_max_s"] == pytest.approx(1.1e-3) and back[1]["spread"] == pytest.approx(0.2)
    assert back[1]["max_err"] == pytest.approx(2e-7) and back[1]["loop_max_err"] == pytest.approx(4e-7)
    assert back[1]["loop_esr_db"] == pytest.approx(-138.0)


def test_markdown_table(rows):
    table = markdown_table([r for r in rows if r["M"] == 2]).splitlines()
    assert table[0] == ("| backend | ns/sample | min | spread | speed-up vs torchlpc | GB/s | peak mem | ESR (dB) "
                        "| max err | ÷ loop err |")
    assert table[1] == "|---|" + "|".join(["---:"] * 9) + "|"
    body = [line.split(" | ")[0].strip("| ") for line in table[2:]]
    assert body == ["numba", "fs-h128-n256", "torchlpc"]  # fastest first; skipped rows left out
    numba = table[2]
    assert "| 122.07 | 109.86 | 20% |" in numba and "4.00×" in numba and "2.0 MiB" in numba and "-140.0" in numba
    assert "| 2.0e-07 | 0.50× |" in numba  # max err and its ratio to the float32 loop's
    assert "| – |" in table[3]  # NaN memory
    assert "80% ⚠" in table[3] and "⚠" not in numba  # large spread flagged
    gpu = markdown_table([dict(rows[1], copy_fraction=0.5)])
    assert "% of copy BW" in gpu and "50.0%" in gpu
    f64 = markdown_table([dict(rows[1], dtype="float64", loop_max_err=0.0)])
    assert "| – |" in f64.splitlines()[2]  # no ratio to a zero loop error


def test_markdown_report(rows):
    text = markdown_report(rows, {"cpu": "Test CPU", "date": "2026-01-01"}, plots=["out/time_vs_T.png"])
    assert "- **cpu**: Test CPU" in text and "- **date**: 2026-01-01" in text
    assert "## forward, B=8, T=1024, M=2, float32, cpu, time-varying" in text
    assert "## forward, B=8, T=1024, M=16, float32, cpu, time-varying" in text
    assert "- scipy: scipy takes constant coefficients only" in text  # skipped with its reason
    assert "![time_vs_T](time_vs_T.png)" in text
    assert "A “–” cell is a value not measured" in text  # the legend of the dash cells
    assert "A plain float32 sequential loop on these inputs: max err 4.0e-07, ESR -138.0 dB." in text
    assert "1 of 4 timings are flagged ⚠" in text


def test_sequential_loop_and_errors():
    g = torch.Generator().manual_seed(0)
    x = torch.randn(3, 300, generator=g, dtype=torch.float64)
    a = case_coefficients(3, 300, 5, generator=g)
    ref = reference(Inputs(x, a, x))
    assert torch.allclose(ref, allpole(x, a), rtol=0, atol=1e-10)
    assert torch.allclose(sequential_loop(x, a[:1, :1]), allpole(x, a[:1, :1]), rtol=0, atol=1e-10)  # broadcast a
    y32 = sequential_loop(x.float(), a.float())
    assert y32.dtype == torch.float32
    esr, max_err = errors(y32, ref)
    assert -160 < esr < -100 and 1e-8 < max_err < 1e-5
    assert errors(ref, ref) == (-math.inf, 0.0)
    assert all(math.isnan(v) for v in errors(torch.full_like(ref, math.nan), ref))


def test_timing_spread():
    t = Timing.of([1.0, 2.0, 4.0])
    assert (t.median, t.min, t.max, t.repeat) == (2.0, 1.0, 4.0, 3)
    assert t.spread == pytest.approx(1.5)


def _fs_esr(x, a, ref, n_fft, hop=128):
    return esr_db(fs_filter(x, a, hop=hop, n_fft=n_fft), ref)


def test_fs_error_falls_as_fft_size_grows():
    # slowly moving poles near the unit circle: long impulse responses, so time aliasing of the
    # truncated response (not the frame hold) dominates the FS error at small n_fft
    g = torch.Generator().manual_seed(0)
    B, T, M = 2, 8192, 4
    x = torch.randn(B, T, generator=g, dtype=torch.float64)
    a = stable_coefficients(B, T, M, knots=4, radius=(0.97, 0.985), angle_step=0.01, generator=g)
    ref = allpole(x, a)
    errors = [_fs_esr(x.float(), a.float(), ref, n) for n in (128, 256, 512)]
    assert errors[0] > errors[1] + 3 > errors[2] + 6, errors
    assert errors[-1] < -30, errors


def test_fs_error_far_above_float32_rounding_for_fast_coefficients():
    g = torch.Generator().manual_seed(1)
    B, T, M = 2, 8192, 4
    x = torch.randn(B, T, generator=g, dtype=torch.float64)
    a = stable_coefficients(B, T, M, knots=T // 16, radius=(0.5, 0.95), generator=g)
    ref = allpole(x, a)
    exact = esr_db(allpole(x.float(), a.float()), ref)  # float32 rounding only
    fs = max(_fs_esr(x.float(), a.float(), ref, n) for n in (256, 1024, 4096))
    fs_best = min(_fs_esr(x.float(), a.float(), ref, n) for n in (256, 1024, 4096))
    assert exact < -90, exact
    assert fs_best > -20 and fs_best > exact + 70, (fs_best, fs, exact)


@pytest.mark.parametrize("M", [1, 2, 5, 16])
def test_stable_coefficients_are_stable(M):
    a = stable_coefficients(3, 500, M, knots=7, radius=(0.5, 0.98), generator=torch.Generator().manual_seed(M))
    assert a.shape == (3, 500, M) and a.dtype == torch.float64
    radii = [np.abs(np.roots(np.r_[1.0, a[b, t].numpy()])).max() for b in range(3) for t in range(0, 500, 37)]
    assert max(radii) < 0.98 + 1e-9


@pytest.mark.parametrize("M", [1, 2, 5, 16])
def test_case_coefficients_are_speech_like(M):
    """Radii in [0.9, 0.99], one pair per band of angles (pairs never cross), smooth motion."""
    T = 2048
    a = case_coefficients(2, T, M, generator=torch.Generator().manual_seed(M))
    pairs = M // 2
    previous = None
    for t in range(0, T, 64):
        for b in range(2):
            poles = np.roots(np.r_[1.0, a[b, t].numpy()])
            radii = np.abs(poles)
            assert radii.min() > 0.9 - 1e-9 and radii.max() < 0.99 + 1e-9, (t, radii)
            angles = np.sort(np.angle(poles[poles.imag > 1e-12]))
            assert len(angles) == pairs
            for k, angle in enumerate(angles):  # pair k stays in [k + 0.2, k + 0.8] * pi / pairs
                assert (k + 0.2) * math.pi / pairs - 1e-9 <= angle <= (k + 0.8) * math.pi / pairs + 1e-9
        if previous is not None:  # at most ANGLE_STEP per KNOT_SPACING samples (plus the radius change)
            assert (a[:, t] - previous).abs().max() < 1.0
        previous = a[:, t]
    lti = case_coefficients(1, 1, M, generator=torch.Generator().manual_seed(0))
    assert lti.shape == (1, 1, M)


def test_backends_skip_with_reasons():
    tv = Case("fwd", 2, 64, 2)
    assert "constant coefficients only" in BACKENDS["scipy"].skip_reason(tv)
    assert "forward only" in BACKENDS["scipy"].skip_reason(Case("fwdbwd", 2, 64, 2, coeffs="lti"))
    assert "only timed up to" in BACKENDS["naive"].skip_reason(Case("fwd", 2, 1 << 16, 2))
    if importlib_ok("accelerated_scan.scalar"):
        assert "M<=1" in BACKENDS["accelerated-scan"].skip_reason(Case("fwd", 2, 64, 2, device="cuda"))
    assert "cuda" in BACKENDS["triton"].skip_reason(tv)
    assert BACKENDS["numba"].skip_reason(tv) is None
    try:
        import torchaudio.functional  # noqa: F401
    except ModuleNotFoundError:
        assert BACKENDS["torchaudio"].skip_reason(Case("fwd", 2, 64, 2, coeffs="lti")) == "torchaudio is not installed"
        assert BACKENDS["torchaudio"].skip_reason(tv) == "torchaudio is not installed"  # not "constant coefficients only"


def test_missing_package_is_the_skip_reason():
    missing = Backend("gone", "gone", lambda x, a: x, requires=("no_such_package_xyz.sub",), time_varying=False,
                      differentiable=False)
    for case in (Case("fwd", 2, 64, 2), Case("fwdbwd", 2, 64, 2, coeffs="lti")):
        assert missing.skip_reason(case) == "no_such_package_xyz is not installed"
    assert "runs on cuda only" in Backend("gpu", "gpu", lambda x, a: x, requires=("no_such_package_xyz",),
                                          devices=("cuda",)).skip_reason(Case("fwd", 2, 64, 2))


def test_help_shows_defaults():
    text = build_parser().format_help()
    assert "(default: float32)" in text and "(default: bench-results)" in text and "(default: fwd fwdbwd)" in text
    assert "default 7, --quick 3" in text and "default 4096 16384 65536" in text
    assert "(default: None)" not in text and "(default: False)" not in text


def test_peak_memory_reports_progress():
    seen = []
    jobs = [("numba", Case("fwd", 2, 256, 2)), ("numba", Case("fwdbwd", 2, 256, 2))]
    peaks = measure_cpu(jobs, progress=lambda name, case: seen.append((name, case.key())))
    assert sorted(seen) == sorted((n, c.key()) for n, c in jobs)
    assert set(peaks) == set(seen)


def test_plot_labels_do_not_overlap(rows, tmp_path):
    pytest.importorskip("matplotlib")
    from allpole_triton.bench.plots import _samples_label, plot_fs_tradeoff, plot_time_vs_T

    assert [_samples_label(v) for v in (1000, 4096, 65536, 1 << 20)] == ["1000", "4k", "64k", "1M"]
    more = rows + [_row("torchlpc", 8e-3, T=4096), _row("numba", 2e-3, T=4096),
                   _row("fs-h128-n256", 4e-3, T=4096, family="fs", exact=False, esr_db=-12.5, hop=128, n_fft=256)]
    assert plot_time_vs_T(more, tmp_path / "t.png").stat().st_size > 0
    assert plot_fs_tradeoff(more, tmp_path / "fs.png").stat().st_size > 0


@pytest.mark.skipif(torch.cuda.is_available(), reason="needs a machine without CUDA")
def test_cli_cuda_without_gpu_exits_with_a_clear_message(capsys):
    with pytest.raises(SystemExit) as exc:
        main(["--device", "cuda"])
    assert exc.value.code == 2
    assert "CUDA is not available" in capsys.readouterr().err


@pytest.mark.slow
def test_cli_writes_all_artefacts(tmp_path):
    pytest.importorskip("matplotlib")
    out = tmp_path / "out"
    code = main(["--device", "cpu", "-B", "2", "-T", "256", "-M", "2", "--backends", "numba",
                 "torchlpc", "scipy", "fs", "--fs", "64:128", "64:512", "--repeat", "1", "--warmup", "1", "--no-progress",
                 "--out", str(out)])
    assert code == 0
    for name in ("results.csv", "report.md", "machine.json", "time_vs_T.png", "speedup_vs_M.png",
                 "fs_error_vs_time.png"):
        assert (out / name).stat().st_size > 0, name
    rows = read_csv(out / "results.csv")
    ok = {(r["backend"], r["coeffs"], r["pass"]) for r in rows if r["status"] == "ok"}
    assert ("numba", "tv", "fwdbwd") in ok and ("scipy", "lti", "fwd") in ok and ("fs-h64-n512", "tv", "fwd") in ok
    if importlib_ok("torchlpc"):
        assert ("torchlpc", "tv", "fwd") in ok
    numba = [r for r in rows if r["backend"] == "numba" and r["status"] == "ok"]
    assert all(r["esr_db"] < -100 for r in numba)
    assert all(r["max_err"] < 1e-5 and r["loop_max_err"] < 1e-5 and r["time_min_s"] <= r["time_s"] <= r["time_max_s"]
               for r in numba)
    assert any(r["peak_mem_bytes"] is not None for r in numba )
    report = (out / "report.md").read_text()
    assert "A plain float32 sequential loop on these inputs" in report and "| max err | ÷ loop err |" in report


def importlib_ok(module):
    try:
        __import__(module)
        return True
    except Exception:
        return False


def test_interleaved_timing_alternates_backends_after_the_workload():
    """Each timed call follows one workload call, the backends take turns, and a backend past its
    budget drops out while the others go on."""
    import time as time_module

    from allpole_triton.bench.timing import time_cpu_interleaved

    log = []

    def backend(name, seconds=0.0):
        def call():
            log.append(name)
            if seconds:
                time_module.sleep(seconds)
        return call

    times = time_cpu_interleaved(
        {"fast": backend("fast"), "slow": backend("slow", 0.02)}, lambda: log.append("work"),
        repeat=4, warmup=1, budget=0.03,
    )
    assert log[:4] == ["work", "fast", "work", "slow"]  # the warm-up round
    timed = log[4:]
    assert all(timed[i] == "work" for i in range(0, len(timed), 2))
    calls = timed[1::2]
    assert calls[:4] == ["fast", "slow", "fast", "slow"]
    assert len(times["fast"]) == 4 and len(times["slow"]) == 2  # 2 x 20 ms passes the 30 ms budget


def test_realtime_report_has_every_case_and_the_one_call_table():
    import numba

    from allpole_triton.bench import realtime

    threads = torch.get_num_threads(), numba.get_num_threads()
    try:
        rows = realtime.run(blocks=(32,), sample_rates=(48000.0,), calls=3, warmup=1)
        calls = realtime.small_calls(blocks=(16,), calls=3)
    finally:  # run() pins both thread pools to one thread, as a plugin host would
        torch.set_num_threads(threads[0])
        numba.set_num_threads(threads[1])
    assert {(r["system"], r["path"]) for r in rows} == {
        (system, path) for system in ("Phaser (4 stages)", "Compressor", "SubtractiveSynth") for path in realtime.PATHS
    }
    for r in rows:
        assert r["calls"] == 3 and 0 < r["median_us"] <= r["p99_us"]
        assert r["rtf_median"] == pytest.approx(r["budget_us"] / r["median_us"])
    assert {r["filter"] for r in calls} >= {"allpole_triton"} and all(r["calls"] == 3 for r in calls)
    text = realtime.markdown(rows, "test machine") + "\n" + realtime.small_calls_markdown(calls)
    assert "| SubtractiveSynth | frozen | 48000 | 32 |" in text and "| 16 | allpole_triton |" in text
