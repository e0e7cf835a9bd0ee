"""GradVac: raise each pairwise gradient cosine towards its running target ("gradient vaccine").

Wang et al., "Gradient Vaccine: Investigating and Improving Multi-task Optimization in Massively
Multilingual Models", ICLR 2021. torchjd's ``GradVacWeighting``.
"""

from __future__ import annotations

from typing import Any, ClassVar

from ._torchjd import GramianWeightingIntegrator, aggregation
from .registry import register


@register("gradvac")
class GradVac(GramianWeightingIntegrator):
    """``beta``: EMA decay of the target cosines; ``eps``: added to the denominators (torchjd's defaults).

    Stateful (the EMA of the cosines, one per group) and random (the order in which each gradient
    visits the others: ``torch.randperm``, run on the integrator's own generator seeded by ``seed``).
    On the trace-normalised Gram matrix, so that ``eps`` is relative to the group's scale (torchjd's
    weights are invariant to a common scale of the gradients but for ``eps``; target cosines, the
    state, are scale-free).
    """

    normalise_gram: ClassVar[bool] = True
    label_params: ClassVar[tuple[str, ...]] = ("beta", "eps")  # its seed follows the run's seed
    per_group_state: ClassVar[bool] = True
    random: ClassVar[bool] = True

    def __init__(self, beta: float = 0.5, eps: float = 1e-8, seed: int = 0) -> None:
        self.beta = float(beta)
        self.eps = float(eps)
        self.seed = int(seed)
        self._use(aggregation().GradVacWeighting(beta=self.beta, eps=self.eps), seed=self.seed)

    def method_hparams(self) -> dict[str, Any]:
        return {"beta": self.beta, "eps": self.eps, "seed": self.seed}
