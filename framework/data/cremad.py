"""CREMA-D (audio-visual emotion recognition, 6 classes) from the reference code's layouts.

``layout="preprocessed"`` (the MMPareto reference code's data)::

    <root>/stat.csv, train.csv, test.csv     class names; rows ``clip,label``
    <root>/audio/<clip>.pt                   spectrogram tensor per clip
    <root>/visual/<clip>/frame_000NN.jpg     frames per clip

``layout="raw"`` (the original release plus extracted frames, as OGM-GE prepares them)::

    <root>/train.csv, test.csv               rows ``clip,label`` (e.g. ``1001_DFA_ANG_XX,ANG``)
    <root>/AudioWAV/<clip>.wav               waveform; log spectrogram computed here with torch.stft
    <root>/Image-01-FPS/<clip>/*.jpg         frames per clip (``visual_dir`` to change the folder)

``layout="auto"`` picks whichever is present. See :mod:`framework.data.av_manifest` for frame
sampling, validation hold-out and corrupt-sample handling.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

from .audio import SpectrogramSettings
from .av_manifest import AVLayout, av_manifest_splits, resolve_layout
from .base import Splits

CLASSES = ("NEU", "HAP", "SAD", "FEA", "DIS", "ANG")  # the reference's order when there is no stat.csv
LAYOUTS = {
    "preprocessed": AVLayout("audio", "visual", "pt"),
    "raw": AVLayout("AudioWAV", "Image-01-FPS", "wav"),
}


def cremad_splits(
    root: str | Path,
    layout: str = "auto",
    audio_dir: str | None = None,
    visual_dir: str | None = None,
    num_frames: int = 2,
    image_size: int = 224,
    sample_rate: int = 22050,
    duration: float = 3.0,
    n_fft: int = 512,
    hop_length: int = 353,
    audio_shape: Sequence[int] | None = None,
    val_fraction: float = 0.1,
    split_seed: int = 0,
    on_corrupt: str = "skip",
    augment: str = "crop_flip",
    frame_cache: str | Path | None = None,
    frame_cache_size: int | None = None,
) -> Splits:
    """Train / val (held out of train.csv unless val.csv exists) / test splits of CREMA-D."""
    return av_manifest_splits(
        "cremad",
        root,
        resolve_layout("cremad", root, LAYOUTS, layout, audio_dir, visual_dir),
        num_classes=len(CLASSES),
        classes=CLASSES,
        num_frames=num_frames,
        image_size=image_size,
        spectrogram=SpectrogramSettings(sample_rate, duration, n_fft, hop_length),
        audio_shape=audio_shape,
        val_fraction=val_fraction,
        split_seed=split_seed,
        on_corrupt=on_corrupt,
        augment=augment,
        frame_cache=frame_cache,
        frame_cache_size=frame_cache_size,
    )
