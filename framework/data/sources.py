"""Loaders for the raw real data cached by ``python -m framework.data.prepare``.

Layout under the data directory::

    mnist/digits.npz   images uint8 (N, 28, 28) in 0..255, labels int64 (N,)
    fsdd/mfcc.npz      features float32 (sum_frames, 13), lengths int64 (C,),
                       labels int64 (C,); clip i is the i-th block of lengths[i] rows
    fashion_mnist/items.npz   images uint8 (70000, 28, 28), labels int64 (70000,), official_test
                       bool (70000,): Fashion-MNIST from Debian's dataset-fashion-mnist (optional)
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np

DATA_DIR_ENV = "FRAMEWORK_DATA_DIR"
MNIST_FILE = Path("mnist") / "digits.npz"
FSDD_FILE = Path("fsdd") / "mfcc.npz"
FASHION_FILE = Path("fashion_mnist") / "items.npz"
FASHION_APT = "apt-get update && apt-get install -y dataset-fashion-mnist"
"""How to get Fashion-MNIST here (as root); ``framework.data.prepare`` then caches it."""
N_MFCC = 13

PathLike = str | os.PathLike[str]


def default_data_dir() -> Path:
    """Return ``$FRAMEWORK_DATA_DIR`` if set, else ``./data`` relative to the cwd."""
    return Path(os.environ.get(DATA_DIR_ENV) or "data")


CHECKOUT_DATA_DIR = Path(__file__).resolve().parents[2] / "data"
"""Where ``scripts/setup.sh`` caches the data: ``data/`` of the checkout the package runs from."""


def _resolve(data_dir: PathLike | None, rel: Path) -> Path:
    """``data_dir / rel``; the default ``data`` (relative to the cwd) falls back to the checkout's
    ``data/``, so runs started outside the repository root find what set-up prepared."""
    given = Path(data_dir) if data_dir is not None else default_data_dir()
    candidates = [given / rel]
    if given == Path("data"):
        candidates.append(CHECKOUT_DATA_DIR / rel)
    for path in candidates:
        if path.is_file():
            return path
    where = f"neither {candidates[0]} nor {candidates[1]} exists" if len(candidates) > 1 else f"{candidates[0]} not found"
    raise FileNotFoundError(f"{where}: run 'python -m framework.data.prepare' first")


def _read_npz(path: Path, keys: tuple[str, ...]) -> dict[str, np.ndarray]:
    with np.load(path, allow_pickle=False) as npz:
        missing = [k for k in keys if k not in npz.files]
        if missing:
            raise ValueError(f"{path} lacks keys {missing}: re-run 'python -m framework.data.prepare --force'")
        return {k: npz[k] for k in keys}


def load_mnist_digits(data_dir: PathLike | None = None) -> tuple[np.ndarray, np.ndarray]:
    """Load MNIST digits: ``images`` uint8 (N, 28, 28) and ``labels`` int64 (N,)."""
    path = _resolve(data_dir, MNIST_FILE)
    arrays = _read_npz(path, ("images", "labels"))
    images, labels = arrays["images"], arrays["labels"]
    if images.dtype != np.uint8 or images.ndim != 3 or images.shape[1:] != (28, 28):
        raise ValueError(f"{path}: images must be uint8 (N, 28, 28), got {images.dtype} {images.shape}")
    if labels.dtype != np.int64 or labels.shape != (images.shape[0],):
        raise ValueError(f"{path}: labels must be int64 ({images.shape[0]},), got {labels.dtype} {labels.shape}")
    return images, labels


def _check_images(path: Path, images: np.ndarray, labels: np.ndarray) -> None:
    if images.dtype != np.uint8 or images.ndim != 3 or images.shape[1:] != (28, 28):
        raise ValueError(f"{path}: images must be uint8 (N, 28, 28), got {images.dtype} {images.shape}")
    if labels.dtype != np.int64 or labels.shape != (images.shape[0],):
        raise ValueError(f"{path}: labels must be int64 ({images.shape[0]},), got {labels.dtype} {labels.shape}")


def load_fashion_mnist(data_dir: PathLike | None = None) -> tuple[np.ndarray, np.ndarray]:
    """Load Fashion-MNIST (train then test items): ``images`` uint8 (N, 28, 28), ``labels`` int64 (N,).

    It is optional data: without the cached file the error says how to get it (Debian's
    ``dataset-fashion-mnist``, then ``python -m framework.data.prepare``).
    """
    try:
        path = _resolve(data_dir, FASHION_FILE)
    except FileNotFoundError as error:
        where = str(error).split(":", 1)[0]
        raise FileNotFoundError(
            f"Fashion-MNIST is not cached ({where}): install it with '{FASHION_APT}' (as root), "
            "then run 'python -m framework.data.prepare'"
        ) from None
    arrays = _read_npz(path, ("images", "labels"))
    _check_images(path, arrays["images"], arrays["labels"])
    return arrays["images"], arrays["labels"]


def load_fsdd_mfcc(data_dir: PathLike | None = None) -> tuple[list[np.ndarray], np.ndarray]:
    """Load FSDD MFCCs: a list of per-clip float32 (frames, 13) arrays and int64 labels."""
    path = _resolve(data_dir, FSDD_FILE)
    arrays = _read_npz(path, ("features", "lengths", "labels"))
    features, lengths, labels = arrays["features"], arrays["lengths"], arrays["labels"]
    if features.dtype != np.float32 or features.ndim != 2 or features.shape[1] != N_MFCC:
        raise ValueError(f"{path}: features must be float32 (frames, {N_MFCC}), got {features.dtype} {features.shape}")
    if lengths.dtype != np.int64 or lengths.ndim != 1 or (lengths < 1).any():
        raise ValueError(f"{path}: lengths must be positive int64 (C,)")
    if int(lengths.sum()) != features.shape[0]:
        raise ValueError(f"{path}: lengths sum to {int(lengths.sum())} but features has {features.shape[0]} rows")
    if labels.dtype != np.int64 or labels.shape != lengths.shape:
        raise ValueError(f"{path}: labels must be int64 {lengths.shape}, got {labels.dtype} {labels.shape}")
    clips = np.split(features, np.cumsum(lengths)[:-1])
    return clips, labels
