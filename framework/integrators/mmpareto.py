"""MMPareto: Pareto integration with the magnitude restored and enlarged.

Wei & Hu, "MMPareto: Boosting Multimodal Learning with Innocent Unimodal Assistance", ICML 2024
(arXiv 2405.17730). Semantics follow ``docs/mmpareto.md`` (the authors' reference code where the
paper is silent).
"""

from __future__ import annotations

from typing import Any

import torch
from torch import Tensor

from .base import Integrator, TensorLists, accumulate, cosine_from_gram, record, robust_norms
from .min_norm import min_norm_weights, two_vector_weight
from .registry import register

RESCALE_CHOICES = ("tensor", "group")
REFERENCE_CLIP = (0.001, 0.999)


def mmpareto_weights(gram: Tensor) -> Tensor:
    """Uniform ``1/k`` when every pairwise cosine is > 0, else the min-norm weights.

    With two losses the min-norm weight is clipped to ``[0.001, 0.999]`` as the reference solver does.
    """
    k = gram.shape[0]
    cosine = cosine_from_gram(gram)
    off_diagonal = cosine[~torch.eye(k, dtype=torch.bool)]
    if k == 1 or bool((off_diagonal > 0).all()):
        return torch.full((k,), 1.0 / k, dtype=torch.float64)
    if k == 2:
        a = two_vector_weight(float(gram[0, 0]), float(gram[0, 1]), float(gram[1, 1]), *REFERENCE_CLIP)
        return torch.tensor([a, 1.0 - a], dtype=torch.float64)
    return min_norm_weights(gram)


def _working_dtype(t: Tensor) -> torch.dtype:
    return torch.float32 if t.dtype in (torch.float16, torch.bfloat16) else t.dtype


@register("mmpareto")
class MMPareto(Integrator):
    """``h = k * sum_i a_i g_i``, then ``gamma * max(1, |u| / |h|) * h`` with ``u = sum_i g_i``.

    The magnitude rule applies per parameter tensor (``rescale="tensor"``, the reference code) or
    once for the whole group (``rescale="group"``). Where ``|h|`` is zero up to round-off there is
    no common descent direction and the update is zero.
    """

    def __init__(self, gamma: float = 1.5, rescale: str = "tensor") -> None:
        super().__init__()
        if not gamma > 0:
            raise ValueError(f"mmpareto: gamma must be > 0, got {gamma}")
        if rescale not in RESCALE_CHOICES:
            raise ValueError(f"mmpareto: unknown rescale {rescale!r}; valid choices: {', '.join(RESCALE_CHOICES)}")
        self.gamma = float(gamma)
        self.rescale = rescale

    def integrate(self, grads: TensorLists, grams: Tensor, inplace: bool = False) -> list[Tensor]:
        k = len(grads)
        weights = mmpareto_weights(grams.sum(0))
        # h = factor * base: one fused pass forms base; |h_p| is measured on it; the final
        # per-tensor scale and the factor go in one multiplication pass.
        base, factor = accumulate(grads, k * weights, inplace)
        tensor_h = robust_norms(base) * abs(factor)
        h_norms = tensor_h
        grad_scale = grams.diagonal(dim1=1, dim2=2).clamp_min(0).sqrt().amax(1)
        u_norms = grams.sum(dim=(1, 2)).clamp_min(0).sqrt()
        if self.rescale == "group":
            h_norms = h_norms.square().sum().sqrt().reshape(1)
            u_norms = u_norms.square().sum().sqrt().reshape(1)
            grad_scale = grad_scale.amax().reshape(1)
        nonzero = h_norms > 16 * torch.finfo(_working_dtype(base[0])).eps * grad_scale
        ratio = torch.where(nonzero, u_norms / torch.where(nonzero, h_norms, 1.0), 0.0)
        scales = torch.where(nonzero, self.gamma * ratio.clamp_min(1.0), 0.0)
        if self.rescale == "group":
            scales = scales.expand(len(base))
        torch._foreach_mul_(base, (scales * factor).tolist())
        update_norm = float((scales * tensor_h).square().sum().sqrt())
        self.last = record(grams, weights, base, update_norm=update_norm)
        return base

    def hparams(self) -> dict[str, Any]:
        return {"gamma": self.gamma, "rescale": self.rescale}
