"""The decoded-frame cache (``frame_cache``) of CREMA-D and Kinetics-Sounds: evaluation and
training give bit-identical tensors to decoding (same seed, same draws), and a second
construction decodes nothing."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from framework.data import cremad, images, kinetics_sounds

KS_CLASSES = [f"class_{i:02d}" for i in range(kinetics_sounds.NUM_CLASSES)]


def write_cremad(writers, root: Path, frame_size: tuple[int, int] = (24, 32)) -> Path:
    clips = {
        "train": [f"1{i:03d}_DFA_{c}_XX@{c}" for i, c in enumerate(cremad.CLASSES * 2)],
        "test": [f"2{i:03d}_IEO_{c}_HI@{c}" for i, c in enumerate(cremad.CLASSES)],
    }
    writers.write_av_manifest(
        root,
        clips,
        cremad.LAYOUTS["preprocessed"],
        classes=cremad.CLASSES,
        spectrogram_shape=(8, 6),
        frames_per_clip=5,
        frame_size=frame_size,
    )
    return root


@pytest.fixture
def counted(monkeypatch) -> list[str]:
    calls: list[str] = []
    decode = images.decode_image

    def counting(path, size, augment="none"):
        calls.append(str(path))
        return decode(path, size, augment)

    monkeypatch.setattr(images, "decode_image", counting)
    return calls


def samples(dataset, seed: int) -> list:
    torch.manual_seed(seed)
    return [dataset[i] for i in range(len(dataset))]


def assert_identical(first, second):
    for (x, y), (u, v) in zip(first, second, strict=True):
        assert y == v
        for m in x:
            assert torch.equal(x[m], u[m]), m


@pytest.mark.parametrize("augment", ["crop_flip", "flip", "none"])
def test_cached_samples_are_bit_identical(tmp_path, writers, augment):
    root = write_cremad(writers, tmp_path / "cremad", frame_size=(40, 56))
    plain = cremad.cremad_splits(root, image_size=16, augment=augment)
    cached = cremad.cremad_splits(root, image_size=16, augment=augment, frame_cache=tmp_path / "cache")
    for split in ("train", "val", "test"):
        assert_identical(samples(getattr(plain, split), 3), samples(getattr(cached, split), 3))
    # the training transform's draws are the same: the generator ends in the same state
    torch.manual_seed(5)
    plain.train[0]
    state = torch.get_rng_state()
    torch.manual_seed(5)
    cached.train[0]
    assert torch.equal(state, torch.get_rng_state())


def test_cache_is_built_once(tmp_path, writers, counted):
    root = write_cremad(writers, tmp_path / "cremad")
    cremad.cremad_splits(root, image_size=16, frame_cache=tmp_path / "cache")
    built = len(counted)
    assert built > 0
    counted.clear()
    again = cremad.cremad_splits(root, image_size=16, frame_cache=tmp_path / "cache")
    for split in (again.train, again.val, again.test):
        samples(split, 0)
    assert counted == []  # neither construction nor loading decoded a frame
    # evaluation caches only the frames it samples (one per segment); training those it may sample
    assert again.test.frames is not None and len(again.test.frames.rows) == len(again.test) * 2
    assert len(again.train.frames.rows) == len(again.train) * 4  # 5 frames: segments of 2, 2 used each


def test_changed_frames_get_a_new_cache(tmp_path, writers, counted):
    root = write_cremad(writers, tmp_path / "cremad")
    cremad.cremad_splits(root, image_size=16, frame_cache=tmp_path / "cache")
    clip = sorted((root / "visual").iterdir())[0]
    images.write_image(clip / "frame_00001.jpg", np.zeros((24, 32, 3), dtype=np.uint8))
    counted.clear()
    splits = cremad.cremad_splits(root, image_size=16, frame_cache=tmp_path / "cache")
    assert counted  # that split was decoded again
    plain = cremad.cremad_splits(root, image_size=16)
    assert_identical(samples(plain.test, 0), samples(splits.test, 0))


def test_corrupt_frame_behaves_as_without_a_cache(tmp_path, writers):
    root = write_cremad(writers, tmp_path / "cremad")
    clip = sorted((root / "visual").iterdir())[0]
    for frame in clip.iterdir():
        frame.write_bytes(b"not a jpeg")
    plain = cremad.cremad_splits(root, image_size=16, on_corrupt="error")
    cached = cremad.cremad_splits(root, image_size=16, on_corrupt="error", frame_cache=tmp_path / "cache")
    for split in ("train", "val", "test"):
        dataset, other = getattr(plain, split), getattr(cached, split)
        for i in range(len(dataset)):
            torch.manual_seed(i)
            try:
                expected = dataset[i]
            except Exception as error:
                with pytest.raises(type(error), match="cannot decode image"):
                    other[i]
            else:
                torch.manual_seed(i)
                assert_identical([expected], [other[i]])


def test_kinetics_sounds_cache(tmp_path, writers):
    root = tmp_path / "ks"
    clips = {
        "train": [f"yt{i:03d}@{KS_CLASSES[i % 3]}" for i in range(6)],
        "test": [f"yt{i:03d}@{KS_CLASSES[i % 3]}" for i in range(6, 9)],
    }
    writers.write_av_manifest(
        root,
        clips,
        kinetics_sounds.LAYOUTS["preprocessed"],
        classes=KS_CLASSES,
        spectrogram_shape=(8, 6),
        frames_per_clip=7,
    )
    plain = kinetics_sounds.kinetics_sounds_splits(root, image_size=16, val_fraction=0.0)
    cached = kinetics_sounds.kinetics_sounds_splits(root, image_size=16, val_fraction=0.0, frame_cache=tmp_path / "c")
    for split in ("train", "test"):
        assert_identical(samples(getattr(plain, split), 1), samples(getattr(cached, split), 1))


def test_downscaled_training_cache_keeps_shapes_and_randomness(tmp_path, writers):
    """``frame_cache_size`` stores smaller training frames: not bit-identical (documented), but the
    same shapes, the same generator draws, and evaluation still exact."""
    root = write_cremad(writers, tmp_path / "cremad", frame_size=(40, 56))
    plain = cremad.cremad_splits(root, image_size=16)
    cached = cremad.cremad_splits(root, image_size=16, frame_cache=tmp_path / "c", frame_cache_size=20)
    assert cached.train.frames.image(0, 0).size == (28, 20)
    torch.manual_seed(0)
    x, _ = cached.train[0]
    state = torch.get_rng_state()
    torch.manual_seed(0)
    y, _ = plain.train[0]
    assert torch.equal(state, torch.get_rng_state()) and x["visual"].shape == y["visual"].shape
    assert_identical(samples(plain.test, 0), samples(cached.test, 0))
