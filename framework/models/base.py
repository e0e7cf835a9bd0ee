"""What a multimodal model is: encoders, a fusion head and one unimodal head per modality."""

from __future__ import annotations

from abc import ABC, abstractmethod
from typing import Any

from torch import Tensor, nn

MULTIMODAL = "multimodal"
"""Key of the fusion head's logits and of the multimodal loss."""
MEAN = "mean"
"""A model's :attr:`~MultimodalModel.selection_head` when the mean accuracy over its heads selects."""


class MultimodalModel(nn.Module, ABC):
    """``encode`` maps inputs to per-modality features (everything below them is the *trunk*);
    ``classify`` maps features to logits of the fusion head and of each unimodal head.

    The trunk is split into parameter groups (:meth:`parameter_groups`); the trainer finds which
    losses reach each group and integrates the per-loss gradients there. Heads consume features
    only, so a loss's gradient on the trunk is its gradient on the features pulled back.
    """

    modalities: tuple[str, ...]
    selection_head: str = MULTIMODAL
    """The head whose validation accuracy selects the best epoch (:data:`MEAN`: the heads' mean)."""

    @property
    def heads(self) -> tuple[str, ...]:
        """The names of the logits :meth:`classify` returns, which are also the losses' names."""
        return (MULTIMODAL, *self.modalities)

    @abstractmethod
    def encode(self, inputs: dict[str, Tensor]) -> dict[str, Tensor]: ...

    @abstractmethod
    def classify(self, features: dict[str, Tensor], detach_unimodal: bool = False) -> dict[str, Tensor]:
        """Logits keyed by :data:`MULTIMODAL` and by each modality.

        With ``detach_unimodal`` the unimodal heads see detached features (a linear probe).
        """

    @abstractmethod
    def parameter_groups(self) -> dict[str, list[nn.Parameter]]:
        """Trunk parameters by group name; groups are disjoint."""

    def forward(self, inputs: dict[str, Tensor], detach_unimodal: bool = False) -> dict[str, Tensor]:
        return self.classify(self.encode(inputs), detach_unimodal=detach_unimodal)


def int_attribute(module: nn.Module, name: str) -> int:
    """``int(module.<name>)``: a size a module exposes (``out_dim``, ``in_features``), which
    ``nn.Module``'s attribute lookup types as ``Tensor | Module``."""
    value: Any = getattr(module, name)
    return int(value)


def fusion_and_unimodal_logits(
    features: dict[str, Tensor],
    fusion: nn.Module,
    fusion_head: nn.Module,
    unimodal_heads: nn.ModuleDict,
    detach_unimodal: bool = False,
) -> dict[str, Tensor]:
    """The usual heads: ``fusion_head(fusion(features))`` under :data:`MULTIMODAL` and one head per
    modality on its own feature (detached with ``detach_unimodal``)."""
    logits = {MULTIMODAL: fusion_head(fusion(features))}
    for m, head in unimodal_heads.items():
        logits[m] = head(features[m].detach() if detach_unimodal else features[m])
    return logits
