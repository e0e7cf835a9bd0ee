"""Evaluation: the accuracy of every head on a split (each rank its share, the counts summed)."""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Iterable
from typing import Any

import torch
from torch import Tensor

from ..losses import head_labels
from ..methods import Method
from ..models.base import MEAN, MultimodalModel
from .precision import Precision


@torch.no_grad()
def evaluate(
    model: MultimodalModel,
    method: Method,
    batches: Iterable[tuple[dict[str, Tensor], Tensor]],
    precision: Precision,
    heads: list[str],
    selection: str,
    context: Any = None,
) -> dict[str, float]:
    """``{head: accuracy}`` over ``batches`` (on the model's device), plus the mean over the heads
    when the selection head is ``mean``. ``context``: a distributed context whose ``sum`` adds the
    ranks' counts (every rank evaluated its share)."""
    model.eval()
    correct: dict[str, int] = defaultdict(int)
    seen = 0
    for inputs, labels in batches:
        with precision.autocast():
            outputs = method.predict(model(inputs))
        targets = head_labels(labels, tuple(outputs))
        for head, logits in outputs.items():
            correct[head] += int((logits.argmax(dim=1) == targets[head]).sum())
        seen += labels.shape[0]
    if context is not None:
        *counts, total = context.sum([*(correct[h] for h in heads), seen])
        correct, seen = defaultdict(int, zip(heads, (int(c) for c in counts), strict=True)), int(total)
    accuracy = {head: correct[head] / max(seen, 1) for head in heads}
    if selection == MEAN:
        accuracy[MEAN] = sum(accuracy.values()) / len(accuracy)
    return accuracy
