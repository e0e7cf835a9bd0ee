"""Values the gradient engine hands out: its plan of who reaches what, and per-group decisions."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from types import MappingProxyType

from ..integrators import Decision


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
