"""MMCosine: a fusion head of per-modality cosine similarities, scaled."""

from __future__ import annotations

import functools
import operator

import torch.nn.functional as F
from torch import Tensor, nn

from .. import metric_names as names
from ..models.base import MultimodalModel, int_attribute
from ..models.fusion import ConcatFusion
from .base import Method, MethodError, StepView
from .registry import register


class CosineFusionHead(nn.Module):
    """``s * sum_m cos(x_m, W_m)``: each modality's block ``W_m`` of the linear head's weight,
    each class row normalised, against the normalised feature ``x_m``; no bias. Input: the
    features concatenated in modality order (``ConcatFusion``)."""

    def __init__(self, weight: Tensor, dims: dict[str, int], scaling: float) -> None:
        super().__init__()
        self.weight = nn.Parameter(weight.detach().clone())
        self.dims, self.scaling = dict(dims), float(scaling)
        self.last: dict[str, Tensor] = {}

    def forward(self, fused: Tensor) -> Tensor:
        start = 0
        self.last = {}
        for m, d in self.dims.items():
            block = (
                F.normalize(fused[:, start : start + d], dim=1)
                @ F.normalize(self.weight[:, start : start + d], dim=1).T
            )
            self.last[m] = block * self.scaling
            start += d
        return functools.reduce(operator.add, self.last.values())


@register("mmcosine")
class MMCosine(Method):
    """MMCosine (Xu, Feng, Hu, Wei: "MMCosine: Multi-Modal Cosine Loss Towards Balanced
    Audio-Visual Fine-Grained Learning", ICASSP 2023; code GeWu-Lab/MMCosine_ICASSP23,
    ``main_CD.py`` ``train_epoch``).

    The fusion head becomes :class:`CosineFusionHead`: ``out = s * (cos(a, W_a) + cos(v, W_v))``
    with ``F.normalize(a, dim=1)`` and ``F.normalize(W_a^T, dim=0)``, no bias (the code's
    ``out_a``/``out_v``), trained with the cross-entropy on ``out``. It needs concatenation
    fusion (the head's weight splits into modality blocks). Parameters: ``scaling`` 10 (the code's
    and README's default; BalanceBenchmark uses 15). The code's optional contrastive term
    (``--lam``, default 0) is left out.
    """

    native_loss = "one_joint"

    def __init__(self, scaling: float = 10.0) -> None:
        super().__init__()
        if not scaling > 0:
            raise MethodError(f"method.scaling={scaling}: must be > 0")
        self.scaling = float(scaling)
        self.head: CosineFusionHead | None = None

    def prepare(self, model: MultimodalModel, seed: int = 0) -> MultimodalModel:
        model = super().prepare(model, seed)
        fusion, head = getattr(model, "fusion", None), getattr(model, "fusion_head", None)
        if not isinstance(fusion, ConcatFusion) or not isinstance(head, nn.Linear):
            raise MethodError(
                f"method=mmcosine needs concatenation fusion and a linear fusion head (model/fusion=concat); "
                f"this model has {type(fusion).__name__} and {type(head).__name__}"
            )
        dims = {m: int_attribute(model.get_submodule(f"encoders.{m}"), "out_dim") for m in model.modalities}
        self.head = CosineFusionHead(head.weight, dims, self.scaling).to(head.weight.device)
        model.fusion_head = self.head
        return model

    def training_logits(self, view: StepView) -> dict[str, Tensor]:
        if self.head is not None and self.head.last:
            target = view.labels.view(-1, 1)
            self._decisions = {
                names.method_decision("logit", m): float(out.detach().gather(1, target).mean())
                for m, out in self.head.last.items()
            }
        return view.logits
