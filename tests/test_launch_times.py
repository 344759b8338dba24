"""allpole_triton.bench.launch_times: each launch of a pass re-run alone (how the GPU session times
kernels one by one) leaves the pass's results as they were, and every planned launch gets a row."""
from __future__ import annotations

import pytest
import torch

from allpole_triton.bench import launch_times
from allpole_triton.op import triton_interpret
from allpole_triton.recurrence import linear_recurrence_naive
from allpole_triton.kernels.naive import allpole_naive

pytestmark = pytest.mark.skipif(not triton_interpret(), reason="runs the Triton kernels under TRITON_INTERPRET=1")


# a short order (prefix-scanned blocks, the carry fused into the finish) and a long one (carry walk)
@pytest.mark.parametrize("M, launches", [(2, 2), (5, 3)])
def test_launches_rerun_alone_keep_the_results(M, launches):
    cpu = torch.device("cpu")
    planned = {p.name: p for p in launch_times.plan_passes(2, 45, M, ["fwd", "fwdbwd", "dense"], cpu, None)}
    assert set(planned) == {"fwd", "bwd", "dense"} and len(planned["dense"].launches) == 3
    assert len(planned["fwd"].launches) == len(planned["bwd"].launches) == launches
    outputs = {"fwd": lambda p: [p.tensors["out"]], "bwd": lambda p: [p.tensors["out"], p.tensors["tail"], p.tensors["grad_a"]],
               "dense": lambda p: [p.launches[-1].args[4]]}
    for name in ("fwd", "bwd", "dense"):
        for launch in planned[name].launches:
            launch.run()
        first = [t.clone() for t in outputs[name](planned[name])]
        for launch in planned[name].launches:  # again, each launch twice in a row
            launch.run()
            launch.run()
        assert all(torch.equal(a, b) for a, b in zip(first, outputs[name](planned[name]))), name
    fwd, dense = planned["fwd"].tensors, planned["dense"].launches[-1].args
    expected = allpole_naive(fwd["u"].double(), fwd["a"].double(), fwd["zi"].double())
    torch.testing.assert_close(fwd["out"].double(), expected, rtol=1e-4, atol=1e-4)
    A, u, h0, h = dense[0], dense[1], dense[2], dense[4]
    torch.testing.assert_close(h.double(), linear_recurrence_naive(A.double(), u.double(), h0.double()), rtol=1e-4, atol=1e-4)


def test_one_row_per_launch(monkeypatch):
    monkeypatch.setenv("ALLPOLE_TRITON_LAUNCH", "fuse=0")  # every kernel of a short-order pass
    rows = launch_times.measure(1, 30, 2, ["fwd", "fwdbwd"], torch.device("cpu"), repeat=1, rounds=1, predict=False)
    assert [(r["pass"], r["kernel"]) for r in rows] == [(p, k) for p in ("fwd", "bwd") for k in ("_summary", "_carry_short", "_finish")]
    assert all(r["measured_us"] > 0 and r["min_us"] <= r["measured_us"] for r in rows)


@pytest.mark.slow
def test_predictions_fill_a_times_only_csv(tmp_path):
    """A GPU run times launches only (--no-model); --predict adds the model's columns afterwards by
    planning the same cases for that GPU's multiprocessors, and refuses rows planned differently."""
    import subprocess
    import sys

    rows = [{"pass": p.name, "B": 16, "T": 65536, "M": 2, "launch": i, "kernel": l.kernel.__name__, "grid": l.grid,
             "warps": l.num_warps, "measured_us": 1.0, "min_us": 1.0}
            for p in launch_times.plan_passes(16, 65536, 2, ["fwd"], torch.device("meta"), 132) for i, l in enumerate(p.launches)]
    assert [r["kernel"] for r in rows] == ["_summary", "_finish"]  # the carry fused into the finish
    path = tmp_path / "times.csv"
    path.write_text(",".join(rows[0]) + "\n" + "".join(",".join(str(v) for v in r.values()) + "\n" for r in rows))
    env = {k: v for k, v in __import__("os").environ.items() if k != "TRITON_INTERPRET"}
    run = subprocess.run([sys.executable, "-m", "allpole_triton.bench.launch_times", "--predict", str(path)],
                         capture_output=True, text=True, env=env, timeout=600)
    assert run.returncode == 0, run.stderr[-2000:]
    lines = run.stdout.strip().splitlines()[1:]
    assert len(lines) == 2 and all(float(line.split(",")[10]) > 0 for line in lines)
    # 20 SMs plan longer chunks than 132 (short orders fill 1024 lanes an SM before leaving chunks of 32)
    run = subprocess.run([sys.executable, "-m", "allpole_triton.bench.launch_times", "--predict", str(path), "--sms", "20"],
                         capture_output=True, text=True, env=env, timeout=600)
    assert run.returncode != 0 and "pass --sms" in run.stderr
