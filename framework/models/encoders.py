"""Small encoders. Each takes ``input_shape`` (one sample) and exposes ``out_dim``."""

from __future__ import annotations

import math
from collections.abc import Sequence

from torch import Tensor, nn


class MLPEncoder(nn.Module):
    """Flatten, then ``len(hidden)`` ReLU layers and a linear projection to ``dim``."""

    def __init__(self, input_shape: Sequence[int], hidden: Sequence[int] = (128,), dim: int = 64) -> None:
        super().__init__()
        layers: list[nn.Module] = [nn.Flatten()]
        width = math.prod(input_shape)
        for h in hidden:
            layers += [nn.Linear(width, h), nn.ReLU()]
            width = h
        layers += [nn.Linear(width, dim), nn.ReLU()]
        self.net = nn.Sequential(*layers)
        self.out_dim = dim

    def forward(self, x: Tensor) -> Tensor:
        return self.net(x)


class SmallCNN(nn.Module):
    """Conv-BN-ReLU-pool blocks on a ``(C, H, W)`` image, pooled to ``pooled x pooled``, linear to ``dim``."""

    def __init__(
        self, input_shape: Sequence[int], channels: Sequence[int] = (16, 32), dim: int = 64, pooled: int = 4
    ) -> None:
        super().__init__()
        if len(input_shape) != 3:
            raise ValueError(f"SmallCNN expects (C, H, W) inputs, got shape {tuple(input_shape)}")
        layers: list[nn.Module] = []
        width = input_shape[0]
        for c in channels:
            layers += [nn.Conv2d(width, c, 3, padding=1, bias=False), nn.BatchNorm2d(c), nn.ReLU(), nn.MaxPool2d(2)]
            width = c
        layers += [nn.AdaptiveAvgPool2d(pooled), nn.Flatten(), nn.Linear(width * pooled * pooled, dim), nn.ReLU()]
        self.net = nn.Sequential(*layers)
        self.out_dim = dim

    def forward(self, x: Tensor) -> Tensor:
        return self.net(x)
