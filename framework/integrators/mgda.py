"""Conventional Pareto integration: MGDA's min-norm combination, no magnitude restoration.

Désidéri, "Multiple-gradient descent algorithm (MGDA) for multiobjective optimization", 2012;
Sener & Koltun, "Multi-Task Learning as Multi-Objective Optimization", NeurIPS 2018.
"""

from __future__ import annotations

from torch import Tensor

from .base import Integrator, TensorLists, combine, record
from .min_norm import min_norm_weights
from .registry import register


@register("mgda")
class MGDA(Integrator):
    """``update = sum_i a_i g_i`` with ``a`` the exact min-norm weights on the simplex (group Gram)."""

    def integrate(self, grads: TensorLists, grams: Tensor, inplace: bool = False) -> list[Tensor]:
        weights = min_norm_weights(grams.sum(0))
        update = combine(grads, weights, inplace)
        self.last = record(grams, weights, update)
        return update
