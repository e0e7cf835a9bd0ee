"""Aligned-MTL: align the principal components of the gradient matrix, then combine.

Senushkin et al., "Independent Component Alignment for Multi-Task Learning", CVPR 2023
(Algorithm 1). torchjd's ``AlignedMTLWeighting``.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch

from ._torchjd import GramianWeightingIntegrator, aggregation
from .registry import register

SCALE_MODES = ("min", "median", "rmse")


@register("aligned_mtl")
class AlignedMTL(GramianWeightingIntegrator):
    """``pref_vector``: weights after the balance transformation (``None``: uniform ``1/k``);
    ``scale_mode``: the eigenvalue that scales the aligned gradients (``min``, ``median``, ``rmse``)."""

    def __init__(self, pref_vector: Sequence[float] | None = None, scale_mode: str = "min") -> None:
        if scale_mode not in SCALE_MODES:
            raise ValueError(f"aligned_mtl: scale_mode must be one of {', '.join(SCALE_MODES)}, got {scale_mode!r}")
        self.pref_vector = None if pref_vector is None else [float(x) for x in pref_vector]
        self.scale_mode = scale_mode
        preference = None if self.pref_vector is None else torch.tensor(self.pref_vector, dtype=torch.float64)
        self._use(aggregation().AlignedMTLWeighting(pref_vector=preference, scale_mode=scale_mode))

    def method_hparams(self) -> dict[str, Any]:
        return {"pref_vector": self.pref_vector, "scale_mode": self.scale_mode}
