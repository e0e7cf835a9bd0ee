"""ResNet-18 encoders, written here and trained from scratch (torchvision does not import here).

One encoder class serves every modality; the input shape of one sample decides how it is used:

* ``(C, H, W)``: an image or a ``C``-channel spectrogram (the audio encoder takes ``(1, F, T)``);
  the feature map is average-pooled to ``(B, 512)``.
* ``(T, C, H, W)``: ``T`` frames. As the reference code does, the frames go through the CNN as a
  batch of ``B * T`` images, the feature maps are reshaped to ``(B, C, T, H, W)`` and pooled with
  ``adaptive_avg_pool3d`` over time and space.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch.nn.functional as F
from torch import Tensor, nn


class BasicBlock(nn.Module):
    def __init__(self, in_channels: int, channels: int, stride: int = 1) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(in_channels, channels, 3, stride, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(channels)
        self.conv2 = nn.Conv2d(channels, channels, 3, 1, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(channels)
        self.downsample: nn.Module = nn.Identity()
        if stride != 1 or in_channels != channels:
            self.downsample = nn.Sequential(
                nn.Conv2d(in_channels, channels, 1, stride, bias=False), nn.BatchNorm2d(channels)
            )

    def forward(self, x: Tensor) -> Tensor:
        out = F.relu(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(out))
        return F.relu(out + self.downsample(x))


class ResNetTrunk(nn.Module):
    """The ResNet stem (7x7 conv, stride 2, max-pool) and four stages of basic blocks; no pooling, no fc."""

    def __init__(self, in_channels: int, width: int = 64, blocks: Sequence[int] = (2, 2, 2, 2)) -> None:
        super().__init__()
        self.stem = nn.Sequential(
            nn.Conv2d(in_channels, width, 7, 2, 3, bias=False),
            nn.BatchNorm2d(width),
            nn.ReLU(inplace=True),
            nn.MaxPool2d(3, 2, 1),
        )
        stages: list[nn.Module] = []
        channels = width
        for index, count in enumerate(blocks):
            out = width * 2**index
            layers = [BasicBlock(channels, out, 1 if index == 0 else 2)]
            layers += [BasicBlock(out, out) for _ in range(count - 1)]
            stages.append(nn.Sequential(*layers))
            channels = out
        self.stages = nn.Sequential(*stages)
        self.out_channels = channels
        for m in self.modules():
            if isinstance(m, nn.Conv2d):
                nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")
            elif isinstance(m, nn.BatchNorm2d):
                nn.init.ones_(m.weight)
                nn.init.zeros_(m.bias)

    def forward(self, x: Tensor) -> Tensor:
        return self.stages(self.stem(x))


class ResNet18Encoder(nn.Module):
    """ResNet-18 on ``(C, H, W)`` inputs, or on ``(T, C, H, W)`` frames pooled over time.

    ``width`` is the first stage's channels (64 in ResNet-18; smaller for quick runs); the
    feature size ``out_dim`` is ``8 * width`` (512).
    """

    def __init__(self, input_shape: Sequence[int], width: int = 64, blocks: Sequence[int] = (2, 2, 2, 2)) -> None:
        super().__init__()
        shape = tuple(int(s) for s in input_shape)
        if len(shape) not in (3, 4):
            raise ValueError(f"ResNet18Encoder expects (C, H, W) or (T, C, H, W) inputs, got shape {shape}")
        self.frames = len(shape) == 4
        self.trunk = ResNetTrunk(shape[-3], width, blocks)
        self.out_dim = self.trunk.out_channels

    def forward(self, x: Tensor) -> Tensor:
        if not self.frames:
            return F.adaptive_avg_pool2d(self.trunk(x), 1).flatten(1)
        batch, steps = x.shape[:2]
        maps = self.trunk(x.flatten(0, 1))  # (B * T, C, H, W)
        maps = maps.view(batch, steps, *maps.shape[1:]).permute(0, 2, 1, 3, 4)  # (B, C, T, H, W)
        return F.adaptive_avg_pool3d(maps, 1).flatten(1)
