"""One variant's state in a benchmark: what its factory gets (:class:`Setup`) and what it returns
(:class:`Runner`: the step to time, the tensors it holds, its extra costs)."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import torch
from torch import Tensor

from ..losses import MultitaskLoss
from ..models.base import MultimodalModel
from .cases import ModelCase
from .measure import timed


@dataclass
class Setup:
    """What a variant's factory builds its runner from: its own copy of the initial model (on the
    device, in train mode), its optimizer, the fixed batch and the loss."""

    name: str
    case: ModelCase
    model: MultimodalModel
    optimizer: torch.optim.Optimizer
    inputs: dict[str, Tensor]
    labels: Tensor
    loss: MultitaskLoss
    device: torch.device
    workdir: Path
    precision: str = "32"  # 32 | bf16 | 16 (:mod:`.precision`)

    def runner(self, step: Callable[[], None]) -> Runner:
        return Runner(self.name, self.model, self.optimizer, self.inputs, self.labels, step)


@dataclass
class Runner:
    """One variant: its own model copy, optimizer and step function."""

    name: str
    model: MultimodalModel
    optimizer: torch.optim.Optimizer
    inputs: dict[str, Tensor]
    labels: Tensor
    step: Callable[[], None]
    extra_held: list[Tensor] = field(default_factory=list)
    amortised_ms: Callable[[], float] | None = None
    extra_peak_mb: Callable[[], float] | None = None
    close: Callable[[], None] | None = None
    excluded_ms: Callable[[], float] | None = None
    times: list[float] = field(default_factory=list)

    def timed_step(self, device: torch.device) -> float:
        before = self.excluded_ms() if self.excluded_ms else 0.0
        ms = timed(self.step, device)
        return ms - ((self.excluded_ms() - before) if self.excluded_ms else 0.0)

    def held_bytes(self) -> int:
        """Bytes of tensors the variant keeps between steps (unique storages)."""
        tensors: list[Tensor] = [*self.model.parameters(), *self.model.buffers(), *self.inputs.values(), self.labels]
        for state in self.optimizer.state.values():
            tensors += [v for v in state.values() if isinstance(v, Tensor)]
        tensors += self.extra_held
        seen: dict[int, int] = {}
        for t in tensors:
            storage = t.untyped_storage()
            seen[storage.data_ptr()] = storage.nbytes()
        return sum(seen.values())
