"""On CUDA: a trainer built from ``experiment=smoke`` with ``device=cuda`` keeps every parameter,
optimizer state, integrator tensor and batch on the GPU after a step. ``pytest -m cuda``."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest
import torch
from torch import Tensor

pytestmark = [
    pytest.mark.cuda,
    pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU (torch.cuda.is_available() is False)"),
]


def tensors(obj: Any) -> Iterator[Tensor]:
    """Every tensor in nested dicts, lists, tuples and objects' ``__dict__`` (not modules' own)."""
    seen: set[int] = set()

    def walk(o: Any, depth: int) -> Iterator[Tensor]:
        if id(o) in seen or depth > 6:
            return
        seen.add(id(o))
        if isinstance(o, Tensor):
            yield o
        elif isinstance(o, dict):
            for v in o.values():
                yield from walk(v, depth + 1)
        elif isinstance(o, list | tuple | set):
            for v in o:
                yield from walk(v, depth + 1)
        elif hasattr(o, "__dict__") and not isinstance(o, type | torch.nn.Module | torch.Generator):
            yield from walk(vars(o), depth + 1)

    yield from walk(obj, 0)


def off_device(found: Iterator[Tensor], device_type: str) -> list[str]:
    """Floating-point tensors not on ``device_type`` (RNG states are byte tensors on the CPU by design)."""
    return [
        f"{tuple(t.shape)} {t.dtype} on {t.device}"
        for t in found
        if t.is_floating_point() and t.device.type != device_type
    ]


def one_step_placement(compose_cfg, device: str, integrator: str) -> None:
    from framework.main import build_trainer

    cfg = compose_cfg(
        "experiment=smoke", f"device={device}", f"integrator={integrator}", "trainer.epochs=1",
        "trainer.max_steps_per_epoch=1", "trainer.statistics.noise_every=1", "trainer.progress=false",
    )  # fmt: skip
    trainer = build_trainer(cfg, None, None)
    batches: list[tuple[dict[str, Tensor], Tensor]] = []
    original = trainer.train_step

    def record(inputs, labels, *args, **kwargs):
        batches.append((inputs, labels))
        return original(inputs, labels, *args, **kwargs)

    trainer.train_step = record  # type: ignore[method-assign]
    trainer.train_epoch()
    kind = torch.device(device).type
    assert len(batches) == 1
    inputs, labels = batches[0]
    assert labels.device.type == kind and all(t.device.type == kind for t in inputs.values())
    assert all(p.device.type == kind for p in trainer.model.parameters())
    assert all(b.device.type == kind for b in trainer.model.buffers())
    state = list(tensors(dict(trainer.optimizer.state)))
    assert state, "SGD with momentum keeps a buffer per parameter after a step"
    assert not off_device(iter(state), kind)
    assert not off_device(tensors(trainer.engine.state_dict()), kind), "the integrator's state"
    assert not off_device(tensors(trainer.integrator), kind), "the integrator's tensors"
    assert all(p.grad is None or p.grad.device.type == kind for p in trainer.model.parameters())


@pytest.mark.parametrize("integrator", ["mmpareto", "gradvac", "nash_mtl"])
def test_trainer_keeps_everything_on_cuda_after_one_step(compose_cfg, integrator):
    one_step_placement(compose_cfg, "cuda", integrator)
