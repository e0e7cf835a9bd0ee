"""CREMA-D in both on-disk layouts, through the same code path users run (``cremad_splits``).

Also covers what the shared audio-visual manifest code does for every such dataset: frame
sampling, the validation hold-out, the layout errors and corrupt-sample handling.
"""

from __future__ import annotations

import csv
import logging
from pathlib import Path

import numpy as np
import pytest
import torch

from framework.data import av_manifest, cremad
from framework.data.base import CorruptSampleError, iterate_batches
from framework.data.images import write_image

SMALL = {"image_size": 16}


def clips(per_class: int = 2, test_per_class: int = 1) -> dict[str, list[str]]:
    return {
        "train": [f"1{i:03d}_DFA_{c}_XX@{c}" for i, c in enumerate(cremad.CLASSES * per_class)],
        "test": [f"2{i:03d}_IEO_{c}_HI@{c}" for i, c in enumerate(cremad.CLASSES * test_per_class)],
    }


def write(writers, root: Path, layout: str) -> Path:
    classes = cremad.CLASSES if layout == "preprocessed" else None
    options = {"spectrogram_shape": (32, 20)} if layout == "preprocessed" else {"wav_seconds": 0.2}
    writers.write_av_manifest(root, clips(), cremad.LAYOUTS[layout], classes=classes, **options)
    return root


def rows(path: Path) -> list[list[str]]:
    with path.open() as f:
        return list(csv.reader(f))


@pytest.fixture
def preprocessed(tmp_path, writers) -> Path:
    return write(writers, tmp_path / "cremad", "preprocessed")


@pytest.fixture
def raw(tmp_path, writers) -> Path:
    return write(writers, tmp_path / "cremad", "raw")


def test_preprocessed_layout(preprocessed):
    splits = cremad.cremad_splits(preprocessed, **SMALL)
    assert dict(splits.spec.modalities) == {"audio": (1, 32, 20), "visual": (2, 3, 16, 16)}
    assert splits.spec.num_classes == 6
    assert (len(splits.train), len(splits.val), len(splits.test)) == (6, 6, 6)
    inputs, label = splits.test[0]
    assert inputs["audio"].shape == (1, 32, 20) and inputs["visual"].shape == (2, 3, 16, 16)
    # stat.csv classes are sorted, as in the reference code
    assert sorted(cremad.CLASSES).index("ANG") == 0
    first = rows(preprocessed / "test.csv")[0]
    assert label == sorted(cremad.CLASSES).index(first[1])
    saved = torch.load(preprocessed / "audio" / f"{first[0]}.pt")
    torch.testing.assert_close(inputs["audio"][0], saved)


def test_raw_layout_computes_the_spectrogram_with_torch(raw):
    splits = cremad.cremad_splits(raw, **SMALL)
    assert dict(splits.spec.modalities) == {"audio": (1, 257, 188), "visual": (2, 3, 16, 16)}
    inputs, label = splits.test[0]
    assert inputs["audio"].shape == (1, 257, 188) and torch.isfinite(inputs["audio"]).all()
    # without stat.csv the reference's class order (NEU, HAP, SAD, FEA, DIS, ANG)
    assert label == cremad.CLASSES.index(rows(raw / "test.csv")[0][1])


def test_auto_layout_and_explicit_layout_agree(raw):
    auto = cremad.cremad_splits(raw, **SMALL)
    explicit = cremad.cremad_splits(raw, layout="raw", **SMALL)
    torch.testing.assert_close(auto.test[1][0]["audio"], explicit.test[1][0]["audio"])


def test_raw_layout_with_another_frame_folder(tmp_path, writers):
    root = tmp_path / "cremad"
    writers.write_av_manifest(root, clips(), av_manifest.AVLayout("AudioWAV", "frames", "wav"), wav_seconds=0.1)
    with pytest.raises(FileNotFoundError, match="Image-01-FPS"):
        cremad.cremad_splits(root, **SMALL)
    assert len(cremad.cremad_splits(root, visual_dir="frames", **SMALL).test) == 6


def test_frames_random_segments_in_training_centred_in_evaluation(preprocessed):
    splits = cremad.cremad_splits(preprocessed, num_frames=3, **SMALL)
    assert splits.spec.modalities["visual"] == (3, 3, 16, 16)
    # 10 frames in 3 segments of 3: evaluation takes frame i*3 + 3//2 of the 1-based names, as the reference
    assert splits.test.frame_indices(10) == [0, 3, 6]
    assert splits.test.frame_indices(12) == [1, 5, 9]
    assert splits.test.frame_indices(2) == [0, 1, 1]  # fewer frames than asked: repeat the last
    torch.manual_seed(0)
    draws = {tuple(splits.train.frame_indices(10)) for _ in range(50)}
    assert len(draws) > 1
    for draw in draws:
        assert [d // 3 for d in draw] == [0, 1, 2]  # one frame from each segment, in order


def test_eval_samples_are_deterministic_training_samples_are_not(preprocessed):
    splits = cremad.cremad_splits(preprocessed, **SMALL)
    torch.testing.assert_close(splits.test[0][0]["visual"], splits.test[0][0]["visual"])
    torch.manual_seed(0)
    a = splits.train[0][0]["visual"]
    b = splits.train[0][0]["visual"]
    assert not torch.equal(a, b)


def test_validation_is_a_stratified_holdout_or_val_csv(preprocessed):
    splits = cremad.cremad_splits(preprocessed, **SMALL)
    train_ids = {c.clip_id for c in splits.train.clips}
    val_ids = {c.clip_id for c in splits.val.clips}
    assert not train_ids & val_ids and len(train_ids | val_ids) == 12
    assert sorted(c.label for c in splits.val.clips) == list(range(6))
    again = cremad.cremad_splits(preprocessed, **SMALL)
    assert {c.clip_id for c in again.val.clips} == val_ids
    other = cremad.cremad_splits(preprocessed, split_seed=1, **SMALL)
    assert {c.clip_id for c in other.val.clips} != val_ids
    train_rows = rows(preprocessed / "train.csv")
    with (preprocessed / "val.csv").open("w", newline="") as f:
        csv.writer(f).writerows(train_rows[:2])
    with_val = cremad.cremad_splits(preprocessed, **SMALL)
    assert [c.clip_id for c in with_val.val.clips] == [r[0] for r in train_rows[:2]]
    assert len(with_val.train) == 12


def test_batches_through_dataloader_workers(preprocessed):
    splits = cremad.cremad_splits(preprocessed, **SMALL)
    batches = list(iterate_batches(splits.train, 4, True, torch.Generator().manual_seed(0), num_workers=2))
    assert [b[1].shape[0] for b in batches] == [4, 2]
    assert batches[0][0]["visual"].shape == (4, 2, 3, 16, 16)


# ---------------------------------------------------------------- errors


def test_missing_root_names_the_path_and_the_layouts(tmp_path):
    with pytest.raises(FileNotFoundError) as info:
        cremad.cremad_splits(tmp_path / "nowhere")
    message = str(info.value)
    assert "nowhere" in message and "audio/<clip>.pt" in message and "AudioWAV/<clip>.wav" in message
    assert "\n" not in message


def test_missing_split_file_names_it(preprocessed):
    (preprocessed / "test.csv").unlink()
    with pytest.raises(FileNotFoundError, match=r"test\.csv not found; expected layout: .*train,test"):
        cremad.cremad_splits(preprocessed)


def test_unreadable_split_file_names_it(preprocessed):
    (preprocessed / "train.csv").unlink()
    (preprocessed / "train.csv").mkdir()
    with pytest.raises(FileNotFoundError, match=r"train\.csv"):
        cremad.cremad_splits(preprocessed)
    (preprocessed / "train.csv").rmdir()
    (preprocessed / "train.csv").write_bytes(b"\xff\xfe\xfa bad bytes")
    with pytest.raises(ValueError, match=r"train\.csv: unreadable"):
        cremad.cremad_splits(preprocessed)


def test_wrong_number_of_classes_in_stat_csv(preprocessed):
    (preprocessed / "stat.csv").write_text("NEU\nHAP\n")
    with pytest.raises(ValueError, match=r"stat\.csv gives 2 classes, expected 6"):
        cremad.cremad_splits(preprocessed)


def test_bad_options_list_the_choices(preprocessed):
    with pytest.raises(ValueError, match="valid choices: skip, error"):
        cremad.cremad_splits(preprocessed, on_corrupt="ignore")
    with pytest.raises(ValueError, match="valid choices: auto, preprocessed, raw"):
        cremad.cremad_splits(preprocessed, layout="other")


# ---------------------------------------------------------------- corrupt samples


def test_sample_with_missing_files_is_skipped_and_counted(preprocessed, caplog):
    clip = rows(preprocessed / "test.csv")[2][0]
    (preprocessed / "audio" / f"{clip}.pt").unlink()
    with caplog.at_level(logging.WARNING):
        splits = cremad.cremad_splits(preprocessed, **SMALL)
    assert len(splits.test) == 5 and splits.test.skipped == 1 and splits.test.skipped_ids == [clip]
    assert splits.train.skipped == 0
    assert splits.skipped() == {"train": 0, "val": 0, "test": 1}  # what the trainer logs as data/skipped/<split>
    assert clip in caplog.text
    with pytest.raises(CorruptSampleError, match=f"corrupt sample '{clip}': missing audio file"):
        cremad.cremad_splits(preprocessed, on_corrupt="error")


def test_unknown_label_and_empty_frame_folder_are_corrupt(preprocessed):
    test_rows = rows(preprocessed / "test.csv")
    test_rows[0][1] = "BORED"
    with (preprocessed / "test.csv").open("w", newline="") as f:
        csv.writer(f).writerows(test_rows)
    for frame in (preprocessed / "visual" / test_rows[1][0]).iterdir():
        frame.unlink()
    splits = cremad.cremad_splits(preprocessed, **SMALL)
    assert splits.test.skipped_ids == [test_rows[0][0], test_rows[1][0]]
    with pytest.raises(CorruptSampleError, match="'BORED' is not one of the 6 classes"):
        cremad.cremad_splits(preprocessed, on_corrupt="error")


def test_sample_that_fails_to_decode_is_reported_by_clip_id(preprocessed):
    clip = rows(preprocessed / "test.csv")[0][0]
    frame = sorted((preprocessed / "visual" / clip).iterdir())[1]
    frame.write_bytes(b"garbage")
    splits = cremad.cremad_splits(preprocessed, on_corrupt="error", **SMALL)
    with pytest.raises(CorruptSampleError, match=f"cremad/test: corrupt sample '{clip}'.*{frame.name}"):
        splits.test[0]
    skipping = cremad.cremad_splits(preprocessed, **SMALL)
    _inputs, label = skipping.test[0]  # substitutes the next readable clip
    assert label == skipping.test.clips[1].label and skipping.test.skipped == 1
    skipping.test[0]
    assert skipping.test.skipped == 1  # counted once per sample


def test_skips_in_worker_processes_reach_the_count(preprocessed):
    test_rows = rows(preprocessed / "test.csv")
    for clip, _ in test_rows[:2]:
        torch.save({"not": "a tensor"}, preprocessed / "audio" / f"{clip}.pt")
    (preprocessed / "audio" / f"{test_rows[2][0]}.pt").write_bytes(b"corrupt")
    splits = cremad.cremad_splits(preprocessed, **SMALL)
    assert splits.test.skipped == 0
    batches = list(iterate_batches(splits.test, 2, False, num_workers=2))
    assert sum(b[1].shape[0] for b in batches) == 6
    assert splits.test.skipped == 3


def test_preprocessed_spectrograms_are_fit_to_one_shape(preprocessed):
    clip = rows(preprocessed / "test.csv")[0][0]
    torch.save(torch.ones(1, 30, 25), preprocessed / "audio" / f"{clip}.pt")
    splits = cremad.cremad_splits(preprocessed, **SMALL)
    audio = splits.test[0][0]["audio"]
    assert audio.shape == (1, 32, 20) and (audio[0, 30:] == 0).all() and (audio[0, :30] == 1).all()
    fixed = cremad.cremad_splits(preprocessed, audio_shape=[16, 16], **SMALL)
    assert fixed.spec.modalities["audio"] == (1, 16, 16)


def test_png_frames_and_any_frame_names_work(tmp_path, writers):
    root = write(writers, tmp_path / "cremad", "preprocessed")
    clip = rows(root / "test.csv")[0][0]
    for frame in (root / "visual" / clip).iterdir():
        frame.unlink()
    for k in range(4):
        write_image(root / "visual" / clip / f"img{k}.png", np.full((10, 10, 3), 60 * k, dtype=np.uint8))
    splits = cremad.cremad_splits(root, **SMALL)
    visual = splits.test[0][0]["visual"]
    # 4 frames, 2 segments: centre frames are img0 and img2
    assert visual[0].mean() < visual[1].mean()
