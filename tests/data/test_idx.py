"""framework.data.idx: the one IDX reader, used by cgmnist_file and the Fashion-MNIST preparation."""

from __future__ import annotations

import gzip

import numpy as np
import pytest

from framework.data import cgmnist_file
from framework.data.idx import read_idx
from framework.data.prepare import fashion_mnist


def test_both_callers_use_the_shared_reader():
    assert cgmnist_file.read_idx is read_idx
    assert fashion_mnist.read_idx is read_idx


def test_reads_wider_types_big_endian(tmp_path):
    array = np.array([[1, -2], [300, 70000]], dtype=">i4")
    (tmp_path / "a-idx2-int").write_bytes(bytes([0, 0, 0x0C, 2, 0, 0, 0, 2, 0, 0, 0, 2]) + array.tobytes())
    np.testing.assert_array_equal(read_idx(tmp_path / "a-idx2-int"), array)


def test_required_ndim_and_dtype_are_checked_before_the_size(tmp_path, writers):
    writers.write_idx(tmp_path / "labels.gz", np.arange(5, dtype=np.uint8))
    np.testing.assert_array_equal(read_idx(tmp_path / "labels.gz", ndim=1, dtype=np.uint8), np.arange(5))
    with pytest.raises(ValueError, match=r"labels\.gz: not a uint8 IDX file of 3 dimensions \(header: uint8, 1 "):
        read_idx(tmp_path / "labels.gz", ndim=3, dtype=np.uint8)
    (tmp_path / "int8.gz").write_bytes(gzip.compress(b"\x00\x00\x09\x01rubbish"))
    with pytest.raises(ValueError, match=r"int8\.gz: not a uint8 IDX file of 1 dimensions"):
        read_idx(tmp_path / "int8.gz", ndim=1, dtype=np.uint8)


def test_a_broken_gzip_is_a_value_error_naming_the_file(tmp_path):
    (tmp_path / "broken.gz").write_bytes(b"\x1f\x8b not really gzip")
    with pytest.raises(ValueError, match=r"broken\.gz: unreadable IDX file"):
        read_idx(tmp_path / "broken.gz")
