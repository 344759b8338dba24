"""Shape helpers shared by the functional API and the systems."""
from __future__ import annotations

from collections.abc import Sequence


def broadcast_leading(**shapes: Sequence[int]) -> tuple[int, ...]:
    """The broadcast of the named shapes (numpy rules), or a ``ValueError`` naming every shape.

    Plain Python rather than ``torch.broadcast_shapes``, whose first call imports sympy (0.4 s of
    a cold first call); only comparisons, so symbolic sizes under ``torch.compile`` work too.
    """
    ndim = 0
    for s in shapes.values():  # a loop, not max(generator): torch.compile traces this
        ndim = max(ndim, len(s))
    padded = [(1,) * (ndim - len(s)) + tuple(s) for s in shapes.values()]
    result = []
    for dims in zip(*padded):
        size = 1
        for d in dims:
            if d != 1:
                if size != 1 and d != size:
                    described = ", ".join(f"{name} {tuple(s)}" for name, s in shapes.items())
                    raise ValueError(f"leading dims do not broadcast: {described}")
                size = d
        result.append(size)
    return tuple(result)
