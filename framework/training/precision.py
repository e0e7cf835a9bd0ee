"""Mixed precision for the trainer: ``trainer.precision`` = ``32`` | ``bf16`` | ``16``.

``bf16`` runs the forward pass and the losses under ``torch.autocast`` in bfloat16. ``16`` does the
same in float16 and adds a ``torch.amp.GradScaler``: the engine takes every per-loss gradient from
the scaled losses and unscales it before any Gram matrix or integration (which stay in float32 or
float64), and a group whose per-loss gradient is not finite is not integrated. The trainer then
unscales ``.grad`` (before the method's hooks, which may clip or rescale it) and steps through the
scaler, which skips a step with a non-finite gradient and backs the scale off: an overflow, counted,
not a divergence. Parameters, optimizer state and statistics stay in float32.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterable
from typing import Any

import torch
from torch import Tensor

from ..config.schema import PRECISIONS

DTYPES = {"bf16": torch.bfloat16, "16": torch.float16}


class Precision:
    """The autocast context and, for ``16``, the gradient scaler of one run on ``device``."""

    def __init__(self, precision: str, device: torch.device) -> None:
        self.name = str(precision)
        if self.name not in PRECISIONS:
            raise ValueError(f"trainer.precision={precision!r}: valid values: {' | '.join(PRECISIONS)}")
        self.device = device
        self.scaler = torch.amp.GradScaler(device.type) if self.name == "16" else None

    def autocast(self) -> contextlib.AbstractContextManager[Any]:
        if self.name == "32":
            return contextlib.nullcontext()
        return torch.autocast(self.device.type, dtype=DTYPES[self.name])

    def loss_scale(self) -> Tensor | None:
        """The scaler's current scale as a device tensor (no host sync), or ``None`` without one."""
        if self.scaler is None:
            return None
        return self.scaler.scale(torch.ones((), device=self.device))

    def unscale_(self, optimizer: torch.optim.Optimizer) -> None:
        if self.scaler is not None:
            self.scaler.unscale_(optimizer)

    def step(self, optimizer: torch.optim.Optimizer) -> Tensor | None:
        """Step ``optimizer``. With a scaler: a 0-dim device tensor, true when the scaler skipped the
        step for an overflow (its scale backs off exactly then); read by no one until the epoch ends."""
        if self.scaler is None:
            optimizer.step()
            return None
        one = torch.ones((), device=self.device)
        before = self.scaler.scale(one)
        self.scaler.step(optimizer)
        self.scaler.update()
        return self.scaler.scale(one) < before

    def state_dict(self) -> dict[str, Any]:
        return self.scaler.state_dict() if self.scaler is not None else {}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        if self.scaler is not None and state:
            self.scaler.load_state_dict(state)


def all_finite(tensors: Iterable[Tensor]) -> bool:
    """Whether every value of ``tensors`` is finite (one host read)."""
    checks = [torch.isfinite(t.detach()).all() for t in tensors]
    return bool(torch.stack(checks).all()) if checks else True
