"""What a dataset is: samples that are a dict of modality tensors plus a label.

Every dataset reports how many corrupt samples it skipped (:attr:`MultimodalDataset.skipped`);
in-memory datasets never skip. Disk datasets derive from :class:`SkippingDataset`, which reads a
sample with ``load`` and applies ``on_corrupt`` (:data:`ON_CORRUPT`): stop with a
:class:`CorruptSampleError` naming the sample, or skip to the next readable one and count it.

How batches are loaded (:class:`LoaderSettings`, :class:`BatchSource`, :func:`iterate_batches`, ...)
is :mod:`framework.data.loading`; this module re-exports its public names.
"""

from __future__ import annotations

import copy
import logging
from collections.abc import Mapping
from dataclasses import dataclass, field, fields
from typing import TYPE_CHECKING, ClassVar

import torch
from torch import Tensor
from torch.utils.data import Dataset

from .loading import (
    BatchSource,
    EpochSeeded,
    EpochSeededSampler,
    LoaderSettings,
    available_cpus,
    iterate_batches,
    load_batches,
    loader_settings,
    num_batches,
    splits_to,
    worker_message,
)

__all__ = [
    "ON_CORRUPT",
    "Batch",
    "BatchSource",
    "CorruptSampleError",
    "DatasetSpec",
    "EpochSeeded",
    "EpochSeededSampler",
    "LoaderSettings",
    "MultimodalDataset",
    "SkipCounter",
    "SkippingDataset",
    "Splits",
    "TensorMultimodalDataset",
    "available_cpus",
    "iterate_batches",
    "load_batches",
    "loader_settings",
    "num_batches",
    "splits_to",
    "worker_message",
]

log = logging.getLogger(__name__)

Batch = tuple[dict[str, Tensor], Tensor]

ON_CORRUPT = ("skip", "error")
"""What a disk dataset does with a corrupt sample: skip (and count) it, or raise."""


class CorruptSampleError(ValueError):
    """A sample could not be read; the message names the dataset, the sample id and the file."""


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
    """A map-style dataset whose items are ``({modality: tensor}, label)``.

    ``can_skip`` says whether the dataset may skip corrupt samples (disk datasets); ``skipped``
    is how many it has skipped so far (always 0 when it cannot skip).
    """

    spec: DatasetSpec
    can_skip: ClassVar[bool] = False

    if TYPE_CHECKING:  # every dataset has a length; torch's Dataset does not declare it

        def __len__(self) -> int: ...

    @property
    def skipped(self) -> int:
        """How many samples of this split were skipped as corrupt; 0 for datasets that never skip."""
        return 0


@dataclass
class SkipCounter:
    """Samples skipped at indexing (ids) plus samples that failed to decode while loading.

    The load-time flags live in shared memory, so DataLoader worker processes update the count the
    trainer reads in the main process.
    """

    size: int
    indexed: list[str] = field(default_factory=list)

    def __post_init__(self) -> None:
        self.flags = torch.zeros(max(self.size, 1), dtype=torch.uint8).share_memory_()

    @property
    def count(self) -> int:
        return len(self.indexed) + int(self.flags.sum())


class SkippingDataset(MultimodalDataset):
    """A disk dataset whose samples may be corrupt: ``load`` reads one sample; ``__getitem__``
    applies ``on_corrupt`` (error naming the sample, or skip to the next readable one and count it)."""

    can_skip: ClassVar[bool] = True
    name: str
    on_corrupt: str
    counter: SkipCounter

    def sample_id(self, index: int) -> str:
        raise NotImplementedError

    def load(self, index: int) -> tuple[dict[str, Tensor], int]:
        raise NotImplementedError

    @property
    def skipped(self) -> int:
        """How many samples of this split were skipped (at indexing and while loading)."""
        return self.counter.count

    @property
    def skipped_ids(self) -> list[str]:
        """The samples skipped at indexing (those skipped while loading are logged as they happen)."""
        return list(self.counter.indexed)

    def __getitem__(self, index: int) -> tuple[dict[str, Tensor], int]:
        for attempt in range(len(self)):
            i = (index + attempt) % len(self)
            try:
                return self.load(i)
            except Exception as exc:  # any decoding failure is this sample's corruption
                reason = str(exc) if isinstance(exc, ValueError) else f"{type(exc).__name__}: {exc}"
                message = " ".join(f"{self.name}: corrupt sample {self.sample_id(i)!r}: {reason}".split())
                if self.on_corrupt == "error":
                    raise CorruptSampleError(message) from exc
                if not self.counter.flags[i]:
                    log.warning("%s; skipped", message)
                self.counter.flags[i] = 1
        raise CorruptSampleError(f"{self.name}: no sample of this split could be read")


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

    @property
    def device(self) -> torch.device:
        """Where the tensors live (``cpu`` unless moved with :meth:`to`)."""
        return self.labels.device

    def to(self, device: torch.device | str) -> TensorMultimodalDataset:
        """A copy of this dataset (same class, same attributes) whose tensors live on ``device``,
        moved once; ``self`` when they already do. :meth:`batch` then slices on ``device``."""
        device = torch.device(device)
        if self.labels.device == device and all(t.device == device for t in self.inputs.values()):
            return self
        moved = copy.copy(self)
        moved.inputs = {m: t.to(device) for m, t in self.inputs.items()}
        moved.labels = self.labels.to(device)
        return moved

    def batch(self, indices: Tensor) -> Batch:
        """The samples at ``indices`` (a CPU or device LongTensor; moved to :attr:`device` first)."""
        if indices.device != self.labels.device:
            indices = indices.to(self.labels.device, non_blocking=True)
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

    def skipped(self) -> dict[str, int]:
        """Corrupt samples skipped so far, by split name (``train``, ``val``, ``test``), for the
        splits whose dataset can skip (``can_skip``: disk datasets); ``{}`` for in-memory data."""
        datasets = {f.name: getattr(self, f.name) for f in fields(self)}
        return {name: int(d.skipped) for name, d in datasets.items() if getattr(d, "can_skip", False)}
