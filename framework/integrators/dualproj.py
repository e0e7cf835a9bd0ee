"""DualProj: project the (preference-weighted) mean gradient onto the dual cone of all gradients.

Lopez-Paz & Ranzato, "Gradient Episodic Memory for Continual Learning", NeurIPS 2017 (Equation 11);
as generalised in Quinton & Rey, "Jacobian Descent for Multi-Objective Optimization", 2024.
torchjd's ``DualProjWeighting``.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, ClassVar

import torch

from ._torchjd import GramianWeightingIntegrator, aggregation
from .registry import register


@register("dualproj")
class DualProj(GramianWeightingIntegrator):
    """``pref_vector``: the weights of the combination that is projected (``None``: uniform ``1/k``).

    On the trace-normalised Gram matrix, as upgrad (torchjd's projector has absolute tolerances).
    """

    normalise_gram: ClassVar[bool] = True

    def __init__(self, pref_vector: Sequence[float] | None = None) -> None:
        self.pref_vector = None if pref_vector is None else [float(x) for x in pref_vector]
        preference = None if self.pref_vector is None else torch.tensor(self.pref_vector, dtype=torch.float64)
        self._use(aggregation().DualProjWeighting(pref_vector=preference))

    def method_hparams(self) -> dict[str, Any]:
        return {"pref_vector": self.pref_vector}
