"""Colored-and-Gray MNIST built from real MNIST digits.

Two modalities: ``gray`` (an MNIST digit) and ``color`` (another digit of the same class, its
strokes colored). In training the color is tied to the label with probability
``color_correlation``; at test time it is random, so color is a training-only shortcut, as in the
paper's CG-MNIST. The validation split is colored like training (``val_coloring="train"``) or like
test (``"test"``), the latter being the only one that can tell methods apart.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch

from .base import DatasetSpec, Splits, TensorMultimodalDataset
from .sources import load_mnist_digits

PALETTE = torch.tensor(
    [
        [1.0, 0.0, 0.0], [0.0, 1.0, 0.0], [0.0, 0.0, 1.0], [1.0, 1.0, 0.0], [1.0, 0.0, 1.0],
        [0.0, 1.0, 1.0], [1.0, 0.5, 0.0], [0.5, 0.0, 1.0], [0.0, 0.5, 0.5], [0.6, 0.6, 0.6],
    ],
    dtype=torch.float32,  # not the default dtype at import: the images are float32 whatever it is
)  # fmt: skip
VAL_COLORINGS = ("train", "test")


def colorize(images: torch.Tensor, colors: torch.Tensor) -> torch.Tensor:
    """``(N, 28, 28)`` intensities in [0, 1] times ``(N, 3)`` colors -> ``(N, 3, 28, 28)``."""
    return images[:, None] * colors[:, :, None, None]


def _pick_colors(labels: torch.Tensor, correlated: bool, correlation: float, std: float, g: torch.Generator) -> torch.Tensor:
    n = labels.shape[0]
    random_class = torch.randint(len(PALETTE), (n,), generator=g)
    if correlated:
        keep = torch.rand(n, generator=g) < correlation
        random_class = torch.where(keep, labels, random_class)
    colors = PALETTE[random_class] + std * torch.randn(n, 3, generator=g, dtype=torch.float32)
    return colors.clamp(0.0, 1.0)


def _partner_indices(labels: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """For each sample, another sample of the same class (a permutation within each class)."""
    partner = np.empty_like(labels)
    for c in np.unique(labels):
        members = np.flatnonzero(labels == c)
        partner[members] = rng.permutation(members)
    return partner


def cgmnist_splits(
    data_dir: str | Path,
    color_correlation: float = 1.0,
    color_std: float = 0.0,
    val_coloring: str = "train",
    val_size: int = 1000,
    test_size: int = 2000,
    train_size: int | None = None,
    split_seed: int = 0,
) -> Splits:
    """Split the real digits into train/val/test and build both modalities for each split."""
    if val_coloring not in VAL_COLORINGS:
        raise ValueError(f"cgmnist: unknown val_coloring {val_coloring!r}; valid choices: {', '.join(VAL_COLORINGS)}")
    if not 0.0 <= color_correlation <= 1.0:
        raise ValueError(f"cgmnist: color_correlation must be in [0, 1], got {color_correlation}")
    images, labels = load_mnist_digits(data_dir)
    rng = np.random.default_rng(split_seed)
    order = rng.permutation(len(labels))
    if val_size + test_size >= len(order):
        raise ValueError(f"cgmnist: val_size + test_size must be < {len(order)} digits")
    test_idx, val_idx, train_idx = np.split(order, [test_size, test_size + val_size])
    if train_size is not None:
        train_idx = train_idx[:train_size]
    spec = DatasetSpec({"gray": (1, 28, 28), "color": (3, 28, 28)}, num_classes=10)
    g = torch.Generator().manual_seed(split_seed)

    def build(indices: np.ndarray, correlated: bool) -> TensorMultimodalDataset:
        split_labels = labels[indices]
        partner = indices[_partner_indices(split_labels, rng)]
        gray = torch.from_numpy(images[indices]).float().div_(255.0)
        other = torch.from_numpy(images[partner]).float().div_(255.0)
        y = torch.from_numpy(split_labels).long()
        colors = _pick_colors(y, correlated, color_correlation, color_std, g)
        return TensorMultimodalDataset({"gray": gray[:, None], "color": colorize(other, colors)}, y, spec)

    return Splits(
        train=build(train_idx, correlated=True),
        val=build(val_idx, correlated=val_coloring == "train"),
        test=build(test_idx, correlated=False),
    )
