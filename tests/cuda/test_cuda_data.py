"""Device-resident in-memory datasets and pinned, persistent loading on a CUDA device (skipped
without one)."""

from __future__ import annotations

import pytest
import torch

from framework.data.base import BatchSource, DatasetSpec, LoaderSettings, TensorMultimodalDataset, iterate_batches

pytestmark = [pytest.mark.cuda, pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")]


def dataset(n: int = 37) -> TensorMultimodalDataset:
    g = torch.Generator().manual_seed(0)
    spec = DatasetSpec({"a": (3, 4), "b": (5,)}, 3)
    inputs = {"a": torch.randn(n, 3, 4, generator=g), "b": torch.randn(n, 5, generator=g)}
    return TensorMultimodalDataset(inputs, torch.arange(n) % 3, spec)


def test_device_resident_batches_equal_the_host_ones():
    host = dataset()
    device = host.to("cuda")
    assert device.device.type == "cuda" and host.device.type == "cpu"
    g1, g2 = torch.Generator().manual_seed(4), torch.Generator().manual_seed(4)
    source = BatchSource(device, 8, True, g2, LoaderSettings(), "cuda")
    for _ in range(2):
        for (x, y), (u, v) in zip(iterate_batches(host, 8, True, g1), source, strict=True):
            assert u["a"].device.type == "cuda" and v.device.type == "cuda"
            assert torch.equal(x["a"], u["a"].cpu()) and torch.equal(x["b"], u["b"].cpu())
            assert torch.equal(y, v.cpu())
        assert torch.equal(g1.get_state(), g2.get_state())


def test_cuda_defaults_pin_memory():
    settings = LoaderSettings(num_workers=0).resolve("cuda")
    assert settings.pin_memory and not settings.persistent_workers
