"""Magnitude rules: per-tensor scales applied to an integrator's direction.

Direction and magnitude are separate choices. Every integrator takes ``magnitude``:

- ``none``: the method's own update;
- ``restore``: MMPareto's restoration, ``max(1, |u| / |d|)`` with ``u = sum_i g_i``: a direction
  shorter than the plain sum is scaled up to it;
- ``restore_gamma``: the same, times ``gamma`` (MMPareto's full rule, its default).

``rescale`` says where norms are taken: per parameter tensor (``tensor``, MMPareto's reference
code) or once for the group (``group``).

The rule enlarges only a common descent direction. On the group, with ``G`` its Gram matrix and
``w`` the direction's weights, ``G w = (g_i . d)_i``: if some ``g_i . d < -tol_i``, ``d`` increases
loss ``i`` to first order and every scale is 1 (the method's own update is kept), since enlarging
it would take a full-size step against that loss. This is the case of a regularised solver's
residue where no common descent direction exists (UPGrad, DualProj, CAGrad on ``g_1 = -2 g_0``
return a small ``d`` with ``g_0 . d < 0``), and of methods that do not descend on every loss
(``sum``, PCGrad, ...). ``tol_i = DESCENT_COSINE_TOL |g_i| |d|`` plus round-off: the dual-cone
projectors' regularisation tilts their directions by cosines of a few 1e-3 at ordinary points.
A min-norm direction (MGDA, MMPareto) is a common descent direction or zero, so MMPareto's rule is
unchanged. Where ``|d|`` is zero up to round-off the scale is 0: ``|d| <= (64 eps + 1e-10)
sum_i |w_i| |g_i|`` (the size of the terms that cancel, not of the gradients alone), so that a
min-norm solver's residue of 1e-15 to 1e-13 where no common descent direction exists (0 in the
convex hull of the gradients) is not enlarged into a full step in a round-off direction.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from typing import Any

import torch
from torch import Tensor

RESCALE_CHOICES = ("tensor", "group")
MAGNITUDE_CHOICES = ("none", "restore", "restore_gamma")
MAGNITUDE_DEFAULTS: dict[str, Any] = {"gamma": 1.5, "rescale": "tensor"}
DESCENT_COSINE_TOL = 1e-2
"""A direction with ``cos(g_i, d) >= -DESCENT_COSINE_TOL`` for every loss counts as descent."""
WEIGHTS_RTOL = 1e-10
"""Relative accuracy assumed of the float64 weights (the min-norm solvers reach about 1e-14)."""


class MagnitudeRule(ABC):
    """Per-tensor scales of an integrator's direction ``d = sum_i w_i g_i``."""

    @abstractmethod
    def scales(self, grams: Tensor, direction_norms: Tensor, dtype: torch.dtype, weights: Tensor) -> Tensor:
        """``(P,)`` float64 scales from the ``(P, k, k)`` per-tensor ``grams``, ``|d_p|`` and the
        ``(k,)`` weights of ``d = sum_i w_i g_i``.

        ``dtype`` is the working precision of the gradients (for round-off thresholds).
        """

    def hparams(self) -> dict[str, Any]:
        return {}


class RestoreAndEnlarge(MagnitudeRule):
    """``gamma * max(1, |u| / |d|)`` with ``u = sum_i g_i`` the uniform sum: MMPareto's rule.

    Wei & Hu, ICML 2024 (docs/mmpareto.md, step 5). Applied per parameter tensor
    (``rescale="tensor"``, the reference code) or once for the whole group (``rescale="group"``).
    Where ``|d|`` is zero up to round-off there is no common descent direction and the scale is 0;
    where ``d`` increases a loss on the group (:func:`is_common_descent`) every scale is 1.
    """

    def __init__(self, gamma: float = 1.5, rescale: str = "tensor", owner: str = "magnitude") -> None:
        if not gamma > 0:
            raise ValueError(f"{owner}: gamma must be > 0, got {gamma}")
        if rescale not in RESCALE_CHOICES:
            raise ValueError(f"{owner}: unknown rescale {rescale!r}; valid choices: {', '.join(RESCALE_CHOICES)}")
        self.gamma = float(gamma)
        self.rescale = rescale

    def scales(self, grams: Tensor, direction_norms: Tensor, dtype: torch.dtype, weights: Tensor) -> Tensor:
        common = common_descent(grams.sum(0), weights, direction_norms.square().sum().sqrt(), dtype)
        d_norms = direction_norms
        squared_norms = grams.diagonal(dim1=1, dim2=2).clamp_min(0)  # (P, k): |g_{i,p}|^2
        u_norms = grams.sum(dim=(1, 2)).clamp_min(0).sqrt()
        if self.rescale == "group":
            d_norms = d_norms.square().sum().sqrt().reshape(1)
            u_norms = u_norms.square().sum().sqrt().reshape(1)
            squared_norms = squared_norms.sum(0, keepdim=True)
        # |d| against the size of the terms it sums, sum_i |w_i| |g_i|: below the round-off of the
        # combination and of the float64 weights, d is zero (a solver's residue at a point with
        # no common descent direction), not a direction to enlarge.
        terms = squared_norms.sqrt() @ weights.double().abs()
        nonzero = d_norms > (64 * torch.finfo(dtype).eps + WEIGHTS_RTOL) * terms
        ratio = torch.where(nonzero, u_norms / torch.where(nonzero, d_norms, 1.0), 0.0)
        scales = torch.where(nonzero, self.gamma * ratio.clamp_min(1.0), 0.0)
        scales = scales.expand(len(direction_norms)) if self.rescale == "group" else scales
        return torch.where(common, scales, 1.0)  # not a common descent direction: every scale is 1

    def hparams(self) -> dict[str, Any]:
        return {"gamma": self.gamma, "rescale": self.rescale}


def is_common_descent(gram: Tensor, weights: Tensor, direction_norm: float | Tensor, dtype: torch.dtype) -> bool:
    """Whether ``d = sum_i w_i g_i`` increases no loss to first order:
    ``(G w)_i >= -(DESCENT_COSINE_TOL |g_i| |d| + 16 eps |g_i| sum_j |w_j| |g_j|)`` for every ``i``."""
    return bool(common_descent(gram, weights, direction_norm, dtype))


def common_descent(gram: Tensor, weights: Tensor, direction_norm: float | Tensor, dtype: torch.dtype) -> Tensor:
    """:func:`is_common_descent` as a boolean tensor on ``gram``'s device (nothing read on the host)."""
    gram, weights = gram.double(), weights.to(gram.device, torch.float64)
    norms = gram.diagonal().clamp_min(0).sqrt()
    round_off = 16 * torch.finfo(dtype).eps * norms * (weights.abs() @ norms)
    return (gram @ weights >= -(DESCENT_COSINE_TOL * norms * direction_norm + round_off)).all()


def magnitude_rule(choice: str, gamma: float, rescale: str, owner: str = "magnitude") -> MagnitudeRule | None:
    """The rule for a ``magnitude`` choice; ``None`` for ``none``."""
    if choice not in MAGNITUDE_CHOICES:
        raise ValueError(f"{owner}: unknown magnitude {choice!r}; valid choices: {', '.join(MAGNITUDE_CHOICES)}")
    if choice == "none":
        return None
    return RestoreAndEnlarge(gamma if choice == "restore_gamma" else 1.0, rescale, owner=owner)
