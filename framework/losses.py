"""Training objectives: the multimodal cross-entropy plus one unimodal cross-entropy per modality."""

from __future__ import annotations

from collections.abc import Sequence

import torch.nn.functional as F
from torch import Tensor

from .models.base import MULTIMODAL


def head_labels(labels: Tensor, heads: Sequence[str]) -> dict[str, Tensor]:
    """Each head's labels: a ``(B,)`` tensor is every head's (one label per sample); a ``(B, H)``
    tensor has one column per head, in the order of ``heads`` (the logits' order)."""
    heads = tuple(heads)
    if labels.dim() == 1:
        return dict.fromkeys(heads, labels)
    if labels.dim() != 2 or labels.shape[1] != len(heads):
        raise ValueError(
            f"labels of shape {tuple(labels.shape)} do not fit the model's {len(heads)} heads {list(heads)}: "
            "one label per sample, or one column per head "
            "(a multi-task dataset needs a model whose heads are its tasks)"
        )
    return {head: labels[:, j] for j, head in enumerate(heads)}


class MultitaskLoss:
    """``L_mm`` on the fusion head and ``L_m`` on each unimodal head, all cross-entropy.

    With ``detach_unimodal`` (the one-joint-loss baseline) only ``L_mm`` reaches the encoders; the
    unimodal heads still learn, on detached features, so their accuracy is a linear probe.
    """

    def __init__(self, detach_unimodal: bool = False) -> None:
        self.detach_unimodal = bool(detach_unimodal)

    def __call__(self, logits: dict[str, Tensor], labels: Tensor) -> dict[str, Tensor]:
        targets = head_labels(labels, tuple(logits))
        return {name: F.cross_entropy(value, targets[name]) for name, value in logits.items()}

    @staticmethod
    def objective_names(modalities: tuple[str, ...]) -> list[str]:
        return [MULTIMODAL, *modalities]
