"""torchlpc 0.7.2's own gradient and vmap tests, unchanged, against our drop-in.

``make`` unpacks torchlpc's source release into ``.venv/peers`` (``ALLPOLE_TORCHLPC_SRC``
overrides the folder). Its ``tests/test_grad.py`` and ``tests/test_vmap.py`` call
``torchlpc.core.LPC.apply(x, A, zi)`` and ``torchlpc.recurrence.Recurrence.apply(decay, impulse,
initial)``; here they run in a subprocess that imports a ``torchlpc`` made of our functions
(``sample_wise_lpc``, and ``allpole`` with ``a = -decay`` for the first-order recurrence), so the
test files are torchlpc's, byte for byte. CUDA cases skip themselves without a GPU.
"""
from __future__ import annotations

import os
import pathlib
import re
import shutil
import subprocess
import sys

import pytest

ROOT = pathlib.Path(__file__).resolve().parents[1]
SOURCE = pathlib.Path(os.environ.get("ALLPOLE_TORCHLPC_SRC", ROOT / ".venv" / "peers" / "torchlpc-0.7.2"))
SUITE = ("test_grad.py", "test_vmap.py")

SHIM = {
    "__init__.py": "from allpole_triton import sample_wise_lpc\n",
    "core.py": (
        "from allpole_triton import sample_wise_lpc\n\n\n"
        "class LPC:\n"
        "    @staticmethod\n"
        "    def apply(x, A, zi):\n"
        "        return sample_wise_lpc(x, A, zi)\n"
    ),
    "recurrence.py": (
        "from allpole_triton import allpole\n\n\n"
        "class Recurrence:\n"
        "    @staticmethod\n"
        "    def apply(decay, impulse, initial_state):  # out[n] = impulse[n] + decay[n] out[n-1]\n"
        "        return allpole(impulse, -decay.unsqueeze(-1), initial_state.unsqueeze(-1))\n"
    ),
}


@pytest.mark.skipif(not all((SOURCE / "tests" / name).exists() for name in SUITE),
                    reason=f"torchlpc 0.7.2's source release is not unpacked in {SOURCE} (make does it)")
def test_torchlpc_grad_and_vmap_suites_pass_against_the_drop_in(tmp_path):
    shim = tmp_path / "torchlpc"
    shim.mkdir()
    for name, text in SHIM.items():
        (shim / name).write_text(text)
    shutil.copytree(SOURCE / "tests", tmp_path / "tests")
    env = {k: v for k, v in os.environ.items() if k != "TRITON_INTERPRET"}
    env["PYTHONPATH"] = os.pathsep.join([str(tmp_path), str(ROOT), env.get("PYTHONPATH", "")])
    run = subprocess.run(
        [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", *(f"tests/{name}" for name in SUITE)],
        cwd=tmp_path, env=env, capture_output=True, text=True, timeout=900,
    )
    summary = run.stdout.strip().splitlines()[-1] if run.stdout.strip() else run.stderr[-2000:]
    assert run.returncode == 0, run.stdout[-4000:] + run.stderr[-2000:]
    passed = int(re.search(r"(\d+) passed", summary).group(1))
    assert passed >= 18 and "failed" not in summary, summary  # 18 CPU cases; CUDA ones skip here
