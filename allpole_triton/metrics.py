"""Error measures used by the tests, examples and benchmarks."""
from __future__ import annotations

import torch
from torch import Tensor


def esr(prediction: Tensor, target: Tensor, eps: float = 1e-12) -> Tensor:
    """Error-to-signal ratio ``sum |p - t|^2 / sum |t|^2`` over the last dim, averaged over the rest."""
    err = (prediction - target).abs().pow(2).sum(-1)
    return (err / (target.abs().pow(2).sum(-1) + eps)).mean()


def esr_db(prediction: Tensor, target: Tensor) -> float:
    """ESR in decibels (lower is better; -inf for an exact match)."""
    return float(10 * torch.log10(esr(prediction.double(), target.double())))
