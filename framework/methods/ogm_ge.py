"""OGM-GE: on-the-fly gradient modulation with generalisation enhancement."""

from __future__ import annotations

from torch import Tensor
import math

import torch

from .. import metric_names as names
from ..models.base import MultimodalModel
from .base import Method, MethodError, StepView, in_window, label_probability, modality_logits, modality_of_group
from .registry import register

SCOPES = ("conv", "all")


def ogm_coefficients(scores: dict[str, float], alpha: float) -> dict[str, float]:
    """OGM-GE's ``k_u``: the dominant modality's gradient is scaled by ``1 - tanh(alpha * ratio)``.

    Two modalities, exactly as the authors' code: ``ratio_v = score_v / score_a``; if
    ``ratio_v > 1``, ``coeff_v = 1 - tanh(alpha * relu(ratio_v))`` and ``coeff_a = 1``, else
    ``coeff_a = 1 - tanh(alpha * relu(1 / ratio_v))`` and ``coeff_v = 1`` (with equal scores, the
    first modality is damped). More modalities (BalanceBenchmark's generalisation): each modality
    whose score exceeds the smallest one gets ``1 - tanh(alpha * score_m / min score)``.
    """
    modalities = list(scores)
    if len(modalities) == 2:
        a, v = modalities
        ratio_v = scores[v] / scores[a]
        if ratio_v > 1:
            return {a: 1.0, v: 1 - math.tanh(alpha * max(ratio_v, 0.0))}
        return {a: 1 - math.tanh(alpha * max(1 / ratio_v, 0.0)), v: 1.0}
    lowest = min(scores.values())
    return {m: (1 - math.tanh(alpha * s / lowest)) if s > lowest else 1.0 for m, s in scores.items()}


@register("ogm_ge")
class OGMGE(Method):
    """OGM-GE (Peng, Wei, Deng, Wang, Hu: "Balanced Multimodal Learning via On-the-fly Gradient
    Modulation", CVPR 2022; code GeWu-Lab/OGM-GE_CVPR2022, ``main.py``, ``train_epoch``).

    Each step, each modality's confidence is ``score_u = sum_i softmax(out_u)_i[y_i]`` with
    ``out_u`` its share of the fusion head's logits (``W_u x_u + b/2`` for concatenation:
    :func:`~.base.modality_logits`); the dominant modality's encoder gradient is multiplied by
    ``1 - tanh(alpha * ratio)`` (:func:`ogm_coefficients`) and, with ``ge`` (generalisation
    enhancement), Gaussian noise ``N(0, std(grad) + 1e-8)`` is added to each modulated tensor, for
    epochs ``modulation_starts <= epoch <= modulation_ends``.

    Parameters (the authors' defaults): ``alpha`` 0.1 (README: 0.1 for VGGSound, 0.8 for CREMA-D;
    the code requires it), ``modulation_starts`` 0, ``modulation_ends`` 50, ``ge`` true,
    ``scope``: ``conv`` modulates only 4-D (convolution) weights, as the code does
    (``len(parms.grad.size()) == 4``); ``all`` every tensor of the modality's groups (for MLP
    encoders, which have none). Code vs paper: the paper modulates every encoder parameter; the
    code only conv weights -- the default follows the code. The modulation acts on the
    integrated gradient, so it composes with any integrator and loss.
    """

    native_loss = "one_joint"

    def __init__(
        self, alpha: float = 0.1, modulation_starts: int = 0, modulation_ends: int = 50, ge: bool = True,
        scope: str = "conv",
    ) -> None:  # fmt: skip
        super().__init__()
        if scope not in SCOPES:
            raise MethodError(f"method.scope={scope!r}: valid values: {' | '.join(SCOPES)}")
        if not alpha >= 0:
            raise MethodError(f"method.alpha={alpha}: must be >= 0")
        self.alpha, self.modulation_starts, self.modulation_ends = (
            float(alpha),
            int(modulation_starts),
            int(modulation_ends),
        )
        self.ge, self.scope = bool(ge), scope
        self.coefficients: dict[str, float] = {}

    def prepare(self, model: MultimodalModel, seed: int = 0) -> MultimodalModel:
        model = super().prepare(model, seed)
        groups = model.parameter_groups()
        for m in model.modalities:
            params = [p for g, ps in groups.items() if modality_of_group(g, model.modalities) == m for p in ps]
            if not params:
                raise MethodError(f"method={self.name}: no parameter group of modality {m!r} in {list(groups)}")
            if self.scope == "conv" and not any(p.dim() == 4 for p in params):
                raise MethodError(
                    f"method={self.name} method.scope=conv: the {m!r} encoder has no 4-D convolution weight "
                    "(the authors' code modulates only those); use method.scope=all"
                )
        return model

    def training_logits(self, view: StepView) -> dict[str, Tensor]:
        with torch.no_grad():
            shares = modality_logits(view.model, {m: f.detach() for m, f in view.features.items()})
            scores = {m: float(label_probability(out, view.labels).sum()) for m, out in shares.items()}
        self.coefficients = ogm_coefficients(scores, self.alpha)
        self._decisions = {names.method_decision(names.SCORE, m): s / view.labels.shape[0] for m, s in scores.items()}
        return view.logits

    def after_backward(self, view: StepView) -> None:
        active = in_window(view.epoch, self.modulation_starts, self.modulation_ends)
        modalities = tuple(view.features)
        for group, params in (view.groups or {}).items():
            m = modality_of_group(group, modalities)
            if m is None:
                continue
            coeff = self.coefficients[m] if active else 1.0
            self._decisions[names.coefficient(group)] = coeff
            if not active:
                continue
            for p in params:
                if p.grad is None or (self.scope == "conv" and p.dim() != 4):
                    continue
                grad = p.grad * coeff
                if self.ge:
                    grad = grad + torch.zeros_like(grad).normal_(0, p.grad.std().item() + 1e-8)
                p.grad = grad
