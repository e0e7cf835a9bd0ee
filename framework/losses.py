"""Training objectives: the multimodal cross-entropy plus one unimodal cross-entropy per modality."""

from __future__ import annotations

import torch.nn.functional as F
from torch import Tensor

from .models.base import MULTIMODAL


class MultitaskLoss:
    """``L_mm`` on the fusion head and ``L_m`` on each unimodal head, all cross-entropy.

    With ``detach_unimodal`` (the one-joint-loss baseline) only ``L_mm`` reaches the encoders; the
    unimodal heads still learn, on detached features, so their accuracy is a linear probe.
    """

    def __init__(self, detach_unimodal: bool = False) -> None:
        self.detach_unimodal = bool(detach_unimodal)

    def __call__(self, logits: dict[str, Tensor], labels: Tensor) -> dict[str, Tensor]:
        return {name: F.cross_entropy(value, labels) for name, value in logits.items()}

    @staticmethod
    def objective_names(modalities: tuple[str, ...]) -> list[str]:
        return [MULTIMODAL, *modalities]
