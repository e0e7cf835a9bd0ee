"""A small synthetic three-modality dataset: an audio-like sequence, a tiny image, a text vector."""

from __future__ import annotations

import math

import torch
from torch import Tensor

from framework.data.base import DatasetSpec, Splits, TensorMultimodalDataset

MODALITIES = ("audio", "image", "text")


def own3_splits(
    num_classes: int = 4,
    train_size: int = 384,
    val_size: int = 128,
    test_size: int = 128,
    steps: int = 12,
    features: int = 8,
    image_size: int = 12,
    text_dim: int = 16,
    audio_signal: float = 1.5,
    image_signal: float = 0.6,
    text_signal: float = 0.5,
    seed: int = 0,
) -> Splits:
    """Train, val and test splits of ``{audio: [steps, features], image: [1, size, size], text: [text_dim]}``.

    Each class has its own pattern per modality, scaled by that modality's ``*_signal`` and
    buried in unit Gaussian noise: ``audio`` a class-specific sinusoid over time in each feature,
    ``image`` a class-specific template, ``text`` a class mean (the weak modality by default).
    Everything is drawn from one ``torch.Generator`` seeded with ``seed``: the same seed gives the
    same tensors, and the global RNG (the framework seeds it with the run's ``seed``) is untouched.
    """
    generator = torch.Generator().manual_seed(seed)
    shapes = {"audio": (steps, features), "image": (1, image_size, image_size), "text": (text_dim,)}
    spec = DatasetSpec(shapes, num_classes)

    time = torch.arange(steps, dtype=torch.float32)
    frequency = 0.3 + 0.6 * torch.rand(num_classes, features, generator=generator)
    phase = 2 * math.pi * torch.rand(num_classes, features, generator=generator)
    audio_patterns = torch.sin(frequency[:, None, :] * time[None, :, None] + phase[:, None, :])  # [C, T, F]
    image_patterns = torch.randn(num_classes, 1, image_size, image_size, generator=generator)
    text_means = torch.randn(num_classes, text_dim, generator=generator)
    patterns = {
        "audio": audio_signal * audio_patterns,
        "image": image_signal * image_patterns,
        "text": text_signal * text_means,
    }

    def split(size: int) -> TensorMultimodalDataset:
        labels = torch.randint(num_classes, (size,), generator=generator)
        inputs: dict[str, Tensor] = {
            m: patterns[m][labels] + torch.randn(size, *shapes[m], generator=generator) for m in MODALITIES
        }
        return TensorMultimodalDataset(inputs, labels, spec)

    return Splits(train=split(train_size), val=split(val_size), test=split(test_size))
