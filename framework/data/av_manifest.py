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

The pieces: :mod:`framework.data.av_index` (layouts, CSV rows, classes, indexing a split) and
:mod:`framework.data.av_dataset` (one split: decoding audio and frames); this module builds the
splits and re-exports their public names.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

from .audio import SpectrogramSettings
from .av_dataset import AVManifestDataset, load_preprocessed
from .av_index import (
    AUDIO_FORMATS,
    AVLayout,
    Clip,
    class_names,
    index_split,
    read_rows,
    resolve_layout,
    stratified_holdout,
)
from .base import ON_CORRUPT, CorruptSampleError, DatasetSpec, Splits
from .images import AUGMENTATIONS

__all__ = [
    "AUDIO_FORMATS",
    "AVLayout",
    "AVManifestDataset",
    "Clip",
    "av_manifest_splits",
    "class_names",
    "load_preprocessed",
    "read_rows",
    "resolve_layout",
]


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
        train_rows, val_rows = stratified_holdout(train_rows, val_fraction, split_seed)
    classes = class_names(root, classes, train_rows + val_rows, num_classes, name)
    val_source = root / ("val.csv" if (root / "val.csv").is_file() else "train.csv")
    indexed = {
        split: index_split(name, root, rows, classes, layout, on_corrupt, split, source)
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
