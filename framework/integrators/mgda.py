"""Conventional Pareto integration: MGDA's min-norm combination, no magnitude restoration.

Désidéri, "Multiple-gradient descent algorithm (MGDA) for multiobjective optimization", 2012;
Sener & Koltun, "Multi-Task Learning as Multi-Objective Optimization", NeurIPS 2018.
"""

from __future__ import annotations

from torch import Tensor

from .base import Integrator
from .min_norm import min_norm_weights
from .registry import register


@register("mgda")
class MGDA(Integrator):
    """``update = sum_i a_i g_i`` with ``a`` the exact min-norm weights on the simplex."""

    def weights(self, gram: Tensor) -> Tensor:
        return min_norm_weights(gram)
