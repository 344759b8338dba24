"""Shared test inputs: stable, time-varying coefficients from random poles."""
from __future__ import annotations

import inspect
import math
import os

import pytest
import torch

# Without a GPU, every Triton kernel runs on CPU tensors through Triton's interpreter. Triton reads
# this when a kernel is decorated, i.e. before allpole_triton's Triton module is first imported.
if not torch.cuda.is_available():
    os.environ.setdefault("TRITON_INTERPRET", "1")

# Under pytest-xdist (make test: two workers on two cores) every worker computes on one thread:
# otherwise torch's and Numba's thread pools spin against the other worker's, and small ops slow
# down tenfold. Subprocesses inherit it through the environment.
if os.environ.get("PYTEST_XDIST_WORKER"):
    for name in ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "NUMBA_NUM_THREADS"):
        os.environ.setdefault(name, "1")
    torch.set_num_threads(1)


def pytest_runtest_logreport(report) -> None:
    """ALLPOLE_FAILURE_LOG=FILE: each failure's traceback goes there as soon as it is reported.
    pytest-xdist prints tracebacks only at the end of the session, which a GPU session's time limit
    can cut off (the 2026-11-27 H100 run lost every one)."""
    path = os.environ.get("ALLPOLE_FAILURE_LOG")
    if path and report.failed:
        with open(path, "a") as log:
            log.write(f"=== {report.nodeid} ({report.when})\n{report.longreprtext}\n\n")


def slow(*values, **kwargs):
    """A parameter set run only by the full suite (``make test-all``, which CI runs): ``make test``
    keeps one case of each kernel and path, within its time budget, and this marks the rest of a
    matrix (more orders, dtypes, launch shapes) as ``pytest.mark.slow``."""
    return pytest.param(*values, marks=pytest.mark.slow, **kwargs)


def _skip_interpreter_repatching() -> None:
    """Test-speed shim for Triton's interpreter (behaviour unchanged).

    Its device-function calls re-patch the triton.language modules their module sees on every call
    (an ``inspect.getmembers`` scan, never undone), which was 60% of the time of the interpreter
    tests. Since those patches stay, once per defining module is enough. Applied only where the
    interpreter's ``__call__`` still has that shape.
    """
    try:
        from triton.runtime import interpreter
    except ImportError:
        return
    original = interpreter.InterpretedFunction.__call__
    try:
        source = inspect.getsource(original)
    except (OSError, TypeError):
        return
    if "_patch_lang(self.fn)" not in source or "GridExecutor" not in inspect.getsource(interpreter):
        return

    patched_modules: set[int] = set()

    def device_call(self, *args, **kwargs):
        if id(self.fn.__globals__) not in patched_modules:
            interpreter._patch_lang(self.fn)
            patched_modules.add(id(self.fn.__globals__))
        fn = self.rewrite()
        try:
            return fn(*args, **kwargs)
        except Exception as e:
            raise interpreter.InterpreterError(repr(e)) from e

    interpreter.InterpretedFunction.__call__ = device_call


if os.environ.get("TRITON_INTERPRET") == "1":
    _skip_interpreter_repatching()
    # bounds, masked-off loads, unwritten memory and program order checked as a GPU would expose them
    from interpreter_sanitizer import install as _install_sanitizer

    _install_sanitizer()


def stable_coefficients(
    lead: tuple[int, ...], T: int, M: int, dtype: torch.dtype = torch.float64, seed: int = 0, radius: float = 0.99
) -> torch.Tensor:
    """a (*lead, T, M): [1, a] has all its roots inside |z| < radius at every n.

    Two random pole sets are drawn and linearly interpolated (in radius and angle) over time, so
    the coefficients move while staying stable. Real dtypes get conjugate pairs (plus one real
    pole for odd M); complex dtypes get unpaired complex poles.
    """
    g = torch.Generator().manual_seed(seed)
    complex_ = dtype.is_complex
    n_free = M if complex_ else M // 2

    def draw():
        r = radius * torch.rand(*lead, n_free, generator=g, dtype=torch.float64).sqrt()
        theta = math.pi * torch.rand(*lead, n_free, generator=g, dtype=torch.float64)
        real = radius * (2 * torch.rand(*lead, 1, generator=g, dtype=torch.float64) - 1)
        return r, theta, real

    (r0, t0, p0), (r1, t1, p1) = draw(), draw()
    w = torch.linspace(0, 1, T, dtype=torch.float64).reshape(T, 1)
    r = r0.unsqueeze(-2) * (1 - w) + r1.unsqueeze(-2) * w
    theta = t0.unsqueeze(-2) * (1 - w) + t1.unsqueeze(-2) * w
    poles = torch.polar(r, theta)
    if complex_:
        sign = torch.where(torch.rand(*lead, 1, n_free, generator=g) < 0.5, -1.0, 1.0)
        poles = poles * sign
    else:
        poles = torch.cat([poles, poles.conj()], -1)
        if M % 2:
            real = p0.unsqueeze(-2) * (1 - w) + p1.unsqueeze(-2) * w
            poles = torch.cat([poles, real.to(poles.dtype)], -1)
    # expand prod_k (1 - p_k z^-1) to [1, a_1 .. a_M]
    poly = torch.ones(*lead, T, 1, dtype=torch.complex128)
    for k in range(M):
        p = poles[..., k : k + 1]
        poly = torch.cat([poly, torch.zeros_like(poly[..., :1])], -1) - p * torch.cat(
            [torch.zeros_like(poly[..., :1]), poly], -1
        )
    a = poly[..., 1:]
    return (a if complex_ else a.real).to(dtype)


def poles_at_radius(
    lead: tuple[int, ...], T: int, M: int, radius: float, dtype: torch.dtype = torch.float64, seed: int = 0
) -> torch.Tensor:
    """a (*lead, T, M) whose poles all sit at ``radius`` (conjugate pairs with random angles, one
    real pole at +-radius for odd M), the angles drifting linearly over time: the hardest case for
    any evaluation order at that radius (speech LPC at M=16 has formants at 0.98-0.995)."""
    g = torch.Generator().manual_seed(seed)
    pairs = M // 2
    t0 = math.pi * torch.rand(*lead, pairs, generator=g, dtype=torch.float64)
    t1 = math.pi * torch.rand(*lead, pairs, generator=g, dtype=torch.float64)
    w = torch.linspace(0, 1, T, dtype=torch.float64).reshape(T, 1)
    theta = t0.unsqueeze(-2) * (1 - w) + t1.unsqueeze(-2) * w
    poles = torch.polar(torch.full_like(theta, radius), theta)
    poles = torch.cat([poles, poles.conj()], -1)
    if M % 2:
        sign = torch.where(torch.rand(*lead, 1, 1, generator=g) < 0.5, -1.0, 1.0).to(torch.float64)
        poles = torch.cat([poles, (radius * sign).expand(*lead, T, 1).to(poles.dtype)], -1)
    poly = torch.ones(*lead, T, 1, dtype=torch.complex128)
    for k in range(M):
        p = poles[..., k : k + 1]
        poly = torch.cat([poly, torch.zeros_like(poly[..., :1])], -1) - p * torch.cat([torch.zeros_like(poly[..., :1]), poly], -1)
    return poly[..., 1:].real.to(dtype)


def random_signal(shape: tuple[int, ...], dtype: torch.dtype = torch.float64, seed: int = 1) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    if dtype.is_complex:
        return torch.randn(*shape, generator=g, dtype=dtype)
    return torch.randn(*shape, generator=g, dtype=torch.float64).to(dtype)


# The longest tests (sm_90 compiles in subprocesses, other packages' suites, the interpreter at GPU
# launch shapes) start first, so that the two xdist workers finish together instead of one of
# them running a minute-long test alone at the end.
SLOW_MODULES_FIRST = ("test_triton_compile.py", "test_client_suites.py", "test_triton_accuracy.py", "test_distributed.py")


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    def rank(item: pytest.Item) -> int:
        name = item.path.name
        return SLOW_MODULES_FIRST.index(name) if name in SLOW_MODULES_FIRST else len(SLOW_MODULES_FIRST)

    items.sort(key=rank)  # stable: the order inside each group stays


@pytest.fixture(autouse=True)
def _seed():
    torch.manual_seed(0)
