"""Gradient-Blending: loss weights from each head's overfitting-to-generalisation ratio."""

from __future__ import annotations

from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

from torch import Tensor

from .. import metric_names as names
from .base import Method, MethodError, StepView, mean_head_losses
from .registry import register

if TYPE_CHECKING:
    from ..training.trainer import Trainer


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


@register("gblending")
class GBlending(Method):
    """Gradient-Blending (Wang, Tran, Feiszli: "What Makes Training Multi-modal Classification
    Networks Hard?", CVPR 2020; the authors' code is Caffe2 in facebookresearch/VMZ; this follows
    the PyTorch version of GeWu-Lab/BalanceBenchmark, ``balancemm/trainer/GBlending_trainer.py``).

    The losses of the fusion head and of every unimodal head are weighted, ``sum_k w_k L_k``. At
    the start of every ``super_epoch``-th epoch, every head's mean loss on the training split and
    on the held-out split (the validation split) is measured in eval mode; from the previous
    measurement and this one, :func:`gblending_weights`. Until the first re-estimation the weights
    are uniform (``1/K``). Code vs paper: the paper's online G-Blending measures on the jointly
    trained heads, as here; BalanceBenchmark re-trains a copy per head for a super-epoch (far
    costlier) and takes ``|G/O^2|``, whose absolute value is kept here.

    Parameters: ``super_epoch`` 10 (BalanceBenchmark's default), ``max_batches`` (batches of each
    split per measurement; null = all).
    """

    needs_multitask_loss = True

    def __init__(self, super_epoch: int = 10, max_batches: int | None = None) -> None:
        super().__init__()
        if int(super_epoch) < 1:
            raise MethodError(f"method.super_epoch={super_epoch}: must be an integer >= 1")
        if max_batches is not None and int(max_batches) < 1:
            raise MethodError(f"method.max_batches={max_batches}: must be an integer >= 1 or null")
        self.super_epoch, self.max_batches = int(super_epoch), max_batches
        self.weights: dict[str, float] = {}
        self.measured: tuple[dict[str, float], dict[str, float]] | None = None

    def on_epoch_start(self, trainer: Trainer) -> None:
        if trainer.state.epoch % self.super_epoch:
            return
        size = trainer.settings.eval_batch_size
        now = tuple(
            mean_head_losses(trainer.model, split, size, trainer.device, self.max_batches)
            for split in (trainer.splits.train, trainer.splits.val)
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
