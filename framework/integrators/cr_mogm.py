"""CR-MOGM: another weighting's weights, smoothed by an exponential moving average across steps.

Zhou et al., "On the Convergence of Stochastic Multi-Objective Gradient Manipulation and Beyond",
NeurIPS 2022. torchjd's ``CRMOGMWeighting``, wrapping one of torchjd's Gramian weightings (by
default ``MGDAWeighting``, the paper's main case: MGDA's min-norm weights, smoothed).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, ClassVar

import torch

from ._torchjd import GramianWeightingIntegrator, aggregation
from .registry import register

WRAPPED: dict[str, str] = {
    "mgda": "MGDAWeighting",
    "upgrad": "UPGradWeighting",
    "dualproj": "DualProjWeighting",
    "imtl_g": "IMTLGWeighting",
    "aligned_mtl": "AlignedMTLWeighting",
    "mean": "MeanWeighting",
}
"""The weightings CR-MOGM can smooth: torchjd's classes, by name (built with their default parameters)."""


@register("cr_mogm")
class CRMOGM(GramianWeightingIntegrator):
    """``weighting``: the smoothed weighting (``mgda``, ``upgrad``, ``dualproj``, ``imtl_g``,
    ``aligned_mtl``, ``mean``); ``alpha``: the EMA coefficient on the previous weights (torchjd's
    default 0.9; 0: no smoothing); ``initial_weights``: the weights before the first step
    (``None``: the first step's own weights).

    Stateful (the smoothed weights, one per group). On the trace-normalised Gram matrix, as upgrad:
    the wrapped weightings' weights do not depend on the gradients' scale but for absolute
    tolerances, which normalising makes relative.
    """

    normalise_gram: ClassVar[bool] = True
    per_group_state: ClassVar[bool] = True

    def __init__(
        self, weighting: str = "mgda", alpha: float = 0.9, initial_weights: Sequence[float] | None = None
    ) -> None:
        if weighting not in WRAPPED:
            raise ValueError(f"cr_mogm: weighting must be one of {', '.join(WRAPPED)}, got {weighting!r}")
        self.weighting = weighting
        self.alpha = float(alpha)
        self.initial_weights = None if initial_weights is None else [float(x) for x in initial_weights]
        initial = None if self.initial_weights is None else torch.tensor(self.initial_weights, dtype=torch.float64)
        torchjd = aggregation()
        wrapped = getattr(torchjd, WRAPPED[weighting])()
        self._use(torchjd.CRMOGMWeighting(wrapped, alpha=self.alpha, initial_weights=initial))

    def method_hparams(self) -> dict[str, Any]:
        return {"weighting": self.weighting, "alpha": self.alpha, "initial_weights": self.initial_weights}
