"""Which samples each rank of a data-parallel run trains and evaluates on.

**Training: the global batch does not depend on the world size.** Every rank draws the same
permutation of the train split from the run's seeded generator, exactly as the single-process
loop does (:func:`~framework.data.base.iterate_batches`; through a ``DataLoader`` the same draws
as its ``RandomSampler``), and cuts it into global batches of ``trainer.batch_size``. Rank ``r``
of ``R`` takes the ``r``-th of ``R`` equal contiguous chunks of each global batch. So for a given
seed, the union of the ranks' shards is the global batch a single process trains on, whatever
``R`` is.

**Equal shards.** ``trainer.batch_size`` must be a multiple of ``R`` (checked by
:func:`framework.config.validation.validate`). A last, partial global batch is trimmed to a multiple of
``R`` (at most ``R - 1`` samples of the epoch left out; none for one process) and dropped if less
than ``R`` samples remain. Every rank's shard of a step then has the same size, which is what
makes the mean over ranks of the per-shard mean-loss gradients equal to the gradient of the global
batch's mean loss.

**Evaluation** is split too: rank ``r`` evaluates samples ``r, r + R, ...`` (every sample once),
and the ranks' counts are summed.
"""

from __future__ import annotations

from collections.abc import Iterator, Sized
from dataclasses import replace
from typing import cast

import torch
from torch import Tensor
from torch.utils.data import DataLoader

from .base import (
    Batch,
    BatchSource,
    LoaderSettings,
    MultimodalDataset,
    TensorMultimodalDataset,
    load_batches,
    loader_settings,
)


def _length(dataset: MultimodalDataset) -> int:
    """``len(dataset)``: every dataset has one, but :class:`MultimodalDataset` does not declare ``__len__``."""
    return len(cast(Sized, dataset))


def shard_of(batch: Tensor, rank: int, world_size: int) -> Tensor:
    """Rank ``rank``'s equal contiguous part of the global ``batch`` of indices (trimmed to a
    multiple of ``world_size``)."""
    per_rank = batch.numel() // world_size
    return batch[rank * per_rank : (rank + 1) * per_rank]


class ShardedBatches:
    """A batch sampler: this rank's shard of every global batch of an epoch.

    ``like_loader``: also make the generator draw that a ``DataLoader``'s ``RandomSampler`` makes
    when it runs out (a second permutation), so that the generator, checkpointed with the run,
    is in the single-process state at the end of every epoch.
    """

    def __init__(
        self, size: int, batch_size: int, rank: int, world_size: int, generator: torch.Generator, like_loader: bool
    ) -> None:
        if batch_size % world_size:
            raise ValueError(f"trainer.batch_size={batch_size}: must be a multiple of the world size {world_size}")
        self.size, self.batch_size, self.rank, self.world_size = size, batch_size, rank, world_size
        self.generator, self.like_loader = generator, like_loader

    def __len__(self) -> int:
        full, rest = divmod(self.size, self.batch_size)
        return full + int(rest >= self.world_size)

    def __iter__(self) -> Iterator[list[int]]:
        order = torch.randperm(self.size, generator=self.generator)
        starts = range(0, self.size, self.batch_size)
        for start in starts:
            last = start == starts[-1]
            partial = start + self.batch_size > self.size
            if last and partial and self.like_loader:  # RandomSampler runs out before a partial batch
                torch.randperm(self.size, generator=self.generator)
            shard = shard_of(order[start : start + self.batch_size], self.rank, self.world_size)
            if shard.numel():
                yield shard.tolist()
        if self.like_loader and self.size % self.batch_size == 0:
            torch.randperm(self.size, generator=self.generator)  # ... or on the request after a full one


def batch_source(
    dataset: MultimodalDataset,
    batch_size: int,
    train: bool,
    generator: torch.Generator | None,
    loader: LoaderSettings | int | None,
    device: torch.device | str | None,
    rank: int = 0,
    world_size: int = 1,
) -> BatchSource:
    """The batches of ``dataset`` a trainer iterates, one epoch per ``iter()``: shuffled by
    ``generator`` for training, in order for evaluation; this rank's shard of each global batch on
    several ranks."""
    if world_size == 1:
        return BatchSource(dataset, batch_size, train, generator, loader, device)
    if train:
        assert generator is not None  # training shuffles
        return sharded_train_source(dataset, batch_size, rank, world_size, generator, loader, device)
    return sharded_eval_source(dataset, batch_size, rank, world_size, loader, device)


def sharded_train_source(
    dataset: MultimodalDataset,
    batch_size: int,
    rank: int,
    world_size: int,
    generator: torch.Generator,
    loader: LoaderSettings | int | None = None,
    device: torch.device | str | None = None,
) -> BatchSource:
    """:func:`sharded_train_batches` as a :class:`BatchSource` kept across epochs (persistent
    workers); each ``iter()`` is one epoch, drawn from ``generator`` by the same calls."""
    in_memory = isinstance(dataset, TensorMultimodalDataset)
    sampler = ShardedBatches(_length(dataset), batch_size, rank, world_size, generator, like_loader=not in_memory)
    return BatchSource(
        dataset, batch_size, True, generator, loader, device, batches=lambda: sampler, length=len(sampler)
    )


def sharded_eval_source(
    dataset: MultimodalDataset,
    batch_size: int,
    rank: int,
    world_size: int,
    loader: LoaderSettings | int | None = None,
    device: torch.device | str | None = None,
) -> BatchSource:
    """:func:`sharded_eval_batches` as a :class:`BatchSource` kept across evaluations."""
    chunks = [c.tolist() for c in torch.arange(rank, _length(dataset), world_size).split(batch_size)]
    return BatchSource(dataset, batch_size, False, None, loader, device, batches=lambda: chunks, length=len(chunks))


def sharded_train_batches(
    dataset: MultimodalDataset,
    batch_size: int,
    rank: int,
    world_size: int,
    generator: torch.Generator,
    num_workers: int | LoaderSettings = 0,
    device: torch.device | str | None = None,
) -> Iterator[Batch]:
    """This rank's shard of each global training batch of one epoch (shuffled by ``generator``).
    ``num_workers``: an ``int`` (the old argument) or :class:`LoaderSettings` for ``device``."""
    if isinstance(dataset, TensorMultimodalDataset):
        for shard in ShardedBatches(len(dataset), batch_size, rank, world_size, generator, like_loader=False):
            yield dataset.batch(torch.tensor(shard, dtype=torch.long))
        return
    if isinstance(num_workers, LoaderSettings):
        settings = replace(loader_settings(num_workers, device), persistent_workers=False)
        yield from sharded_train_source(dataset, batch_size, rank, world_size, generator, settings)
        return
    sampler = ShardedBatches(_length(dataset), batch_size, rank, world_size, generator, like_loader=True)
    loader = DataLoader(dataset, batch_sampler=sampler, generator=generator, num_workers=num_workers)
    yield from load_batches(loader)


def sharded_eval_batches(
    dataset: MultimodalDataset,
    batch_size: int,
    rank: int,
    world_size: int,
    num_workers: int | LoaderSettings = 0,
    device: torch.device | str | None = None,
) -> Iterator[Batch]:
    """Samples ``rank, rank + world_size, ...`` of ``dataset`` in order, in batches of ``batch_size``."""
    if isinstance(dataset, TensorMultimodalDataset):
        for chunk in torch.arange(rank, len(dataset), world_size).split(batch_size):
            yield dataset.batch(chunk)
        return
    if isinstance(num_workers, LoaderSettings):
        settings = replace(loader_settings(num_workers, device), persistent_workers=False)
        yield from sharded_eval_source(dataset, batch_size, rank, world_size, settings)
        return
    chunks = list(torch.arange(rank, _length(dataset), world_size).split(batch_size))
    yield from load_batches(DataLoader(dataset, batch_sampler=[c.tolist() for c in chunks], num_workers=num_workers))
