"""AGM: adaptive gradient modulation from Shapley-style mono-modal responses."""

from __future__ import annotations

from collections.abc import Mapping
import itertools
import math
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from .. import metric_names as names
from ..models.base import MULTIMODAL
from .base import Method, MethodError, StepView, fusion_logits, in_window, modality_of_group, padded
from .registry import register

PADS = ("zero", "mean")


class _ScaleGradient(torch.autograd.Function):
    """Identity forward; the backward multiplies the gradient by ``scale`` (AGM's backward hooks)."""

    @staticmethod
    def forward(ctx: Any, x: Tensor, scale: float) -> Tensor:
        ctx.scale = scale
        return x.view_as(x)

    @staticmethod
    def backward(ctx: Any, grad: Tensor) -> tuple[Tensor, None]:
        return grad * ctx.scale, None


def mono_modal_responses(model: nn.Module, features: dict[str, Tensor], pad: str = "zero") -> dict[str, Tensor]:
    """AGM's response of each modality: ``sum_S w_S (f(S + m) - f(S))`` over the subsets ``S`` of
    the other modalities, ``w_S = |S|! (M - |S| - 1)! / M!``, where ``f(S)`` is the fusion head with
    the modalities outside ``S`` padded, and ``f(empty) = 0`` as in the code (so the responses sum
    to the full output). Two modalities: ``m_a = (f(a, v) - f(0, v) + f(a, 0)) / 2``
    (``Modality_Audio`` in AGM's ``model/AVMNIST_net.py``)."""
    modalities = list(features)
    count = len(modalities)
    cache: dict[frozenset[str], Tensor] = {}

    def f(subset: frozenset[str]) -> Tensor | float:
        if not subset:
            return 0.0
        if subset not in cache:
            cache[subset] = fusion_logits(model, padded(features, subset, pad))  # type: ignore[arg-type]
        return cache[subset]

    out: dict[str, Tensor] = {}
    for m in modalities:
        others = [o for o in modalities if o != m]
        total: Tensor | float = 0.0
        for size in range(count):
            weight = math.factorial(size) * math.factorial(count - size - 1) / math.factorial(count)
            for subset in itertools.combinations(others, size):
                s = frozenset(subset)
                total = total + weight * (f(s | {m}) - f(s))
        out[m] = total  # type: ignore[assignment]
    return out


def agm_scores(responses: dict[str, Tensor], labels: Tensor) -> dict[str, float]:
    """Mean ``-log softmax(m_u)[y]`` per modality, each probability floored at 1e-8 (the code's loop)."""
    return {
        m: float(-torch.log(F.softmax(r.detach(), dim=1).gather(1, labels.view(-1, 1)).clamp_min(1e-8)).mean())
        for m, r in responses.items()
    }


def agm_coefficients(scores: dict[str, float], running: dict[str, float], alpha: float) -> dict[str, float]:
    """``coeff_u = exp(alpha * (optimal_ratio_u - ratio_u))`` with ``ratio_u = exp(2 (mean score -
    score_u))`` from this batch and ``optimal_ratio_u`` the same from the running mean scores."""
    mean = sum(scores.values()) / len(scores)
    mean_running = sum(running.values()) / len(running)
    return {
        m: math.exp(alpha * (math.exp((mean_running - running[m]) * 2) - math.exp((mean - scores[m]) * 2)))
        for m in scores
    }


def clipped_parameters(model: nn.Module) -> list[nn.Parameter]:
    """The parameters with a gradient that AGM's clip covers: all but the unimodal heads
    (``unimodal_heads``: probes under ``loss=one_joint``), which the authors' model does not have."""
    heads = getattr(model, "unimodal_heads", None)
    probes = {id(p) for p in heads.parameters()} if isinstance(heads, nn.Module) else set()
    return [p for p in model.parameters() if p.grad is not None and id(p) not in probes]


@register("agm")
class AGM(Method):
    """AGM (Li, Li, Hu, Li, Xiao, Dou: "Boosting Multi-modal Model Performance with Adaptive Gradient
    Modulation", ICCV 2023; code lihong2303/AGM_ICCV2023, ``run/AVMNIST_main.py`` ``train`` and
    ``model/AVMNIST_net.py`` ``GradMod``).

    Each step: the mono-modal responses :func:`mono_modal_responses` (the other modalities padded
    with zeros, ``pad=zero``, or their batch mean, ``pad=mean``), their scores
    :func:`agm_scores`, the coefficients :func:`agm_coefficients` against the running mean of the
    scores over all steps so far; the fused output is ``sum_u scale_grad(m_u, coeff_u)`` (the same
    value, each response's gradient scaled: the code's backward hooks), so the multimodal loss's
    gradient on modality ``u`` is scaled by ``coeff_u``. With ``clip``, the code's guard
    (``run/AVMNIST_main.py:186-190``): when the fusion head's weight gradient leaves [-1, 1], the
    gradients are clipped to total norm 1, over :func:`clipped_parameters` (encoders, fusion, fusion
    head: the code's ``model.parameters()``, which hold no unimodal heads; the probes keep theirs).

    Parameters (``utils/config.py`` defaults): ``alpha`` 1.0 (README runs AV-MNIST with 2.5),
    ``modulation_starts`` 0, ``modulation_ends`` 19 (the code's 1-based epochs 1..20; ours are
    0-based), ``pad`` zero, ``clip`` true. Notes, code vs paper: the code pads the *inputs* and
    runs the encoders again; here the other modalities' *features* are padded (the same for the
    fusion head's response, without extra encoder passes). Outside the window the code keeps the
    last coefficients in its hooks (it stops updating them); so does this.
    """

    native_loss = "one_joint"

    def __init__(
        self, alpha: float = 1.0, modulation_starts: int = 0, modulation_ends: int = 19, pad: str = "zero",
        clip: bool = True,
    ) -> None:  # fmt: skip
        super().__init__()
        if pad not in PADS:
            raise MethodError(f"method.pad={pad!r}: valid values: {' | '.join(PADS)}")
        self.alpha, self.modulation_starts, self.modulation_ends = (
            float(alpha),
            int(modulation_starts),
            int(modulation_ends),
        )
        self.pad, self.clip = pad, bool(clip)
        self.running: dict[str, float] = {}
        self.iteration = 0
        self.scales: dict[str, float] = {}

    def training_logits(self, view: StepView) -> dict[str, Tensor]:
        responses = mono_modal_responses(view.model, view.features, self.pad)
        scores = agm_scores(responses, view.labels)
        if not self.running:
            self.running = dict.fromkeys(scores, 0.0)
        if not self.scales:
            self.scales = dict.fromkeys(scores, 1.0)
        coefficients = agm_coefficients(scores, self.running, self.alpha)
        i = self.iteration
        self.running = {m: self.running[m] * i / (i + 1) + scores[m] / (i + 1) for m in scores}
        self.iteration += 1
        if in_window(view.epoch, self.modulation_starts, self.modulation_ends):
            self.scales = coefficients
        fused = sum(_ScaleGradient.apply(r, self.scales[m]) for m, r in responses.items())
        self._decisions = {names.method_decision(names.SCORE, m): s for m, s in scores.items()}
        return {**view.logits, MULTIMODAL: fused}

    def after_backward(self, view: StepView) -> None:
        modalities = tuple(view.features)
        for group in view.groups or {}:
            m = modality_of_group(group, modalities)
            if m is not None:
                self._decisions[names.coefficient(group)] = self.scales[m]
        head = getattr(view.model, "fusion_head", None)
        weight = getattr(head, "weight", None)
        grad = weight.grad if self.clip and weight is not None else None
        if grad is not None and (float(grad.max()) > 1.0 or float(grad.min()) < -1.0):
            nn.utils.clip_grad_norm_(clipped_parameters(view.model), max_norm=1.0)

    def state_dict(self) -> dict[str, Any]:
        return {"running": dict(self.running), "iteration": self.iteration, "scales": dict(self.scales)}

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        self.running = dict(state.get("running", {}))
        self.iteration = int(state.get("iteration", 0))
        self.scales = dict(state.get("scales", {}))
