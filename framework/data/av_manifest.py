"""Audio-visual datasets described by a manifest: CSV rows ``clip,label``, one audio file and one
frame folder per clip (CREMA-D, Kinetics-Sounds, and any dataset laid out the same way).

Layout under ``root``::

    train.csv, test.csv         rows ``clip,label`` (label: a class name, or its index)
    val.csv                     optional; otherwise ``val_fraction`` of train.csv is held out
    stat.csv                    optional: the class names, one per row (first column), sorted as
                                the reference code does; without it the dataset's default list
    <audio_dir>/<clip>.pt       a spectrogram tensor per clip (F, T) or (1, F, T), or
    <audio_dir>/<clip>.wav      a waveform, turned into a log spectrogram here (torch.stft)
    <visual_dir>/<clip>/*.jpg   the clip's frames (jpg/jpeg/png), in name order

Each sample is ``{"audio": (1, F, T), "visual": (num_frames, 3, S, S)}``. Frames are sampled as the
reference code does: the folder's frames are cut into ``num_frames`` equal segments; training takes
a random frame of each segment, evaluation the segment's middle frame, rounded down, as the
reference picks it from its 1-based frame names (the first of 2 or 3 frames, the second of 4 or 5).

Bad input: a missing root, split file or folder raises ``FileNotFoundError`` naming the path and
the expected layout. A sample whose files are missing, whose label is unknown or whose files do not
decode is *corrupt* (so is a WAV holding fewer samples than its header declares; a clip shorter
than ``duration`` is not): ``on_corrupt="error"`` stops with a one-line error naming the clip id,
the file and the reason;
``on_corrupt="skip"`` drops it (samples found at indexing) or substitutes the next readable sample
(samples that fail to decode while loading, in any worker process). ``dataset.skipped`` counts the
skipped samples of a split; ``skipped_ids`` lists those found at indexing (the shared
mechanism: :class:`framework.data.base.SkippingDataset`).
"""

from __future__ import annotations

import csv
import logging
import os
import pickle
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from torch import Tensor

from .audio import SpectrogramSettings, fit_shape, load_spectrogram
from .base import ON_CORRUPT, CorruptSampleError, DatasetSpec, SkipCounter, SkippingDataset, Splits
from .frame_cache import FrameCache, frame_cache
from .images import AUGMENTATIONS, list_images, load_image, transform_image

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


class AVManifestDataset(SkippingDataset):
    """One split of a manifest dataset; decoding happens in ``__getitem__`` (DataLoader workers)."""

    def __init__(
        self,
        name: str,
        clips: list[Clip],
        skipped: list[str],
        spec: DatasetSpec,
        train: bool,
        layout: AVLayout,
        num_frames: int,
        image_size: int,
        spectrogram: SpectrogramSettings,
        on_corrupt: str,
        augment: str,
        frames: FrameCache | None = None,
    ) -> None:
        self.name, self.clips, self.spec, self.train = name, clips, spec, train
        self.frames = frames
        self.layout, self.num_frames, self.image_size = layout, num_frames, image_size
        self.spectrogram, self.on_corrupt, self.augment = spectrogram, on_corrupt, augment
        self.counter = SkipCounter(len(clips), list(skipped))
        self.audio_shape = tuple(spec.modalities["audio"])

    def __len__(self) -> int:
        return len(self.clips)

    def sample_id(self, index: int) -> str:
        return self.clips[index].clip_id

    def reachable_frames(self, count: int) -> list[int]:
        """Every frame index :meth:`frame_indices` may return for a clip of ``count`` frames."""
        seg = max(1, count // self.num_frames)
        offsets = range(seg) if self.train else [max(seg // 2 - 1, 0)]
        return sorted({min(i * seg + o, count - 1) for i in range(self.num_frames) for o in offsets})

    def frame_indices(self, count: int) -> list[int]:
        """The reference's sampling: ``num_frames`` segments of ``seg = count // num_frames`` frames;
        training takes a random frame of each, evaluation frame number ``i*seg + seg//2`` of the
        reference's 1-based names, i.e. index ``i*seg + seg//2 - 1`` (the first frame where
        ``seg`` is 1)."""
        seg = max(1, count // self.num_frames)
        indices = []
        for i in range(self.num_frames):
            offset = int(torch.randint(0, seg, ())) if self.train else max(seg // 2 - 1, 0)
            indices.append(min(i * seg + offset, count - 1))
        return indices

    def load_audio(self, clip: Clip) -> Tensor:
        if self.layout.audio_format == "wav":
            return load_spectrogram(clip.audio, self.spectrogram)
        x = load_preprocessed(clip.audio)
        if x.dim() == 2:
            x = x.unsqueeze(0)
        try:
            return fit_shape(x, self.audio_shape)
        except ValueError as exc:
            raise ValueError(f"{clip.audio}: preprocessed spectrogram of the wrong rank ({exc})") from None

    def load(self, index: int) -> tuple[dict[str, Tensor], int]:
        clip = self.clips[index]
        audio = self.load_audio(clip)
        augment = self.augment if self.train else "none"
        frames = [self.load_frame(index, clip, i, augment) for i in self.frame_indices(len(clip.frames))]
        return {"audio": audio, "visual": torch.stack(frames)}, clip.label

    def load_frame(self, index: int, clip: Clip, frame: int, augment: str) -> Tensor:
        """Frame ``frame`` of sample ``index``: from the frame cache when there is one (the same
        tensor, the same random draws), else decoded from its file."""
        cached = self.frames.image(index, frame) if self.frames is not None else None
        if cached is None:
            return load_image(os.path.join(clip.frames_dir, clip.frames[frame]), self.image_size, augment)
        return transform_image(cached, self.image_size, augment)

    def cache_frames(self, directory: str | Path, max_side: int | None = None) -> None:
        """Decode this split's frames (those it may sample) once into a cache under ``directory``
        (:mod:`framework.data.frame_cache`), or open the one already there."""
        stored = "full" if self.train and self.augment == "crop_flip" else "resized"
        frames = [
            (c, f, os.path.join(clip.frames_dir, clip.frames[f]))
            for c, clip in enumerate(self.clips)
            for f in self.reachable_frames(len(clip.frames))
        ]
        self.frames = frame_cache(directory, self.name, frames, stored, self.image_size, max_side)


def load_preprocessed(path: str | Path) -> Tensor:
    """A preprocessed spectrogram (``torch.save`` of one tensor) as float32; ``ValueError`` naming the
    file when it is not one (corrupt, truncated, another object, non-finite values)."""
    try:
        x = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # torch reports a damaged file as a RuntimeError or an unpickling error
        raise ValueError(
            f"{path}: corrupt preprocessed data file ({_torch_reason(exc)}); regenerate it from the clip's audio "
            "with the preprocessing that wrote it (the project has no step that writes .pt spectrograms; "
            "the wav layout computes them from <clip>.wav), or delete it to drop the clip"
        ) from None
    if not isinstance(x, Tensor):
        raise ValueError(f"{path}: preprocessed data file holds a {type(x).__name__}, not a tensor")
    if not torch.isfinite(x).all():
        raise ValueError(f"{path}: preprocessed data file has non-finite values")
    return x.float()


def _torch_reason(error: BaseException) -> str:
    """What is wrong with a file ``torch.load`` refused, without torch's advice about checkpoints."""
    if isinstance(error, pickle.UnpicklingError):
        return "not written by torch.save, or holds objects other than tensors"
    first = str(error).strip().split(". ")[0].split("\n")[0]
    return f"torch.load: {first[:160]}" if first else f"torch.load: {type(error).__name__}"


def _index_split(
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


def _stratified_holdout(rows: list[list[str]], fraction: float, seed: int) -> tuple[list[list[str]], list[list[str]]]:
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


def av_manifest_splits(
    name: str,
    root: str | Path,
    layout: AVLayout,
    num_classes: int,
    classes: Sequence[str] | None = None,
    num_frames: int = 2,
    image_size: int = 224,
    spectrogram: SpectrogramSettings | None = None,
    audio_shape: Sequence[int] | None = None,
    val_fraction: float = 0.1,
    split_seed: int = 0,
    on_corrupt: str = "skip",
    augment: str = "crop_flip",
    frame_cache: str | Path | None = None,
    frame_cache_size: int | None = None,
) -> Splits:
    """Index ``train.csv`` / ``val.csv`` / ``test.csv`` under ``root`` into train, val and test splits.

    ``frame_cache``: a folder where each split's frames are decoded once and kept
    (:mod:`framework.data.frame_cache`; ``None``: decode every time); ``frame_cache_size``: store
    training frames (``crop_flip``) downscaled to this shorter side (``None``: full resolution, the
    only bit-identical choice)."""
    if on_corrupt not in ON_CORRUPT:
        raise ValueError(f"{name}: unknown on_corrupt {on_corrupt!r}; valid choices: {', '.join(ON_CORRUPT)}")
    if augment not in AUGMENTATIONS:
        raise ValueError(f"{name}: unknown augment {augment!r}; valid choices: {', '.join(AUGMENTATIONS)}")
    if num_frames < 1 or image_size < 1:
        raise ValueError(f"{name}: num_frames and image_size must be >= 1, got {num_frames}, {image_size}")
    if not 0.0 <= val_fraction < 1.0:
        raise ValueError(f"{name}: val_fraction must be in [0, 1), got {val_fraction}")
    root = Path(root)
    expected = layout.describe(root)
    if not root.is_dir():
        raise FileNotFoundError(f"{name}: dataset root {root} not found; expected layout: {expected}")
    for folder in (layout.audio_dir, layout.visual_dir):
        if not (root / folder).is_dir():
            raise FileNotFoundError(f"{name}: {root / folder} not found; expected layout: {expected}")
    train_rows = read_rows(root / "train.csv", expected)
    test_rows = read_rows(root / "test.csv", expected)
    if (root / "val.csv").is_file():
        val_rows = read_rows(root / "val.csv", expected)
    else:
        train_rows, val_rows = _stratified_holdout(train_rows, val_fraction, split_seed)
    classes = class_names(root, classes, train_rows + val_rows, num_classes, name)
    val_source = root / ("val.csv" if (root / "val.csv").is_file() else "train.csv")
    indexed = {
        split: _index_split(name, root, rows, classes, layout, on_corrupt, split, source)
        for split, rows, source in (
            ("train", train_rows, root / "train.csv"),
            ("val", val_rows, val_source),
            ("test", test_rows, root / "test.csv"),
        )
    }
    if not indexed["train"][0]:
        raise ValueError(f"{name}: no readable training clips under {root}; expected layout: {expected}")
    spectrogram = spectrogram or SpectrogramSettings()
    if audio_shape is not None:
        shape = tuple(int(s) for s in audio_shape)
        shape = (1, *shape) if len(shape) == 2 else shape
    elif layout.audio_format == "wav":
        shape = spectrogram.shape
    else:
        shape = _first_audio_shape(name, indexed["train"][0])
    spec = DatasetSpec({"audio": shape, "visual": (num_frames, 3, image_size, image_size)}, num_classes)

    def make(split: str, train: bool) -> AVManifestDataset:
        clips, skipped = indexed[split]
        dataset = AVManifestDataset(
            f"{name}/{split}",
            clips,
            skipped,
            spec,
            train,
            layout,
            num_frames,
            image_size,
            spectrogram,
            on_corrupt,
            augment,
        )
        if frame_cache is not None:
            dataset.cache_frames(frame_cache, frame_cache_size)
        return dataset

    return Splits(train=make("train", True), val=make("val", False), test=make("test", False))


def _first_audio_shape(name: str, clips: list[Clip]) -> tuple[int, ...]:
    """The spectrogram shape of the first training clip that loads (all clips are fit to it)."""
    first_error = ""
    for clip in clips[:20]:
        try:
            x = load_preprocessed(clip.audio)
        except ValueError as error:
            first_error = first_error or str(error).split(";")[0]
            continue
        if x.dim() in (2, 3):
            return tuple((1, *x.shape) if x.dim() == 2 else x.shape)
        first_error = first_error or f"{clip.audio}: a tensor of shape {tuple(x.shape)}, not (F, T) or (1, F, T)"
    raise CorruptSampleError(
        f"{name}: none of the first {min(len(clips), 20)} training spectrograms (.pt) could be read "
        f"(first: {first_error}); set audio_shape"
    )
