"""Fusion modules: per-modality features -> one fused feature vector (then the fusion head).

Each takes ``in_dims`` (modality -> feature size, in modality order) and exposes ``out_dim``.
``SumFusion``, ``FiLMFusion`` and ``GatedFusion`` follow OGM-GE's fusion modules (which the
MMPareto reference builds on), generalised to any number of modalities by summing the projected
features of the modalities that are not the conditioning / gating one.
"""

from __future__ import annotations

from collections.abc import Mapping

import torch
from torch import Tensor, nn


class ConcatFusion(nn.Module):
    """Concatenate the features in modality order."""

    def __init__(self, in_dims: Mapping[str, int]) -> None:
        super().__init__()
        self.out_dim = sum(in_dims.values())

    def forward(self, features: Mapping[str, Tensor]) -> Tensor:
        return torch.cat(list(features.values()), dim=1)


def _pick(in_dims: Mapping[str, int], name: str | None, role: str) -> str:
    names = list(in_dims)
    if len(names) < 2:
        raise ValueError(f"{role} fusion needs at least two modalities, got {names}")
    chosen = names[0] if name is None else name
    if chosen not in names:
        raise ValueError(f"{role} modality {chosen!r} is not one of the modalities {names}")
    return chosen


class SumFusion(nn.Module):
    """Project each modality to ``dim`` with a linear layer and sum."""

    def __init__(self, in_dims: Mapping[str, int], dim: int = 512) -> None:
        super().__init__()
        self.proj = nn.ModuleDict({m: nn.Linear(d, dim) for m, d in in_dims.items()})
        self.out_dim = dim

    def forward(self, features: Mapping[str, Tensor]) -> Tensor:
        return torch.stack([p(features[m]) for m, p in self.proj.items()]).sum(0)


class FiLMFusion(nn.Module):
    """Feature-wise linear modulation: ``gamma, beta = Linear(x_c)`` from the ``condition`` modality
    (default: the first), ``out = gamma * h + beta`` with ``h`` the sum of the other modalities'
    features projected to ``dim``."""

    def __init__(self, in_dims: Mapping[str, int], dim: int = 512, condition: str | None = None) -> None:
        super().__init__()
        self.condition = _pick(in_dims, condition, "FiLM condition")
        self.film = nn.Linear(in_dims[self.condition], 2 * dim)
        self.proj = nn.ModuleDict({m: nn.Linear(d, dim) for m, d in in_dims.items() if m != self.condition})
        self.dim = self.out_dim = dim

    def forward(self, features: Mapping[str, Tensor]) -> Tensor:
        gamma, beta = self.film(features[self.condition]).split(self.dim, dim=1)
        h = torch.stack([p(features[m]) for m, p in self.proj.items()]).sum(0)
        return gamma * h + beta


class GatedFusion(nn.Module):
    """``out = sigmoid(Linear(x_g)) * h``: the ``gate`` modality (default: the first) gates the sum
    ``h`` of the other modalities' features projected to ``dim``."""

    def __init__(self, in_dims: Mapping[str, int], dim: int = 512, gate: str | None = None) -> None:
        super().__init__()
        self.gate = _pick(in_dims, gate, "gate")
        self.gate_proj = nn.Linear(in_dims[self.gate], dim)
        self.proj = nn.ModuleDict({m: nn.Linear(d, dim) for m, d in in_dims.items() if m != self.gate})
        self.out_dim = dim

    def forward(self, features: Mapping[str, Tensor]) -> Tensor:
        h = torch.stack([p(features[m]) for m, p in self.proj.items()]).sum(0)
        return torch.sigmoid(self.gate_proj(features[self.gate])) * h
