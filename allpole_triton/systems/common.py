"""Pieces shared by the audio systems: the td/fs filter switch, bounded learnable parameters,
the sample-time axis, and the streaming base module."""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import torch
from torch import Tensor, nn

from ..fs import fs_filter
from ..op import readable_tensors
from .filters import FilterState, lfilter

METHODS = ("td", "fs")


def check_method(method: str) -> str:
    if method not in METHODS:
        raise ValueError(f"method must be one of {METHODS}, got {method!r}")
    return method


@dataclass(frozen=True)
class FrequencySampling:
    """Settings of the frame-wise frequency-sampling baseline (see :func:`allpole_triton.fs.fs_filter`)."""

    hop: int = 256
    n_fft: int = 1024


def pole_zero_filter(
    x: Tensor,
    b: Tensor,
    a: Tensor,
    state: FilterState | None,
    method: str,
    fs: FrequencySampling,
    backend: str = "auto",
) -> tuple[Tensor, FilterState | None]:
    """``y = (b / [1, a]) x`` exactly (``method="td"``, via :func:`lfilter`) or frame-wise (``"fs"``).

    Shapes as in :func:`lfilter`. Returns ``(y, final_state)``; the FS approximation is
    frame-based and has no sample-exact state, so it returns ``None`` and refuses an initial state.
    """
    if check_method(method) == "td":
        return lfilter(x, b, a, state, return_zf=True, backend=backend)
    if state is not None:
        raise ValueError("method='fs' is frame-based and cannot continue from a streaming state; use method='td'")
    return fs_filter(x, a, b, hop=fs.hop, n_fft=fs.n_fft), None


def base_power(base: float, exponent: Tensor) -> Tensor:
    """``base ** exponent``, elementwise, the same for a sample whatever block it falls in.

    On CPU, ``torch.pow`` and ``torch.exp2`` round the scalar tail of their vector loops
    differently from its body, so a streamed sample would depend on where its block was cut;
    ``torch.exp`` rounds alike everywhere (tests/test_streaming.py holds this to ``==``).
    """
    return torch.exp(exponent * math.log(base))


def sample_times(start: int, length: int, sample_rate: float, like: Tensor) -> Tensor:
    """Times in seconds ``(start + arange(length)) / sample_rate``, float64 so that long streams
    keep their precision (LFO and envelope phases are computed in float64, then cast)."""
    n = torch.arange(start, start + length, device=like.device, dtype=torch.float64)
    return n / sample_rate


@dataclass(frozen=True)
class Bounded:
    """A physical parameter in ``[low, high]`` stored as an unconstrained real number.

    ``value = low + (high - low) * sigmoid(raw)``, on a log scale when ``log`` (for
    frequencies and times), so Adam steps are relative rather than absolute.
    """

    low: float
    high: float
    log: bool = False

    def _ends(self) -> tuple[float, float]:
        return (math.log(self.low), math.log(self.high)) if self.log else (self.low, self.high)

    def encode(self, value: float) -> Tensor:
        lo, hi = self._ends()
        v = math.log(value) if self.log else value
        u = (v - lo) / (hi - lo)
        if not 0.0 < u < 1.0:
            raise ValueError(f"value {value} is outside the open range ({self.low}, {self.high})")
        return torch.tensor(math.log(u / (1 - u)))

    def decode(self, raw: Tensor) -> Tensor:
        lo, hi = self._ends()
        v = lo + (hi - lo) * torch.sigmoid(raw)
        return v.exp() if self.log else v


class StreamingSystem(nn.Module):
    """Base of the audio systems: bounded learnable parameters, td/fs switch, streaming state.

    Subclasses declare ``RANGES: dict[name, Bounded]`` and implement
    ``_render(inputs, state, method) -> (output, new_state)`` by calling their functional form.

    - ``forward(inputs)`` renders a whole signal with ``self.method`` from the zero state.
    - ``reset()`` then ``process_block(block)`` repeatedly streams with the exact filter; the
      concatenated blocks equal ``forward`` with ``method="td"`` for any block partition.
      The carried state is detached: gradients do not flow from one block into earlier ones.
    """

    RANGES: dict[str, Bounded] = {}

    def __init__(
        self,
        sample_rate: float,
        method: str,
        fs: FrequencySampling | None,
        backend: str,
        initial: dict[str, float],
    ) -> None:
        super().__init__()
        if not sample_rate > 0:
            raise ValueError(f"sample_rate must be > 0, got {sample_rate}")
        self.sample_rate = float(sample_rate)
        self.method = check_method(method)
        self.fs = fs or FrequencySampling()
        self.backend = backend
        for name, bounds in self.RANGES.items():
            self.register_parameter(f"raw_{name}", nn.Parameter(bounds.encode(initial[name])))
        self._state: Any = None
        self._values_cache: tuple[tuple, dict[str, Tensor]] | None = None

    def value(self, name: str) -> Tensor:
        """The physical (constrained) value of parameter ``name`` as a 0-d tensor."""
        return self.RANGES[name].decode(getattr(self, f"raw_{name}"))

    def values(self) -> dict[str, Tensor]:
        """Every physical value. Without grad mode, on plain CPU parameters, they are cached and
        keyed by the raw parameters' values (and dtype): streaming inference decodes them once,
        not per block, however the parameters are changed (optimizer, ``.data``, state dicts)."""
        raws = [getattr(self, f"raw_{name}") for name in self.RANGES]
        if not _cacheable(raws):
            return {name: self.value(name) for name in self.RANGES}
        key = (raws[0].dtype, tuple(raw.item() for raw in raws))
        if self._values_cache is None or self._values_cache[0] != key:
            self._values_cache = (key, {name: self.value(name) for name in self.RANGES})
        return self._values_cache[1]

    def physical_parameters(self) -> dict[str, float]:
        """Current parameter values as plain floats, for printing."""
        return {name: float(v.detach()) for name, v in self.values().items()}

    def _render(self, inputs: Tensor, state: Any, method: str) -> tuple[Tensor, Any]:
        raise NotImplementedError

    def forward(self, inputs: Tensor) -> Tensor:
        return self._render(inputs, None, self.method)[0]

    def freeze(self) -> Any:
        """A frozen real-time processor with the current parameters (:mod:`allpole_triton.realtime`)."""
        raise NotImplementedError(f"{type(self).__name__} has no frozen processor")

    def reset(self) -> None:
        """Forget the streaming state; the next :meth:`process_block` starts from silence at time 0."""
        self._state = None

    def process_block(self, block: Tensor) -> Tensor:
        """Process the next block ``(..., L)`` of a stream with the exact (``"td"``) filter."""
        output, state = self._render(block, self._state, "td")
        self._state = _detach(state)
        return output

    def extra_repr(self) -> str:
        params = ", ".join(f"{k}={v:.4g}" for k, v in self.physical_parameters().items())
        return f"sample_rate={self.sample_rate:g}, method={self.method!r}, {params}"


def _cacheable(raws: list[Tensor]) -> bool:
    """Plain CPU parameters outside grad mode, tracing and transforms: their values can be read."""
    if torch.is_grad_enabled() or not readable_tensors(*raws, types=(Tensor, nn.Parameter), device="cpu"):
        return False
    return all(raw.numel() == 1 for raw in raws)


def _detach(state: Any) -> Any:
    if isinstance(state, Tensor):
        return state.detach()
    if isinstance(state, tuple):
        return type(state)(*(_detach(s) for s in state)) if hasattr(state, "_fields") else tuple(
            _detach(s) for s in state
        )
    return state
