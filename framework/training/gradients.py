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

When the integrator's update is a fixed uniform combination ``c * sum_i g_i`` on every shared group
(``sum``) and no statistics are wanted on the step, one backward pass of the summed losses does it.

On several ranks (a ``reducer``, :class:`~framework.training.distributed.GradientReducer`), every
per-loss gradient, the heads' gradients and the loss values are averaged across ranks in one
bucketed reduction after the pull-backs and before any integration, so that every rank integrates
the same global per-loss gradients (separate trunks then hold every group's per-loss gradients at
once). :attr:`GradientEngine.mean_losses` are the losses' means over the ranks.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

import torch
from torch import Tensor, nn

from ..integrators import Integrator
from ..integrators._kernels import foreach
from ..models.base import MultimodalModel
from .plan import GradientPlan, GroupDecision

if TYPE_CHECKING:
    from .distributed import GradientReducer

PerLoss = dict[str, list[Tensor]]
"""``{loss: per-tensor gradients}`` on one group."""


class GradientEngine:
    """Computes and integrates per-loss gradients for a :class:`MultimodalModel`.

    :attr:`plan` is found on the first :meth:`backward` (or by :meth:`make_plan`). ``need_decisions``
    on :meth:`backward` asks for per-loss gradients even where the integrator would not need them
    (a fixed combination), so that statistics can be recorded on that step.
    """

    def __init__(self, model: MultimodalModel, integrator: Integrator, reducer: GradientReducer | None = None) -> None:
        self.model = model
        self.integrator = integrator
        self.reducer = reducer
        self.mean_losses: dict[str, float] | None = None  # with a reducer: the last step's, over the ranks
        self.groups = {name: params for name, params in model.parameter_groups().items() if params}
        in_groups = {id(p) for params in self.groups.values() for p in params}
        self.head_params = [p for p in model.parameters() if p.requires_grad and id(p) not in in_groups]
        self.plan: GradientPlan | None = None
        self._summed_scales: dict[str, float] | None = None
        self._group_integrators: dict[str, Integrator] = {}
        self._pending_states: dict[str, dict] = {}

    def integrator_for(self, group: str) -> Integrator:
        """The integrator of ``group``: the shared one, or the group's own copy (per-group state)."""
        if group not in self._group_integrators:
            integrator = self.integrator.for_group()
            if group in self._pending_states:
                integrator.load_state_dict(self._pending_states.pop(group))
            self._group_integrators[group] = integrator
        return self._group_integrators[group]

    def state_dict(self) -> dict[str, Any]:
        """The integrators' state: the shared one's, and each group's own copy's."""
        groups = {g: i.state_dict() for g, i in self._group_integrators.items() if i is not self.integrator}
        return {"integrator": self.integrator.state_dict(), "groups": {**self._pending_states, **groups}}

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        self.integrator.load_state_dict(state["integrator"])
        self._group_integrators = {}
        self._pending_states = dict(state.get("groups", {}))

    def make_plan(self, features: Mapping[str, Tensor], losses: Mapping[str, Tensor]) -> GradientPlan:
        """Find which losses reach which groups, and pack losses with disjoint reach."""
        reach_of_loss: dict[str, set[str]] = {}
        feature_list = list(features.values())
        flat = [p for params in self.groups.values() for p in params]
        for name, loss in losses.items():
            cotangents = torch.autograd.grad(loss, feature_list, retain_graph=True, allow_unused=True)
            active = [(f, c) for f, c in zip(feature_list, cotangents, strict=True) if c is not None]
            reached: set[str] = set()
            if active:
                grads = torch.autograd.grad(
                    [f for f, _ in active], flat, [c for _, c in active], retain_graph=True, allow_unused=True
                )
                position = 0
                for group, params in self.groups.items():
                    if any(g is not None for g in grads[position : position + len(params)]):
                        reached.add(group)
                    position += len(params)
            reach_of_loss[name] = reached
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
            groups=tuple(self.groups),
            reach={group: tuple(n for n in losses if group in reach_of_loss[n]) for group in self.groups},
            packs=tuple(tuple(members) for members, _ in packs),
            feature_groups=self._feature_groups(features),
        )

    def _feature_groups(self, features: Mapping[str, Tensor]) -> dict[str, str] | None:
        """``{feature: group}`` when each feature depends on the parameters of one group only and no
        two features share a group (separate trunks); ``None`` otherwise."""
        trainable = [p for p in self.model.parameters() if p.requires_grad]
        group_of = {id(p): g for g, params in self.groups.items() for p in params}
        feature_groups: dict[str, str] = {}
        for name, feature in features.items():
            if not feature.requires_grad:
                continue
            grads = torch.autograd.grad(
                feature, trainable, torch.ones_like(feature), retain_graph=True, allow_unused=True
            )
            reached = {group_of.get(id(p)) for p, g in zip(trainable, grads, strict=True) if g is not None}
            if len(reached) != 1 or None in reached:
                return None
            feature_groups[name] = reached.pop()  # type: ignore[assignment]
        if len(set(feature_groups.values())) != len(feature_groups):
            return None
        return feature_groups

    def _uniform_scales(self, plan: GradientPlan) -> dict[str, float] | None:
        """``{shared group: c}`` when the integrator's update there is ``c * sum_i g_i`` on every
        shared group, else ``None``."""
        scales: dict[str, float] = {}
        for group in plan.groups:
            if not plan.shared(group):
                continue
            weights = self.integrator.fixed_combination(len(plan.reach[group]))
            if weights is None or not bool((weights == weights[0]).all()):
                return None
            scales[group] = float(weights[0])
        return scales

    def summed_step(self, need_decisions: bool) -> bool:
        """Whether a step is one backward pass of the summed losses (then scaled by
        :meth:`scale_summed`): a uniform fixed combination, no statistics due, the plan known."""
        return self.plan is not None and self._summed_scales is not None and not need_decisions

    def scale_summed(self) -> None:
        """After a backward of the summed losses: each shared group's gradient times its scale."""
        by_scale: dict[float, list[Tensor]] = {}
        for group, scale in (self._summed_scales or {}).items():
            if scale != 1.0:
                by_scale.setdefault(scale, []).extend(p.grad for p in self.groups[group] if p.grad is not None)
        for scale, shared in by_scale.items():
            foreach.mul_(shared, scale)

    def backward(
        self, features: Mapping[str, Tensor], losses: Mapping[str, Tensor], need_decisions: bool = False
    ) -> list[GroupDecision]:
        """Set ``.grad`` of every trainable parameter; return the decisions on shared groups."""
        if self.plan is None:
            self.plan = self.make_plan(features, losses)
            self._summed_scales = self._uniform_scales(self.plan)
        plan = self.plan
        if self.summed_step(need_decisions):
            self._summed_backward(losses)
            return []
        feature_list = list(features.values())
        head_grads: list[Tensor | None] = [None] * len(self.head_params)
        cotangents: list[tuple[Tensor | None, ...]] = []
        per_group: dict[str, PerLoss] = {}
        separate = plan.feature_groups is not None
        for index, pack in enumerate(plan.packs):
            last = index == len(plan.packs) - 1 and not separate
            total = torch.stack([losses[n] for n in pack]).sum()
            outputs = torch.autograd.grad(total, feature_list + self.head_params, retain_graph=True, allow_unused=True)
            cotangents.append(outputs[: len(feature_list)])
            for i, g in enumerate(outputs[len(feature_list) :]):
                if g is not None:
                    head_grads[i] = g if head_grads[i] is None else head_grads[i] + g
            if not separate:
                self._pull_back_pack(plan, pack, feature_list, cotangents[-1], per_group, last)
        _assign(self.head_params, head_grads)
        if separate:
            return self._per_trunk(plan, features, cotangents, losses)
        if self.reducer is not None:
            self._reduce(losses, per_group.values())
        decisions: list[GroupDecision] = []
        for group, params in self.groups.items():
            decision = self._integrate(plan, group, params, per_group.get(group, {}))
            if decision is not None:
                decisions.append(decision)
        return decisions

    def _pull_back_pack(
        self,
        plan: GradientPlan,
        pack: tuple[str, ...],
        feature_list: list[Tensor],
        cotangents: tuple[Tensor | None, ...],
        per_group: dict[str, PerLoss],
        last: bool,
    ) -> None:
        """All losses of ``pack`` through the whole trunk at once; results into ``per_group``."""
        groups = plan.groups_reached_by(pack)
        active = [(f, c) for f, c in zip(feature_list, cotangents, strict=True) if c is not None]
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
            per_group.setdefault(group, {})[plan.loss_of_pack(pack, group)] = _filled(chunk, group_params)

    def _reduce(self, losses: Mapping[str, Tensor], per_group: Any, params: list[nn.Parameter] | None = None) -> None:
        """One bucketed reduction: the gradients of ``params`` (default: the heads), every
        per-loss gradient of ``per_group``, the loss values."""
        assert self.reducer is not None
        values = torch.stack([v.detach() for v in losses.values()])
        tensors = [p.grad for p in (self.head_params if params is None else params) if p.grad is not None]
        tensors += [g for by_loss in per_group for grads in by_loss.values() for g in grads]
        self.reducer.mean_([*tensors, values])
        self.mean_losses = dict(zip(losses, values.tolist(), strict=True))

    def _per_trunk(
        self,
        plan: GradientPlan,
        features: Mapping[str, Tensor],
        cotangents: list[tuple[Tensor | None, ...]],
        losses: Mapping[str, Tensor],
    ) -> list[GroupDecision]:
        """Separate trunks: each group's pull-backs back to back, the last one freeing its graph,
        then the group's integration, before the next group (with a reducer: every group's
        pull-backs, one reduction, then the integrations)."""
        assert plan.feature_groups is not None  # only called for separate trunks
        done: dict[str, GroupDecision] = {}
        reached: set[str] = set()
        held: dict[str, PerLoss] = {}
        for index, name in enumerate(features):
            group = plan.feature_groups.get(name)
            if group is None:
                continue
            reached.add(group)
            params = self.groups[group]
            items = [
                (plan.loss_of_pack(pack, group), cots[index])
                for pack, cots in zip(plan.packs, cotangents, strict=True)
                if cots[index] is not None and any(n in plan.reach[group] for n in pack)
            ]
            by_loss: PerLoss = {}
            for position, (loss, cotangent) in enumerate(items):
                grads = torch.autograd.grad(
                    features[name], params, cotangent, retain_graph=position < len(items) - 1, allow_unused=True
                )
                by_loss[loss] = _filled(grads, params)
            if self.reducer is not None:
                held[group] = by_loss
                continue
            decision = self._integrate(plan, group, params, by_loss)
            if decision is not None:
                done[group] = decision
        if self.reducer is not None:
            self._reduce(losses, held.values())
            for group, by_loss in held.items():
                decision = self._integrate(plan, group, self.groups[group], by_loss)
                if decision is not None:
                    done[group] = decision
        for group, params in self.groups.items():
            if group not in reached:
                _assign(params, [None] * len(params))
        return [done[g] for g in self.groups if g in done]

    def _integrate(
        self, plan: GradientPlan, group: str, params: list[nn.Parameter], by_loss: PerLoss
    ) -> GroupDecision | None:
        names = tuple(n for n in plan.reach[group] if n in by_loss)
        if not names:
            _assign(params, [None] * len(params))
            return None
        if len(names) == 1:
            _assign(params, by_loss[names[0]])
            return None
        update, decision = self.integrator_for(group).integrate([by_loss[n] for n in names], inplace=True)
        _assign(params, update)
        return GroupDecision(group, names, decision)

    def _summed_backward(self, losses: Mapping[str, Tensor]) -> None:
        """One backward of the summed losses (with a reducer: the summed gradient averaged across
        ranks, one reduction); each shared group's gradient times its scale."""
        params = self.head_params + [p for ps in self.groups.values() for p in ps]
        grads = torch.autograd.grad(torch.stack(list(losses.values())).sum(), params, allow_unused=True)
        _assign(params, list(grads))
        if self.reducer is not None:
            self._reduce(losses, [], params)
        self.scale_summed()


def _filled(grads: tuple[Tensor | None, ...], params: list[nn.Parameter]) -> list[Tensor]:
    return [g if g is not None else torch.zeros_like(p) for g, p in zip(grads, params, strict=True)]


def _assign(params: list[nn.Parameter], grads: list[Tensor | None]) -> None:
    for p, g in zip(params, grads, strict=True):
        p.grad = g
