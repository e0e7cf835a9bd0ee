"""Gradient-Blending: loss weights from each head's overfitting-to-generalisation ratio."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import torch.nn.functional as F
from torch import Tensor, nn

from .. import metric_names as names
from ..models.base import MultimodalModel, int_attribute
from ..models.fusion import ConcatFusion
from .base import EpochView, Method, MethodError, StepView, mean_head_losses
from .registry import register

HEADS = ("fusion", "separate")


def gblending_weights(
    before: tuple[dict[str, float], dict[str, float]], after: tuple[dict[str, float], dict[str, float]],
    eps: float = 1e-12,
) -> dict[str, float]:  # fmt: skip
    """``w_k = |G_k / O_k^2|``, normalised to sum 1, from ``(train, held-out)`` losses per head at
    the start and the end of a super-epoch: ``G = L^V_after - L^V_before`` (the change in held-out
    loss) and ``O = (L^V_after - L^T_after) - (L^V_before - L^T_before)`` (the change in the
    overfitting gap), as BalanceBenchmark's ``GBlending_trainer.super_epoch_origin``."""
    (train0, val0), (train1, val1) = before, after
    raw = {}
    for head in val1:
        g = val1[head] - val0[head]
        o = (val1[head] - train1[head]) - (val0[head] - train0[head])
        raw[head] = abs(g / max(o * o, eps))
    total = sum(raw.values())
    if not total > 0:
        return {h: 1.0 / len(raw) for h in raw}
    return {h: w / total for h, w in raw.items()}


class FusionSlice(nn.Module):
    """A modality's unimodal head that is its slice of a linear fusion head over concatenated
    features: ``x_m W[:, cols_m]^T + b / M`` (no parameters of its own; the fusion head's are used)."""

    def __init__(self, head: nn.Linear, start: int, stop: int, count: int) -> None:
        super().__init__()
        self._head = (head,)  # not a submodule: the fusion head's parameters stay registered once
        self.start, self.stop, self.count = start, stop, count

    def forward(self, x: Tensor) -> Tensor:
        (head,) = self._head
        bias = head.bias / self.count if head.bias is not None else None
        return F.linear(x, head.weight[:, self.start : self.stop], bias)


def fusion_slices(model: MultimodalModel) -> nn.ModuleDict:
    """Each modality's :class:`FusionSlice` of ``model``'s fusion head (concatenation, in modality order)."""
    heads, fusion, head = (getattr(model, k, None) for k in ("unimodal_heads", "fusion", "fusion_head"))
    if not (isinstance(fusion, ConcatFusion) and isinstance(head, nn.Linear) and isinstance(heads, nn.ModuleDict)):
        raise MethodError(
            "method=gblending with method.heads=fusion takes each modality's slice of a linear fusion head "
            f"over concatenated features (model.fusion=concat); this model's fusion is {type(fusion).__name__}: "
            "use method.heads=separate"
        )
    slices, start = {}, 0
    for m in model.modalities:
        width = int_attribute(heads[m], "in_features")
        slices[m] = FusionSlice(head, start, start + width, len(model.modalities))
        start += width
    return nn.ModuleDict(slices)


@register("gblending")
class GBlending(Method):
    """Gradient-Blending (Wang, Tran, Feiszli: "What Makes Training Multi-modal Classification
    Networks Hard?", CVPR 2020; the authors' code is Caffe2 in facebookresearch/VMZ; this follows
    the PyTorch version of GeWu-Lab/BalanceBenchmark@4c1482f, ``balancemm/trainer/GBlending_trainer.py``
    and ``balancemm/models/avclassify_model.py``).

    The losses of the fusion head and of every unimodal head are weighted, ``sum_k w_k L_k``
    (``GBlending_trainer.py:292-303``). The unimodal heads (``heads``): ``fusion`` (default, the
    code's) makes each modality's logits its slice of the fusion head, ``x_m W_m^T + b / M``
    (``avclassify_model.py:287-294``; :class:`FusionSlice`), so every loss trains the fusion head
    and the model's own unimodal heads are dropped; it needs concatenation fusion with a linear
    head. ``separate`` keeps the model's own linear unimodal heads, each trained by its loss alone.

    At the start of every ``super_epoch``-th epoch, every head's mean loss on the training split and
    on the held-out split (the validation split) is measured in eval mode; from the previous
    measurement and this one, :func:`gblending_weights`. Until the first re-estimation the weights
    are uniform (``1/K``). Code vs paper: the paper's online G-Blending measures on the jointly
    trained heads, as here; BalanceBenchmark re-trains a copy per head for a super-epoch (far
    costlier, ``GBlending_trainer.py:306-375``) and takes ``|G/O^2|``, whose absolute value is kept
    here.

    Parameters: ``super_epoch`` 10 (BalanceBenchmark's default), ``max_batches`` (batches of each
    split per measurement; null = all), ``heads`` ``fusion``.
    """

    needs_multitask_loss = True

    def __init__(self, super_epoch: int = 10, max_batches: int | None = None, heads: str = "fusion") -> None:
        super().__init__()
        if int(super_epoch) < 1:
            raise MethodError(f"method.super_epoch={super_epoch}: must be an integer >= 1")
        if max_batches is not None and int(max_batches) < 1:
            raise MethodError(f"method.max_batches={max_batches}: must be an integer >= 1 or null")
        if heads not in HEADS:
            raise MethodError(f"method.heads={heads!r}: valid values: {' | '.join(HEADS)}")
        self.super_epoch, self.max_batches, self.heads = int(super_epoch), max_batches, heads
        self.weights: dict[str, float] = {}
        self.measured: tuple[dict[str, float], dict[str, float]] | None = None

    def prepare(self, model: MultimodalModel, seed: int = 0) -> MultimodalModel:
        model = super().prepare(model, seed)
        if self.heads == "fusion":
            model.unimodal_heads = fusion_slices(model)
        return model

    def on_epoch_start(self, view: EpochView) -> None:
        if view.epoch % self.super_epoch:
            return
        size = view.eval_batch_size
        now = tuple(
            mean_head_losses(view.model, split, size, view.device, self.max_batches)
            for split in (view.splits.train, view.splits.val)
        )
        if self.measured is not None:
            self.weights = gblending_weights(self.measured, now)  # type: ignore[arg-type]
        self.measured = now  # type: ignore[assignment]

    def losses(self, view: StepView, losses: dict[str, Tensor]) -> dict[str, Tensor]:
        if not self.weights:
            self.weights = {h: 1.0 / len(losses) for h in losses}
        self._decisions = {names.method_decision(names.LOSS_WEIGHT, h): w for h, w in self.weights.items()}
        return {h: self.weights[h] * loss for h, loss in losses.items()}

    def state_dict(self) -> dict[str, Any]:
        return {"weights": dict(self.weights), "measured": self.measured}

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        if state:
            self.weights, self.measured = dict(state["weights"]), state["measured"]
