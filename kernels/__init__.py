"""Kernels behind :mod:`allpole_triton` (installed as ``allpole_triton.kernels``).

- :mod:`.naive`: the plain torch loop, the reference every fast kernel is tested against.
- :mod:`.numba_cpu`: sequential per-row recursions for CPU tensors (Numba, parallel over rows).
- :mod:`.triton_scan`: the chunked companion-matrix parallel scan (Triton).
- :mod:`.triton_adjoint`: the copies that run the backward as that scan's forward pass on reversed time.

Every kernel takes flattened rows: ``x (B, T)``, ``a (Ba, Ta, M)`` with ``Ba in {1, B}`` and
``Ta in {1, T}`` (size-1 dims are broadcast, never materialised), ``zi (B, M)``.
"""
