"""The gradient engine's plan (which losses reach which parameter groups, found by probing the autograd graph) and its per-group decisions."""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from types import MappingProxyType
from typing import Any

import torch
from torch import Tensor

from ..integrators import Decision, Integrator


@dataclass(frozen=True)
class GradientPlan:
    """Which losses reach which parameter groups, found once by probing the autograd graph.

    ``groups``: the model's non-empty parameter groups, in order. ``reach[group]``: the losses whose
    gradient reaches it, in loss order. ``packs``: losses with pairwise disjoint reach, which share
    one pull-back through the trunk. ``feature_groups``: ``{feature: group}`` when every feature is
    computed by exactly one group and no two features share one (separate encoders), else ``None``.
    """

    groups: tuple[str, ...]
    reach: Mapping[str, tuple[str, ...]]
    packs: tuple[tuple[str, ...], ...]
    feature_groups: Mapping[str, str] | None

    def __post_init__(self) -> None:
        object.__setattr__(self, "reach", MappingProxyType(dict(self.reach)))
        if self.feature_groups is not None:
            object.__setattr__(self, "feature_groups", MappingProxyType(dict(self.feature_groups)))

    def shared(self, group: str) -> bool:
        """Whether two or more losses reach ``group`` (so an integrator decides its update)."""
        return len(self.reach[group]) > 1

    def groups_reached_by(self, pack: tuple[str, ...]) -> list[str]:
        return [g for g in self.groups if any(loss in self.reach[g] for loss in pack)]

    def loss_of_pack(self, pack: tuple[str, ...], group: str) -> str:
        """The one loss of ``pack`` that reaches ``group`` (packs have disjoint reach)."""
        return next(loss for loss in pack if loss in self.reach[group])


@dataclass(frozen=True)
class GroupDecision:
    """The losses that reached a shared group on one step, in order, and the integrator's decision."""

    group: str
    losses: tuple[str, ...]
    decision: Decision


def make_plan(
    groups: Mapping[str, list[Tensor]],
    others: list[Tensor],
    features: Mapping[str, Tensor] | None,
    losses: Mapping[str, Tensor],
) -> GradientPlan:
    """Find which losses reach which of ``groups``, and pack losses with disjoint reach (``others``:
    the parameters outside the groups)."""
    reach_of_loss: dict[str, set[str]] = {}
    feature_list = list(features.values()) if features else []
    flat = [p for params in groups.values() for p in params]
    for name, loss in losses.items():
        if features:
            cotangents = torch.autograd.grad(loss, feature_list, retain_graph=True, allow_unused=True)
            active = [(f, c) for f, c in zip(feature_list, cotangents, strict=True) if c is not None]
            grads: tuple[Tensor | None, ...] = ()
            if active:
                grads = torch.autograd.grad(
                    [f for f, _ in active], flat, [c for _, c in active], retain_graph=True, allow_unused=True
                )
        else:
            grads = torch.autograd.grad(loss, flat, retain_graph=True, allow_unused=True)
        chunks = split_by_group(grads, groups, groups)  # no gradient at all: every chunk is empty
        reach_of_loss[name] = {group for group, chunk in chunks if any(g is not None for g in chunk)}
    packs: list[tuple[list[str], set[str]]] = []
    for name in losses:
        for members, covered in packs:
            if not covered & reach_of_loss[name]:
                members.append(name)
                covered |= reach_of_loss[name]
                break
        else:
            packs.append(([name], set(reach_of_loss[name])))
    return GradientPlan(
        groups=tuple(groups),
        reach={group: tuple(n for n in losses if group in reach_of_loss[n]) for group in groups},
        packs=tuple(tuple(members) for members, _ in packs),
        feature_groups=_feature_groups(groups, others, features) if features else None,
    )


def _feature_groups(
    groups: Mapping[str, list[Tensor]], others: list[Tensor], features: Mapping[str, Tensor]
) -> dict[str, str] | None:
    """``{feature: group}`` when each feature depends on the parameters of one group only and no
    two features share a group (separate trunks); ``None`` otherwise."""
    trainable = [p for params in groups.values() for p in params] + others
    group_of = {id(p): g for g, params in groups.items() for p in params}
    feature_groups: dict[str, str] = {}
    for name, feature in features.items():
        if not feature.requires_grad:
            continue
        grads = torch.autograd.grad(feature, trainable, torch.ones_like(feature), retain_graph=True, allow_unused=True)
        reached = {group_of.get(id(p)) for p, g in zip(trainable, grads, strict=True) if g is not None}
        if len(reached) != 1 or None in reached:
            return None
        feature_groups[name] = reached.pop()  # type: ignore[assignment]
    if len(set(feature_groups.values())) != len(feature_groups):
        return None
    return feature_groups


def leaf_tensors(groups: Mapping[str, list[Tensor]], losses: Mapping[str, Tensor]) -> list[Tensor]:
    """The tensors requiring grad that the losses reach, outside the groups, in graph order."""
    in_groups = {id(p) for params in groups.values() for p in params}
    seen: set[Any] = set()
    found: dict[int, Tensor] = {}
    stack = [loss.grad_fn for loss in losses.values() if loss.grad_fn is not None]
    while stack:
        node = stack.pop()
        if node is None or node in seen:
            continue
        seen.add(node)
        variable = getattr(node, "variable", None)
        if variable is not None and id(variable) not in in_groups:
            found.setdefault(id(variable), variable)
        stack.extend(next_node for next_node, _ in node.next_functions if next_node is not None)
    return list(found.values())


def uniform_scales(plan: GradientPlan, integrator: Integrator) -> dict[str, float] | None:
    """``{shared group: c}`` when the integrator's update there is ``c * sum_i g_i`` on every
    shared group, else ``None``."""
    scales: dict[str, float] = {}
    for group in plan.groups:
        if not plan.shared(group):
            continue
        weights = integrator.fixed_combination(len(plan.reach[group]))
        if weights is None or not bool((weights == weights[0]).all()):
            return None
        scales[group] = float(weights[0])
    return scales


def split_by_group(
    grads: Sequence[Tensor | None], groups: Mapping[str, list[Tensor]], names: Iterable[str]
) -> Iterator[tuple[str, Sequence[Tensor | None]]]:
    """``grads`` of the parameters of the groups ``names``, concatenated in that order, cut back
    into each group's part."""
    position = 0
    for name in names:
        size = len(groups[name])
        yield name, grads[position : position + size]
        position += size
