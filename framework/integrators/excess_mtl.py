"""ExcessMTL: reweight the losses by their estimated excess risk (exponentiated gradient).

He et al., "Robust Multi-Task Learning with Excess Risks", ICML 2024 (Equations 6, 7 and 9).
torchjd's ``ExcessMTLWeighting``.
"""

from __future__ import annotations

from typing import Any, ClassVar

from torchjd.aggregation import ExcessMTLWeighting

from ._torchjd import MatrixWeightingIntegrator
from .registry import register


@register("excess_mtl")
class ExcessMTL(MatrixWeightingIntegrator):
    """``robust_step_size``: the exponentiated-gradient step; ``n_warmup_steps``: calls with uniform
    weights that only collect statistics (0: the first call's excess risks are the baseline).
    torchjd's defaults.

    Stateful: it keeps the sum of the squared per-loss gradients, a ``k x d`` tensor per group (as
    large as the group's per-loss gradients), and the weights. Not scale-equivariant: the first
    call's excess risks, which set the weights' first step, grow with the gradients.
    """

    scale_degree: ClassVar[int | None] = None
    per_group_state: ClassVar[bool] = True

    def __init__(self, robust_step_size: float = 1.0, n_warmup_steps: int = 0) -> None:
        self.robust_step_size = float(robust_step_size)
        self.n_warmup_steps = int(n_warmup_steps)
        self._use(ExcessMTLWeighting(robust_step_size=self.robust_step_size, n_warmup_steps=self.n_warmup_steps))

    def method_hparams(self) -> dict[str, Any]:
        return {"robust_step_size": self.robust_step_size, "n_warmup_steps": self.n_warmup_steps}
