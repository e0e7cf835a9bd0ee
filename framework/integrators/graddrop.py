"""GradDrop: keep, per coordinate, the gradients of one randomly chosen sign.

Chen et al., "Just Pick a Sign: Optimizing Deep Multitask Models with Gradient Sign Dropout",
NeurIPS 2020 (Algorithm 1, lines 10-15). torchjd's ``GradDrop`` (with its default ``f``, the identity).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, ClassVar

import torch
from torch import Tensor, nn

from ._torchjd import MatrixAggregatorIntegrator, aggregation
from .registry import register


class _WithLeak(nn.Module):
    """torchjd's ``GradDrop`` with its leak vector moved to the matrix's dtype and device first."""

    def __init__(self, leak: Tensor | None) -> None:
        super().__init__()
        self.aggregator = aggregation().GradDrop(leak=leak)
        self.leak = leak

    def forward(self, matrix: Tensor) -> Tensor:
        if self.leak is not None:
            self.aggregator.leak = self.leak.to(device=matrix.device, dtype=matrix.dtype)
        return self.aggregator(matrix)


@register("graddrop")
class GradDrop(MatrixAggregatorIntegrator):
    """``leak``: per loss, the fraction of its gradient that always passes (``None``: no leak).

    Random: the per-coordinate thresholds are ``torch.rand`` draws, run on the integrator's own
    generator seeded by ``seed``. The update is not in the gradients' span in general, so the
    decision's weights are a least-squares projection. Each parameter group has its own copy of the
    generator (``per_group_state``), all seeded alike, so a group's draws do not depend on the other
    groups or on their order (groups of the same size draw the same thresholds on a step).
    """

    label_params: ClassVar[tuple[str, ...]] = ("leak",)  # its seed follows the run's seed
    per_group_state: ClassVar[bool] = True
    random: ClassVar[bool] = True

    def __init__(self, leak: Sequence[float] | None = None, seed: int = 0) -> None:
        self.leak = None if leak is None else [float(x) for x in leak]
        self.seed = int(seed)
        leak_tensor = None if self.leak is None else torch.tensor(self.leak, dtype=torch.float64)
        self._use(_WithLeak(leak_tensor), seed=self.seed)

    def method_hparams(self) -> dict[str, Any]:
        return {"leak": self.leak, "seed": self.seed}
