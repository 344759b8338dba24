"""Benchmarks of the exact all-pole filter against its peers and the FS approximation.

- :mod:`.cases`: the grid of shapes and the stable coefficient generator
- :mod:`.backends`: the registry of filters and why one is skipped
- :mod:`.timing`, :mod:`.memory`: median times (CPU perf counter / GPU do_bench) and peak memory
- :mod:`.sweep`: runs a grid into result rows
- :mod:`.report`, :mod:`.plots`: results.csv, report.md and the PNGs
- :mod:`.cli`: ``allpole-bench`` / ``python -m allpole_triton.bench``
"""
from .backends import BACKENDS, Backend, get, prepare, select
from .cases import Case, grid, make_inputs, stable_coefficients
from .cli import main

__all__ = ["BACKENDS", "Backend", "Case", "get", "grid", "main", "make_inputs", "prepare", "select",
           "stable_coefficients"]
