"""CG-MNIST from the original files, for users who have them (the reference code's data).

Layout under ``root``::

    colored_mnist/mnist_10color_jitter_var_<color_var:.3f>.npy   Colored-MNIST (Kim et al. 2019)
        a pickled dict: train_image (60000, 28, 28, 3) uint8, train_label (60000,),
                        test_image (10000, 28, 28, 3) uint8, test_label (10000,)
    MNIST/raw/train-images-idx3-ubyte[.gz], train-labels-idx1-ubyte[.gz],
              t10k-images-idx3-ubyte[.gz],  t10k-labels-idx1-ubyte[.gz]   the gray MNIST digits

As in the reference code, sample ``i`` pairs gray digit ``i`` with colored digit ``i`` (the colored
file is MNIST recolored, in MNIST's order; the labels are checked to agree). ``color_var`` picks the
file (the colour-jitter variance; 0.020 in the paper). Normalisation follows the reference: gray
``(x - 0.1307) / 0.3081``, colored with the per-channel CIFAR statistics. The validation split is
held out of the training files (colored like training). The ``.npy`` dict is a pickle: load only
files you trust.
"""

from __future__ import annotations

import pickle
from pathlib import Path

import numpy as np
import torch

from .base import DatasetSpec, Splits, TensorMultimodalDataset
from .idx import read_idx

COLOR_FILE = "colored_mnist/mnist_10color_jitter_var_{color_var:.3f}.npy"
GRAY_DIR = "MNIST/raw"
GRAY_FILES = {
    "train": ("train-images-idx3-ubyte", "train-labels-idx1-ubyte"),
    "test": ("t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte"),
}
GRAY_MEAN, GRAY_STD = 0.1307, 0.3081
COLOR_MEAN, COLOR_STD = (0.4914, 0.4822, 0.4465), (0.2023, 0.1994, 0.2010)


def layout(root: Path | str, color_file: str, gray_dir: str) -> str:
    return (
        f"{root}/{color_file} (dict: train_image, train_label, test_image, test_label) and "
        f"{root}/{gray_dir}/{{train-images-idx3-ubyte,train-labels-idx1-ubyte,t10k-images-idx3-ubyte,t10k-labels-idx1-ubyte}}[.gz]"
    )


def _gray(root: Path, gray_dir: str, split: str, expected: str) -> tuple[np.ndarray, np.ndarray]:
    arrays = []
    for name in GRAY_FILES[split]:
        candidates = [root / gray_dir / name, root / gray_dir / f"{name}.gz"]
        found = next((p for p in candidates if p.is_file()), None)
        if found is None:
            raise FileNotFoundError(f"cgmnist_file: {candidates[0]}[.gz] not found; expected layout: {expected}")
        arrays.append(read_idx(found))
    images, labels = arrays
    if images.ndim != 3 or images.shape[1:] != (28, 28) or labels.shape != (images.shape[0],):
        raise ValueError(
            f"cgmnist_file: {root / gray_dir} {split} images {images.shape} / labels {labels.shape} are not MNIST"
        )
    return images, labels.astype(np.int64)


def _colored(path: Path, expected: str) -> dict[str, np.ndarray]:
    if not path.is_file():
        raise FileNotFoundError(f"cgmnist_file: {path} not found; expected layout: {expected}")
    try:
        data = np.load(path, allow_pickle=True, encoding="latin1")
        data = data.item() if isinstance(data, np.ndarray) and data.dtype == object else data
    except (OSError, ValueError, EOFError, pickle.UnpicklingError) as exc:
        raise ValueError(f"cgmnist_file: {path}: unreadable ({exc}); expected layout: {expected}") from exc
    keys = ("train_image", "train_label", "test_image", "test_label")
    if not isinstance(data, dict) or any(k not in data for k in keys):
        found = sorted(data) if isinstance(data, dict) else type(data).__name__
        raise ValueError(f"cgmnist_file: {path} must hold a dict with keys {list(keys)}, found {found}")
    return {k: np.asarray(data[k]) for k in keys}


def _color_tensor(images: np.ndarray, path: Path, split: str) -> torch.Tensor:
    if images.ndim != 4 or images.shape[1:3] != (28, 28) or images.shape[3] != 3:
        raise ValueError(f"cgmnist_file: {path}: {split}_image must be (N, 28, 28, 3), got {images.shape}")
    x = torch.from_numpy(np.ascontiguousarray(images)).float()
    if images.dtype == np.uint8 or float(x.max()) > 1.0:
        x = x / 255.0
    return x.permute(0, 3, 1, 2).contiguous()


def cgmnist_file_splits(
    root: str | Path,
    color_var: float = 0.020,
    color_file: str = COLOR_FILE,
    gray_dir: str = GRAY_DIR,
    val_size: int = 5000,
    train_size: int | None = None,
    normalize: bool = True,
    split_seed: int = 0,
) -> Splits:
    """Train / val (held out of the training files) / test splits of the original CG-MNIST."""
    root = Path(root)
    relative = color_file.format(color_var=float(color_var))
    expected = layout(root, relative, gray_dir)
    if not root.is_dir():
        raise FileNotFoundError(f"cgmnist_file: dataset root {root} not found; expected layout: {expected}")
    colored = _colored(root / relative, expected)
    spec = DatasetSpec({"gray": (1, 28, 28), "color": (3, 28, 28)}, num_classes=10)
    parts = {}
    for split in ("train", "test"):
        gray, labels = _gray(root, gray_dir, split, expected)
        color_labels = colored[f"{split}_label"].reshape(-1).astype(np.int64)
        if color_labels.shape != labels.shape:
            raise ValueError(
                f"cgmnist_file: {root / relative} has {color_labels.size} {split} digits, {root / gray_dir} has {labels.size}"
            )
        wrong = int((color_labels != labels).sum())
        if wrong:
            raise ValueError(
                f"cgmnist_file: {split} labels of {root / relative} and {root / gray_dir} disagree at {wrong} of "
                f"{labels.size} positions: the colored file is not index-aligned with these MNIST files"
            )
        g = torch.from_numpy(gray.astype(np.float32) / 255.0)[:, None]
        c = _color_tensor(colored[f"{split}_image"], root / relative, split)
        if c.shape[0] != g.shape[0]:
            raise ValueError(f"cgmnist_file: {split}_image has {c.shape[0]} digits, {split}_label {labels.size}")
        if normalize:
            g = (g - GRAY_MEAN) / GRAY_STD
            c = (c - torch.tensor(COLOR_MEAN).view(1, 3, 1, 1)) / torch.tensor(COLOR_STD).view(1, 3, 1, 1)
        parts[split] = (g, c, torch.from_numpy(labels))
    g, c, y = parts["train"]
    if not 0 <= val_size < y.shape[0]:
        raise ValueError(f"cgmnist_file: val_size must be in [0, {y.shape[0]}), got {val_size}")
    order = torch.from_numpy(np.random.default_rng(split_seed).permutation(y.shape[0]))
    val_idx, train_idx = order[:val_size], order[val_size:]
    if train_size is not None:
        train_idx = train_idx[:train_size]

    def subset(idx: torch.Tensor) -> TensorMultimodalDataset:
        return TensorMultimodalDataset({"gray": g[idx], "color": c[idx]}, y[idx], spec)

    tg, tc, ty = parts["test"]
    return Splits(
        train=subset(train_idx), val=subset(val_idx), test=TensorMultimodalDataset({"gray": tg, "color": tc}, ty, spec)
    )
