"""How a dataset's batches are loaded: in-memory datasets (:class:`~framework.data.base.TensorMultimodalDataset`)
are sliced on their device, disk datasets go through a ``DataLoader`` whose settings
(:class:`LoaderSettings`) default per device; :class:`BatchSource` keeps one ``DataLoader`` across
epochs (persistent workers) with the same order and augmentation as a fresh one per epoch
(:func:`iterate_batches`), and a corrupt sample met in a worker raises its own one-line error.

:mod:`framework.data.base` re-exports these names; the dataset contract is imported from it where
it is used at run time, so that either module can be imported first.
"""

from __future__ import annotations

import os
import random
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, fields, replace
from typing import TYPE_CHECKING, Any

import numpy as np
import torch
from torch import Tensor
from torch.utils.data import (
    BatchSampler,
    DataLoader,
    Dataset,
    RandomSampler,
    Sampler,
    SequentialSampler,
    get_worker_info,
)

if TYPE_CHECKING:
    from .base import Batch, MultimodalDataset, Splits


def splits_to(splits: Splits, device: torch.device | str) -> Splits:
    """``splits`` with every in-memory split (:class:`TensorMultimodalDataset`) moved to ``device``
    once; disk datasets are left as they are (their batches come through a ``DataLoader``)."""
    from .base import TensorMultimodalDataset

    moved = {
        f.name: d.to(device) if isinstance(d := getattr(splits, f.name), TensorMultimodalDataset) else d
        for f in fields(splits)
    }
    return replace(splits, **moved)


def available_cpus() -> int:
    """CPUs this process may use: ``SLURM_CPUS_PER_TASK`` when set, else its CPU affinity."""
    slurm = os.environ.get("SLURM_CPUS_PER_TASK", "").strip()
    if slurm.isdigit() and int(slurm) > 0:
        return int(slurm)
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # not Linux
        return os.cpu_count() or 1


@dataclass(frozen=True)
class LoaderSettings:
    """``DataLoader`` settings for disk datasets; ``None`` = the default for the device
    (:meth:`resolve`). In-memory datasets ignore them (they are sliced, not loaded)."""

    num_workers: int | None = None
    pin_memory: bool | None = None
    persistent_workers: bool | None = None
    prefetch_factor: int | None = None

    def __post_init__(self) -> None:
        if self.num_workers is not None and self.num_workers < 0:
            raise ValueError(f"num_workers must be >= 0 (or null for the device default), got {self.num_workers}")
        if self.prefetch_factor is not None and self.prefetch_factor < 1:
            raise ValueError(f"prefetch_factor must be >= 1 (or null), got {self.prefetch_factor}")

    def resolve(self, device: torch.device | str | None = None) -> LoaderSettings:
        """Every field set. On CUDA: ``num_workers = min(8, available_cpus())``, ``pin_memory``,
        persistent workers and ``prefetch_factor = 4``; elsewhere today's behaviour: no workers, no
        pinning, no persistence, the DataLoader's prefetch (2). An explicit value always wins;
        persistence and prefetching need workers, so they are off (None) without them."""
        cuda = device is not None and torch.device(device).type == "cuda"
        workers = self.num_workers if self.num_workers is not None else (min(8, available_cpus()) if cuda else 0)
        pin = self.pin_memory if self.pin_memory is not None else cuda
        persistent = self.persistent_workers if self.persistent_workers is not None else cuda
        prefetch = self.prefetch_factor if self.prefetch_factor is not None else (4 if cuda else 2)
        return LoaderSettings(
            num_workers=workers,
            pin_memory=bool(pin),
            persistent_workers=bool(persistent) and workers > 0,
            prefetch_factor=prefetch if workers > 0 else None,
        )


def loader_settings(loader: LoaderSettings | int | None, device: torch.device | str | None = None) -> LoaderSettings:
    """Resolved settings from what callers pass: an ``int`` is the old ``num_workers`` argument
    (that many workers, nothing else: exactly the old behaviour), ``None`` the device defaults."""
    if loader is None:
        loader = LoaderSettings()
    elif isinstance(loader, int):
        loader = LoaderSettings(num_workers=loader, pin_memory=False, persistent_workers=False, prefetch_factor=2)
    return loader.resolve(device)


def _draw_seed(generator: torch.Generator | None) -> int:
    """The draw a ``DataLoader`` iterator makes for its workers' base seed (``generator`` or, when
    ``None``, torch's global generator)."""
    return int(torch.empty((), dtype=torch.int64).random_(generator=generator).item())


class EpochSeededSampler(Sampler[list[tuple[int, int]]]):
    """A batch sampler that makes, per epoch, the draws a fresh ``DataLoader`` iterator makes: the
    workers' base seed from ``generator`` (torch's global one when ``None``), then the batches of
    ``batches()``; each index is handed on as ``(base_seed, index)`` so that :class:`EpochSeeded`
    reseeds persistent workers exactly as fresh ones are seeded."""

    def __init__(
        self, batches: Callable[[], Iterable[list[int]]], length: int, generator: torch.Generator | None
    ) -> None:
        self.batches, self.length, self.generator = batches, length, generator

    def __len__(self) -> int:
        return self.length

    def __iter__(self) -> Iterator[list[tuple[int, int]]]:
        seed = _draw_seed(self.generator)
        for batch in self.batches():
            yield [(seed, int(i)) for i in batch]


def _generate_state(base_seed: int, worker_id: int) -> Any:
    from torch.utils.data._utils.worker import _generate_state as generate

    return generate(base_seed, worker_id)


class EpochSeeded(Dataset):
    """``dataset`` indexed by ``(base_seed, index)``: in a worker process, a new ``base_seed``
    (a new epoch) reseeds ``random``, ``torch`` and ``numpy`` exactly as ``DataLoader`` seeds a
    fresh worker (``base_seed + worker_id``), so persistent workers augment as fresh ones do and
    a resumed run as an uninterrupted one. In the main process (no workers) nothing is reseeded,
    as with a plain ``DataLoader``."""

    def __init__(self, dataset: Dataset) -> None:
        self.dataset = dataset
        self.seed: int | None = None

    def __len__(self) -> int:
        return len(self.dataset)  # type: ignore[arg-type]

    def __getitem__(self, key: tuple[int, int]) -> Any:
        seed, index = key
        info = get_worker_info()
        if info is not None and seed != self.seed:
            self.seed = seed
            random.seed(seed + info.id)
            torch.manual_seed(seed + info.id)
            np.random.seed(_generate_state(seed, info.id))
        return self.dataset[index]


def _loader(dataset: Dataset, sampler: EpochSeededSampler, settings: LoaderSettings) -> DataLoader:
    extra: dict[str, Any] = {"prefetch_factor": settings.prefetch_factor} if settings.num_workers else {}
    return DataLoader(
        EpochSeeded(dataset),
        batch_sampler=sampler,
        num_workers=settings.num_workers or 0,
        pin_memory=bool(settings.pin_memory),
        persistent_workers=bool(settings.persistent_workers),
        generator=torch.Generator(),  # its own base-seed draw is ignored: the sampler makes the real one
        **extra,
    )


class BatchSource:
    """The batches of one dataset, one epoch per ``iter()``, holding its ``DataLoader`` across
    epochs (so persistent workers persist).

    The order is the one :func:`iterate_batches` gives, drawn from ``generator`` by the same calls
    (so a checkpointed ``generator`` resumes the same epochs): in-memory datasets are sliced
    (indices moved to the dataset's device; the permutation is drawn on the CPU), disk datasets
    go through a ``DataLoader`` with ``loader`` settings (:class:`LoaderSettings`, or an ``int``:
    the old ``num_workers``) resolved for ``device``. ``batches``: an epoch's index batches
    instead of the default shuffled / in-order ones (the sharded variants)."""

    def __init__(
        self,
        dataset: MultimodalDataset,
        batch_size: int,
        shuffle: bool,
        generator: torch.Generator | None = None,
        loader: LoaderSettings | int | None = 0,
        device: torch.device | str | None = None,
        batches: Callable[[], Iterable[list[int]]] | None = None,
        length: int | None = None,
    ) -> None:
        self.dataset, self.batch_size, self.shuffle, self.generator = dataset, batch_size, shuffle, generator
        self.settings = loader_settings(loader, device)
        size = len(dataset)
        self._default_batches = batches is None
        if batches is None:
            order = RandomSampler(range(size), generator=generator) if shuffle else SequentialSampler(range(size))
            batch_sampler = BatchSampler(order, batch_size, drop_last=False)
            self.batches: Callable[[], Iterable[list[int]]] = lambda: batch_sampler
            self.length = len(batch_sampler)
        else:
            self.batches, self.length = batches, length if length is not None else num_batches(dataset, batch_size)
        self._loader: DataLoader | None = None

    def __len__(self) -> int:
        return self.length

    def __iter__(self) -> Iterator[Batch]:
        from .base import TensorMultimodalDataset

        if isinstance(self.dataset, TensorMultimodalDataset):
            yield from self._slices()
            return
        if self._loader is None:
            sampler = EpochSeededSampler(self.batches, self.length, self.generator)
            self._loader = _loader(self.dataset, sampler, self.settings)
        yield from load_batches(self._loader)

    def _slices(self) -> Iterator[Batch]:
        from .base import TensorMultimodalDataset

        assert isinstance(self.dataset, TensorMultimodalDataset)
        if self._default_batches and self.shuffle:  # one permutation, as iterate_batches draws it
            order = torch.randperm(len(self.dataset), generator=self.generator)
            chunks: Iterable[Tensor] = order.split(self.batch_size)
        elif self._default_batches:
            chunks = torch.arange(len(self.dataset)).split(self.batch_size)
        else:
            chunks = (torch.tensor(b, dtype=torch.long) for b in self.batches())
        for chunk in chunks:
            yield self.dataset.batch(chunk)

    def close(self) -> None:
        """Stop persistent workers now (they also stop when the source is garbage collected)."""
        self._loader = None


def iterate_batches(
    dataset: MultimodalDataset,
    batch_size: int,
    shuffle: bool,
    generator: torch.Generator | None = None,
    num_workers: int | LoaderSettings = 0,
    device: torch.device | str | None = None,
) -> Iterator[Batch]:
    """Yield one epoch's batches; in-memory datasets are sliced directly (on their device), others
    go through a ``DataLoader``. ``num_workers``: an ``int`` (the old argument, unchanged
    behaviour) or :class:`LoaderSettings` resolved for ``device``; persistent workers only persist
    across epochs through a :class:`BatchSource` kept by the caller."""
    from .base import TensorMultimodalDataset

    if isinstance(dataset, TensorMultimodalDataset):
        order = torch.randperm(len(dataset), generator=generator) if shuffle else torch.arange(len(dataset))
        for start in range(0, len(dataset), batch_size):
            yield dataset.batch(order[start : start + batch_size])
        return
    if isinstance(num_workers, LoaderSettings):
        settings = replace(num_workers.resolve(device), persistent_workers=False)
        yield from BatchSource(dataset, batch_size, shuffle, generator, settings)
        return
    loader = DataLoader(
        dataset,
        batch_size=batch_size,
        shuffle=shuffle,
        generator=generator,
        num_workers=num_workers,
        persistent_workers=False,
    )
    yield from load_batches(loader)


def load_batches(loader: Iterable[Batch]) -> Iterator[Batch]:
    """The batches of a ``DataLoader``; a corrupt sample met in a worker process raises its own
    one-line :class:`CorruptSampleError` (the DataLoader re-raises it with the worker's traceback
    in the message)."""
    from .base import CorruptSampleError

    try:
        yield from loader
    except CorruptSampleError as error:
        raise CorruptSampleError(worker_message(error)) from None


def worker_message(error: BaseException) -> str:
    """The message an error had in the DataLoader worker that raised it ("Caught ... in DataLoader
    worker process N.", the worker's traceback, then the original last line)."""
    text = str(error)
    if "DataLoader worker" not in text.split("\n", 1)[0]:
        return text
    last = text.strip().splitlines()[-1]
    prefix = f"{type(error).__module__}.{type(error).__qualname__}: "
    return last.removeprefix(prefix)


def num_batches(dataset: MultimodalDataset, batch_size: int) -> int:
    return -(-len(dataset) // batch_size)
