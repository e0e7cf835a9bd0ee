"""Magnitude rules: per-tensor scales applied to an integrator's direction.

Direction and magnitude are separate choices. Every integrator takes ``magnitude``:

- ``none``: the method's own update;
- ``restore``: MMPareto's restoration, ``max(1, |u| / |d|)`` with ``u = sum_i g_i``: a direction
  shorter than the plain sum is scaled up to it;
- ``restore_gamma``: the same, times ``gamma`` (MMPareto's full rule, its default).

``rescale`` says where norms are taken: per parameter tensor (``tensor``, MMPareto's reference
code) or once for the group (``group``).
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from typing import Any

import torch
from torch import Tensor

RESCALE_CHOICES = ("tensor", "group")
MAGNITUDE_CHOICES = ("none", "restore", "restore_gamma")
MAGNITUDE_DEFAULTS: dict[str, Any] = {"gamma": 1.5, "rescale": "tensor"}


class MagnitudeRule(ABC):
    """Per-tensor scales of an integrator's direction ``d = sum_i w_i g_i``."""

    @abstractmethod
    def scales(self, grams: Tensor, direction_norms: Tensor, dtype: torch.dtype) -> Tensor:
        """``(P,)`` float64 scales from the ``(P, k, k)`` per-tensor ``grams`` and ``|d_p|``.

        ``dtype`` is the working precision of the gradients (for round-off thresholds).
        """

    def hparams(self) -> dict[str, Any]:
        return {}


class RestoreAndEnlarge(MagnitudeRule):
    """``gamma * max(1, |u| / |d|)`` with ``u = sum_i g_i`` the uniform sum: MMPareto's rule.

    Wei & Hu, ICML 2024 (docs/mmpareto.md, step 5). Applied per parameter tensor
    (``rescale="tensor"``, the reference code) or once for the whole group (``rescale="group"``).
    Where ``|d|`` is zero up to round-off there is no common descent direction and the scale is 0.
    """

    def __init__(self, gamma: float = 1.5, rescale: str = "tensor", owner: str = "magnitude") -> None:
        if not gamma > 0:
            raise ValueError(f"{owner}: gamma must be > 0, got {gamma}")
        if rescale not in RESCALE_CHOICES:
            raise ValueError(f"{owner}: unknown rescale {rescale!r}; valid choices: {', '.join(RESCALE_CHOICES)}")
        self.gamma = float(gamma)
        self.rescale = rescale

    def scales(self, grams: Tensor, direction_norms: Tensor, dtype: torch.dtype) -> Tensor:
        d_norms = direction_norms
        grad_scale = grams.diagonal(dim1=1, dim2=2).clamp_min(0).sqrt().amax(1)
        u_norms = grams.sum(dim=(1, 2)).clamp_min(0).sqrt()
        if self.rescale == "group":
            d_norms = d_norms.square().sum().sqrt().reshape(1)
            u_norms = u_norms.square().sum().sqrt().reshape(1)
            grad_scale = grad_scale.amax().reshape(1)
        nonzero = d_norms > 16 * torch.finfo(dtype).eps * grad_scale
        ratio = torch.where(nonzero, u_norms / torch.where(nonzero, d_norms, 1.0), 0.0)
        scales = torch.where(nonzero, self.gamma * ratio.clamp_min(1.0), 0.0)
        return scales.expand(len(direction_norms)) if self.rescale == "group" else scales

    def hparams(self) -> dict[str, Any]:
        return {"gamma": self.gamma, "rescale": self.rescale}


def magnitude_rule(choice: str, gamma: float, rescale: str, owner: str = "magnitude") -> MagnitudeRule | None:
    """The rule for a ``magnitude`` choice; ``None`` for ``none``."""
    if choice not in MAGNITUDE_CHOICES:
        raise ValueError(f"{owner}: unknown magnitude {choice!r}; valid choices: {', '.join(MAGNITUDE_CHOICES)}")
    if choice == "none":
        return None
    return RestoreAndEnlarge(gamma if choice == "restore_gamma" else 1.0, rescale, owner=owner)
