"""Trimmed mean: per coordinate, drop the largest and smallest values, average the rest.

Yin et al., "Byzantine-Robust Distributed Learning: Towards Optimal Statistical Rates", ICML 2018.
torchjd's ``TrimmedMean``.
"""

from __future__ import annotations

from typing import Any

from torch import Tensor

from ._kernels import TensorLists
from ._torchjd import MatrixAggregatorIntegrator, aggregation
from .registry import register


@register("trimmed_mean")
class TrimmedMean(MatrixAggregatorIntegrator):
    """``trim_number``: the values dropped at each end of every coordinate (``2 * trim_number + 1 <= k``).

    torchjd has no default; ``None`` (the default here) trims the most that ``k`` allows,
    ``(k - 1) // 2``: the coordinate-wise median (for ``k = 2``, the mean).
    """

    module: Any  # torchjd's TrimmedMean

    def __init__(self, trim_number: int | None = None) -> None:
        if trim_number is not None and int(trim_number) < 0:
            raise ValueError(f"trimmed_mean: trim_number must be >= 0 or null, got {trim_number}")
        self.trim_number = None if trim_number is None else int(trim_number)
        self._use(aggregation().TrimmedMean(trim_number=0))

    def direction(
        self, grads: TensorLists, grams: Tensor, inplace: bool
    ) -> tuple[list[Tensor], Tensor | float, Tensor]:
        k = len(grads)
        trim = (k - 1) // 2 if self.trim_number is None else self.trim_number
        if 2 * trim + 1 > k:
            raise ValueError(
                f"trimmed_mean: trim_number={trim} needs at least {2 * trim + 1} losses, the group has {k}; "
                f"valid for k={k}: 0 to {(k - 1) // 2}, or null"
            )
        self.module.trim_number = trim
        return super().direction(grads, grams, inplace)

    def method_hparams(self) -> dict[str, Any]:
        return {"trim_number": self.trim_number}
