"""Per-loss gradients on each parameter group, integrated, written into ``.grad``.

One forward pass. For every loss, its gradient with respect to the trunk's output features is
taken first (cheap: it only crosses the heads), then pulled back through the trunk. Losses that
reach disjoint sets of groups share one cotangent computation (with late fusion the unimodal
losses all go together), so a late-fusion model costs two trunk backward passes whatever its
number of modalities.

When every feature is computed by its own group alone (separate encoders, as in late fusion),
the groups are processed one at a time: each group's per-loss pull-backs run back to back, the
last one frees that encoder's saved activations, and the group is integrated at once. The peak
memory then holds one group's extra per-loss gradient instead of every group's. Otherwise, all
losses of a pack are pulled back through the whole trunk together. Groups reached by one loss,
and the heads, get their plain gradient.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

import torch
from torch import Tensor, nn

from ..integrators import Decision, Integrator
from ..models.base import MultimodalModel


@dataclass(frozen=True)
class GroupStep:
    """The losses that reached a group on this step, in order, and the integrator's decision."""

    group: str
    losses: tuple[str, ...]
    decision: Decision


class GradientEngine:
    """Computes and integrates per-loss gradients for a :class:`MultimodalModel`.

    ``need_decisions`` on :meth:`backward` asks for per-loss gradients even where the integrator
    would not need them (``sum``), so that statistics can be recorded on that step.
    """

    def __init__(self, model: MultimodalModel, integrator: Integrator) -> None:
        self.model = model
        self.integrator = integrator
        self.groups = {name: params for name, params in model.parameter_groups().items() if params}
        in_groups = {id(p) for params in self.groups.values() for p in params}
        self.head_params = [p for p in model.parameters() if p.requires_grad and id(p) not in in_groups]
        self.reach: dict[str, tuple[str, ...]] | None = None
        self.packs: list[tuple[str, ...]] = []
        self.owner: dict[str, str] | None = None

    def plan(self, features: Mapping[str, Tensor], losses: Mapping[str, Tensor]) -> None:
        """Find which losses reach which groups (once), and pack losses with disjoint reach."""
        reach_of_loss: dict[str, set[str]] = {}
        feature_list = list(features.values())
        for name, loss in losses.items():
            cotangents = torch.autograd.grad(loss, feature_list, retain_graph=True, allow_unused=True)
            active = [(f, c) for f, c in zip(feature_list, cotangents) if c is not None]
            reached: set[str] = set()
            if active:
                flat = [p for params in self.groups.values() for p in params]
                grads = torch.autograd.grad(
                    [f for f, _ in active], flat, [c for _, c in active], retain_graph=True, allow_unused=True
                )
                position = 0
                for group, params in self.groups.items():
                    if any(g is not None for g in grads[position : position + len(params)]):
                        reached.add(group)
                    position += len(params)
            reach_of_loss[name] = reached
        self.reach = {group: tuple(n for n in losses if group in reach_of_loss[n]) for group in self.groups}
        packs: list[tuple[list[str], set[str]]] = []
        for name in losses:
            for members, covered in packs:
                if not covered & reach_of_loss[name]:
                    members.append(name)
                    covered |= reach_of_loss[name]
                    break
            else:
                packs.append(([name], set(reach_of_loss[name])))
        self.packs = [tuple(members) for members, _ in packs]
        self.owner = self._feature_owners(features)

    def _feature_owners(self, features: Mapping[str, Tensor]) -> dict[str, str] | None:
        """``{feature: group}`` when each feature depends on the parameters of one group only and no
        two features share a group (separate trunks); ``None`` otherwise."""
        trainable = [p for p in self.model.parameters() if p.requires_grad]
        group_of = {id(p): g for g, params in self.groups.items() for p in params}
        owner: dict[str, str] = {}
        for name, feature in features.items():
            if not feature.requires_grad:
                continue
            grads = torch.autograd.grad(
                feature, trainable, torch.ones_like(feature), retain_graph=True, allow_unused=True
            )
            reached = {group_of.get(id(p)) for p, g in zip(trainable, grads) if g is not None}
            if len(reached) != 1 or None in reached:
                return None
            owner[name] = reached.pop()
        if len(set(owner.values())) != len(owner):
            return None
        return owner

    @property
    def needs_per_loss(self) -> bool:
        return self.integrator.name != "sum"

    def backward(
        self, features: Mapping[str, Tensor], losses: Mapping[str, Tensor], need_decisions: bool = False
    ) -> list[GroupStep]:
        """Set ``.grad`` of every trainable parameter; return the decisions on shared groups."""
        if self.reach is None:
            self.plan(features, losses)
        assert self.reach is not None
        if not (need_decisions or self.needs_per_loss):
            return self._summed_backward(losses)
        feature_list = list(features.values())
        head_grads: list[Tensor | None] = [None] * len(self.head_params)
        cotangents: list[tuple[Tensor | None, ...]] = []
        per_group: dict[str, dict[str, list[Tensor]]] = {}
        separate = self.owner is not None
        for index, pack in enumerate(self.packs):
            last = index == len(self.packs) - 1 and not separate
            total = torch.stack([losses[n] for n in pack]).sum()
            outputs = torch.autograd.grad(
                total, feature_list + self.head_params, retain_graph=True, allow_unused=True
            )
            cotangents.append(outputs[: len(feature_list)])
            for i, g in enumerate(outputs[len(feature_list) :]):
                if g is not None:
                    head_grads[i] = g if head_grads[i] is None else head_grads[i] + g
            if not separate:
                self._pull_back_pack(pack, feature_list, cotangents[-1], per_group, last)
        _assign(self.head_params, head_grads)
        if separate:
            return self._per_trunk(features, cotangents)
        steps: list[GroupStep] = []
        for group, params in self.groups.items():
            step = self._integrate(group, params, per_group.get(group, {}))
            if step is not None:
                steps.append(step)
        return steps

    def _pull_back_pack(
        self,
        pack: tuple[str, ...],
        feature_list: list[Tensor],
        cotangents: tuple[Tensor | None, ...],
        per_group: dict[str, dict[str, list[Tensor]]],
        last: bool,
    ) -> None:
        """All losses of ``pack`` through the whole trunk at once; results into ``per_group``."""
        assert self.reach is not None
        groups = [g for g in self.groups if any(n in self.reach[g] for n in pack)]
        active = [(f, c) for f, c in zip(feature_list, cotangents) if c is not None]
        if not groups or not active:
            return
        params = [p for g in groups for p in self.groups[g]]
        grads = torch.autograd.grad(
            [f for f, _ in active], params, [c for _, c in active], retain_graph=not last, allow_unused=True
        )
        position = 0
        for group in groups:
            group_params = self.groups[group]
            chunk = grads[position : position + len(group_params)]
            position += len(group_params)
            owner = next(n for n in pack if n in self.reach[group])
            per_group.setdefault(group, {})[owner] = _filled(chunk, group_params)

    def _per_trunk(
        self, features: Mapping[str, Tensor], cotangents: list[tuple[Tensor | None, ...]]
    ) -> list[GroupStep]:
        """Separate trunks: each group's pull-backs back to back, the last one freeing its graph,
        then the group's integration, before the next group."""
        assert self.reach is not None and self.owner is not None
        done: dict[str, GroupStep] = {}
        reached: set[str] = set()
        for index, name in enumerate(features):
            group = self.owner.get(name)
            if group is None:
                continue
            reached.add(group)
            params = self.groups[group]
            items = [
                (next(n for n in pack if n in self.reach[group]), cots[index])
                for pack, cots in zip(self.packs, cotangents)
                if cots[index] is not None and any(n in self.reach[group] for n in pack)
            ]
            by_loss: dict[str, list[Tensor]] = {}
            for position, (owner, cotangent) in enumerate(items):
                grads = torch.autograd.grad(
                    features[name], params, cotangent, retain_graph=position < len(items) - 1, allow_unused=True
                )
                by_loss[owner] = _filled(grads, params)
            step = self._integrate(group, params, by_loss)
            if step is not None:
                done[group] = step
        for group, params in self.groups.items():
            if group not in reached:
                _assign(params, [None] * len(params))
        return [done[g] for g in self.groups if g in done]

    def _integrate(self, group: str, params: list[nn.Parameter], by_loss: dict[str, list[Tensor]]) -> GroupStep | None:
        assert self.reach is not None
        names = tuple(n for n in self.reach[group] if n in by_loss)
        if not names:
            _assign(params, [None] * len(params))
            return None
        if len(names) == 1:
            _assign(params, by_loss[names[0]])
            return None
        update = self.integrator.integrate_tensors([by_loss[n] for n in names], inplace=True)
        _assign(params, update)
        assert self.integrator.last is not None
        return GroupStep(group, names, self.integrator.last)

    def _summed_backward(self, losses: Mapping[str, Tensor]) -> list[GroupStep]:
        """``sum`` without statistics: one backward of the summed losses, shared groups scaled."""
        params = self.head_params + [p for ps in self.groups.values() for p in ps]
        grads = torch.autograd.grad(torch.stack(list(losses.values())).sum(), params, allow_unused=True)
        _assign(params, list(grads))
        scale = getattr(self.integrator, "scale", 1.0)
        if scale != 1.0:
            shared = [p.grad for g, ps in self.groups.items() if len(self.reach[g]) > 1 for p in ps if p.grad is not None]  # type: ignore[index]
            if shared:
                torch._foreach_mul_(shared, scale)
        return []


def _filled(grads: tuple[Tensor | None, ...], params: list[nn.Parameter]) -> list[Tensor]:
    return [g if g is not None else torch.zeros_like(p) for g, p in zip(grads, params)]


def _assign(params: list[nn.Parameter], grads: list[Tensor | None]) -> None:
    for p, g in zip(params, grads):
        p.grad = g
