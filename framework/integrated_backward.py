"""Integrated per-loss gradients for any training loop: ``framework.backward`` and ``IntegratedBackward``.

Use these in a loop of your own (plain PyTorch, Lightning with manual optimisation) instead of
``sum(losses).backward()``::

    decisions = framework.backward(losses, {"audio": model.audio, "visual": model.visual}, "mmpareto")
    optimizer.step()

``losses`` maps a name to a scalar loss; ``groups`` maps a group name to a module or a list of
parameters. On every group that two or more losses reach, their per-loss gradients are integrated
(MMPareto, MGDA, PCGrad, ...) and the result is added to ``.grad``; every other parameter the losses
reach (heads, fusion) gets the plain summed gradient. ``.grad`` accumulates, as ``Tensor.backward``
does: zero it before the step as usual. The call returns ``{group: GroupDecision}`` for the groups
that were integrated: the losses, the Gram matrix, weights, cosines and norms.

``features`` (group -> the tensor that group outputs) makes it faster: the per-loss gradients are
taken with respect to the features first (through the heads only) and pulled back through each
group, once per group when every feature comes from one group. The features must be the only way
the groups reach the losses. Without them each pack of losses with disjoint reach is one backward
pass to the parameters.

A step may bring other losses or features than the last (a missing modality): each set of names is
planned once (which loss reaches which group) and kept. :class:`IntegratedBackward` keeps the plans
and the integrators' state (GradVac, Nash-MTL, ...) across steps, with ``state_dict`` for
checkpoints, and summarises the steps' statistics; ``framework.backward`` builds one per call.

Mixed precision: compute the losses under ``torch.autocast`` as usual and pass them unscaled. With
fp16 pass the ``GradScaler`` as ``scaler``: the losses are scaled by it, every per-loss gradient is
unscaled and checked before it is integrated (in float32 or float64), and the update is written
scaled, so ``scaler.step(optimizer)`` and ``scaler.update()`` run unchanged and skip a step whose
gradients overflowed. With bf16 no scaler is needed.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any

import torch
from torch import Tensor, nn

from .integrators import Integrator, get_integrator
from .training.gradients import GradientEngine
from .training.plan import GroupDecision
from .training.statistics import EpochStatistics, step_metrics

__all__ = ["IntegratedBackward", "backward"]

Groups = Mapping[str, nn.Module | Iterable[Tensor]]


class IntegratedBackward:
    """Integrates per-loss gradients on ``groups`` with ``integrator`` (a name or an
    :class:`~framework.integrators.Integrator`), step after step.

    ``scaler``: a ``torch.amp.GradScaler`` for fp16 (see the module docstring). Call it once per
    step with that step's losses (and features, optionally). :meth:`summary` gives the mean conflict
    rate and gradient norms of the steps since the last summary.
    """

    def __init__(
        self, groups: Groups, integrator: str | Integrator = "sum", scaler: torch.amp.GradScaler | None = None
    ) -> None:
        self.integrator = get_integrator(integrator) if isinstance(integrator, str) else integrator
        self.groups = {name: _parameters(name, source) for name, source in groups.items()}
        owners: dict[int, str] = {}
        for name, params in self.groups.items():
            for p in params:
                if owners.setdefault(id(p), name) != name:
                    raise ValueError(f"framework.backward: a parameter is in groups {owners[id(p)]!r} and {name!r}")
        self.engine = GradientEngine(self.groups, self.integrator)
        self.scaler = scaler
        self.statistics = EpochStatistics()

    def __call__(
        self, losses: Mapping[str, Tensor], features: Mapping[str, Tensor] | None = None, statistics: bool = True
    ) -> dict[str, GroupDecision]:
        """Add the integrated gradients to ``.grad``; return the decisions of the integrated groups.

        ``statistics=False`` lets a fixed combination (``sum``, ``mean``) take one backward pass of
        the summed losses, with no decisions."""
        if not losses:
            raise ValueError("framework.backward: losses is empty; pass {name: scalar loss}")
        for name, loss in losses.items():
            if loss.dim() != 0:
                raise ValueError(f"framework.backward: losses[{name!r}] has shape {tuple(loss.shape)}; want a scalar")
        scale = None
        if self.scaler is not None and self.scaler.is_enabled():
            some_loss = next(iter(losses.values()))
            scale = self.scaler.scale(torch.ones((), device=some_loss.device))
        decisions = self.engine.backward(features, losses, need_decisions=statistics, loss_scale=scale)
        self.statistics.observe(decisions)
        return {d.group: d for d in decisions}

    @staticmethod
    def metrics(decisions: Mapping[str, GroupDecision]) -> dict[str, float]:
        """One step's statistics as flat MLflow-style metrics (``grad/<group>/cos/<a>__<b>``, ...)."""
        return step_metrics(list(decisions.values()))

    def summary(self, reset: bool = True) -> dict[str, float]:
        """The conflict rate per group and each loss's mean and spread of gradient norm, since the
        last summary."""
        out = self.statistics.summary()
        if reset:
            self.statistics.reset()
        return out

    def state_dict(self) -> dict[str, Any]:
        """The integrators' state (empty for stateless ones): put it in your checkpoint."""
        return self.engine.state_dict()

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        self.engine.load_state_dict(state)


def backward(
    losses: Mapping[str, Tensor],
    groups: Groups,
    integrator: str | Integrator = "sum",
    features: Mapping[str, Tensor] | None = None,
) -> dict[str, GroupDecision]:
    """One step of :class:`IntegratedBackward`: integrate the per-loss gradients of ``losses`` on
    each of ``groups`` and add them to ``.grad``. Stateful integrators (GradVac, Nash-MTL) keep no
    state between calls here: use :class:`IntegratedBackward` for them."""
    return IntegratedBackward(groups, integrator)(losses, features)


def _parameters(name: str, source: nn.Module | Iterable[Tensor]) -> list[Tensor]:
    params = list(source.parameters()) if isinstance(source, nn.Module) else list(source)
    if not all(isinstance(p, Tensor) for p in params):
        raise TypeError(f"framework.backward: groups[{name!r}] must be a module or a list of parameters")
    trainable = [p for p in params if p.requires_grad]
    if not trainable:
        raise ValueError(f"framework.backward: groups[{name!r}] has no parameter that requires grad")
    return trainable
