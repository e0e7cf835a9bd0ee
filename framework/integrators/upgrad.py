"""UPGrad: project each gradient onto the dual cone of all of them, and average.

Quinton & Rey, "Jacobian Descent for Multi-Objective Optimization", 2024 (arXiv 2406.16232);
torchjd's ``UPGradWeighting``.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, ClassVar

import torch

from ._torchjd import GramianWeightingIntegrator, aggregation
from .registry import register


@register("upgrad")
class UPGrad(GramianWeightingIntegrator):
    """``pref_vector``: the weights averaged after projection (``None``: uniform ``1/k``)."""

    normalise_gram: ClassVar[bool] = True

    def __init__(self, pref_vector: Sequence[float] | None = None) -> None:
        self.pref_vector = None if pref_vector is None else [float(x) for x in pref_vector]
        preference = None if self.pref_vector is None else torch.tensor(self.pref_vector, dtype=torch.float64)
        self._use(aggregation().UPGradWeighting(pref_vector=preference))

    def method_hparams(self) -> dict[str, Any]:
        return {"pref_vector": self.pref_vector}
