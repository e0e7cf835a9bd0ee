"""MMPareto: Pareto integration with the magnitude restored and enlarged.

Wei & Hu, "MMPareto: Boosting Multimodal Learning with Innocent Unimodal Assistance", ICML 2024
(arXiv 2405.17730). Semantics follow ``docs/mmpareto.md`` (the authors' reference code where the
paper is silent).
"""

from __future__ import annotations

from typing import ClassVar

import torch
from torch import Tensor

from .base import Integrator, cosine_from_gram
from .min_norm import min_norm_weights, sener_koltun_two_vector_weight_tensor
from .registry import register


def mmpareto_weights(gram: Tensor) -> Tensor:
    """The simplex weights ``a``: uniform ``1/k`` when every pairwise cosine is > 0, else min-norm.

    With two losses the min-norm weight is the reference solver's (``_min_norm_element_from2``): exact,
    unclipped, except in its two degenerate cases (a zero gradient under the ``cos <= 0`` branch).
    """
    k = gram.shape[0]
    if k == 1:
        return torch.ones(1, dtype=torch.float64, device=gram.device)
    cosine = cosine_from_gram(gram)
    if k == 2:
        # Both branches on the device, the choice by torch.where: nothing read on the host.
        g = gram.detach().double()
        a = torch.where(cosine[0, 1] > 0, 0.5, sener_koltun_two_vector_weight_tensor(g[0, 0], g[0, 1], g[1, 1]))
        return torch.stack([a, 1.0 - a])
    off_diagonal = cosine[~torch.eye(k, dtype=torch.bool, device=cosine.device)]
    # Three or more losses: which branch is read on the host, as the min-norm solver runs there.
    if bool((off_diagonal > 0).all()):
        return torch.full((k,), 1.0 / k, dtype=torch.float64)
    return min_norm_weights(gram)


@register("mmpareto")
class MMPareto(Integrator):
    """Direction ``h = k * sum_i a_i g_i`` (weights ``k * a``), then ``gamma * max(1, |u| / |h|) * h``
    with ``u = sum_i g_i``, per tensor (``rescale="tensor"``) or per group (``"group"``).

    Its parameters ``gamma`` and ``rescale`` are those of the magnitude rule (``restore_gamma``, its
    default); ``magnitude=none`` keeps the direction ``h`` alone.
    """

    default_magnitude: ClassVar[str] = "restore_gamma"

    def __init__(self) -> None:
        self.set_magnitude()

    def weights(self, gram: Tensor) -> Tensor:
        return gram.shape[0] * mmpareto_weights(gram)
