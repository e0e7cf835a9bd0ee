"""GradNorm: loss weights that balance the losses' gradient norms on the shared representation."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import torch
from torch import Tensor

from .. import metric_names as names
from .base import Method, MethodError, StepView
from .registry import register


def gradnorm_targets(norms: Tensor, weights: Tensor, losses: Tensor, initial: Tensor, alpha: float) -> Tensor:
    """``mean_j(w_j |g_j|) * r_i ** alpha`` with ``r_i = (L_i / L_i(0)) / mean_j (L_j / L_j(0))``
    (the targets, held constant)."""
    ratio = losses / initial
    inverse_rate = ratio / ratio.mean()
    return (weights * norms).mean() * inverse_rate**alpha


@register("gradnorm")
class GradNorm(Method):
    """GradNorm (Chen, Badrinarayanan, Lee, Rabinovich: "GradNorm: Gradient Normalization for
    Adaptive Loss Balancing in Deep Multitask Networks", ICML 2018; Algorithm 1).

    Loss weights ``w_i`` (start 1) weight the losses the engine integrates. Each step, with
    ``G_i = w_i |grad_z L_i|`` on the shared representation ``z`` (every modality's features, which
    every loss reaches), ``L_grad = sum_i |G_i - target_i|`` (:func:`gradnorm_targets`, constant)
    updates the weights by their own Adam (``lr``), then ``w`` is renormalised to sum to the number
    of losses. The paper takes ``z`` to be the last shared layer's weights; a multimodal model has
    no layer that every loss reaches, so the features stand in for it (a variant the paper names).
    A loss with no gradient on ``z`` is outside the algorithm (its norm would read 0, its weight
    would drift by the renormalisation alone, and it would pull the targets down): the first step
    raises :class:`MethodError` naming it, as LibMTL's gradient of every loss on the shared
    parameters would fail.
    Parameters: ``alpha`` 1.5 (the paper's NYUv2 setting), ``lr`` 0.025.
    """

    needs_multitask_loss = True

    def __init__(self, alpha: float = 1.5, lr: float = 0.025) -> None:
        super().__init__()
        if not lr > 0:
            raise MethodError(f"method.lr={lr}: must be > 0")
        self.alpha, self.lr = float(alpha), float(lr)
        self.names: tuple[str, ...] = ()
        self.weights: Tensor | None = None
        self.initial: Tensor | None = None
        self.optimizer: torch.optim.Optimizer | None = None
        self._pending: dict[str, Any] | None = None

    def _start(self, loss_names: tuple[str, ...], device: torch.device) -> None:
        self.names = loss_names
        self.weights = torch.ones(len(loss_names), device=device, requires_grad=True)
        self.optimizer = torch.optim.Adam([self.weights], lr=self.lr)
        if self._pending is not None:
            with torch.no_grad():
                self.weights.copy_(self._pending["weights"].to(device))
            self.initial = self._pending["initial"].to(device) if self._pending["initial"] is not None else None
            self.optimizer.load_state_dict(self._pending["optimizer"])
            self._pending = None

    def losses(self, view: StepView, losses: dict[str, Tensor]) -> dict[str, Tensor]:
        if self.weights is None:
            self._start(tuple(losses), view.labels.device)
        assert self.weights is not None and self.optimizer is not None
        values = torch.stack([losses[n] for n in self.names])
        if self.initial is None:
            self.initial = values.detach().clone()
        features = list(view.features.values())
        norms = []
        for n in self.names:
            grads: tuple[Tensor | None, ...] = ()
            if losses[n].requires_grad:
                grads = torch.autograd.grad(losses[n], features, retain_graph=True, allow_unused=True)
            if all(g is None for g in grads):
                raise MethodError(
                    f"method=gradnorm: loss '{n}' does not reach the shared representation (features "
                    f"{sorted(view.features)}), so it has no gradient norm to balance; every loss must reach it"
                )
            total = sum((g.detach() ** 2).sum() for g in grads if g is not None) + 0.0
            norms.append(torch.sqrt(torch.as_tensor(total)))
        norms_t = torch.stack([torch.as_tensor(x, dtype=values.dtype, device=values.device) for x in norms])
        current = self.weights.detach().clone()
        targets = gradnorm_targets(norms_t, current, values.detach(), self.initial, self.alpha)
        grad_loss = (self.weights * norms_t - targets).abs().sum()
        self.optimizer.zero_grad(set_to_none=True)
        (grad,) = torch.autograd.grad(grad_loss, [self.weights])
        self.weights.grad = grad
        self.optimizer.step()
        with torch.no_grad():
            self.weights.mul_(len(self.names) / self.weights.sum())
        self._decisions = {
            names.method_decision(names.LOSS_WEIGHT, n): float(w) for n, w in zip(self.names, current, strict=True)
        }
        return {n: current[i] * losses[n] for i, n in enumerate(self.names)}

    def state_dict(self) -> dict[str, Any]:
        if self.weights is None:
            return dict(self._pending) if self._pending else {}
        return {"weights": self.weights.detach().cpu(), "initial": None if self.initial is None else self.initial.cpu(),
                "optimizer": self.optimizer.state_dict() if self.optimizer else None}  # fmt: skip

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        if state:
            self._pending = dict(state)
            self.weights = None
