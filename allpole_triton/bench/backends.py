"""Registry of the filters that are benchmarked, and how each one runs a :class:`Case`.

Every backend is a forward function ``f(x, a) -> y`` on the tensors of :func:`make_inputs`
(``a`` is ``(B, T, M)`` for time-varying cases and ``(1, 1, M)`` for constant ones) plus a
``skip_reason`` that says why it cannot run a case on this machine (missing package, no GPU,
time-varying coefficients for a time-invariant filter, ...). Missing optional packages are
reasons, never errors.
"""
from __future__ import annotations

import functools
import importlib
import re
from dataclasses import dataclass, field
from typing import Callable

import warnings

import numba as nb
import numpy as np
import torch
from torch import Tensor

from .cases import Case, Inputs

warnings.filterwarnings("ignore", message="Helion kernels not loaded")  # philtorch, on CPU-only machines

NAIVE_MAX_T = 4096  # the per-sample torch loop is only timed up to this length
DEFAULT_FS = ((128, 256), (128, 1024), (128, 4096), (512, 2048))  # (hop, n_fft)


@dataclass(frozen=True)
class Backend:
    name: str
    family: str  # "ours", "torchlpc", "philtorch", "scipy", "torchaudio", "accelerated-scan", "fs", "naive"
    forward: Callable[[Tensor, Tensor], Tensor]
    requires: tuple[str, ...] = ()  # importable modules needed
    devices: tuple[str, ...] = ("cpu", "cuda")
    exact: bool = True
    time_varying: bool = True  # False: constant coefficients only
    differentiable: bool = True
    max_T: int | None = None
    max_M: int | None = None
    params: dict = field(default_factory=dict)
    note: str = ""

    def skip_reason(self, case: Case) -> str | None:
        """Why this backend cannot run ``case`` here, or ``None`` when it can.

        A backend made for another device says so; otherwise a missing or broken package is named
        before any limit of the backend (constant coefficients, no autograd, ...), so that a peer
        that is not installed reads as missing everywhere, not as unable to run some cases.
        """
        device = torch.device(case.device).type
        if device not in self.devices:
            return f"{self.name} runs on {'/'.join(self.devices)} only{': ' + self.note if self.note else ''}"
        for module in self.requires:
            problem = import_problem(module)
            if problem:
                return problem
        if not self.time_varying and case.coeffs != "lti":
            return f"{self.name} takes constant coefficients only"
        if case.pass_ == "fwdbwd" and not self.differentiable:
            return f"{self.name} has no autograd (forward only)"
        if self.max_T is not None and case.T > self.max_T:
            return f"{self.name} is only timed up to T={self.max_T}"
        if self.max_M is not None and case.M > self.max_M:
            return f"{self.name} handles M<={self.max_M} only"
        if device == "cuda" and not torch.cuda.is_available():
            return "CUDA is not available"
        return None


@functools.cache
def import_problem(module: str) -> str | None:
    """``None`` when ``module`` imports, else a one-line reason: "<package> is not installed" when
    the package is absent, "<module> is not importable (<error>)" when it is there but fails."""
    try:
        importlib.import_module(module)
    except ModuleNotFoundError as exc:
        top = module.split(".")[0]
        if exc.name is not None and exc.name.split(".")[0] == top:
            return f"{top} is not installed"
        return f"{module} is not importable (ModuleNotFoundError: {exc})"
    except Exception as exc:  # ABI errors (OSError, RuntimeError, ImportError) of compiled extensions
        return f"{module} is not importable ({type(exc).__name__}: {str(exc).splitlines()[0] if str(exc) else ''})"
    return None


def sequential_loop(x: Tensor, a: Tensor) -> Tensor:
    """The plain recursion ``y[n] = x[n] - sum_{i=1..M} a[n, i-1] y[n-i]`` (zero initial state)
    in the dtype of ``x``, one sample after another with the terms subtracted newest first and
    no fast-math (no reassociation, no fused multiply-add): what a textbook loop computes.

    In float64 it is the reference of every error the benchmark reports; in float32 it is the
    yardstick for them (the error that float32 rounding alone costs on the same inputs).
    ``x`` is ``(B, T)`` and ``a`` ``(Ba, Ta, M)`` with ``Ba in {1, B}``, ``Ta in {1, T}``.
    """
    x_np = x.detach().cpu().contiguous().numpy()
    a_np = a.detach().cpu().to(x.dtype).contiguous().numpy()
    y = np.empty_like(x_np)
    _loop(x_np, a_np, y)
    return torch.from_numpy(y)


@nb.njit(parallel=True, cache=True)
def _loop(x, a, y):  # pragma: no cover - compiled
    B, T = x.shape
    M = a.shape[2]
    row_step = 1 if a.shape[0] > 1 else 0
    time_step = 1 if a.shape[1] > 1 else 0
    for b in nb.prange(B):
        for n in range(T):
            acc = x[b, n]
            for i in range(1, min(M, n) + 1):
                acc -= a[b * row_step, n * time_step, i - 1] * y[b, n - i]
            y[b, n] = acc


def _full(a: Tensor, x: Tensor) -> Tensor:
    """Coefficients as the (B, T, M) tensor that per-sample APIs require."""
    return a.expand(x.shape[0], x.shape[1], a.shape[-1])


def _ours(backend: str):
    def forward(x, a):
        from allpole_triton import allpole

        return allpole(x, a, backend=backend)

    return forward


def _torchlpc(x, a):
    from torchlpc import sample_wise_lpc

    return sample_wise_lpc(x, _full(a, x).contiguous())


def _philtorch_allpole(x, a):
    from philtorch.lpv import allpole

    return allpole(_full(a, x).contiguous(), x)


def _philtorch_ssm(x, a):
    from philtorch.lpv import lfilter

    b = x.new_ones(1, 1, 1).expand(x.shape[0], x.shape[1], 1)
    return lfilter(b, _full(a, x), x, form="df2", backend="ssm")


def _denominator(a: Tensor) -> Tensor:
    return torch.cat([a.new_ones(1), a.reshape(-1)])


def _scipy(x, a):
    import scipy.signal

    den = _denominator(a).cpu().numpy()
    y = scipy.signal.lfilter(np.ones(1, dtype=den.dtype), den, x.detach().cpu().numpy(), axis=-1)
    return torch.from_numpy(y).to(x.device)


def _torchaudio(x, a):
    import torchaudio.functional

    den = _denominator(a)
    num = torch.zeros_like(den)
    num[0] = 1
    return torchaudio.functional.lfilter(x, den, num, clamp=False)


def _accelerated_scan(x, a):
    from accelerated_scan.scalar import scan  # Triton first-order scan: y[t] = f[t] y[t-1] + x[t]

    gates = -_full(a, x)[..., 0]
    return scan(gates.unsqueeze(1).contiguous(), x.unsqueeze(1).contiguous()).squeeze(1)


def _fs(hop: int, n_fft: int):
    def forward(x, a):
        from allpole_triton.fs import fs_filter

        return fs_filter(x, a, hop=hop, n_fft=n_fft)

    return forward


def _registry(fs_configs=DEFAULT_FS) -> dict[str, Backend]:
    backends = [
        Backend("triton", "ours", _ours("triton"), requires=("triton",), devices=("cuda",),
                note="Triton kernels need a CUDA GPU"),
        Backend("numba", "ours", _ours("numba"), requires=("numba",), devices=("cpu",)),
        Backend("torchlpc", "torchlpc", _torchlpc, requires=("torchlpc",)),
        Backend("philtorch", "philtorch", _philtorch_allpole, requires=("philtorch",),
                note="philtorch.lpv.allpole (its vendored torchlpc-style C++/CUDA extension)"),
        Backend("philtorch-ssm", "philtorch", _philtorch_ssm, requires=("philtorch",),
                note="philtorch.lpv.lfilter(form='df2', backend='ssm'): companion-matrix state-space recursion"),
        Backend("scipy", "scipy", _scipy, requires=("scipy.signal",), devices=("cpu",),
                time_varying=False, differentiable=False),
        Backend("torchaudio", "torchaudio", _torchaudio, requires=("torchaudio.functional",),
                time_varying=False),
        Backend("accelerated-scan", "accelerated-scan", _accelerated_scan, requires=("accelerated_scan.scalar",),
                devices=("cuda",), max_M=1, note="a first-order Triton scan (GPU, M=1)"),
        Backend("naive", "naive", _ours("naive"), max_T=NAIVE_MAX_T),
    ]
    backends += [
        Backend(f"fs-h{hop}-n{n_fft}", "fs", _fs(hop, n_fft), exact=False, params={"hop": hop, "n_fft": n_fft})
        for hop, n_fft in fs_configs
    ]
    return {b.name: b for b in backends}


BACKENDS: dict[str, Backend] = _registry()


def fs_backends(configs) -> dict[str, Backend]:
    """Registry with the FS entries replaced by ``configs`` ((hop, n_fft) pairs)."""
    return _registry(tuple(configs))


def get(name: str) -> Backend:
    """A backend by name; ``fs-h{hop}-n{n_fft}`` names build any FS configuration."""
    if name in BACKENDS:
        return BACKENDS[name]
    match = re.fullmatch(r"fs-h(\d+)-n(\d+)", name)
    if match:
        return fs_backends([(int(match[1]), int(match[2]))])[name]
    raise ValueError(f"unknown backend {name!r}; choose from {sorted(BACKENDS)}")


def select(names, registry: dict[str, Backend] | None = None) -> list[Backend]:
    """Backends by name or family (``"ours"``, ``"fs"``, ...); ``None`` or ``["all"]`` for all."""
    registry = BACKENDS if registry is None else registry
    if not names or list(names) == ["all"]:
        return list(registry.values())
    chosen: dict[str, Backend] = {}
    for name in names:
        matched = [b for b in registry.values() if name in (b.name, b.family)]
        if not matched:
            raise ValueError(f"unknown backend {name!r}; choose from {sorted(registry)} or a family "
                             f"{sorted({b.family for b in registry.values()})}")
        chosen.update((b.name, b) for b in matched)
    return list(chosen.values())


class Run:
    """One call of a case's pass; :meth:`reset` drops the gradients a previous call left behind."""

    def __init__(self, backend: Backend, case: Case, inputs: Inputs):
        if case.pass_ not in ("fwd", "fwdbwd"):
            raise ValueError(f"unknown pass {case.pass_!r}")
        self.forward = backend.forward
        self.backward = case.pass_ == "fwdbwd"
        grad = self.backward
        self.x = inputs.x.detach().clone().requires_grad_(grad) if grad else inputs.x
        self.a = inputs.a.detach().clone().requires_grad_(grad) if grad else inputs.a
        self.g = inputs.g

    def reset(self) -> None:
        self.x.grad = None
        self.a.grad = None

    def __call__(self):
        if not self.backward:
            with torch.no_grad():
                return self.forward(self.x, self.a)
        self.reset()  # zero_grad(set_to_none=True), as in a training loop
        self.forward(self.x, self.a).backward(self.g)


def prepare(backend: Backend, case: Case, inputs: Inputs) -> Run:
    """A no-argument callable that runs ``case.pass_`` once.

    Forward runs without autograd. Forward+backward makes x and a leaves that require grad,
    sets their ``.grad`` to ``None`` before each call (as ``zero_grad(set_to_none=True)`` does
    in a training loop) and back-propagates the fixed upstream gradient ``inputs.g``.
    """
    return Run(backend, case, inputs)
