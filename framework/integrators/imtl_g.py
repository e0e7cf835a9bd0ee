"""IMTL-G: the combination whose projections on every unit gradient are equal.

Liu et al., "Towards Impartial Multi-task Learning", ICLR 2021 (the gradient part, IMTL-G), as
generalised to linearly dependent gradients in Quinton & Rey, "Jacobian Descent for
Multi-Objective Optimization", 2024. torchjd's ``IMTLGWeighting``.
"""

from __future__ import annotations

from typing import ClassVar

from ._torchjd import GramianWeightingIntegrator, aggregation
from .registry import register


@register("imtl_g")
class IMTLG(GramianWeightingIntegrator):
    """No parameters: ``w = pinv(G) sqrt(diag G)``, normalised to sum to one.

    On the trace-normalised Gram matrix (the same weights): torchjd returns zero weights when
    ``|sum(pinv(G) sqrt(diag G))| < 1e-12``, an absolute threshold that large gradients (whose ``v``
    scales as ``1 / |g|``) would cross.
    """

    normalise_gram: ClassVar[bool] = True

    def __init__(self) -> None:
        self._use(aggregation().IMTLGWeighting())
