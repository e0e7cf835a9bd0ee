"""MLA: multimodal learning with alternating unimodal adaptation."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, cast

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from .. import metric_names as names
from ..models.base import MULTIMODAL, MultimodalModel
from .base import Method, MethodError, StepView, in_window
from .registry import register


def entropy_gates(logits: dict[str, Tensor]) -> dict[str, Tensor]:
    """MLA's test-time fusion weights: ``w_m = exp(max_k H_k - H_m) / sum_j exp(max_k H_k - H_j)`` per
    sample, ``H_m`` the entropy of ``softmax(logits_m)`` (``calculate_gating_weights``)."""
    entropy = {m: -(F.softmax(x, dim=1) * F.log_softmax(x, dim=1)).sum(1, keepdim=True) for m, x in logits.items()}
    top = torch.stack(list(entropy.values())).max(dim=0).values
    raw = {m: torch.exp(top - e) for m, e in entropy.items()}
    total = sum(raw.values())
    return {m: r / total for m, r in raw.items()}


def gated_fusion(logits: dict[str, Tensor]) -> Tensor:
    gates = entropy_gates(logits)
    return sum(logits[m] * gates[m] for m in logits)  # type: ignore[return-value]


DENOMINATORS = ("scalar", "elementwise")


class GradientProjector:
    """MLA's ``GSPlugin``: a projector ``P`` (``d x d``, identity at first) that, before each
    unimodal update of the shared head but the very first, is updated with the batch's mean input
    ``r`` (``k = P r^T``, ``P -= k k^T / (a + r k)``, ``P /= ||P||_F``, ``a = 0.1 ** (index / len + 1)``)
    and adds ``grad @ P^T`` to the head weight's gradient. ``denominator``: ``scalar`` divides by
    ``a + r k`` (``1 x 1``), ``elementwise`` by ``a + k r`` (``d x d``, the outer product)."""

    def __init__(self, dim: int, denominator: str = "scalar") -> None:
        self.P = torch.eye(dim)
        self.count = 0
        self.denominator = denominator

    @torch.no_grad()
    def before_update(self, weight: Tensor, inputs: Tensor, index: int, steps_per_epoch: int) -> None:
        if self.count != 0 and weight.grad is not None:
            P = self.P.to(weight.grad)
            a = 1.0 * 0.1 ** (index / steps_per_epoch + 1)
            r = inputs.mean(0, keepdim=True)
            k = P @ r.T
            P = P - (k @ k.T) / (a + (r @ k if self.denominator == "scalar" else k @ r))
            P = P / torch.linalg.norm(P, ord="fro")
            self.P = P
            weight.grad.add_(weight.grad @ P.T)
        self.count += 1


@register("mla")
class MLA(Method):
    """MLA (Zhang, Yoon, Bansal, Yao: "Multimodal Representation Learning by Alternating Unimodal
    Adaptation", CVPR 2024). References: the authors' code,
    Cecile-hi/Multimodal-Learning-with-Alternating-Unimodal-Adaptation@ab6c184 (``main.py:419-470``
    the alternating step, ``utils/utils.py:12-41`` ``GSPlugin``), and GeWu-Lab/BalanceBenchmark@4c1482f
    (``balancemm/trainer/MLA_trainer.py:20-53`` its ``GSPlugin``, ``:129-179`` the step), which this
    follows where they differ.

    One head, shared by all modalities (the unimodal heads become one ``Linear``; the features must
    have one size). Each step, in epochs ``modulation_starts..modulation_ends``, one sub-step per
    modality in turn: that modality's encoder alone (:meth:`forward`; ``MLA_trainer.py:145``
    ``feature_extract(batch, modality)``), the shared head, its cross-entropy, backward, the head's
    gradient modification (:class:`GradientProjector`), an optimizer step. Each encoder runs once
    per step, as in both references. Outside the window, one step on the cross-entropy of the fused
    output. Test-time fusion: the unimodal logits weighted by :func:`entropy_gates` (reported as the
    ``multimodal`` head). The fusion head of the model is not used.

    The gradient modification. The authors' ``GSPlugin`` never runs: it looks for a parameter named
    ``module.weight`` (``utils/utils.py:32``) in ``fusion_module.fc_out``, an ``nn.Linear`` whose
    parameters are ``weight`` and ``bias``; where it would run it replaces the gradient by
    ``grad P^T`` (``:41``). BalanceBenchmark matches ``weight`` (``MLA_trainer.py:44``) and adds,
    ``grad + grad P^T`` (``:53``), which is done here. Both write the projector update's denominator
    as ``alpha + torch.mm(k, r)`` (``utils/utils.py:36``, ``MLA_trainer.py:48``) with ``k = P r^T``
    a column and ``r`` a row: an outer product, so ``k k^T`` is divided elementwise by a ``d x d``
    matrix. The paper's update is the recursive least-squares projector of orthogonal weight
    modification, ``P -= k k^T / (alpha + r P r^T)``, whose denominator is a scalar (``r k``) and at
    least ``alpha`` (``P`` stays positive semi-definite); ``k r`` is that product's transposition.
    The default, ``denominator=scalar``, is the paper's; ``denominator=elementwise`` is the code's.

    Parameters: ``modulation_starts`` 0, ``modulation_ends`` 80 (BalanceBenchmark), ``denominator``
    ``scalar``. The model needs one encoder per modality (``encoders``, as late fusion has).
    """

    needs_multitask_loss = True
    needs_sum = True

    def __init__(self, modulation_starts: int = 0, modulation_ends: int = 80, denominator: str = "scalar") -> None:
        super().__init__()
        if denominator not in DENOMINATORS:
            raise MethodError(f"method.denominator={denominator!r}: valid values: {' | '.join(DENOMINATORS)}")
        self.modulation_starts, self.modulation_ends = int(modulation_starts), int(modulation_ends)
        self.denominator = denominator
        self.modalities: tuple[str, ...] = ()
        self.projector: GradientProjector | None = None
        self.head: nn.Linear | None = None

    def prepare(self, model: MultimodalModel, seed: int = 0) -> MultimodalModel:
        model = super().prepare(model, seed)
        heads = getattr(model, "unimodal_heads", None)
        if not isinstance(heads, nn.ModuleDict) or not all(isinstance(h, nn.Linear) for h in heads.values()):
            raise MethodError("method=mla needs a model with one linear unimodal head per modality (unimodal_heads)")
        encoders = getattr(model, "encoders", None)
        if not isinstance(encoders, nn.ModuleDict) or set(encoders) != set(model.modalities):
            raise MethodError(
                f"method=mla runs one modality's encoder per sub-step: it needs one encoder per modality "
                f"(encoders, as model=mlp|cnn|resnet18_av have); {type(model).__name__} has none"
            )
        sizes = {m: h.in_features for m, h in heads.items()}
        if len(set(sizes.values())) != 1:
            raise MethodError(f"method=mla shares one head across modalities: their feature sizes differ ({sizes})")
        self.modalities = tuple(model.modalities)
        head = heads[self.modalities[0]]
        assert isinstance(head, nn.Linear)  # checked above
        self.head = head
        model.unimodal_heads = nn.ModuleDict(dict.fromkeys(self.modalities, head))
        self.projector = GradientProjector(head.in_features, self.denominator)
        return model

    def phases(self, epoch: int) -> tuple[str | None, ...]:
        return self.modalities if in_window(epoch, self.modulation_starts, self.modulation_ends) else (None,)

    def forward(
        self, model: MultimodalModel, inputs: dict[str, Tensor], phase: str | None, detach_unimodal: bool
    ) -> tuple[dict[str, Tensor], dict[str, Tensor]]:
        if phase is None or self.head is None:
            return super().forward(model, inputs, phase, detach_unimodal)
        encoders = cast(nn.ModuleDict, model.encoders)  # one encoder per modality: prepare checks it
        feature = encoders[phase](inputs[phase])
        return {phase: feature}, {phase: self.head(feature)}

    def training_logits(self, view: StepView) -> dict[str, Tensor]:
        if view.phase is not None:
            return view.logits
        return {**view.logits, MULTIMODAL: gated_fusion({m: view.logits[m] for m in self.modalities})}

    def losses(self, view: StepView, losses: dict[str, Tensor]) -> dict[str, Tensor]:
        if view.phase is None:
            return {MULTIMODAL: losses[MULTIMODAL]}
        return {view.phase: losses[view.phase]}

    def after_backward(self, view: StepView) -> None:
        if view.phase is None or self.projector is None or self.head is None:
            return
        self.projector.before_update(
            self.head.weight, view.features[view.phase].detach(), view.index, view.steps_per_epoch
        )
        self._decisions = {names.method_decision("projector_updates", "head"): float(self.projector.count)}

    def predict(self, logits: dict[str, Tensor]) -> dict[str, Tensor]:
        return {**logits, MULTIMODAL: gated_fusion({m: logits[m] for m in self.modalities})}

    def state_dict(self) -> dict[str, Any]:
        if self.projector is None:
            return {}
        return {"P": self.projector.P.cpu(), "count": self.projector.count}

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        if state and self.projector is not None:
            self.projector.P, self.projector.count = state["P"], int(state["count"])
