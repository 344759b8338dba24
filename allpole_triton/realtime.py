"""Frozen real-time processors: a trained system as a plugin host would call it.

``system.freeze()`` returns a processor that holds the trained parameters as plain numbers and
renders a whole block (coefficients and filter) in one compiled Numba call, with no torch op per
block::

    frozen = Phaser(sample_rate=48000.0).freeze()
    for block in stream:            # (..., L) numpy arrays or CPU tensors, float32 or float64
        out = frozen.process(block)  # same type, dtype and shape
    frozen.reset()                   # back to silence at time 0

Any block partition gives exactly the samples of one long block (bit for bit), and those match
the torch module's output to rounding (computed in float64 throughout; a float64 module agrees to
~1e-12 relative). Rows (the leading dims) are independent streams, fixed by the first block
after a reset.
"""
from __future__ import annotations

import math
import numpy as np
import torch

from .kernels import numba_realtime as kernels

_DTYPES = (np.float32, np.float64)


class FrozenProcessor:
    """Base of the frozen processors: input checks, per-row state, ``process``/``reset``."""

    #: names of the parameters, in the order the kernel reads them
    PARAMS: tuple[str, ...] = ()

    def __init__(self, sample_rate: float, params: dict[str, float]) -> None:
        if not sample_rate > 0:
            raise ValueError(f"sample_rate must be > 0, got {sample_rate}")
        missing = set(self.PARAMS) - set(params)
        if missing:
            raise ValueError(f"{type(self).__name__} needs parameters {sorted(missing)}")
        self.sample_rate = float(sample_rate)
        self.params = {name: float(params[name]) for name in self.PARAMS}
        self._packed = np.array([self.params[name] for name in self.PARAMS], dtype=np.float64)
        self.reset()

    def reset(self) -> None:
        """Forget the stream: the next block starts from silence at time 0."""
        self.time = 0
        self._lead: tuple[int, ...] | None = None

    def process(self, block: np.ndarray | torch.Tensor) -> np.ndarray | torch.Tensor:
        """Render the next block ``(..., L)``; returns the same type, dtype and shape."""
        is_tensor = isinstance(block, torch.Tensor)
        samples = block.detach().cpu().numpy() if is_tensor else np.asarray(block)
        if samples.dtype.type not in _DTYPES:
            raise TypeError(f"block must be float32 or float64, got dtype {samples.dtype}")
        if samples.ndim < 1:
            raise ValueError("block must have shape (..., L), got a 0-d array")
        lead, length = samples.shape[:-1], samples.shape[-1]
        if self._lead is None:
            self._lead = lead
            self._allocate(math.prod(lead))
        elif lead != self._lead:
            raise ValueError(f"block's leading dims {lead} differ from the stream's {self._lead}; call reset() first")
        rows = np.ascontiguousarray(samples.reshape(math.prod(lead), length))
        out = np.empty_like(rows)
        if length:
            self._render(rows, out)
        self.time += length
        out = out.reshape(samples.shape)
        return torch.from_numpy(out).to(block.device) if is_tensor else out

    def _allocate(self, rows: int) -> None:
        raise NotImplementedError

    def _render(self, rows: np.ndarray, out: np.ndarray) -> None:
        raise NotImplementedError

    def __repr__(self) -> str:
        params = ", ".join(f"{k}={v:.4g}" for k, v in self.params.items())
        return f"{type(self).__name__}(sample_rate={self.sample_rate:g}, {params})"


class FrozenPhaser(FrozenProcessor):
    """Frozen :class:`~allpole_triton.systems.Phaser`: ``process(x (..., L)) -> y (..., L)``."""

    PARAMS = kernels.PHASER_PARAMS

    def __init__(self, sample_rate: float, stages: int, params: dict[str, float]) -> None:
        if stages < 1:
            raise ValueError(f"stages must be >= 1, got {stages}")
        self.stages = int(stages)
        super().__init__(sample_rate, params)

    def _allocate(self, rows: int) -> None:
        self._past_x = np.zeros((rows, self.stages))
        self._past_y = np.zeros((rows, self.stages))

    def _render(self, rows: np.ndarray, out: np.ndarray) -> None:
        kernels.phaser_block(
            rows, out, self.time, self._packed, self.sample_rate, self.stages, self._past_x, self._past_y
        )


class FrozenCompressor(FrozenProcessor):
    """Frozen :class:`~allpole_triton.systems.Compressor`: ``process(x (..., L)) -> y (..., L)``.

    ``attack``, ``release`` and ``detector`` are the one-pole coefficients ``1 - exp(-1 / (tau f_s))``.
    """

    PARAMS = kernels.COMPRESSOR_PARAMS

    def _allocate(self, rows: int) -> None:
        self._power = np.zeros(rows)
        self._gain = np.ones(rows)

    def _render(self, rows: np.ndarray, out: np.ndarray) -> None:
        kernels.compressor_block(rows, out, self._packed, self._power, self._gain)


class FrozenSynth(FrozenProcessor):
    """Frozen :class:`~allpole_triton.systems.SubtractiveSynth`: ``process(f0_hz (..., L)) -> audio (..., L)``.

    ``log_cutoff_start`` and ``log_cutoff_end`` are natural logs of the cutoffs in Hz.
    """

    PARAMS = kernels.SYNTH_PARAMS

    def __init__(self, sample_rate: float, sections: int, params: dict[str, float]) -> None:
        if sections not in (1, 2):
            raise ValueError(f"sections must be 1 or 2, got {sections}")
        self.sections = int(sections)
        super().__init__(sample_rate, params)

    def _allocate(self, rows: int) -> None:
        self._phase = np.zeros(rows)
        self._past_x = np.zeros((rows, self.sections, 2))
        self._past_y = np.zeros((rows, self.sections, 2))

    def _render(self, rows: np.ndarray, out: np.ndarray) -> None:
        kernels.synth_block(
            rows, out, self.time, self._packed, self.sample_rate, self.sections, self._phase, self._past_x, self._past_y
        )

