"""What a dataset is: samples that are a dict of modality tensors plus a label."""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from dataclasses import dataclass

import torch
from torch import Tensor
from torch.utils.data import DataLoader, Dataset

Batch = tuple[dict[str, Tensor], Tensor]


@dataclass(frozen=True)
class DatasetSpec:
    """The modalities (name -> input shape of one sample, in order) and the number of classes."""

    modalities: Mapping[str, tuple[int, ...]]
    num_classes: int

    def __post_init__(self) -> None:
        if len(self.modalities) < 1:
            raise ValueError("a dataset needs at least one modality")
        if self.num_classes < 2:
            raise ValueError(f"a dataset needs at least 2 classes, got {self.num_classes}")


class MultimodalDataset(Dataset):
    """A map-style dataset whose items are ``({modality: tensor}, label)``."""

    spec: DatasetSpec


class TensorMultimodalDataset(MultimodalDataset):
    """A dataset held in memory as one tensor per modality; batches are sliced, not collated."""

    def __init__(self, inputs: Mapping[str, Tensor], labels: Tensor, spec: DatasetSpec) -> None:
        if list(inputs) != list(spec.modalities):
            raise ValueError(f"inputs have modalities {list(inputs)}, spec declares {list(spec.modalities)}")
        for name, tensor in inputs.items():
            if tensor.shape[0] != labels.shape[0] or tuple(tensor.shape[1:]) != tuple(spec.modalities[name]):
                raise ValueError(
                    f"modality {name!r} has shape {tuple(tensor.shape)}, expected ({labels.shape[0]}, *{spec.modalities[name]})"
                )
        self.inputs = dict(inputs)
        self.labels = labels.long()
        self.spec = spec

    def __len__(self) -> int:
        return int(self.labels.shape[0])

    def __getitem__(self, index: int) -> tuple[dict[str, Tensor], int]:
        return {m: t[index] for m, t in self.inputs.items()}, int(self.labels[index])

    def batch(self, indices: Tensor) -> Batch:
        return {m: t[indices] for m, t in self.inputs.items()}, self.labels[indices]


@dataclass(frozen=True)
class Splits:
    """Train, validation and test splits of one dataset."""

    train: MultimodalDataset
    val: MultimodalDataset
    test: MultimodalDataset

    @property
    def spec(self) -> DatasetSpec:
        return self.train.spec


def iterate_batches(
    dataset: MultimodalDataset,
    batch_size: int,
    shuffle: bool,
    generator: torch.Generator | None = None,
    num_workers: int = 0,
) -> Iterator[Batch]:
    """Yield batches; in-memory datasets are sliced directly, others go through a ``DataLoader``."""
    if isinstance(dataset, TensorMultimodalDataset):
        order = torch.randperm(len(dataset), generator=generator) if shuffle else torch.arange(len(dataset))
        for start in range(0, len(dataset), batch_size):
            yield dataset.batch(order[start : start + batch_size])
        return
    loader = DataLoader(
        dataset,
        batch_size=batch_size,
        shuffle=shuffle,
        generator=generator,
        num_workers=num_workers,
        persistent_workers=False,
    )
    for inputs, labels in loader:
        yield inputs, labels


def num_batches(dataset: MultimodalDataset, batch_size: int) -> int:
    return -(-len(dataset) // batch_size)
