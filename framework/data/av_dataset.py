"""One split of a manifest dataset (:class:`AVManifestDataset`): a sample's audio (a preprocessed
spectrogram ``.pt``, or a ``.wav`` turned into one) and its frames, sampled as the reference code
does (``num_frames`` equal segments; training a random frame of each, evaluation the segment's
middle one), decoded from their files or taken from a frame cache (:mod:`framework.data.frame_cache`).
"""

from __future__ import annotations

import os
import pickle
from pathlib import Path

import torch
from torch import Tensor

from .audio import SpectrogramSettings, fit_shape, load_spectrogram
from .av_index import AVLayout, Clip
from .base import DatasetSpec, SkipCounter, SkippingDataset
from .frame_cache import FrameCache, frame_cache
from .images import load_image, transform_image


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
