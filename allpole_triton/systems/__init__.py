"""Trainable audio systems built on the exact filter, with real-time streaming.

- :func:`lfilter` (direct forms I and II and their transposes, ``form=``), :func:`sosfilt`: exact
  time-varying pole-zero filtering with streaming state;
  :func:`lfilter_zi`, :func:`filtfilt` (scipy's, differentiable) and :func:`max_pole_radius`.
- :class:`Phaser`, :class:`SubtractiveSynth`, :class:`Compressor`: the paper's three systems as
  ``nn.Module`` s (``forward`` offline, ``reset()`` + ``process_block()`` streaming), each with a
  functional form (:func:`phaser`, :func:`subtractive_synth`, :func:`compressor`) and a
  ``method="fs"`` frequency-sampling baseline.
"""
from .common import METHODS, FrequencySampling
from .compressor import Compressor, CompressorState, attack_release_smoothing, compressor, static_gain_db
from .forms import TransposedState
from .filters import FilterState, filtfilt, lfilter, lfilter_zi, max_pole_radius, sosfilt, time_varying_fir
from .phaser import Phaser, PhaserState, phaser
from .svf import SVFOutputs, svf
from .synth import SubtractiveSynth, SynthState, subtractive_synth

__all__ = [
    "METHODS", "FrequencySampling", "FilterState", "lfilter", "sosfilt", "time_varying_fir",
    "lfilter_zi", "filtfilt", "max_pole_radius", "TransposedState",
    "Phaser", "PhaserState", "phaser",
    "SubtractiveSynth", "SynthState", "subtractive_synth", "svf", "SVFOutputs",
    "Compressor", "CompressorState", "compressor", "attack_release_smoothing", "static_gain_db",
]
