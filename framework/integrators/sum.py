"""Uniform sum of the per-loss gradients (the paper's "uniform baseline")."""

from __future__ import annotations

from typing import Any

import torch
from torch import Tensor

from .base import Integrator
from .registry import register


@register("sum")
class Sum(Integrator):
    """``update = scale * sum_i g_i`` (weights ``scale``).

    ``scale`` (default 1) exists as a control: ``sum`` with ``scale=1.5`` separates MMPareto's
    magnitude boost from its direction change.
    """

    def __init__(self, scale: float = 1.0) -> None:
        if not scale > 0:
            raise ValueError(f"sum: scale must be > 0, got {scale}")
        self.scale = float(scale)

    def weights(self, gram: Tensor) -> Tensor:
        return torch.full((gram.shape[0],), self.scale, dtype=torch.float64, device=gram.device)

    def fixed_weights(self, k: int) -> Tensor:
        return torch.full((k,), self.scale, dtype=torch.float64)

    def method_hparams(self) -> dict[str, Any]:
        return {"scale": self.scale}
