"""CAGrad: the direction that maximises the worst local improvement within a ball around the mean.

Liu et al., "Conflict-Averse Gradient Descent for Multi-task Learning", NeurIPS 2021
(Algorithm 1). torchjd's ``CAGradWeighting`` (solved with cvxpy's CLARABEL).
"""

from __future__ import annotations

from typing import Any, ClassVar

from ._torchjd import GramianWeightingIntegrator, aggregation
from .registry import register


@register("cagrad")
class CAGrad(GramianWeightingIntegrator):
    """``c``: the radius of the ball, relative to the mean gradient's norm (torchjd has no default;
    0.5 is the value of torchjd's own examples and tests); ``norm_eps``: below this squared
    Frobenius norm of the group the Gramian is treated as zero (torchjd's default).

    On the trace-normalised Gram matrix: torchjd normalises by the trace itself, but returns zero
    weights when the trace is below ``norm_eps``; normalising first makes that threshold relative,
    so small gradient groups are not zeroed. Otherwise the weights are torchjd's.
    """

    normalise_gram: ClassVar[bool] = True

    def __init__(self, c: float = 0.5, norm_eps: float = 1e-4) -> None:
        self.c = float(c)
        self.norm_eps = float(norm_eps)
        self._use(aggregation().CAGradWeighting(c=self.c, norm_eps=self.norm_eps))

    def method_hparams(self) -> dict[str, Any]:
        return {"c": self.c, "norm_eps": self.norm_eps}
