"""RLW: random loss weighting, softmax of standard Gaussian draws at every step.

Lin et al., "Reasonable Effectiveness of Random Weighting: A Litmus Test for Multi-Task Learning",
TMLR 2022 (arXiv 2111.10603, Algorithm 2). torchjd's ``RandomWeighting``.
"""

from __future__ import annotations

from typing import Any, ClassVar

from ._torchjd import GramianWeightingIntegrator, aggregation
from .registry import register


@register("random")
class Random(GramianWeightingIntegrator):
    """No parameters but its ``seed``: the weights are ``softmax(torch.randn(k))``, drawn on the
    integrator's own generator.

    torchjd's weighting uses its input only for ``k``, dtype and device: it is given the group Gram
    matrix (float64, CPU), so the draws are the same whatever the gradients' dtype and device, and
    the group is never copied into a matrix. Each parameter group has its own copy of the
    generator (``per_group_state``), all seeded alike: groups with the same ``k`` get the same weights
    on a step, as RLW weighs the losses once per step, whatever the order the groups are integrated in.
    """

    label_params: ClassVar[tuple[str, ...]] = ()  # its seed follows the run's seed
    per_group_state: ClassVar[bool] = True
    random: ClassVar[bool] = True

    def __init__(self, seed: int = 0) -> None:
        self.seed = int(seed)
        self._use(aggregation().RandomWeighting(), seed=self.seed)

    def method_hparams(self) -> dict[str, Any]:
        return {"seed": self.seed}
