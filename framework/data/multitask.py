"""Multi-task datasets: two real items overlaid on one canvas, one task per item (Multi-MNIST).

The published construction (Sener & Koltun 2018; Lin et al., Pareto MTL, 2019): a 36x36 canvas,
one item in the upper left and one in the lower right, each shifted by up to ``shift`` pixels in
each direction (independently per sample), overlapping strokes merged by ``max``, and the canvas
resized to ``size x size`` (28, as published; 36 keeps it). The input is ONE modality, ``image``
``(1, size, size)``; the tasks are the heads: ``left`` (the upper-left item's label) and ``right``
(the lower-right item's), plus ``same`` (2 classes: are the two labels equal?) with
``third_task="same"``. Labels are a ``(N, T)`` LongTensor, one column per task in
:attr:`MultitaskSpec.tasks` order.

Items come from the cached real data (``python -m framework.data.prepare``): ``mnist`` (the 10,000
MNIST digits of :func:`~framework.data.sources.load_mnist_digits`) or ``fashion`` (the 70,000
Fashion-MNIST items of Debian's ``dataset-fashion-mnist``). Each source's items are split into
test / val / train (``test_fraction``, ``val_fraction``, the rest) by ``split_seed``, so no item is
shared between splits; pairs are then drawn within a split with the same seed: ``train_size``,
``val_size``, ``test_size`` pairs, each item used about equally often.

Difficulty, set per item (so the gap between the tasks is a config choice, logged as params):
``<item>_noise`` (std of Gaussian pixel noise on the item's 28x28 box, [0, 1] pixels, clamped),
``<item>_occlusion`` (the fraction of the item's box hidden by a black square at a random place),
``<item>_scale`` (the item shrunk by this factor inside its box). All randomness is drawn once from
``split_seed``: the splits are plain tensors.
"""

from __future__ import annotations

import inspect
import math
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor

from .base import DatasetSpec, Splits, TensorMultimodalDataset
from .sources import load_fashion_mnist, load_mnist_digits

MODALITY = "image"
ITEMS = ("left", "right")
SAME = "same"
THIRD_TASKS = ("none", SAME)
SOURCES: dict[str, Callable[[str | Path | None], tuple[np.ndarray, np.ndarray]]] = {
    "mnist": load_mnist_digits,
    "fashion": load_fashion_mnist,
}
CANVAS, ITEM = 36, 28
OFFSET = CANVAS - ITEM  # 8: the lower-right item's corner without shift
CHUNK = 8192  # pairs composed at once (memory)


@dataclass(frozen=True)
class MultitaskSpec(DatasetSpec):
    """A :class:`DatasetSpec` with several tasks: ``tasks`` maps each task (a head of the model) to
    its number of classes, in label-column order. ``num_classes`` is the largest (for code that
    reads one number); build one with :meth:`of`."""

    tasks: Mapping[str, int] = field(default_factory=dict)

    def __post_init__(self) -> None:
        super().__post_init__()
        if len(self.tasks) < 2:
            raise ValueError(f"a multi-task dataset needs at least 2 tasks, got {list(self.tasks)}")
        small = {t: c for t, c in self.tasks.items() if c < 2}
        if small:
            raise ValueError(f"every task needs at least 2 classes, got {small}")
        if self.num_classes != max(self.tasks.values()):
            largest = max(self.tasks.values())
            raise ValueError(f"num_classes must be the largest task's classes {largest}, got {self.num_classes}")

    @classmethod
    def of(cls, modalities: Mapping[str, tuple[int, ...]], tasks: Mapping[str, int]) -> MultitaskSpec:
        return cls(dict(modalities), max(tasks.values()) if tasks else 0, dict(tasks))


class MultitaskTensorDataset(TensorMultimodalDataset):
    """In-memory multi-task data: items are ``({modality: tensor}, labels)`` with ``labels`` a
    ``(T,)`` LongTensor (one label per task); batches give ``(B, T)``."""

    spec: MultitaskSpec

    def __init__(self, inputs: Mapping[str, Tensor], labels: Tensor, spec: MultitaskSpec) -> None:
        super().__init__(inputs, labels, spec)
        classes = torch.tensor(list(spec.tasks.values()))
        if self.labels.dim() != 2 or self.labels.shape[1] != len(classes):
            shape = tuple(labels.shape)
            raise ValueError(f"labels must be (N, {len(classes)}) for tasks {list(spec.tasks)}, got {shape}")
        if len(self) and ((self.labels < 0) | (self.labels >= classes)).any():
            raise ValueError(f"labels out of range for the tasks' classes {dict(spec.tasks)}")

    def __getitem__(self, index: int) -> tuple[dict[str, Tensor], Tensor]:  # type: ignore[override]
        return {m: t[index] for m, t in self.inputs.items()}, self.labels[index]


@dataclass(frozen=True)
class Difficulty:
    """How one item is degraded: Gaussian pixel noise std, fraction of its box occluded, scale."""

    noise: float = 0.0
    occlusion: float = 0.0
    scale: float = 1.0

    def check(self, item: str) -> None:
        if not (math.isfinite(self.noise) and self.noise >= 0):
            raise ValueError(f"multitask: {item}_noise must be >= 0, got {self.noise}")
        if not 0 <= self.occlusion < 1:
            raise ValueError(f"multitask: {item}_occlusion must be in [0, 1), got {self.occlusion}")
        if not 0 < self.scale <= 1:
            raise ValueError(f"multitask: {item}_scale must be in (0, 1], got {self.scale}")


def _split_parts(n: int, test_fraction: float, val_fraction: float, rng: np.random.Generator) -> list[np.ndarray]:
    """A seeded permutation of ``range(n)`` cut into test, val and train parts."""
    order = rng.permutation(n)
    n_test, n_val = round(test_fraction * n), round(val_fraction * n)
    return [order[:n_test], order[n_test : n_test + n_val], order[n_test + n_val :]]


def _draw(pool: np.ndarray, count: int, rng: np.random.Generator) -> np.ndarray:
    """``count`` items of ``pool``, cycling through shuffled copies so each is used about equally."""
    rounds = -(-count // len(pool))
    return np.concatenate([rng.permutation(pool) for _ in range(rounds)])[:count]


def _degrade(items: Tensor, difficulty: Difficulty, g: torch.Generator) -> Tensor:
    """``(N, 28, 28)`` items in [0, 1], scaled, occluded and noised as ``difficulty`` says."""
    n = items.shape[0]
    if difficulty.scale < 1:
        side = max(1, round(ITEM * difficulty.scale))
        small = F.interpolate(items[:, None], size=(side, side), mode="bilinear", antialias=True, align_corners=False)
        start = (ITEM - side) // 2
        items = torch.zeros_like(items)
        items[:, start : start + side, start : start + side] = small[:, 0].clamp(0, 1)
    if difficulty.occlusion > 0:
        side = max(1, round(ITEM * math.sqrt(difficulty.occlusion)))
        top = torch.randint(0, ITEM - side + 1, (n, 1, 1), generator=g)
        left = torch.randint(0, ITEM - side + 1, (n, 1, 1), generator=g)
        grid = torch.arange(ITEM)
        rows, cols = grid[None, :, None], grid[None, None, :]
        hidden = (rows >= top) & (rows < top + side) & (cols >= left) & (cols < left + side)
        items = items.masked_fill(hidden, 0.0)
    if difficulty.noise > 0:
        items = (items + difficulty.noise * torch.randn(items.shape, generator=g)).clamp_(0.0, 1.0)
    return items


def _place(items: Tensor, rows: Tensor, cols: Tensor) -> Tensor:
    """``(N, 28, 28)`` items on empty ``(N, 36, 36)`` canvases with their upper-left corners at
    ``(rows, cols)`` (each in ``0..8``): zero-padded, then shifted per sample by two gathers."""
    n = items.shape[0]
    padded = F.pad(items, (0, OFFSET, 0, OFFSET))
    grid = torch.arange(CANVAS)
    source_rows = (grid[None, :] - rows[:, None]) % CANVAS  # the padding's zeros wrap in
    source_cols = (grid[None, :] - cols[:, None]) % CANVAS
    placed = padded.gather(1, source_rows[:, :, None].expand(n, CANVAS, CANVAS))
    return placed.gather(2, source_cols[:, None, :].expand(n, CANVAS, CANVAS))


def compose(
    left: Tensor, right: Tensor, shift: int, size: int, g: torch.Generator, difficulty: Mapping[str, Difficulty]
) -> Tensor:
    """``(N, 28, 28)`` upper-left and lower-right items in [0, 1] -> ``(N, 1, size, size)`` canvases."""
    out = []
    for start in range(0, left.shape[0], CHUNK):
        a = _degrade(left[start : start + CHUNK], difficulty["left"], g)
        b = _degrade(right[start : start + CHUNK], difficulty["right"], g)
        n = a.shape[0]
        upper = _place(a, *(torch.randint(0, shift + 1, (n,), generator=g) for _ in range(2)))
        lower = _place(b, *(OFFSET - torch.randint(0, shift + 1, (n,), generator=g) for _ in range(2)))
        canvas = torch.maximum(upper, lower)[:, None]  # overlapping strokes merge by max
        if size != CANVAS:
            canvas = F.interpolate(canvas, size=(size, size), mode="bilinear", antialias=True, align_corners=False)
        out.append(canvas.clamp_(0.0, 1.0))
    return torch.cat(out) if out else torch.zeros(0, 1, size, size)


def multitask_splits(
    data_dir: str | Path | None = None,
    left: str = "mnist",
    right: str = "mnist",
    third_task: str = "none",
    size: int = 28,
    shift: int = 4,
    left_noise: float = 0.0,
    right_noise: float = 0.0,
    left_occlusion: float = 0.0,
    right_occlusion: float = 0.0,
    left_scale: float = 1.0,
    right_scale: float = 1.0,
    same_fraction: float | None = None,
    train_size: int = 40000,
    val_size: int = 5000,
    test_size: int = 10000,
    val_fraction: float = 0.1,
    test_fraction: float = 0.2,
    normalize: bool = True,
    split_seed: int = 0,
) -> Splits:
    """Train / val / test splits of overlaid pairs; see the module docstring for every option.

    ``left`` and ``right`` name each position's source (``mnist`` or ``fashion``). ``same_fraction``
    (null: pairs drawn independently, so labels agree ~10% of the time) forces that fraction of
    pairs to share a label, e.g. to balance the ``same`` task.
    """
    for key, source in (("left", left), ("right", right)):
        if source not in SOURCES:
            raise ValueError(f"multitask: unknown {key} source {source!r}; valid: {', '.join(SOURCES)}")
    if third_task not in THIRD_TASKS:
        raise ValueError(f"multitask: unknown third_task {third_task!r}; valid: {', '.join(THIRD_TASKS)}")
    if size not in (ITEM, CANVAS) and not 8 <= size <= 64:
        raise ValueError(f"multitask: size must be in 8..64 (28 as published, 36 = the canvas), got {size}")
    if not 0 <= shift <= OFFSET // 2:
        raise ValueError(f"multitask: shift must be in 0..{OFFSET // 2} pixels, got {shift}")
    if same_fraction is not None and not 0 <= same_fraction <= 1:
        raise ValueError(f"multitask: same_fraction must be in [0, 1] or null, got {same_fraction}")
    if min(train_size, val_size, test_size) < 1:
        given = f"{train_size}, {val_size}, {test_size}"
        raise ValueError(f"multitask: train_size, val_size, test_size must be >= 1, got {given}")
    if val_fraction <= 0 or test_fraction <= 0 or val_fraction + test_fraction >= 1:
        fractions = f"{val_fraction}, {test_fraction}"
        raise ValueError(f"multitask: need val_fraction > 0, test_fraction > 0, sum < 1; got {fractions}")
    difficulty = {
        "left": Difficulty(float(left_noise), float(left_occlusion), float(left_scale)),
        "right": Difficulty(float(right_noise), float(right_occlusion), float(right_scale)),
    }
    for item, d in difficulty.items():
        d.check(item)

    rng = np.random.default_rng(split_seed)
    g = torch.Generator().manual_seed(split_seed)
    pools: dict[str, tuple[np.ndarray, np.ndarray, list[np.ndarray]]] = {}
    for source in dict.fromkeys((left, right)):
        images, labels = SOURCES[source](data_dir)
        parts = _split_parts(len(labels), test_fraction, val_fraction, rng)
        if any(len(p) == 0 for p in parts):
            raise ValueError(f"multitask: {source} has {len(labels)} items, too few for test/val/train fractions")
        pools[source] = (images, labels, parts)
    tasks = {"left": int(pools[left][1].max()) + 1, "right": int(pools[right][1].max()) + 1}
    if third_task == SAME:
        tasks[SAME] = 2
    spec = MultitaskSpec.of({MODALITY: (1, size, size)}, tasks)

    def pairs(part: int, count: int) -> tuple[Tensor, Tensor]:
        left_images, left_labels, left_parts = pools[left]
        right_images, right_labels, right_parts = pools[right]
        a = _draw(left_parts[part], count, rng)
        b = _draw(right_parts[part], count, rng)
        if left == right:  # never the same item twice in one pair
            clash = a == b
            b[clash] = np.roll(b, 1)[clash] if count > 1 else b[clash]
        if same_fraction is not None:
            forced = rng.random(count) < same_fraction
            pool = right_parts[part]
            for c in np.unique(left_labels[a[forced]]):
                members = pool[right_labels[pool] == c]
                rows = np.flatnonzero(forced & (left_labels[a] == c))
                if members.size:
                    b[rows] = rng.choice(members, size=rows.size)
        y_left, y_right = left_labels[a], right_labels[b]
        columns = [y_left, y_right] + ([(y_left == y_right).astype(np.int64)] if third_task == SAME else [])
        x = compose(
            torch.from_numpy(left_images[a]).float().div_(255.0),
            torch.from_numpy(right_images[b]).float().div_(255.0),
            shift,
            size,
            g,
            difficulty,
        )
        return x, torch.from_numpy(np.stack(columns, axis=1)).long()

    sizes = {"train": (2, train_size), "val": (1, val_size), "test": (0, test_size)}  # parts: test, val, train
    built = {name: pairs(part, count) for name, (part, count) in sizes.items()}
    if normalize:
        train_x = built["train"][0]
        mean, std = float(train_x.mean()), float(train_x.std()) + 1e-6
        built = {name: ((x - mean) / std, y) for name, (x, y) in built.items()}
    return Splits(**{name: MultitaskTensorDataset({MODALITY: x}, y, spec) for name, (x, y) in built.items()})


def _fixed_sources(name: str, left: str, right: str, what: str) -> Callable[..., Splits]:
    """:func:`multitask_splits` with both sources fixed: one named dataset (``<name>_splits``), so
    runs and reports tell the datasets apart; its signature is the general one minus ``left``/``right``."""

    def splits(data_dir: str | Path | None = None, **options: object) -> Splits:
        return multitask_splits(data_dir, left=left, right=right, **options)  # type: ignore[arg-type]

    signature = inspect.signature(multitask_splits)
    splits.__signature__ = signature.replace(  # type: ignore[attr-defined]
        parameters=[p for p in signature.parameters.values() if p.name not in ITEMS]
    )
    splits.__annotations__ = {k: v for k, v in multitask_splits.__annotations__.items() if k not in ITEMS}
    splits.__name__ = splits.__qualname__ = f"{name}_splits"
    splits.__doc__ = f"{what}: :func:`multitask_splits` with ``left={left!r}``, ``right={right!r}``."
    return splits


multi_mnist_splits = _fixed_sources("multi_mnist", "mnist", "mnist", "Multi-MNIST (two MNIST digits)")
multi_fashion_splits = _fixed_sources("multi_fashion", "fashion", "fashion", "Multi-Fashion (two Fashion-MNIST items)")
multi_fashion_mnist_splits = _fixed_sources(
    "multi_fashion_mnist",
    "mnist",
    "fashion",
    "Multi-(Fashion+MNIST) (an MNIST digit upper left, a Fashion-MNIST item lower right)",
)
