"""The trainer's settings (``trainer.*`` in the config; defined with the config schema in
:mod:`framework.config.schema`), its resumable state, and its errors."""

from __future__ import annotations

from dataclasses import dataclass, field

import torch

from ..config.schema import TrainerSettings as TrainerSettings  # the schema node of trainer.*


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
