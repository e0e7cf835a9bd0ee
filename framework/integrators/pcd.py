"""PCD: follow the primary loss's gradient, guaranteeing each other loss a fraction of progress.

Varam et al., "Not All Objectives Are Born Equal: Priority-Constrained Descent for Hierarchical
Multi-Objective Optimization", TMLR 2026 (arXiv 2606.29521). torchjd's ``PCDWeighting``.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, ClassVar

import torch

from ._torchjd import GramianWeightingIntegrator, aggregation
from .registry import register


@register("pcd")
class PCD(GramianWeightingIntegrator):
    """``tau``: the fraction of normalised first-order progress guaranteed to each secondary loss (a
    number, or one per secondary loss); ``beta``: the decay of the EMA of the squared gradient norms;
    ``eps``: added to that EMA. torchjd's defaults.

    Row 0 is the primary objective: the multimodal loss of a multimodal model, the first task of a
    multi-task one (``left`` on Multi-MNIST). Stateful (the EMA, one per group).
    The update scales with the gradients while their squared norms are well above ``eps``.
    """

    per_group_state: ClassVar[bool] = True
    first_loss_is_primary: ClassVar[bool] = True

    def __init__(self, tau: float | Sequence[float] = 0.02, beta: float = 0.999, eps: float = 1e-8) -> None:
        self.tau: float | list[float] = float(tau) if isinstance(tau, int | float) else [float(t) for t in tau]
        self.beta = float(beta)
        self.eps = float(eps)
        taus = torch.tensor(self.tau, dtype=torch.float64) if isinstance(self.tau, list) else self.tau
        self._use(aggregation().PCDWeighting(tau=taus, beta=self.beta, eps=self.eps))

    def method_hparams(self) -> dict[str, Any]:
        return {"tau": self.tau, "beta": self.beta, "eps": self.eps}
