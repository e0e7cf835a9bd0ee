"""ModelNet40 as two image modalities: two of the 12 MVCNN-style rendered views of each object.

Layout under ``root`` (MVCNN's ``modelnet40_images_new_12x``)::

    <class>/<train|test>/<object><view>.png     e.g. airplane/train/airplane_0001.obj.shaded_v001.png

Files are grouped into objects by the name with its last number removed (``view_pattern``); an
object's views are ordered by that number, and view ``k`` is the ``k``-th (0-based). ``views`` maps
each modality to a view index; the default ``{front: 0, rear: 6}`` are the paper's front and rear
views. There are 40 classes (the folder names must be among :data:`CLASSES`). An object without
``views_per_object`` views is corrupt: skipped and counted, or an error (``on_corrupt``). Training
images get a random horizontal flip (``augment``), evaluation images none. The validation split is
held out of the training objects, per class (at least one object of
every class that has two or more).
"""

from __future__ import annotations

import logging
import os
import re
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from torch import Tensor

from .base import ON_CORRUPT, CorruptSampleError, DatasetSpec, SkipCounter, SkippingDataset, Splits
from .images import AUGMENTATIONS, IMAGE_EXTENSIONS, load_image

log = logging.getLogger(__name__)

CLASSES = (
    "airplane", "bathtub", "bed", "bench", "bookshelf", "bottle", "bowl", "car", "chair", "cone",
    "cup", "curtain", "desk", "door", "dresser", "flower_pot", "glass_box", "guitar", "keyboard", "lamp",
    "laptop", "mantel", "monitor", "night_stand", "person", "piano", "plant", "radio", "range_hood", "sink",
    "sofa", "stairs", "stool", "table", "tent", "toilet", "tv_stand", "vase", "wardrobe", "xbox",
)  # fmt: skip
VIEW_PATTERN = r"^(?P<object>.*?)(?P<view>\d+)\.(?:png|jpe?g)$"


@dataclass(frozen=True)
class ViewObject:
    object_id: str
    label: int
    paths: tuple[str, ...]  # one per modality, in modality order


class ModelNet40ViewsDataset(SkippingDataset):
    """One split; images are decoded in ``__getitem__`` (DataLoader workers)."""

    def __init__(
        self, name: str, objects: list[ViewObject], skipped: list[str], spec: DatasetSpec, train: bool,
        image_size: int, augment: str, on_corrupt: str,
    ) -> None:  # fmt: skip
        self.name, self.objects, self.spec, self.train = name, objects, spec, train
        self.image_size, self.augment, self.on_corrupt = image_size, augment, on_corrupt
        self.modalities = list(spec.modalities)
        self.counter = SkipCounter(len(objects), list(skipped))

    def __len__(self) -> int:
        return len(self.objects)

    def sample_id(self, index: int) -> str:
        return self.objects[index].object_id

    def load(self, index: int) -> tuple[dict[str, Tensor], int]:
        obj = self.objects[index]
        augment = self.augment if self.train else "none"
        return {m: load_image(p, self.image_size, augment) for m, p in zip(self.modalities, obj.paths)}, obj.label


def _index(
    root: Path, split: str, views: Mapping[str, int], views_per_object: int, pattern: re.Pattern[str], on_corrupt: str
) -> tuple[list[ViewObject], list[str]]:
    objects: list[ViewObject] = []
    skipped: list[str] = []
    unknown = sorted(p.name for p in root.iterdir() if p.is_dir() and p.name not in CLASSES)
    if unknown:
        raise ValueError(f"modelnet40_views: {root} has class folders that are not ModelNet40 classes: {unknown[:5]}")
    for label, cls in enumerate(CLASSES):
        folder = root / cls / split
        if not folder.is_dir():
            continue
        grouped: dict[str, list[tuple[int, str]]] = {}
        with os.scandir(folder) as entries:
            for entry in entries:
                if not entry.name.lower().endswith(IMAGE_EXTENSIONS):
                    continue
                match = pattern.match(entry.name)
                if match is None:
                    continue
                grouped.setdefault(f"{cls}/{split}/{match['object']}", []).append((int(match["view"]), entry.path))
        for object_id in sorted(grouped):
            ordered = [path for _, path in sorted(grouped[object_id])]
            if len(ordered) != views_per_object:
                message = (
                    f"modelnet40_views: corrupt sample {object_id!r}: {len(ordered)} views, "
                    f"expected {views_per_object} (in {folder})"
                )
                if on_corrupt == "error":
                    raise CorruptSampleError(message)
                skipped.append(object_id)
                continue
            objects.append(ViewObject(object_id, label, tuple(ordered[v] for v in views.values())))
    if skipped:
        log.warning("modelnet40_views/%s: skipped %d objects with missing views (first: %s)", split, len(skipped), ", ".join(skipped[:5]))
    return objects, skipped


def modelnet40_views_splits(
    root: str | Path,
    views: Mapping[str, int] | None = None,
    views_per_object: int = 12,
    image_size: int = 224,
    augment: str = "flip",
    view_pattern: str = VIEW_PATTERN,
    val_fraction: float = 0.1,
    split_seed: int = 0,
    on_corrupt: str = "skip",
) -> Splits:
    """Train / val (held out of train, per class) / test splits; one modality per chosen view."""
    views = dict(views or {"front": 0, "rear": 6})
    root = Path(root)
    expected = f"{root}/<class>/<train|test>/<object>_<view>.png, 12 views per object, class folders from the 40 ModelNet40 classes"
    if on_corrupt not in ON_CORRUPT:
        raise ValueError(f"modelnet40_views: unknown on_corrupt {on_corrupt!r}; valid choices: {', '.join(ON_CORRUPT)}")
    if augment not in AUGMENTATIONS:
        raise ValueError(f"modelnet40_views: unknown augment {augment!r}; valid choices: {', '.join(AUGMENTATIONS)}")
    if len(views) < 1 or any(not 0 <= int(v) < views_per_object for v in views.values()):
        raise ValueError(f"modelnet40_views: views must map modalities to view indices in [0, {views_per_object}), got {views}")
    if not root.is_dir():
        raise FileNotFoundError(f"modelnet40_views: dataset root {root} not found; expected layout: {expected}")
    pattern = re.compile(view_pattern)
    if not {"object", "view"} <= set(pattern.groupindex):
        raise ValueError(f"modelnet40_views: view_pattern needs named groups 'object' and 'view', got {view_pattern!r}")
    indexed = {split: _index(root, split, views, views_per_object, pattern, on_corrupt) for split in ("train", "test")}
    for split, (objects, _) in indexed.items():
        if not objects:
            raise FileNotFoundError(f"modelnet40_views: no {split} objects under {root}; expected layout: {expected}")
    train_objects, train_skipped = indexed["train"]
    rng = np.random.default_rng(split_seed)
    held: set[int] = set()
    labels = np.array([o.label for o in train_objects])
    for label in np.unique(labels):
        members = np.flatnonzero(labels == label)
        count = int(round(val_fraction * len(members)))
        if val_fraction > 0 and count == 0 and len(members) > 1:
            count = 1
        held.update(rng.permutation(members)[:count].tolist())
    spec = DatasetSpec({m: (3, image_size, image_size) for m in views}, num_classes=len(CLASSES))

    def make(split: str, objects: list[ViewObject], skipped: list[str], train: bool) -> ModelNet40ViewsDataset:
        return ModelNet40ViewsDataset(f"modelnet40_views/{split}", objects, skipped, spec, train, image_size, augment, on_corrupt)

    return Splits(
        train=make("train", [o for i, o in enumerate(train_objects) if i not in held], train_skipped, True),
        val=make("val", [o for i, o in enumerate(train_objects) if i in held], [], False),
        test=make("test", *indexed["test"], False),
    )

