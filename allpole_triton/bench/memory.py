"""Peak memory of one call of a case.

GPU: ``torch.cuda.max_memory_allocated`` above what was allocated before the call.

CPU: the growth of the peak resident set (VmHWM over VmRSS before the call), measured in a
subprocess so that the sweep's own allocations and caches do not count. The child warms each
backend up (Numba compiles), then resets the high-water mark through ``/proc/self/clear_refs``
before the measured call; glibc is told to serve large blocks with mmap so that freed buffers go
back to the OS instead of hiding the next call's allocations.

Run as ``python -m allpole_triton.bench.memory`` it reads jobs (JSON lines) on stdin and writes
one JSON line per job on stdout.
"""
from __future__ import annotations

import dataclasses
import gc
import json
import os
import subprocess
import sys
import tempfile
import threading
from typing import Callable, Iterable

import torch

from .cases import Case


def _reset(fn) -> None:
    getattr(fn, "reset", lambda: None)()  # drop gradients held from the previous call


def peak_cuda(fn: Callable[[], object], device: str) -> int:
    _reset(fn)
    torch.cuda.synchronize(device)
    gc.collect()
    base = torch.cuda.memory_allocated(device)
    torch.cuda.reset_peak_memory_stats(device)
    fn()
    torch.cuda.synchronize(device)
    return torch.cuda.max_memory_allocated(device) - base


def _status_kib(field: str) -> int:
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith(field + ":"):
                return int(line.split()[1])
    raise OSError(f"{field} not in /proc/self/status")


def _reset_high_water_mark() -> None:
    with open("/proc/self/clear_refs", "w") as f:
        f.write("5")


def peak_rss_growth(fn: Callable[[], object], warmup: int = 1) -> int:
    """Bytes by which the peak RSS of this process rises during ``fn()`` (Linux only)."""
    for _ in range(warmup):
        fn()
    _reset(fn)
    gc.collect()
    base = _status_kib("VmRSS")
    _reset_high_water_mark()
    fn()
    return max(_status_kib("VmHWM") - base, 0) * 1024


def measure_cpu(
    jobs: Iterable[tuple[str, Case]], timeout: float = 600, progress: Callable[[str, Case], object] | None = None
) -> dict[tuple, float]:
    """Peak RSS growth (bytes) per ``(backend name, case.key())``, measured in one subprocess;
    NaN for jobs that fail, that the ``timeout`` (seconds, for all jobs) cuts off, or where the
    platform has no ``/proc`` high-water mark. ``progress(backend, case)`` is called as each job
    finishes (the child answers one line per job), so a caller can keep a progress bar moving."""
    jobs = list(jobs)
    results = {(name, case.key()): float("nan") for name, case in jobs}
    if not jobs or not os.path.exists("/proc/self/clear_refs"):
        return results
    payload = "".join(json.dumps({"backend": n, "case": dataclasses.asdict(c)}) + "\n" for n, c in jobs)
    # our buffer pool off: a call's own allocations count, not buffers kept from earlier calls
    env = dict(os.environ, MALLOC_MMAP_THRESHOLD_="65536", MALLOC_TRIM_THRESHOLD_="0", MALLOC_TOP_PAD_="0",
               ALLPOLE_HOST_POOL_MB="0")
    with tempfile.TemporaryFile("w+") as errors:
        proc = subprocess.Popen(
            [sys.executable, "-m", "allpole_triton.bench.memory"],
            stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=errors, text=True, env=env,
        )
        timer = threading.Timer(timeout, proc.kill)
        timer.start()

        def feed():
            try:
                proc.stdin.write(payload)
                proc.stdin.close()
            except OSError:  # the child died (or was killed) before reading every job
                pass

        writer = threading.Thread(target=feed, daemon=True)
        writer.start()
        try:
            for line in proc.stdout:
                try:
                    r = json.loads(line)
                    case = Case(**r["case"])
                except (json.JSONDecodeError, KeyError, TypeError):
                    continue
                results[(r["backend"], case.key())] = r["bytes"]
                if progress is not None:
                    progress(r["backend"], case)
            try:
                proc.wait(timeout=30)  # stdout closed: the child is exiting
            except subprocess.TimeoutExpired:
                pass  # killed below
        finally:
            timer.cancel()
            proc.stdout.close()
            if proc.poll() is None:
                proc.kill()
            proc.wait()
            writer.join()
    return results


def _child() -> None:
    from .backends import get, prepare
    from .cases import make_inputs

    for line in sys.stdin:
        job = json.loads(line)
        case = Case(**job["case"])
        fn = None
        try:
            fn = prepare(get(job["backend"]), case, make_inputs(case))
            nbytes = float(peak_rss_growth(fn))
        except Exception as exc:  # report, keep going with the next job
            print(f"{job['backend']} {case}: {exc!r}", file=sys.stderr)
            nbytes = float("nan")
        print(json.dumps({"backend": job["backend"], "case": job["case"], "bytes": nbytes}), flush=True)
        fn = None
        gc.collect()


if __name__ == "__main__":
    _child()
