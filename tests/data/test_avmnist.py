"""AV-MNIST: FSDD MFCCs paired with MNIST images of the same digit, from the cached files."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from framework.data.avmnist import avmnist_splits
from framework.data.sources import FSDD_FILE, MNIST_FILE

N_IMAGES, N_CLIPS = 250, 100


@pytest.fixture
def data_dir(tmp_path):
    """Image i is flat with value i, clip j has every MFCC equal to j: both encode their id and digit."""
    rng = np.random.default_rng(0)
    (tmp_path / MNIST_FILE).parent.mkdir(parents=True)
    images = np.repeat(np.arange(N_IMAGES, dtype=np.uint8), 28 * 28).reshape(N_IMAGES, 28, 28)
    np.savez(tmp_path / MNIST_FILE, images=images, labels=np.arange(N_IMAGES, dtype=np.int64) % 10)
    lengths = rng.integers(6, 70, N_CLIPS).astype(np.int64)
    features = np.repeat(np.arange(N_CLIPS, dtype=np.float32), lengths)[:, None].repeat(13, 1)
    (tmp_path / FSDD_FILE).parent.mkdir(parents=True)
    np.savez(tmp_path / FSDD_FILE, features=features, lengths=lengths, labels=np.arange(N_CLIPS, dtype=np.int64) % 10)
    return tmp_path


def ids(split):
    image_ids = (split.inputs["image"][:, 0, 0, 0] * 255).round().long()
    clip_ids = split.inputs["audio"][:, 0, :, 0].round().long()[:, 0]
    return image_ids, clip_ids


def test_shapes_sizes_and_pairing(data_dir):
    splits = avmnist_splits(data_dir, normalize=False)
    assert dict(splits.spec.modalities) == {"audio": (1, 13, 40), "image": (1, 28, 28)}
    assert splits.spec.num_classes == 10
    assert (len(splits.train), len(splits.val), len(splits.test)) == (70, 10, 20)
    seen_images, seen_clips = [], []
    for split in (splits.train, splits.val, splits.test):
        image_ids, clip_ids = ids(split)
        assert torch.equal(image_ids % 10, split.labels) and torch.equal(clip_ids % 10, split.labels)
        assert len(set(image_ids.tolist())) == len(split)  # one distinct image per pair
        seen_images.append(set(image_ids.tolist()))
        seen_clips.append(set(clip_ids.tolist()))
    for a in range(3):  # no image and no recording is shared between splits
        for b in range(a + 1, 3):
            assert not seen_images[a] & seen_images[b] and not seen_clips[a] & seen_clips[b]


def test_deterministic_by_split_seed(data_dir):
    a, b, c = avmnist_splits(data_dir), avmnist_splits(data_dir), avmnist_splits(data_dir, split_seed=1)
    torch.testing.assert_close(a.train.inputs["image"], b.train.inputs["image"])
    assert not torch.equal(a.test.labels, c.test.labels) or not torch.equal(a.test.inputs["audio"], c.test.inputs["audio"])


def test_frames_are_centre_cropped_or_zero_padded(data_dir):
    splits = avmnist_splits(data_dir, audio_frames=30, normalize=False)
    lengths = np.load(data_dir / FSDD_FILE)["lengths"]
    audio = splits.train.inputs["audio"]
    _, clip_ids = ids(splits.train)
    for x, clip in zip(audio, clip_ids.tolist()):
        kept = min(int(lengths[clip]), 30)
        assert (x[0, :, :kept] == clip).all() and (x[0, :, kept:] == 0).all()


def test_images_per_clip_multiplies_training_pairs_only(data_dir):
    splits = avmnist_splits(data_dir, images_per_clip=3, normalize=False)
    assert (len(splits.train), len(splits.val), len(splits.test)) == (210, 10, 20)
    image_ids, clip_ids = ids(splits.train)
    assert torch.equal(image_ids % 10, splits.train.labels)
    for clip in set(clip_ids.tolist()):
        assert len(set(image_ids[clip_ids == clip].tolist())) == 3


def test_degrading_the_image(data_dir):
    clean = avmnist_splits(data_dir, normalize=False).test.inputs["image"]
    noisy = avmnist_splits(data_dir, image_noise=0.5, normalize=False).test.inputs["image"]
    assert abs(float((noisy - clean).std()) - 0.5) < 0.02
    again = avmnist_splits(data_dir, image_noise=0.5, normalize=False).test.inputs["image"]
    torch.testing.assert_close(noisy, again)  # the noise is fixed per sample


def test_reduced_resolution_removes_detail(tmp_path):
    (tmp_path / MNIST_FILE).parent.mkdir(parents=True)
    checker = ((np.indices((28, 28)).sum(0) % 2) * 255).astype(np.uint8)
    np.savez(tmp_path / MNIST_FILE, images=np.stack([checker] * 100), labels=np.arange(100, dtype=np.int64) % 10)
    (tmp_path / FSDD_FILE).parent.mkdir(parents=True)
    np.savez(tmp_path / FSDD_FILE, features=np.ones((600, 13), np.float32), lengths=np.full(100, 6), labels=np.arange(100) % 10)
    sharp = avmnist_splits(tmp_path, normalize=False).test.inputs["image"]
    blurred = avmnist_splits(tmp_path, image_resolution=7, normalize=False).test.inputs["image"]
    assert blurred.shape == sharp.shape
    assert float(blurred.std()) < 0.1 * float(sharp.std())


def test_audio_is_standardised_with_training_statistics(data_dir):
    splits = avmnist_splits(data_dir, audio_frames=6)  # every clip has >= 6 frames: no padding
    audio = splits.train.inputs["audio"]
    assert abs(float(audio.mean())) < 0.3 and 0.5 < float(audio.std()) < 1.5


def test_bad_options_and_missing_cache(data_dir, tmp_path):
    with pytest.raises(ValueError, match="image_resolution"):
        avmnist_splits(data_dir, image_resolution=40)
    with pytest.raises(ValueError, match="test_fraction"):
        avmnist_splits(data_dir, val_fraction=0.5, test_fraction=0.5)
    with pytest.raises(FileNotFoundError, match="framework.data.prepare"):
        avmnist_splits(tmp_path / "empty")


REAL = Path(__file__).resolve().parents[2] / "data"


@pytest.mark.skipif(
    not ((REAL / MNIST_FILE).is_file() and (REAL / FSDD_FILE).is_file()), reason="run 'python -m framework.data.prepare' first"
)
def test_real_data_splits():
    splits = avmnist_splits(REAL)
    assert (len(splits.train), len(splits.val), len(splits.test)) == (2100, 300, 600)
    assert torch.bincount(splits.test.labels).tolist() == [60] * 10
    assert torch.isfinite(splits.train.inputs["audio"]).all()
