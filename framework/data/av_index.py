"""Where a manifest dataset's files are and which clips each split holds: the layouts
(:class:`AVLayout`, picked by :func:`resolve_layout`), the CSV rows ``clip,label`` of ``train.csv`` /
``val.csv`` / ``test.csv``, the class names (``stat.csv``, a default list, or the train labels), a
stratified validation holdout, and the indexing of a split's rows into :class:`Clip`\\ s (cheap: no
decoding), where a row with a missing file or an unknown label is corrupt.
"""

from __future__ import annotations

import csv
import logging
import os
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from .base import CorruptSampleError
from .images import list_images

log = logging.getLogger(__name__)

AUDIO_FORMATS = ("pt", "wav")


@dataclass(frozen=True)
class AVLayout:
    """Where a layout keeps its files, relative to the root."""

    audio_dir: str
    visual_dir: str
    audio_format: str  # pt | wav

    def __post_init__(self) -> None:
        if self.audio_format not in AUDIO_FORMATS:
            raise ValueError(f"unknown audio_format {self.audio_format!r}; valid choices: {', '.join(AUDIO_FORMATS)}")

    def describe(self, root: Path | str = "<root>") -> str:
        return (
            f"{root}/{{train,test}}.csv (rows clip,label), optional stat.csv (class names), "
            f"{root}/{self.audio_dir}/<clip>.{self.audio_format}, {root}/{self.visual_dir}/<clip>/<frame>.jpg"
        )


@dataclass(frozen=True)
class Clip:
    clip_id: str
    label: int
    audio: str
    frames_dir: str
    frames: tuple[str, ...]


def read_rows(path: Path, expected: str) -> list[list[str]]:
    """Non-empty CSV rows of ``path`` (UTF-8, BOM tolerated)."""
    if not path.is_file():
        raise FileNotFoundError(f"{path} not found; expected layout: {expected}")
    try:
        with path.open(encoding="utf-8-sig", newline="") as f:
            return [[c.strip() for c in row] for row in csv.reader(f) if row and any(c.strip() for c in row)]
    except (OSError, UnicodeDecodeError, csv.Error) as exc:
        raise ValueError(f"{path}: unreadable ({exc}); expected layout: {expected}") from exc


def class_names(
    root: Path, default: Sequence[str] | None, train_rows: list[list[str]], num_classes: int, name: str
) -> list[str]:
    """``stat.csv`` (sorted, as the reference), else ``default``, else the sorted train labels."""
    stat = root / "stat.csv"
    if stat.is_file():
        classes = sorted({row[0] for row in read_rows(stat, "stat.csv: one class name per row")})
        source = str(stat)
    elif default:
        classes, source = list(default), f"the default {name} classes"
    else:
        classes = sorted({row[1] for row in train_rows if len(row) > 1})
        source = f"the labels of {root / 'train.csv'}"
    if len(classes) != num_classes:
        raise ValueError(f"{name}: {source} gives {len(classes)} classes, expected {num_classes}")
    return classes


def _label_index(label: str, classes: Sequence[str]) -> int | None:
    if label in classes:
        return classes.index(label)
    if label.isdigit() and int(label) < len(classes):
        return int(label)
    return None


def index_split(
    name: str,
    root: Path,
    rows: list[list[str]],
    classes: Sequence[str],
    layout: AVLayout,
    on_corrupt: str,
    split: str,
    source: Path,
) -> tuple[list[Clip], list[str]]:
    """Check every row's label and files (cheap: no decoding); corrupt rows per ``on_corrupt``.
    ``source``: the CSV file the rows come from, named by a row's error."""
    audio_dir, visual_dir = root / layout.audio_dir, root / layout.visual_dir
    clips: list[Clip] = []
    skipped: list[str] = []
    for row in rows:
        clip_id = row[0]
        problem = None
        label = _label_index(row[1], classes) if len(row) > 1 else None
        audio = audio_dir / f"{clip_id}.{layout.audio_format}"
        frames_dir = visual_dir / clip_id
        frames: list[str] = []
        if len(row) < 2:
            problem = f"its row in {source} has no label"
        elif label is None:
            problem = f"label {row[1]!r} is not one of the {len(classes)} classes (in {source})"
        elif not audio.is_file():
            problem = f"missing audio file {audio}"
        elif not frames_dir.is_dir():
            problem = f"missing frame folder {frames_dir}"
        else:
            frames = list_images(frames_dir)
            if not frames:
                problem = f"no .jpg/.png frames in {frames_dir}"
        if problem is not None:
            message = f"{name}: corrupt sample {clip_id!r}: {problem}"
            if on_corrupt == "error":
                raise CorruptSampleError(message)
            skipped.append(clip_id)
            continue
        assert label is not None
        clips.append(Clip(clip_id, label, str(audio), str(frames_dir), tuple(frames)))
    if skipped:
        log.warning("%s/%s: skipped %d corrupt samples (first: %s)", name, split, len(skipped), ", ".join(skipped[:5]))
    return clips, skipped


def stratified_holdout(rows: list[list[str]], fraction: float, seed: int) -> tuple[list[list[str]], list[list[str]]]:
    """Hold out ``fraction`` of the rows of each label (at least one where a label has two or more)."""
    rng = np.random.default_rng(seed)
    by_label: dict[str, list[int]] = {}
    for i, row in enumerate(rows):
        by_label.setdefault(row[1] if len(row) > 1 else "", []).append(i)
    held: set[int] = set()
    for label in sorted(by_label):
        members = by_label[label]
        count = round(fraction * len(members))
        if fraction > 0 and count == 0 and len(members) > 1:
            count = 1
        held.update(rng.permutation(members)[:count].tolist())
    return [r for i, r in enumerate(rows) if i not in held], [r for i, r in enumerate(rows) if i in held]


def _has_file_with(folder: Path, extension: str) -> bool:
    if not folder.is_dir():
        return False
    with os.scandir(folder) as entries:
        return any(e.name.endswith(extension) for e in entries)


def resolve_layout(
    name: str,
    root: str | Path,
    layouts: dict[str, AVLayout],
    layout: str = "auto",
    audio_dir: str | None = None,
    visual_dir: str | None = None,
) -> AVLayout:
    """Pick a named layout (``auto``: the first whose audio folder holds files of its format),
    with ``audio_dir`` / ``visual_dir`` overriding its folders."""
    root = Path(root)
    choices = ", ".join(["auto", *layouts])
    if layout not in ("auto", *layouts):
        raise ValueError(f"{name}: unknown layout {layout!r}; valid choices: {choices}")
    described = "; or ".join(f"{k}: {v.describe(root)}" for k, v in layouts.items())
    if not root.is_dir():
        raise FileNotFoundError(f"{name}: dataset root {root} not found; expected layout {described}")
    if layout == "auto":
        found = [
            k for k, v in layouts.items() if _has_file_with(root / (audio_dir or v.audio_dir), f".{v.audio_format}")
        ]
        if not found:
            raise FileNotFoundError(f"{name}: no audio files under {root}; expected layout {described}")
        layout = found[0]
    chosen = layouts[layout]
    return AVLayout(audio_dir or chosen.audio_dir, visual_dir or chosen.visual_dir, chosen.audio_format)
