"""Decoded video frames kept on disk, so that an epoch does not decode JPEGs again.

One split's frames live in one flat ``uint8`` ``.npy`` file (memory-mapped, so the OS page cache
holds what fits in memory), beside an index of ``(offset, height, width)`` per frame. The files are
named by a hash of what they hold (the frame files' paths, sizes and modification times, what is
stored and at what size), so a changed dataset or setting gets a new cache and a second
construction finds the first one's without decoding anything. Files are written under a temporary
name and renamed, the index last: a cache interrupted while being built is built again.

What is stored, per split (``stored``):

* ``resized``: the frame as :func:`~framework.data.images.load_image` has it just before its
  random flip, i.e. decoded (JPEG draft) and resized to ``image_size x image_size``. Evaluation
  splits and training with ``augment`` ``none`` / ``flip``. Bit-identical to decoding.
* ``full``: the decoded RGB frame at its own resolution (training with ``crop_flip``, whose random
  resized crop is taken from the full-resolution frame before resizing). Bit-identical to decoding,
  and the same draws of torch's generator. With ``max_side`` (``frame_cache_size``) frames whose
  shorter side is larger are stored downscaled to that shorter side (aspect kept): smaller files, but
  then training crops come from the downscaled frame, which is *not* bit-identical to decoding
  (the crop box has the same distribution, in relative terms, up to rounding; pixels differ by the
  extra resampling).

A frame that does not decode is marked in the index; loading it decodes the file again, which
raises the same error as without a cache (so ``on_corrupt`` applies unchanged).
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image

from . import images

log = logging.getLogger(__name__)

VERSION = 1
STORED = ("resized", "full")


class FrameCache:
    """One split's decoded frames: ``image(clip, frame)`` is the stored RGB frame (a PIL image), or
    ``None`` for a frame not in the cache or that did not decode when it was built."""

    def __init__(self, data_path: Path, index: np.ndarray, rows: dict[tuple[int, int], int]) -> None:
        self.data_path, self.index, self.rows = data_path, index, rows
        self._data: np.ndarray | None = None

    @property
    def data(self) -> np.ndarray:
        if self._data is None:
            self._data = np.load(self.data_path, mmap_mode="r")
        return self._data

    def __getstate__(self) -> dict[str, Any]:  # workers started by spawn reopen the file
        return {**self.__dict__, "_data": None}

    def image(self, clip: int, frame: int) -> Image.Image | None:
        row = self.rows.get((clip, frame))
        if row is None:
            return None
        offset, height, width = (int(v) for v in self.index[row])
        if height <= 0:
            return None
        pixels = np.asarray(self.data[offset : offset + height * width * 3]).reshape(height, width, 3)
        return Image.fromarray(pixels, "RGB")


def _fingerprint(paths: Sequence[str], stored: str, size: int, max_side: int | None) -> str:
    digest = hashlib.sha256(json.dumps([VERSION, stored, size, max_side]).encode())
    for path in paths:
        try:
            st = os.stat(path)
            digest.update(f"{path}\0{st.st_size}\0{st.st_mtime_ns}\n".encode())
        except OSError:
            digest.update(f"{path}\0missing\n".encode())
    return digest.hexdigest()[:20]


def _full_shape(path: str, max_side: int | None) -> tuple[int, int]:
    """(height, width) stored for ``path`` in ``full`` mode, from its header; (0, 0) if unreadable."""
    try:
        with Image.open(path) as img:
            width, height = img.size
    except Exception:  # decoding will raise the real error when the frame is loaded
        return 0, 0
    return _downscaled(width, height, max_side)[::-1]


def _downscaled(width: int, height: int, max_side: int | None) -> tuple[int, int]:
    short = min(width, height)
    if max_side is None or short <= max_side:
        return width, height
    return max(1, round(width * max_side / short)), max(1, round(height * max_side / short))


def _decode(path: str, stored: str, size: int, max_side: int | None) -> np.ndarray:
    if stored == "resized":
        img = images.decode_image(path, size, "none").resize((size, size), Image.Resampling.BILINEAR)
    else:
        img = images.decode_image(path, size, "crop_flip")
        target = _downscaled(*img.size, max_side)
        if target != img.size:
            img = img.resize(target, Image.Resampling.BILINEAR)
    return np.asarray(img, dtype=np.uint8)


def frame_cache(
    directory: str | Path,
    name: str,
    frames: Sequence[tuple[int, int, str]],
    stored: str,
    size: int,
    max_side: int | None = None,
) -> FrameCache:
    """The cache of ``frames`` (``(clip, frame, path)``) under ``directory``, built (decoding each
    frame once) unless a cache of the same frames and settings is there already."""
    if stored not in STORED:
        raise ValueError(f"unknown stored {stored!r}; valid choices: {', '.join(STORED)}")
    if max_side is not None and max_side < 1:
        raise ValueError(f"frame_cache_size must be >= 1 (or null: full resolution), got {max_side}")
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    key = _fingerprint([p for _, _, p in frames], stored, size, max_side if stored == "full" else None)
    stem = f"{name.replace('/', '-')}-{stored}-{key}"
    data_path, index_path = directory / f"{stem}.npy", directory / f"{stem}.index.npy"
    rows = {(clip, frame): row for row, (clip, frame, _) in enumerate(frames)}
    if data_path.is_file() and index_path.is_file():
        return FrameCache(data_path, np.load(index_path), rows)
    shapes = [(size, size) if stored == "resized" else _full_shape(p, max_side) for _, _, p in frames]
    index = np.zeros((len(frames), 3), dtype=np.int64)
    offset = 0
    for row, (height, width) in enumerate(shapes):
        index[row] = (offset, height, width)
        offset += height * width * 3
    log.info("%s: decoding %d frames once into %s (%.1f MB)", name, len(frames), data_path, offset / 1e6)
    tmp = directory / f".{stem}.{os.getpid()}.tmp.npy"
    data = np.lib.format.open_memmap(tmp, mode="w+", dtype=np.uint8, shape=(max(offset, 1),))
    for row, (_, _, path) in enumerate(frames):
        start, height, width = (int(v) for v in index[row])
        try:
            pixels = _decode(path, stored, size, max_side) if height > 0 else None
        except images.ImageReadError:
            pixels = None
        if pixels is None or pixels.shape != (height, width, 3):
            index[row, 1:] = -1  # loading decodes it again, and so raises its error
            continue
        data[start : start + height * width * 3] = pixels.reshape(-1)
    data.flush()
    del data
    os.replace(tmp, data_path)
    tmp_index = directory / f".{stem}.{os.getpid()}.tmp.index.npy"
    np.save(tmp_index, index)
    os.replace(tmp_index, index_path)
    return FrameCache(data_path, index, rows)
