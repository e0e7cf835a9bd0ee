"""SDMGrad: stochastic direction-oriented multi-objective gradient, pulled towards a preference.

Xiao et al., "Direction-oriented Multi-objective Learning: Simple and Provable Stochastic
Algorithms", NeurIPS 2023 (arXiv 2305.18409). torchjd's ``SDMGradWeighting``.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, ClassVar

import torch

from ._torchjd import GramianWeightingIntegrator, aggregation
from .registry import register


@register("sdmgrad")
class SDMGrad(GramianWeightingIntegrator):
    """``lr``, ``momentum``, ``n_iter``: the inner projected SGD on the weights; ``lambda_``: the pull
    towards the preference direction; ``pref_vector``: that direction's weights (``None``: ``1/k``).
    torchjd's defaults.

    torchjd's weighting takes ``J_1 J_2^T`` from two independent mini-batches; the framework has one
    batch per step, so it gets the group Gram matrix ``J J^T`` (the single-batch variant). Stateful
    (the inner solution, warm-started at the next step; one per group). On the trace-normalised Gram
    matrix: torchjd rescales it itself but adds 1e-8 in absolute terms.
    """

    normalise_gram: ClassVar[bool] = True
    per_group_state: ClassVar[bool] = True

    def __init__(
        self,
        lr: float = 10.0,
        momentum: float = 0.5,
        n_iter: int = 20,
        lambda_: float = 0.3,
        pref_vector: Sequence[float] | None = None,
    ) -> None:
        self.lr = float(lr)
        self.momentum = float(momentum)
        self.n_iter = int(n_iter)
        self.lambda_ = float(lambda_)
        self.pref_vector = None if pref_vector is None else [float(x) for x in pref_vector]
        preference = None if self.pref_vector is None else torch.tensor(self.pref_vector, dtype=torch.float64)
        self._use(
            aggregation().SDMGradWeighting(
                lr=self.lr,
                momentum=self.momentum,
                n_iter=self.n_iter,
                lambda_=self.lambda_,
                pref_vector=preference,
            )
        )

    def method_hparams(self) -> dict[str, Any]:
        return {
            "lr": self.lr,
            "momentum": self.momentum,
            "n_iter": self.n_iter,
            "lambda_": self.lambda_,
            "pref_vector": self.pref_vector,
        }
