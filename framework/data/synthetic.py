"""Generated data with a configurable signal strength per modality, for fast tests."""

from __future__ import annotations

from collections.abc import Mapping

import torch

from .base import DatasetSpec, Splits, TensorMultimodalDataset


def synthetic_splits(
    modalities: Mapping[str, Mapping[str, float]],
    num_classes: int = 4,
    train_size: int = 512,
    val_size: int = 128,
    test_size: int = 256,
    seed: int = 0,
) -> Splits:
    """Gaussian class clusters per modality: ``x_m = signal_m * mu_{m, y} + noise``.

    ``modalities`` maps each name to ``{dim: int, signal: float}``; a larger ``signal`` makes
    that modality easier, so the imbalance between modalities is set directly.
    """
    generator = torch.Generator().manual_seed(seed)
    spec = DatasetSpec({m: (int(o["dim"]),) for m, o in modalities.items()}, num_classes)
    means = {m: torch.randn(num_classes, int(o["dim"]), generator=generator) for m, o in modalities.items()}

    def split(size: int) -> TensorMultimodalDataset:
        labels = torch.randint(num_classes, (size,), generator=generator)
        inputs = {
            m: float(o["signal"]) * means[m][labels] + torch.randn(size, int(o["dim"]), generator=generator)
            for m, o in modalities.items()
        }
        return TensorMultimodalDataset(inputs, labels, spec)

    return Splits(train=split(train_size), val=split(val_size), test=split(test_size))
