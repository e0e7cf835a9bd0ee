"""AV-MNIST from real data that ships in packages: a spoken digit and a handwritten one.

``audio``: the MFCCs (13 per frame) of a Free Spoken Digit Dataset recording, standardised per
coefficient with training statistics and cropped (centre) or zero-padded to ``audio_frames``:
``(1, 13, audio_frames)``. ``image``: an MNIST image of the same digit, ``(1, 28, 28)``. Both come
from the cache that ``python -m framework.data.prepare`` writes (see :mod:`framework.data.sources`).

Clips and images are split into test / val / train (``test_fraction``, ``val_fraction``, the rest)
deterministically by ``split_seed``; a split pairs each of its clips with ``images_per_clip``
distinct images of the same digit from its own image pool (training only; evaluation uses one), so
no image or recording is shared between splits.

Both modalities alone are strong (about 0.9 accuracy). To set the imbalance, degrade one:
``image_noise`` (std of Gaussian pixel noise, on [0, 1] pixels), ``image_resolution`` (downsample to
``r x r`` and back), ``audio_noise`` (std on the standardised MFCCs) or fewer ``audio_frames``. The
noise is drawn once per sample (fixed), so the splits are plain tensors.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from .base import DatasetSpec, Splits, TensorMultimodalDataset
from .sources import N_MFCC, load_fsdd_mfcc, load_mnist_digits

MNIST_MEAN, MNIST_STD = 0.1307, 0.3081


def _split_indices(labels: np.ndarray, fractions: tuple[float, float], rng: np.random.Generator) -> list[np.ndarray]:
    """Per class: the first ``test_fraction`` to test, the next ``val_fraction`` to val, the rest to train."""
    parts: list[list[int]] = [[], [], []]
    for c in np.unique(labels):
        members = rng.permutation(np.flatnonzero(labels == c))
        n_test = int(round(fractions[0] * len(members)))
        n_val = int(round(fractions[1] * len(members)))
        parts[0] += members[:n_test].tolist()
        parts[1] += members[n_test : n_test + n_val].tolist()
        parts[2] += members[n_test + n_val :].tolist()
    return [np.sort(np.array(p, dtype=np.int64)) for p in parts]


def _fit_frames(clip: np.ndarray, frames: int) -> np.ndarray:
    """Centre-crop or zero-pad (at the end) a ``(T, 13)`` clip to ``frames``."""
    if clip.shape[0] >= frames:
        start = (clip.shape[0] - frames) // 2
        return clip[start : start + frames]
    return np.concatenate([clip, np.zeros((frames - clip.shape[0], clip.shape[1]), dtype=clip.dtype)])


def _pair(
    clip_labels: np.ndarray, image_idx: np.ndarray, image_labels: np.ndarray, repeats: int, rng: np.random.Generator
) -> tuple[np.ndarray, np.ndarray]:
    """For each clip, ``repeats`` images of its digit from the pool, cycling through a shuffled pool."""
    clips_out, images_out = [], []
    for c in np.unique(clip_labels):
        clips = np.flatnonzero(clip_labels == c)
        pool = rng.permutation(image_idx[image_labels[image_idx] == c])
        if pool.size == 0:
            raise ValueError(f"avmnist: no MNIST image of digit {c} in this split; use more images or a smaller split")
        count = clips.size * repeats
        chosen = pool[np.arange(count) % pool.size]
        clips_out.append(np.repeat(clips, repeats))
        images_out.append(chosen)
    order = np.argsort(np.concatenate(clips_out), kind="stable")
    return np.concatenate(clips_out)[order], np.concatenate(images_out)[order]


def avmnist_splits(
    data_dir: str | Path | None = None,
    audio_frames: int = 40,
    image_noise: float = 0.0,
    image_resolution: int = 28,
    audio_noise: float = 0.0,
    images_per_clip: int = 1,
    val_fraction: float = 0.1,
    test_fraction: float = 0.2,
    normalize: bool = True,
    split_seed: int = 0,
) -> Splits:
    """Build train / val / test AV-MNIST splits from the cached FSDD MFCCs and MNIST digits."""
    if audio_frames < 1 or not 1 <= image_resolution <= 28 or images_per_clip < 1:
        raise ValueError(
            f"avmnist: need audio_frames >= 1, 1 <= image_resolution <= 28, images_per_clip >= 1; "
            f"got {audio_frames}, {image_resolution}, {images_per_clip}"
        )
    if image_noise < 0 or audio_noise < 0:
        raise ValueError(f"avmnist: noise must be >= 0, got image_noise={image_noise}, audio_noise={audio_noise}")
    if val_fraction < 0 or test_fraction <= 0 or val_fraction + test_fraction >= 1:
        raise ValueError(f"avmnist: need val_fraction >= 0, test_fraction > 0, sum < 1; got {val_fraction}, {test_fraction}")
    clips, clip_labels = load_fsdd_mfcc(data_dir)
    images, image_labels = load_mnist_digits(data_dir)
    rng = np.random.default_rng(split_seed)
    clip_parts = _split_indices(clip_labels, (test_fraction, val_fraction), rng)
    image_parts = _split_indices(image_labels, (test_fraction, val_fraction), rng)
    train_frames = np.concatenate([clips[i] for i in clip_parts[2]])
    mean = train_frames.mean(axis=0) if normalize else np.zeros(N_MFCC, np.float32)
    std = train_frames.std(axis=0) + 1e-6 if normalize else np.ones(N_MFCC, np.float32)
    audio_np = np.stack([_fit_frames((c - mean) / std, audio_frames) for c in clips]).astype(np.float32)
    audio_all = torch.from_numpy(audio_np).transpose(1, 2)[:, None]  # (N, 1, 13, frames)
    spec = DatasetSpec({"audio": (1, N_MFCC, audio_frames), "image": (1, 28, 28)}, num_classes=10)
    generator = torch.Generator().manual_seed(split_seed)

    def build(part: int, repeats: int) -> TensorMultimodalDataset:
        clip_idx = clip_parts[part]
        local, image_idx = _pair(clip_labels[clip_idx], image_parts[part], image_labels, repeats, rng)
        clip_idx = clip_idx[local]
        audio = audio_all[torch.from_numpy(clip_idx)].clone()
        image = torch.from_numpy(images[image_idx]).float().div_(255.0)[:, None]
        if image_resolution < 28:
            small = F.interpolate(image, size=(image_resolution, image_resolution), mode="area")
            image = F.interpolate(small, size=(28, 28), mode="bilinear", align_corners=False)
        if image_noise > 0:
            image = image + image_noise * torch.randn(image.shape, generator=generator)
        if audio_noise > 0:
            audio = audio + audio_noise * torch.randn(audio.shape, generator=generator)
        if normalize:
            image = (image - MNIST_MEAN) / MNIST_STD
        labels = torch.from_numpy(clip_labels[clip_idx]).long()
        return TensorMultimodalDataset({"audio": audio, "image": image}, labels, spec)

    return Splits(train=build(2, images_per_clip), val=build(1, 1), test=build(0, 1))
