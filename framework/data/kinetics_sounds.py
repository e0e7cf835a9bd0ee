"""Kinetics-Sounds (audio-visual action recognition, 31 classes), the same manifest design as CREMA-D.

``layout="preprocessed"``: ``<root>/audio/<clip>.pt`` spectrograms; ``layout="raw"``:
``<root>/audio/<clip>.wav`` waveforms (10 s at 16 kHz, log spectrogram computed here with
torch.stft). Both: ``<root>/visual/<clip>/*.jpg`` frames, ``train.csv`` / ``test.csv`` rows
``clip,label``, and the class names in ``stat.csv`` (else the sorted labels of train.csv); there
must be 31. ``layout="auto"`` picks by the audio files' extension. See
:mod:`framework.data.av_manifest` for frame sampling, validation and corrupt samples.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

from .audio import SpectrogramSettings
from .av_manifest import AVLayout, av_manifest_splits, resolve_layout
from .base import Splits

NUM_CLASSES = 31
LAYOUTS = {
    "preprocessed": AVLayout("audio", "visual", "pt"),
    "raw": AVLayout("audio", "visual", "wav"),
}


def kinetics_sounds_splits(
    root: str | Path,
    layout: str = "auto",
    audio_dir: str | None = None,
    visual_dir: str | None = None,
    classes: Sequence[str] | None = None,
    num_frames: int = 3,
    image_size: int = 224,
    sample_rate: int = 16000,
    duration: float = 10.0,
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
    """Train / val (held out of train.csv unless val.csv exists) / test splits of Kinetics-Sounds."""
    return av_manifest_splits(
        "kinetics_sounds",
        root,
        resolve_layout("kinetics_sounds", root, LAYOUTS, layout, audio_dir, visual_dir),
        num_classes=NUM_CLASSES,
        classes=classes,
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
