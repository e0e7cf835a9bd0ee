"""Fusion modules: per-modality features -> one fused feature vector."""

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
