"""The trainer's settings (``trainer.*`` in the config), its resumable state, and its errors."""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field

import torch
from torch import Tensor

from .statistics import StatisticsSettings


@dataclass
class TrainerSettings:
    epochs: int = 8
    batch_size: int = 64
    eval_batch_size: int = 512
    num_workers: int | None = None  # data loading (disk datasets); None: 0 on CPU, min(8, CPUs) on CUDA
    pin_memory: bool | None = None  # None: on CUDA
    persistent_workers: bool | None = None  # None: on CUDA, with workers
    prefetch_factor: int | None = None  # None: 4 on CUDA, with workers
    max_steps_per_epoch: int | None = None
    checkpoint_every: int = 1
    progress: bool | None = None
    on_nonfinite: str = "stop"  # a non-finite loss or gradient: stop (NonFiniteError) | skip_step
    precision: str = "32"  # 32 | bf16 | 16 (framework/training/precision.py)
    statistics: StatisticsSettings = field(default_factory=StatisticsSettings)

    def __post_init__(self) -> None:
        self.precision = str(self.precision)
        if not isinstance(self.statistics, StatisticsSettings):
            self.statistics = StatisticsSettings(**dict(self.statistics))


def all_finite(tensors: Iterable[Tensor]) -> bool:
    """Whether every value of ``tensors`` is finite (one host read)."""
    checks = [torch.isfinite(t.detach()).all() for t in tensors]
    return bool(torch.stack(checks).all()) if checks else True


class NonFiniteError(FloatingPointError):
    """A training step met a non-finite loss or gradient under ``trainer.on_nonfinite=stop``."""


@dataclass
class TrainingState:
    epoch: int = 0
    step: int = 0
    best_epoch: int = -1
    best_val: float = -1.0
    best_test: dict[str, float] = field(default_factory=dict)
    last_test: dict[str, float] = field(default_factory=dict)


def resolve_device(name: str) -> torch.device:
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(name)
