"""The device and precision of a benchmark run: ``--device auto|cpu|cuda|cuda:N`` and
``--precision 32|bf16|16``.

``bf16`` and ``16`` run the forward pass and the losses under ``torch.autocast`` with that dtype;
``16`` adds a ``torch.amp.GradScaler``: the engine gets its scale as ``loss_scale`` and the
optimizer steps through ``scaler.step`` / ``scaler.update``: the trainer's own
:class:`~framework.training.precision.Precision`, one per variant.
Parameters, optimizer state and the integration stay in float32.
"""

from __future__ import annotations

import torch

from ..config.schema import PRECISIONS
from ..training.precision import DTYPES, Precision

__all__ = ["PRECISIONS", "BenchError", "Precision", "check_precision", "device_name", "resolve_device"]

NO_REFERENCE_SCALING = "the reference code's step has no loss scaling (float16 needs a GradScaler)"


class BenchError(ValueError):
    """A device or precision this machine cannot run: one line for the user."""


def resolve_device(choice: str) -> torch.device:
    """``auto`` is CUDA when present, else the CPU; ``cuda`` / ``cuda:N`` must exist."""
    if choice == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        device = torch.device(choice)
    except RuntimeError:
        raise BenchError(f"--device {choice}: valid values: auto | cpu | cuda | cuda:N") from None
    if device.type not in ("cpu", "cuda"):
        raise BenchError(f"--device {choice}: valid values: auto | cpu | cuda | cuda:N")
    if device.type == "cuda":
        if not torch.cuda.is_available():
            build = f"torch {torch.__version__}" + ("" if torch.version.cuda else ", a CPU-only build")
            raise BenchError(f"--device {choice}: CUDA is not available ({build}; no usable GPU)")
        if device.index is not None and device.index >= torch.cuda.device_count():
            raise BenchError(f"--device {choice}: only {torch.cuda.device_count()} CUDA device(s) visible")
    return device


def device_name(device: torch.device) -> str:
    return torch.cuda.get_device_name(device) if device.type == "cuda" else "cpu"


def check_precision(precision: str, device: torch.device) -> None:
    """Refuse a precision the device's autocast cannot run (tried on a tiny matmul)."""
    if precision not in PRECISIONS:
        raise BenchError(f"--precision {precision}: valid values: {' | '.join(PRECISIONS)}")
    if precision == "32":
        return
    if device.type == "cuda" and precision == "bf16" and not torch.cuda.is_bf16_supported():
        raise BenchError(f"--precision bf16: {device_name(device)} does not support bfloat16")
    dtype = DTYPES[precision]
    try:
        if not torch.amp.is_autocast_available(device.type):
            raise RuntimeError("no autocast")
        with torch.autocast(device.type, dtype=dtype):
            out = torch.nn.functional.linear(torch.ones(2, 2, device=device), torch.ones(2, 2, device=device))
        if out.dtype != dtype:
            raise RuntimeError(f"autocast gave {out.dtype}")
        if precision == "16":
            torch.amp.GradScaler(device.type)
    except (RuntimeError, AssertionError) as error:
        raise BenchError(f"--precision {precision}: {device.type} autocast does not run {dtype} ({error})") from None
