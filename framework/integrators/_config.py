"""ConFIG: the conflict-free direction with equal cosines to every (unit) gradient.

Liu et al., "ConFIG: Towards Conflict-free Training of Physics Informed Neural Networks", ICLR 2025
(arXiv 2408.11104, Equation 2). torchjd's ``ConFIG``.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import torch
from torch import Tensor, nn

from ._torchjd import MatrixAggregatorIntegrator, aggregation
from .registry import register


class _WithPreference(nn.Module):
    """torchjd's ``ConFIG`` with its preference vector moved to the matrix's dtype and device first
    (torchjd multiplies the two without casting), run on the matrix divided by a power of two near
    its largest entry and multiplied back (exact, as ConFIG is linear in a common scale): torchjd's
    row norms square the entries, which under- or overflows in float32 for entries below about 1e-19
    or above 1e19 (then the unit gradients are zero, and so is the update)."""

    def __init__(self, preference: Tensor | None) -> None:
        super().__init__()
        self.aggregator = aggregation().ConFIG(pref_vector=preference)
        self.preference = preference

    def forward(self, matrix: Tensor) -> Tensor:
        if self.preference is not None:
            self.aggregator.pref_vector = self.preference.to(device=matrix.device, dtype=matrix.dtype)
        largest = float(matrix.abs().max()) if matrix.numel() else 0.0
        if not (math.isfinite(largest) and largest > 0):
            return self.aggregator(matrix)
        scale = 2.0 ** math.frexp(largest)[1]
        return self.aggregator(matrix / scale) * scale


@register("config")
class ConFIG(MatrixAggregatorIntegrator):
    """``pref_vector``: the target inner products with the unit gradients (``None``: all ones).

    The update is the unit vector ``pinv(U) w / |pinv(U) w|`` (``U``: the unit gradients) times the
    sum of the gradients' projections on it; it lies in the gradients' span, so the decision's
    weights are exact.
    """

    def __init__(self, pref_vector: Sequence[float] | None = None) -> None:
        self.pref_vector = None if pref_vector is None else [float(x) for x in pref_vector]
        preference = None if self.pref_vector is None else torch.tensor(self.pref_vector, dtype=torch.float64)
        self._use(_WithPreference(preference))

    def method_hparams(self) -> dict[str, Any]:
        return {"pref_vector": self.pref_vector}
