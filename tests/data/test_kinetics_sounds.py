"""Kinetics-Sounds: the CREMA-D manifest design with 31 classes and 10 s audio."""

from __future__ import annotations

import pytest

from framework.data import kinetics_sounds

CLASSES = [f"playing instrument {i:02d}" for i in range(31)]


def clip_list(classes, n_train=6, n_test=3):
    return {
        "train": [f"yt_{i:03d}_000010@{classes[i % len(classes)]}" for i in range(n_train)],
        "test": [f"yt_{i:03d}_000020@{classes[i % len(classes)]}" for i in range(n_test)],
    }


@pytest.mark.parametrize("layout", ["preprocessed", "raw"])
def test_both_layouts_load(tmp_path, writers, layout):
    root = tmp_path / "ks"
    options = {"spectrogram_shape": (257, 454)} if layout == "preprocessed" else {"wav_seconds": 0.3}
    writers.write_av_manifest(root, clip_list(CLASSES[:3]), kinetics_sounds.LAYOUTS[layout], classes=CLASSES, **options)
    splits = kinetics_sounds.kinetics_sounds_splits(root, image_size=16)
    # 10 s at 16 kHz, hop 353: the reference's (257, 454) spectrogram either way
    assert dict(splits.spec.modalities) == {"audio": (1, 257, 454), "visual": (3, 3, 16, 16)}
    assert splits.spec.num_classes == 31
    assert len(splits.train) + len(splits.val) == 6 and len(splits.test) == 3
    inputs, label = splits.test[1]
    assert inputs["audio"].shape == (1, 257, 454) and label == sorted(CLASSES).index(CLASSES[1])


def test_classes_from_train_labels_need_all_31(tmp_path, writers):
    root = tmp_path / "ks"
    writers.write_av_manifest(root, clip_list(CLASSES[:3]), kinetics_sounds.LAYOUTS["preprocessed"], spectrogram_shape=(8, 8))
    with pytest.raises(ValueError, match=r"labels of .*train\.csv gives 3 classes, expected 31"):
        kinetics_sounds.kinetics_sounds_splits(root)
    all_classes = clip_list(CLASSES, n_train=31)
    writers.write_av_manifest(root, all_classes, kinetics_sounds.LAYOUTS["preprocessed"], spectrogram_shape=(8, 8))
    splits = kinetics_sounds.kinetics_sounds_splits(root, image_size=8, val_fraction=0.0)
    assert len(splits.train) == 31 and splits.spec.num_classes == 31


def test_numeric_labels_index_the_classes(tmp_path, writers):
    root = tmp_path / "ks"
    clips = {"train": [f"c{i}@{i}" for i in range(4)], "test": ["t0@30"]}
    writers.write_av_manifest(root, clips, kinetics_sounds.LAYOUTS["preprocessed"], classes=CLASSES, spectrogram_shape=(8, 8))
    splits = kinetics_sounds.kinetics_sounds_splits(root, image_size=8, val_fraction=0.0)
    assert [c.label for c in splits.train.clips] == [0, 1, 2, 3] and splits.test.clips[0].label == 30


def test_missing_audio_folder_is_a_layout_error(tmp_path, writers):
    root = tmp_path / "ks"
    writers.write_av_manifest(root, clip_list(CLASSES[:3]), kinetics_sounds.LAYOUTS["preprocessed"], classes=CLASSES, spectrogram_shape=(8, 8))
    for f in (root / "audio").iterdir():
        f.unlink()
    with pytest.raises(FileNotFoundError, match=r"no audio files under .*audio/<clip>\.pt.*audio/<clip>\.wav"):
        kinetics_sounds.kinetics_sounds_splits(root)
