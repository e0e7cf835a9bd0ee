"""The IDX file format (MNIST's): a magic number ``00 00 <type> <ndim>``, the dimensions as
big-endian uint32, then the data."""

from __future__ import annotations

import gzip
from pathlib import Path

import numpy as np
import numpy.typing as npt

IDX_DTYPES: dict[int, npt.DTypeLike] = {
    0x08: np.uint8,
    0x09: np.int8,
    0x0B: ">i2",
    0x0C: ">i4",
    0x0D: ">f4",
    0x0E: ">f8",
}


def read_idx(path: str | Path, ndim: int | None = None, dtype: npt.DTypeLike | None = None) -> np.ndarray:
    """Read an IDX file, gzipped when its name ends in ``.gz``; ``ndim`` and ``dtype``, when
    given, are required of the file's header. Raises ``ValueError`` naming the file."""
    path = Path(path)
    opener = gzip.open if path.suffix == ".gz" else open
    try:
        with opener(path, "rb") as f:
            data = f.read()
    except (OSError, EOFError) as exc:
        raise ValueError(f"{path}: unreadable IDX file ({exc})") from exc
    if len(data) < 4 or data[0] != 0 or data[1] != 0 or data[2] not in IDX_DTYPES:
        raise ValueError(f"{path}: not an IDX file (bad magic number)")
    file_dtype = np.dtype(IDX_DTYPES[data[2]])
    if (ndim is not None and data[3] != ndim) or (dtype is not None and file_dtype != np.dtype(dtype)):
        kind = f"a {np.dtype(dtype)} IDX file" if dtype is not None else "an IDX file"
        shape = f" of {ndim} dimensions" if ndim is not None else ""
        raise ValueError(f"{path}: not {kind}{shape} (header: {file_dtype}, {data[3]} dimensions)")
    dims = [int.from_bytes(data[4 + 4 * i : 8 + 4 * i], "big") for i in range(data[3])]
    offset = 4 + 4 * data[3]
    expected = int(np.prod(dims)) * file_dtype.itemsize
    if len(data) - offset != expected:
        raise ValueError(f"{path}: IDX header says {dims} ({expected} bytes) but the file has {len(data) - offset}")
    return np.frombuffer(data, dtype=file_dtype, offset=offset).reshape(dims).copy()
