"""UME: the uni-modal ensemble."""

from __future__ import annotations

from torch import Tensor

from ..models.base import MULTIMODAL
from .base import Method, StepView
from .registry import register


@register("ume")
class UME(Method):
    """UME (Du, Teng, Wang, Wei, Ma, Kang, Zhao: "On Uni-Modal Feature Learning in Supervised
    Multi-Modal Learning", ICML 2023; as GeWu-Lab/BalanceBenchmark's uni-modal trainers).

    Each encoder with its own head is trained alone, on its own cross-entropy (the fusion head's
    loss is dropped, so no gradient crosses modalities); at evaluation the ``multimodal`` head
    reports the mean of the unimodal heads' logits. No parameters.
    """

    needs_multitask_loss = True
    needs_sum = True

    def losses(self, view: StepView, losses: dict[str, Tensor]) -> dict[str, Tensor]:
        return {h: loss for h, loss in losses.items() if h != MULTIMODAL}

    def predict(self, logits: dict[str, Tensor]) -> dict[str, Tensor]:
        unimodal = [x for h, x in logits.items() if h != MULTIMODAL]
        return {**logits, MULTIMODAL: sum(unimodal) / len(unimodal)}  # type: ignore[dict-item]
