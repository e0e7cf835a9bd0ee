"""PCGrad: project each gradient onto the normal plane of the gradients it conflicts with.

Yu et al., "Gradient Surgery for Multi-Task Learning", NeurIPS 2020 (Algorithm 1).
"""

from __future__ import annotations

from typing import Any, ClassVar

import torch
from torch import Tensor

from .base import Integrator
from .registry import register


def pcgrad_weights(gram: Tensor, generator: torch.Generator) -> Tensor:
    """Coefficients ``w`` with ``sum_i g_i^PC = sum_j w_j g_j``, computed from the group Gram matrix.

    For each ``i`` in turn, ``g_i^PC`` starts at ``g_i`` and, over the other gradients ``g_j`` in a
    random order, loses its component along ``g_j`` whenever ``g_i^PC . g_j < 0``.
    """
    k = gram.shape[0]
    gram = gram.double()
    total = torch.zeros(k, dtype=torch.float64, device=gram.device)
    for i in range(k):
        current = torch.zeros(k, dtype=torch.float64, device=gram.device)
        current[i] = 1.0
        # The order is drawn on the CPU generator and read there: a host tensor, no device read.
        for j in torch.randperm(k, generator=generator).tolist():
            if j == i:
                continue
            inner, norm = gram[j] @ current, gram[j, j]
            project = (inner < 0.0) & (norm > 0)  # the projection by torch.where: nothing read on the host
            current[j] -= torch.where(project, inner / torch.where(project, norm, 1.0), 0.0)
        total += current
    return total


@register("pcgrad")
class PCGrad(Integrator):
    """Sum of the projected gradients; the random order comes from a seeded, checkpointed generator."""

    label_params: ClassVar[tuple[str, ...]] = ()  # its seed follows the run's seed

    def __init__(self, seed: int = 0) -> None:
        self.seed = int(seed)
        self.generator = torch.Generator().manual_seed(self.seed)

    def weights(self, gram: Tensor) -> Tensor:
        return pcgrad_weights(gram, self.generator)

    def state_dict(self) -> dict[str, Any]:
        return {"generator": self.generator.get_state()}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.generator.set_state(state["generator"])

    def method_hparams(self) -> dict[str, Any]:
        return {"seed": self.seed}
