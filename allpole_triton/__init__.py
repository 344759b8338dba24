"""allpole-triton: an exact, differentiable, time-varying all-pole (IIR) filter for PyTorch.

``y[n] = x[n] - sum_{i=1..M} a[n, i-1] * y[n-i]``, evaluated as a Triton parallel scan on
CUDA tensors and a Numba recursion on CPU tensors.
"""
from .functional import allpole, reflection_to_lpc, sample_wise_lpc
from .modules import AllPole
from .recurrence import linear_recurrence, state_space
from .systems import Compressor, Phaser, SubtractiveSynth, lfilter, sosfilt

__all__ = ["allpole", "sample_wise_lpc", "reflection_to_lpc", "linear_recurrence", "state_space", "AllPole", "lfilter", "sosfilt", "Phaser", "SubtractiveSynth", "Compressor"]
__version__ = "0.1.0"
