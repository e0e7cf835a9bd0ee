"""Uniform sum of the per-loss gradients (the paper's "uniform baseline")."""

from __future__ import annotations

from typing import Any

import torch
from torch import Tensor

from .base import Integrator, TensorLists, combine, record
from .registry import register


@register("sum")
class Sum(Integrator):
    """``update = scale * sum_i g_i``.

    ``scale`` (default 1) exists as a control: ``sum`` with ``scale=1.5`` separates MMPareto's
    magnitude boost from its direction change.
    """

    def __init__(self, scale: float = 1.0) -> None:
        super().__init__()
        if not scale > 0:
            raise ValueError(f"sum: scale must be > 0, got {scale}")
        self.scale = float(scale)

    def integrate(self, grads: TensorLists, grams: Tensor, inplace: bool = False) -> list[Tensor]:
        coefficients = torch.full((len(grads),), self.scale, dtype=torch.float64)
        update = combine(grads, coefficients, inplace)
        self.last = record(grams, torch.full((len(grads),), 1.0 / len(grads), dtype=torch.float64), update)
        return update

    def hparams(self) -> dict[str, Any]:
        return {"scale": self.scale}
