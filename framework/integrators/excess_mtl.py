"""ExcessMTL: reweight the losses by their estimated excess risk (exponentiated gradient).

He et al., "Robust Multi-Task Learning with Excess Risks", ICML 2024 (Equations 6, 7 and 9).
torchjd's ``ExcessMTLWeighting``, with one warm-up call by default so that it follows the official
code (as LibMTL transcribes it, ``LibMTL/weighting/ExcessMTL.py``): the first call only records the
baseline excess risks and keeps the weights uniform; every later call divides the risks by that
baseline and takes the exponentiated-gradient step. What still differs from the official code: the
weights sum to 1 (mean) where the official ones sum to ``k`` (sum; a constant factor of the update,
``magnitude`` or the learning rate absorb it), and the baseline division adds 1e-7. With
``n_warmup_steps=0`` (torchjd's default) torchjd instead steps on the first call, with the raw,
unnormalised risks, which the official code never does.
"""

from __future__ import annotations

from typing import Any, ClassVar

from ._torchjd import MatrixWeightingIntegrator, aggregation
from .registry import register


@register("excess_mtl")
class ExcessMTL(MatrixWeightingIntegrator):
    """``robust_step_size``: the exponentiated-gradient step (torchjd's default, 1.0);
    ``n_warmup_steps``: calls with uniform weights that only collect statistics, whose mean risks
    become the baseline (1, the official code's behaviour; 0: torchjd's, the first call's raw risks
    take a step).

    Stateful: it keeps the sum of the squared per-loss gradients, a ``k x d`` tensor per group (as
    large as the group's per-loss gradients), and the weights. Not scale-equivariant: the first
    call's excess risks, which set the weights' first step, grow with the gradients.
    """

    scale_degree: int | None = None
    per_group_state: ClassVar[bool] = True

    def __init__(self, robust_step_size: float = 1.0, n_warmup_steps: int = 1) -> None:
        self.robust_step_size = float(robust_step_size)
        self.n_warmup_steps = int(n_warmup_steps)
        self._use(
            aggregation().ExcessMTLWeighting(robust_step_size=self.robust_step_size, n_warmup_steps=self.n_warmup_steps)
        )

    def method_hparams(self) -> dict[str, Any]:
        return {"robust_step_size": self.robust_step_size, "n_warmup_steps": self.n_warmup_steps}
