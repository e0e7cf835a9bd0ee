"""Mean: the average of the per-loss gradients (the uniform baseline, scaled by ``1 / k``).

torchjd's ``MeanWeighting``.
"""

from __future__ import annotations

import torch
from torch import Tensor

from ._torchjd import GramianWeightingIntegrator, aggregation
from .registry import register


@register("mean")
class Mean(GramianWeightingIntegrator):
    """No parameters: weights ``1 / k``, a fixed combination (one backward pass of the mean loss)."""

    def __init__(self) -> None:
        self._use(aggregation().MeanWeighting())

    def fixed_weights(self, k: int) -> Tensor:
        return torch.full((k,), 1.0 / k, dtype=torch.float64)
