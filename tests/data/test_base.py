"""The dataset contract of framework/data/base.py: the skipped-sample count."""

from __future__ import annotations

import pytest
import torch

from framework.data.base import (
    CorruptSampleError,
    DatasetSpec,
    MultimodalDataset,
    SkipCounter,
    SkippingDataset,
    Splits,
    TensorMultimodalDataset,
)
from framework.data.synthetic import synthetic_splits


class Flaky(SkippingDataset):
    """Four samples; those in ``bad`` fail to load."""

    def __init__(self, bad: set[int], on_corrupt: str = "skip") -> None:
        self.name, self.on_corrupt, self.bad = "flaky/test", on_corrupt, bad
        self.spec = DatasetSpec({"x": (1,)}, num_classes=2)
        self.counter = SkipCounter(4, ["gone"])

    def __len__(self) -> int:
        return 4

    def sample_id(self, index: int) -> str:
        return f"s{index}"

    def load(self, index: int):
        if index in self.bad:
            raise OSError("unreadable")
        return {"x": torch.tensor([float(index)])}, index % 2


def test_in_memory_datasets_never_skip():
    splits = synthetic_splits({"a": {"dim": 2, "signal": 1.0}}, train_size=4, val_size=4, test_size=4)
    assert isinstance(splits.train, TensorMultimodalDataset) and isinstance(splits.train, MultimodalDataset)
    assert not splits.train.can_skip and splits.train.skipped == 0
    assert splits.skipped() == {}


def test_skipping_dataset_counts_indexed_and_load_time_skips():
    data = Flaky({1, 2})
    assert data.can_skip and data.skipped == 1 and data.skipped_ids == ["gone"]
    inputs, label = data[1]  # 1 and 2 fail: the next readable sample is 3
    assert float(inputs["x"]) == 3.0 and label == 1
    assert data.skipped == 3
    data[2]
    assert data.skipped == 3  # counted once per sample
    with pytest.raises(CorruptSampleError, match=r"flaky/test: corrupt sample 's1': OSError: unreadable"):
        Flaky({1}, on_corrupt="error")[1]
    with pytest.raises(CorruptSampleError, match="no sample of this split could be read"):
        Flaky({0, 1, 2, 3})[0]


def test_splits_report_the_counts_of_the_splits_that_can_skip():
    memory = synthetic_splits({"a": {"dim": 1, "signal": 1.0}}, num_classes=2, train_size=4, val_size=4, test_size=4)
    flaky = Flaky({0})
    flaky[0]
    splits = Splits(train=memory.train, val=Flaky(set()), test=flaky)
    assert splits.skipped() == {"val": 1, "test": 2}
