"""Per-loss gradients on each parameter group, integrated, written into ``.grad``.

One forward pass. Each loss's gradient with respect to the trunk's output features is taken first
(it only crosses the heads), then pulled back through the trunk; losses that reach disjoint groups
share one pull-back (late fusion: two trunk backward passes whatever the number of modalities).
With separate trunks (each feature computed by one group alone), each group's pull-backs run back
to back, the last freeing that encoder's activations, and the group is integrated at once: the peak
holds one group's per-loss gradients, not every group's. Groups reached by one loss, and the
heads, get their plain gradient. Without features, each pack of losses is differentiated straight
to the parameters. A plan is kept per set of loss and feature names (a missing modality, a
method's sub-step plan again); the integrators' state is kept per group. Gradients are added to
``.grad``, as ``Tensor.backward`` does.

A fixed uniform combination ``c * sum_i g_i`` on every shared group (``sum``), with no statistics
due, is one backward pass of the summed losses. With a ``reducer`` (several ranks), every per-loss
gradient, the heads' gradients and the loss values are averaged in one bucketed reduction before
any integration, so every rank integrates the same global per-loss gradients.

With a ``loss_scale`` (a ``GradScaler``'s scale, a device tensor), the losses are scaled, each
per-loss gradient on a shared group is unscaled and checked before it is integrated, and the update
is scaled back, so the scaler's ``step`` unscales and checks ``.grad`` as usual. A group with a
non-finite per-loss gradient gets its plain (non-finite) sum: the scaler skips the step.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, Any

import torch
from torch import Tensor

from ..integrators import Integrator
from ..integrators._kernels import foreach
from .plan import GradientPlan, GroupDecision, leaf_tensors, make_plan, split_by_group, uniform_scales

if TYPE_CHECKING:
    from .distributed import GradientReducer

PerLoss = dict[str, list[Tensor]]
"""``{loss: per-tensor gradients}`` on one group; in the engine's lists ``None`` is a tensor not reached."""


def filled(grads: Sequence[Tensor | None], params: list[Tensor]) -> list[Tensor]:
    return [g if g is not None else torch.zeros_like(p) for g, p in zip(grads, params, strict=True)]


def add_up(total: list[Tensor | None], grads: Sequence[Tensor | None]) -> None:
    for i, g in enumerate(grads):
        current = total[i]
        if g is not None:
            total[i] = g if current is None else current + g


def accumulate(params: Sequence[Tensor], grads: Sequence[Tensor | None]) -> None:
    """``.grad += g`` where ``g`` is not ``None``, as ``Tensor.backward`` does."""
    for p, g in zip(params, grads, strict=True):
        if g is None:
            continue
        if p.grad is None:
            p.grad = g
        else:
            p.grad.add_(g)


def scale_by_group(grads: Mapping[str, Sequence[Tensor | None]], scales: Mapping[str, float]) -> None:
    """Each group's gradients times its scale, in place (one fused call per distinct scale)."""
    by_scale: dict[float, list[Tensor]] = {}
    for group, chunk in grads.items():
        scale = scales.get(group, 1.0)
        if scale != 1.0:
            by_scale.setdefault(scale, []).extend(g for g in chunk if g is not None)
    for scale, tensors in by_scale.items():
        foreach.mul_(tensors, scale)


class GradientEngine:
    """Computes and integrates per-loss gradients on named parameter groups.

    ``groups`` is ``{name: parameters}``, or a model with ``parameter_groups()`` (then ``others``
    defaults to its other trainable parameters). ``others``: the parameters outside the groups
    that get the plain summed gradient; ``None`` finds them in the autograd graph when planning.
    :attr:`plan` is the last step's plan. ``need_decisions`` on :meth:`backward` asks for per-loss
    gradients even where the integrator would not need them (a fixed combination), so that
    statistics can be recorded on that step.
    """

    def __init__(
        self,
        groups: Mapping[str, Sequence[Tensor]] | Any,
        integrator: Integrator,
        reducer: GradientReducer | None = None,
        others: Sequence[Tensor] | None = None,
    ) -> None:
        model: Any = groups if hasattr(groups, "parameter_groups") else None
        source: Mapping[str, Sequence[Tensor]] = model.parameter_groups() if model is not None else groups
        self.groups = {name: list(params) for name, params in source.items() if params}
        in_groups = {id(p) for params in self.groups.values() for p in params}
        if others is None and model is not None:
            others = [p for p in model.parameters() if p.requires_grad and id(p) not in in_groups]
        self._fixed_others = list(others) if others is not None else None
        self.head_params: list[Tensor] = self._fixed_others or []
        self.integrator = integrator
        self.reducer = reducer
        self.mean_losses: dict[str, float] | None = None  # with a reducer: the last step's, over the ranks
        self.plan: GradientPlan | None = None
        self._summed_scales: dict[str, float] | None = None
        self._plans: dict[tuple[Any, ...], tuple[GradientPlan, dict[str, float] | None, list[Tensor]]] = {}
        self._group_integrators: dict[str, Integrator] = {}
        self._pending_states: dict[str, dict] = {}
        self._loss_scale: Tensor | None = None

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

    def make_plan(self, features: Mapping[str, Tensor] | None, losses: Mapping[str, Tensor]) -> GradientPlan:
        """Find which losses reach which groups, and pack losses with disjoint reach."""
        return make_plan(self.groups, self.head_params, features, losses)

    def summed_step(self, need_decisions: bool) -> bool:
        """Whether a step is one backward pass of the summed losses (then scaled by
        :meth:`scale_summed`): a uniform fixed combination, no statistics due, the plan known."""
        return self.plan is not None and self._summed_scales is not None and not need_decisions

    def scale_summed(self) -> None:
        """After a backward of the summed losses: each shared group's gradient times its scale."""
        scales = self._summed_scales or {}
        scale_by_group({g: [p.grad for p in self.groups[g]] for g, s in scales.items() if s != 1.0}, scales)

    def _use_plan(self, features: Mapping[str, Tensor] | None, losses: Mapping[str, Tensor]) -> GradientPlan:
        """The plan of this set of loss and feature names: the one kept, or a new one."""
        key = (tuple(losses), tuple(features) if features else None)
        if key not in self._plans:
            others = self._fixed_others if self._fixed_others is not None else leaf_tensors(self.groups, losses)
            self.head_params = others
            plan = self.make_plan(features, losses)
            self._plans[key] = (plan, uniform_scales(plan, self.integrator), others)
        self.plan, self._summed_scales, self.head_params = self._plans[key]
        return self.plan

    def backward(
        self,
        features: Mapping[str, Tensor] | None,
        losses: Mapping[str, Tensor],
        need_decisions: bool = False,
        loss_scale: Tensor | None = None,
    ) -> list[GroupDecision]:
        """Add to ``.grad`` of every parameter the losses reach; return the decisions on shared groups."""
        plan = self._use_plan(features, losses)
        if loss_scale is not None:
            losses = {name: loss * loss_scale for name, loss in losses.items()}
        self._loss_scale = loss_scale
        if self.summed_step(need_decisions):
            self._summed_backward(losses)
            return []
        if not features:
            return self._direct(plan, losses)
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
            add_up(head_grads, outputs[len(feature_list) :])
            if not separate:
                self._pull_back_pack(plan, pack, feature_list, cotangents[-1], per_group, last)
        if separate:
            return self._per_trunk(plan, features, cotangents, losses, head_grads)
        return self._integrate_all(plan, losses, per_group, head_grads)

    def _direct(self, plan: GradientPlan, losses: Mapping[str, Tensor]) -> list[GroupDecision]:
        """No features: each pack of losses differentiated straight to the groups and the others."""
        head_grads: list[Tensor | None] = [None] * len(self.head_params)
        per_group: dict[str, PerLoss] = {}
        for index, pack in enumerate(plan.packs):
            groups = plan.groups_reached_by(pack)
            params = [p for g in groups for p in self.groups[g]]
            total = torch.stack([losses[n] for n in pack]).sum()
            last = index == len(plan.packs) - 1
            grads = torch.autograd.grad(total, params + self.head_params, retain_graph=not last, allow_unused=True)
            add_up(head_grads, grads[len(params) :])
            self._store(plan, pack, grads, groups, per_group)
        return self._integrate_all(plan, losses, per_group, head_grads)

    def _integrate_all(
        self,
        plan: GradientPlan,
        losses: Mapping[str, Tensor],
        per_group: dict[str, PerLoss],
        head_grads: list[Tensor | None],
    ) -> list[GroupDecision]:
        if self.reducer is not None:
            self._reduce(losses, per_group.values(), head_grads)
        accumulate(self.head_params, head_grads)
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
        self._store(plan, pack, grads, groups, per_group)

    def _store(
        self,
        plan: GradientPlan,
        pack: tuple[str, ...],
        grads: Sequence[Tensor | None],
        groups: list[str],
        per_group: dict[str, PerLoss],
    ) -> None:
        """A pack's gradients on the concatenated parameters of ``groups``, as each group's gradient
        of the one loss of the pack that reaches it."""
        for group, chunk in split_by_group(grads, self.groups, groups):
            per_group.setdefault(group, {})[plan.loss_of_pack(pack, group)] = filled(chunk, self.groups[group])

    def _reduce(self, losses: Mapping[str, Tensor], per_group: Any, extra: list[Tensor | None]) -> None:
        """One bucketed reduction: the ``extra`` gradients (the heads'), every per-loss gradient of
        ``per_group``, the loss values."""
        assert self.reducer is not None
        values = torch.stack([v.detach() for v in losses.values()])
        if self._loss_scale is not None:
            values = values / self._loss_scale
        tensors = [g for g in extra if g is not None]
        tensors += [g for by_loss in per_group for grads in by_loss.values() for g in grads]
        self.reducer.mean_([*tensors, values])
        self.mean_losses = dict(zip(losses, values.tolist(), strict=True))

    def _per_trunk(
        self,
        plan: GradientPlan,
        features: Mapping[str, Tensor],
        cotangents: list[tuple[Tensor | None, ...]],
        losses: Mapping[str, Tensor],
        head_grads: list[Tensor | None],
    ) -> list[GroupDecision]:
        """Separate trunks: each group's pull-backs back to back, the last one freeing its graph,
        then the group's integration, before the next group (with a reducer: every group's
        pull-backs, one reduction, then the integrations)."""
        assert plan.feature_groups is not None  # only called for separate trunks
        if self.reducer is None:
            accumulate(self.head_params, head_grads)
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
                by_loss[loss] = filled(grads, params)
            if self.reducer is not None:
                held[group] = by_loss
                continue
            decision = self._integrate(plan, group, params, by_loss)
            if decision is not None:
                done[group] = decision
        if self.reducer is not None:
            self._reduce(losses, held.values(), head_grads)
            accumulate(self.head_params, head_grads)
            for group, by_loss in held.items():
                decision = self._integrate(plan, group, self.groups[group], by_loss)
                if decision is not None:
                    done[group] = decision
        return [done[g] for g in self.groups if g in done]

    def _integrate(
        self, plan: GradientPlan, group: str, params: list[Tensor], by_loss: PerLoss
    ) -> GroupDecision | None:
        names = tuple(n for n in plan.reach[group] if n in by_loss)
        if not names:
            return None
        if len(names) == 1:
            accumulate(params, by_loss[names[0]])
            return None
        grads = [by_loss[n] for n in names]
        scale = self._loss_scale
        if scale is not None:
            flat = [g for per_loss in grads for g in per_loss]
            foreach.mul_(flat, scale.double().reciprocal().to(flat[0].dtype))
            if not bool(torch.stack([torch.isfinite(g).all() for g in flat]).all()):
                accumulate(params, [sum(gs) for gs in zip(*grads, strict=True)])  # the scaler skips the step
                return None
        update, decision = self.integrator_for(group).integrate(grads, inplace=True)
        if scale is not None:
            foreach.mul_(update, scale.to(update[0].dtype))
        accumulate(params, update)
        return GroupDecision(group, names, decision)

    def _summed_backward(self, losses: Mapping[str, Tensor]) -> None:
        """One backward of the summed losses (with a reducer: the summed gradient averaged across
        ranks, one reduction); each shared group's gradient times its scale."""
        params = self.head_params + [p for ps in self.groups.values() for p in ps]
        total = torch.stack(list(losses.values())).sum()
        grads: list[Tensor | None] = list(torch.autograd.grad(total, params, allow_unused=True))
        if self.reducer is not None:
            self._reduce(losses, [], grads)
        by_group = dict(split_by_group(grads[len(self.head_params) :], self.groups, self.groups))
        scale_by_group(by_group, self._summed_scales or {})
        accumulate(params, grads)
