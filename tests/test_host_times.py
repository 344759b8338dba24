"""allpole_triton.bench.host_times: a row per pass with every column filled, and the profile file."""
from __future__ import annotations

import pytest
import torch

from allpole_triton.bench import host_times
from allpole_triton.op import triton_interpret

pytestmark = pytest.mark.skipif(not triton_interpret(), reason="runs the Triton kernels under TRITON_INTERPRET=1")


@pytest.mark.slow
def test_a_row_per_pass_and_a_profile(tmp_path):
    path = tmp_path / "profile.txt"
    with open(path, "w") as profile:
        rows = host_times.measure(1, 20, 2, ["fwd", "fwdbwd"], torch.device("cpu"), calls=1, profile=profile)
    assert [(r["pass"], r["launches"]) for r in rows] == [("fwd", 2), ("fwdbwd", 4)]
    assert all(r[c] > 0 for r in rows for c in host_times.COLUMNS if c.endswith("_us"))
    text = path.read_text()
    # each pass's profile twice: by own time, then by cumulative time
    for order in ("tottime", "cumulative"):
        assert text.count(f"(sorted by {order})") == 2, order
    assert text.count("# cProfile of 1 calls") == 4 and text.count("function calls") == 4


def test_cuda_graphs_row_needs_cuda():
    """The reduce-overhead row runs on CUDA only, and says so elsewhere."""
    with pytest.raises(ValueError, match="fwdbwd_graphs needs CUDA"):
        host_times.measure(1, 20, 2, ["fwdbwd_graphs"], torch.device("cpu"), calls=1)
