"""FairGrad: alpha-fair resource allocation between the losses.

Ban & Ji, "Fair Resource Allocation in Multi-Task Learning", ICML 2024 (arXiv 2402.15638,
Equation 4 / Algorithm 1). torchjd's ``FairGradWeighting`` (solved with scipy's ``least_squares``).
"""

from __future__ import annotations

from typing import Any

import torch
from torch import Tensor

from ._torchjd import GramianWeightingIntegrator, aggregation
from .registry import register


@register("fairgrad")
class FairGrad(GramianWeightingIntegrator):
    """``alpha``: the fairness (torchjd has no default; 1.0 is proportional fairness, the Nash
    bargaining solution); ``max_iters``: the solver's evaluation budget (``None``: scipy's ``100 k``).

    The weights solve ``G w = w^(-1/alpha)``; when every gradient is multiplied by ``c`` they scale as
    ``c^(-2 alpha / (1 + alpha))``, so the update scales as ``c^((1 - alpha) / (1 + alpha))``:
    ``scale_degree`` is that exponent when it is an integer (0 for ``alpha = 1``, 1 for ``alpha = 0``,
    the mean), else ``None``. torchjd's weighting is solved on the trace-normalised Gram matrix and
    rescaled (the same solution, found at any scale); a zero Gram matrix gets uniform weights.
    """

    def __init__(self, alpha: float = 1.0, max_iters: int | None = None) -> None:
        if not alpha >= 0:
            raise ValueError(f"fairgrad: alpha must be >= 0, got {alpha}")
        self.alpha = float(alpha)
        self.max_iters = None if max_iters is None else int(max_iters)
        degree = (1.0 - self.alpha) / (1.0 + self.alpha)
        self.scale_degree = int(degree) if degree == int(degree) else None
        self._use(aggregation().FairGradWeighting(alpha=self.alpha, max_iters=self.max_iters))

    def weights(self, gram: Tensor) -> Tensor:
        # Solve on G / t (t: the trace) and rescale: if G' w' = w'^(-1/alpha) then w = t^(-alpha/(1+alpha)) w'
        # solves G w = w^(-1/alpha). torchjd starts scipy from uniform weights on the raw Gramian, which
        # measured a 30% residual for gradients of norm 1e-3 (and non-finite values for huge ones).
        gram = gram.double()
        trace = float(gram.diagonal().sum())
        if not trace > 0:
            return torch.full((gram.shape[0],), 1.0 / gram.shape[0], dtype=torch.float64)
        return self._call(gram / trace).double().cpu() * trace ** (-self.alpha / (1.0 + self.alpha))

    def method_hparams(self) -> dict[str, Any]:
        return {"alpha": self.alpha, "max_iters": self.max_iters}
