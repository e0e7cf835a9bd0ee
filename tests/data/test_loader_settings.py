"""LoaderSettings defaults, BatchSource (persistent workers, same order and augmentation as the
one-epoch DataLoader path, same generator draws) and device-resident in-memory datasets."""

from __future__ import annotations

import pytest
import torch

from framework.data import cremad
from framework.data.base import (
    BatchSource,
    DatasetSpec,
    LoaderSettings,
    Splits,
    TensorMultimodalDataset,
    iterate_batches,
    splits_to,
)
from framework.data.sharding import sharded_eval_source, sharded_train_batches, sharded_train_source


def test_resolve_defaults_per_device(monkeypatch):
    monkeypatch.delenv("SLURM_CPUS_PER_TASK", raising=False)
    cpu = LoaderSettings().resolve(torch.device("cpu"))
    assert cpu == LoaderSettings(num_workers=0, pin_memory=False, persistent_workers=False, prefetch_factor=None)
    monkeypatch.setattr("os.sched_getaffinity", lambda pid: set(range(12)))
    cuda = LoaderSettings().resolve("cuda")
    assert cuda == LoaderSettings(num_workers=8, pin_memory=True, persistent_workers=True, prefetch_factor=4)
    monkeypatch.setenv("SLURM_CPUS_PER_TASK", "3")
    assert LoaderSettings().resolve("cuda:0").num_workers == 3
    explicit = LoaderSettings(num_workers=0, pin_memory=False, prefetch_factor=7).resolve("cuda")
    assert explicit == LoaderSettings(num_workers=0, pin_memory=False, persistent_workers=False, prefetch_factor=None)
    assert LoaderSettings(num_workers=2, persistent_workers=True).resolve("cpu").persistent_workers
    with pytest.raises(ValueError, match="num_workers"):
        LoaderSettings(num_workers=-1)


def tensor_dataset(n: int = 23) -> TensorMultimodalDataset:
    g = torch.Generator().manual_seed(1)
    spec = DatasetSpec({"a": (3,), "b": (2, 2)}, 4)
    return TensorMultimodalDataset(
        {"a": torch.randn(n, 3, generator=g), "b": torch.randn(n, 2, 2, generator=g)}, torch.arange(n) % 4, spec
    )


def assert_same(first, second):
    first, second = list(first), list(second)
    assert len(first) == len(second)
    for (x, y), (u, v) in zip(first, second, strict=True):
        assert x.keys() == u.keys()
        for m in x:
            assert torch.equal(x[m].cpu(), u[m].cpu())
        assert torch.equal(y.cpu(), v.cpu())


def test_in_memory_dataset_on_a_device_gives_the_same_batches():
    data = tensor_dataset()
    moved = data.to(torch.device("cpu"))
    assert moved is data  # already there
    meta = data.to("meta")
    assert meta.device.type == "meta" and data.device.type == "cpu" and type(meta) is type(data)
    for shuffle in (True, False):
        host = iterate_batches(data, 5, shuffle, torch.Generator().manual_seed(3))
        source = BatchSource(data.to("cpu"), 5, shuffle, torch.Generator().manual_seed(3), LoaderSettings())
        assert_same(host, source)
    splits = splits_to(Splits(data, data, data), "cpu")
    assert splits.train is data


def test_batch_source_in_memory_draws_like_iterate_batches():
    data = tensor_dataset()
    g1, g2 = torch.Generator().manual_seed(5), torch.Generator().manual_seed(5)
    source = BatchSource(data, 4, True, g2)
    for _ in range(3):
        assert_same(iterate_batches(data, 4, True, g1), source)
        assert torch.equal(g1.get_state(), g2.get_state())
    g1, g2 = torch.Generator().manual_seed(5), torch.Generator().manual_seed(5)
    sharded = sharded_train_source(data, 4, 1, 2, g2)
    for _ in range(2):
        assert_same(sharded_train_batches(data, 4, 1, 2, g1), sharded)
    assert torch.equal(g1.get_state(), g2.get_state())


@pytest.fixture
def cremad_splits(tmp_path, writers):
    root = tmp_path / "cremad"
    clips = {
        "train": [f"1{i:03d}_DFA_{c}_XX@{c}" for i, c in enumerate(cremad.CLASSES * 2)],
        "test": [f"2{i:03d}_IEO_{c}_HI@{c}" for i, c in enumerate(cremad.CLASSES)],
    }
    writers.write_av_manifest(
        root, clips, cremad.LAYOUTS["preprocessed"], classes=cremad.CLASSES, spectrogram_shape=(8, 6), frames_per_clip=5
    )
    return cremad.cremad_splits(root, image_size=12, val_fraction=0.0)


@pytest.mark.parametrize("workers", [0, 2])
def test_persistent_batch_source_matches_a_fresh_loader_every_epoch(cremad_splits, workers):
    """Random crops/flips and frame choices happen in the workers: persistent workers reseeded per
    epoch give what fresh workers give, and the trainer's generator makes the same draws."""
    train = cremad_splits.train
    g1, g2 = torch.Generator().manual_seed(11), torch.Generator().manual_seed(11)
    settings = LoaderSettings(num_workers=workers, persistent_workers=workers > 0, prefetch_factor=4)
    source = BatchSource(train, 5, True, g2, settings)
    for epoch in range(3):
        torch.manual_seed(epoch)  # without workers, augmentation draws from the global generator
        old = list(iterate_batches(train, 5, True, g1, workers))
        torch.manual_seed(epoch)
        assert_same(old, source)
        assert torch.equal(g1.get_state(), g2.get_state())
    assert source.settings.persistent_workers == (workers > 0)
    # evaluation: in order; draws its workers' seed from the global generator, as a DataLoader does
    torch.manual_seed(4)
    old = list(iterate_batches(cremad_splits.test, 4, False, None, workers))
    state = torch.get_rng_state()
    torch.manual_seed(4)
    assert_same(old, BatchSource(cremad_splits.test, 4, False, None, settings))
    assert torch.equal(state, torch.get_rng_state())


def test_sharded_sources_match_the_sharded_batches(cremad_splits):
    train = cremad_splits.train
    g1, g2 = torch.Generator().manual_seed(2), torch.Generator().manual_seed(2)
    source = sharded_train_source(train, 4, 0, 2, g2, LoaderSettings(num_workers=2, persistent_workers=True))
    for _ in range(2):
        assert_same(sharded_train_batches(train, 4, 0, 2, g1, 2), source)
        assert torch.equal(g1.get_state(), g2.get_state())
    from framework.data.sharding import sharded_eval_batches

    torch.manual_seed(0)
    old = list(sharded_eval_batches(cremad_splits.test, 2, 1, 2, 0))
    torch.manual_seed(0)
    assert_same(old, sharded_eval_source(cremad_splits.test, 2, 1, 2, LoaderSettings(num_workers=1)))


def test_iterate_batches_accepts_loader_settings(cremad_splits):
    g1, g2 = torch.Generator().manual_seed(8), torch.Generator().manual_seed(8)
    old = iterate_batches(cremad_splits.train, 4, True, g1, 2)
    assert_same(old, iterate_batches(cremad_splits.train, 4, True, g2, LoaderSettings(num_workers=2), "cpu"))
    assert torch.equal(g1.get_state(), g2.get_state())
