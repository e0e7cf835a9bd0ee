"""Fashion-MNIST (optional): the 70,000 items from the idx.gz files of Debian's
``dataset-fashion-mnist`` (``/usr/share/datasets/fashion-mnist``, or ``$FASHION_MNIST_DIR``);
cached as ``fashion_mnist/items.npz``, skipped with a note when the package is not installed."""

from __future__ import annotations

import os
import subprocess
import time
from pathlib import Path

import numpy as np

from framework.data.idx import read_idx
from framework.data.sources import FASHION_APT, FASHION_FILE, load_fashion_mnist

from .common import PrepareError, _sha256, already_prepared, check_counts, log, mb, save_npz, write_source

FASHION_SYSTEM_DIR = Path("/usr/share/datasets/fashion-mnist")
FASHION_DIR_ENV = "FASHION_MNIST_DIR"
FASHION_DEB = "dataset-fashion-mnist"
FASHION_FILES = {
    "train": ("train-images-idx3-ubyte.gz", "train-labels-idx1-ubyte.gz"),
    "test": ("t10k-images-idx3-ubyte.gz", "t10k-labels-idx1-ubyte.gz"),
}
FASHION_TOTAL, FASHION_PER_CLASS = 70_000, 7_000
FASHION_LICENSE = "Fashion-MNIST (Xiao, Rasul, Vollgraf 2017, https://github.com/zalandoresearch/fashion-mnist): MIT."


def fashion_source_dir() -> Path:
    """Where the idx.gz files are: ``$FASHION_MNIST_DIR``, else Debian's install folder."""
    return Path(os.environ.get(FASHION_DIR_ENV) or FASHION_SYSTEM_DIR)


def _read_uint8_idx(path: Path, ndim: int) -> np.ndarray:
    try:
        return read_idx(path, ndim=ndim, dtype=np.uint8)
    except ValueError as exc:
        raise PrepareError(str(exc)) from exc


def _deb_version(package: str) -> str:
    try:
        out = subprocess.run(["dpkg-query", "-W", "-f=${Version}", package], capture_output=True, text=True, check=True)
    except (OSError, subprocess.CalledProcessError):
        return "unknown (not installed through dpkg)"
    return out.stdout.strip() or "unknown"


def prepare_fashion_mnist(data_dir: Path, force: bool = False, source_dir: Path | None = None) -> str:
    """Cache Fashion-MNIST under ``data_dir/fashion_mnist`` from the Debian package's idx.gz files;
    return 'cached', 'debian' or 'skipped' (package not installed: a note, not an error)."""
    target = data_dir / FASHION_FILE
    if already_prepared(target, data_dir, load_fashion_mnist, force):
        return "cached"
    source = source_dir if source_dir is not None else fashion_source_dir()
    files = {split: [source / name for name in names] for split, names in FASHION_FILES.items()}
    missing = [p for paths in files.values() for p in paths if not p.is_file()]
    if missing:
        log(f"fashion_mnist: skipped ({missing[0]} not found; optional: '{FASHION_APT}' as root, then prepare again)")
        return "skipped"
    start = time.perf_counter()
    images, labels, official_test = [], [], []
    for split, (image_file, label_file) in files.items():
        split_images, split_labels = _read_uint8_idx(image_file, 3), _read_uint8_idx(label_file, 1)
        if split_images.shape[1:] != (28, 28) or split_labels.shape != (split_images.shape[0],):
            raise PrepareError(
                f"{image_file}: expected (N, 28, 28) images and N labels, got "
                f"{split_images.shape} and {split_labels.shape}"
            )
        images.append(split_images)
        labels.append(split_labels.astype(np.int64))
        official_test.append(np.full(split_labels.shape[0], split == "test"))
    all_labels = np.concatenate(labels)
    check_counts(all_labels, FASHION_TOTAL, FASHION_PER_CLASS, f"Debian {FASHION_DEB}")
    arrays = {"images": np.concatenate(images), "labels": all_labels, "official_test": np.concatenate(official_test)}
    digest = save_npz(target, arrays)
    write_source(
        target.parent / "SOURCE.txt",
        [
            f"dataset: Fashion-MNIST, {all_labels.size} images 28x28 (train file then test file), "
            f"{FASHION_PER_CLASS} per class",
            f"source: Debian package {FASHION_DEB} {_deb_version(FASHION_DEB)}, files in {source}",
            *[f"archive: {p.name} sha256 {_sha256(p)}" for paths in files.values() for p in paths],
            "conversion: IDX uint8 -> images uint8 (N, 28, 28), labels int64 (N,), official_test bool (N,); "
            "order: train file then test file, as stored",
            f"license: {FASHION_LICENSE}",
            f"file: {target.name} sha256 {digest}",
        ],
    )
    seconds = time.perf_counter() - start
    log(f"fashion_mnist: saved {target} ({mb(target)}, {all_labels.size} items) in {seconds:.1f}s")
    return "debian"
