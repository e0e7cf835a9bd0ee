"""CG-MNIST from the original files: Colored-MNIST .npy dicts and MNIST idx files."""

from __future__ import annotations

import gzip

import numpy as np
import pytest
import torch

from framework.data import cgmnist_file
from framework.data.cgmnist_file import COLOR_FILE, GRAY_DIR, cgmnist_file_splits, read_idx


def test_idx_round_trip_plain_and_gzipped(tmp_path, writers):
    array = np.arange(2 * 3 * 4, dtype=np.uint8).reshape(2, 3, 4)
    for name in ("a-idx3-ubyte", "a-idx3-ubyte.gz"):
        writers.write_idx(tmp_path / name, array)
        np.testing.assert_array_equal(read_idx(tmp_path / name), array)
    # the real header: magic 0x00000803, then the dimensions, big-endian
    assert (tmp_path / "a-idx3-ubyte").read_bytes()[:16] == bytes([0, 0, 8, 3, 0, 0, 0, 2, 0, 0, 0, 3, 0, 0, 0, 4])
    with gzip.open(tmp_path / "a-idx3-ubyte.gz") as f:
        assert f.read(4) == bytes([0, 0, 8, 3])


def test_bad_idx_files_are_named(tmp_path, writers):
    (tmp_path / "bad").write_bytes(b"\x01\x02\x03\x04")
    with pytest.raises(ValueError, match="bad: not an IDX file"):
        read_idx(tmp_path / "bad")
    writers.write_idx(tmp_path / "short", np.zeros((3, 2), np.uint8))
    (tmp_path / "short").write_bytes((tmp_path / "short").read_bytes()[:-2])
    with pytest.raises(ValueError, match="short: IDX header says"):
        read_idx(tmp_path / "short")


def test_loads_pairs_by_index_and_normalizes(tmp_path, writers):
    writers.write_cgmnist_file(tmp_path, n_train=40, n_test=20)
    splits = cgmnist_file_splits(tmp_path, val_size=10)
    assert dict(splits.spec.modalities) == {"gray": (1, 28, 28), "color": (3, 28, 28)}
    assert (len(splits.train), len(splits.val), len(splits.test)) == (30, 10, 20)
    raw = cgmnist_file_splits(tmp_path, val_size=0, normalize=False)
    gray = read_idx(tmp_path / GRAY_DIR / "t10k-images-idx3-ubyte")
    data = np.load(tmp_path / COLOR_FILE.format(color_var=0.02), allow_pickle=True).item()
    torch.testing.assert_close(raw.test.inputs["gray"][:, 0], torch.from_numpy(gray).float() / 255)
    torch.testing.assert_close(raw.test.inputs["color"], torch.from_numpy(data["test_image"]).float().permute(0, 3, 1, 2) / 255)
    assert raw.test.labels.tolist() == (np.arange(20) % 10).tolist()
    normalized = cgmnist_file_splits(tmp_path, val_size=0)
    torch.testing.assert_close(
        normalized.test.inputs["gray"], (raw.test.inputs["gray"] - cgmnist_file.GRAY_MEAN) / cgmnist_file.GRAY_STD
    )


def test_color_variance_picks_the_file(tmp_path, writers):
    writers.write_cgmnist_file(tmp_path, color_var=0.02, seed=0)
    writers.write_cgmnist_file(tmp_path, color_var=0.05, seed=1)
    a = cgmnist_file_splits(tmp_path, color_var=0.02, val_size=0)
    b = cgmnist_file_splits(tmp_path, color_var=0.05, val_size=0)
    assert not torch.equal(a.test.inputs["color"], b.test.inputs["color"])
    with pytest.raises(FileNotFoundError, match=r"mnist_10color_jitter_var_0\.030\.npy not found; expected layout"):
        cgmnist_file_splits(tmp_path, color_var=0.03)


def test_validation_is_held_out_of_training_deterministically(tmp_path, writers):
    writers.write_cgmnist_file(tmp_path)
    a, b = cgmnist_file_splits(tmp_path, val_size=10), cgmnist_file_splits(tmp_path, val_size=10)
    torch.testing.assert_close(a.val.inputs["gray"], b.val.inputs["gray"])
    rows = torch.cat([a.train.inputs["gray"], a.val.inputs["gray"]]).flatten(1)
    assert torch.unique(rows, dim=0).shape[0] == 40


def test_missing_root_and_gray_files_name_the_path(tmp_path, writers):
    with pytest.raises(FileNotFoundError, match="dataset root .*nowhere not found; expected layout: .*train_image"):
        cgmnist_file_splits(tmp_path / "nowhere")
    writers.write_cgmnist_file(tmp_path)
    (tmp_path / GRAY_DIR / "t10k-images-idx3-ubyte").unlink()
    with pytest.raises(FileNotFoundError, match=r"t10k-images-idx3-ubyte\[\.gz\] not found"):
        cgmnist_file_splits(tmp_path)


def test_label_mismatch_and_bad_dict_are_clear_errors(tmp_path, writers):
    writers.write_cgmnist_file(tmp_path)
    path = tmp_path / COLOR_FILE.format(color_var=0.02)
    data = np.load(path, allow_pickle=True).item()
    data["test_label"] = (data["test_label"] + 1) % 10
    np.save(path, data, allow_pickle=True)
    with pytest.raises(ValueError, match="disagree at 20 of 20 positions"):
        cgmnist_file_splits(tmp_path)
    del data["test_image"]
    np.save(path, data, allow_pickle=True)
    with pytest.raises(ValueError, match="must hold a dict with keys"):
        cgmnist_file_splits(tmp_path)
    path.write_bytes(b"junk")
    with pytest.raises(ValueError, match="unreadable"):
        cgmnist_file_splits(tmp_path)
