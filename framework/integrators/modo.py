"""MoDo: the loss weights follow a projected gradient step on ``|sum_i w_i g_i|^2`` every step.

Chen et al., "Three-Way Trade-Off in Multi-Objective Learning: Optimization, Generalization and
Conflict-Avoidance", JMLR 2024. torchjd's ``MoDoWeighting``.
"""

from __future__ import annotations

from typing import Any, ClassVar

from ._torchjd import GramianWeightingIntegrator, aggregation
from .registry import register


@register("modo")
class MoDo(GramianWeightingIntegrator):
    """``lr``: the step size of the weights' update (torchjd's ``gamma``, renamed: ``gamma`` is the
    magnitude rule's parameter here); ``rho``: the l2 regularisation of the weights. torchjd's defaults.

    torchjd's weighting takes ``J_1 J_2^T`` from two independent mini-batches (its convergence
    guarantee needs them); the framework has one batch per step, so it gets the group Gram matrix
    ``J J^T``, the single-batch variant torchjd's documentation warns about. Stateful (the weights,
    one per group). Not scale-equivariant: the step on the weights is ``lr`` times the Gram matrix.
    """

    scale_degree: int | None = None
    per_group_state: ClassVar[bool] = True

    def __init__(self, lr: float = 0.1, rho: float = 0.1) -> None:
        self.lr = float(lr)
        self.rho = float(rho)
        self._use(aggregation().MoDoWeighting(gamma=self.lr, rho=self.rho))

    def method_hparams(self) -> dict[str, Any]:
        return {"lr": self.lr, "rho": self.rho}
