"""Adapter for torchjd's Gramian-based weightings: they decide from the group Gram matrix.

torchjd (Quinton & Rey, "Jacobian Descent for Multi-Objective Optimization", 2024;
https://github.com/TorchJD/torchjd, pinned at 0.18.0) splits each aggregator into a weighting of
the Gramian ``J J^T`` and the combination ``w^T J``. The engine already has the Gram matrix of the
per-loss gradients on every group, so an adapter only calls the weighting on it; the combination
is the framework's own, tensor by tensor, and the group is never flattened.
"""

from __future__ import annotations

from torch import Tensor, nn

from .base import Integrator


class GramianWeightingIntegrator(Integrator):
    """Weights from a torchjd ``Weighting`` called on the ``(k, k)`` group Gram matrix (float64)."""

    weighting: nn.Module

    def weights(self, gram: Tensor) -> Tensor:
        return self.weighting(gram.double()).detach().double()
