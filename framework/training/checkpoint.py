"""Atomic training checkpoints, and which scheduler job wrote them.

A checkpoint is written to a temporary file in the same directory, fsynced, then renamed over
the old one: a reader (or a job killed mid-write) only ever sees a whole checkpoint.
"""

from __future__ import annotations

import os
import tempfile
from pathlib import Path
from typing import Any

import torch


def save_checkpoint(state: dict[str, Any], path: str | Path) -> None:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as handle:
            torch.save(state, handle)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def load_checkpoint(path: str | Path) -> dict[str, Any] | None:
    path = Path(path)
    if not path.is_file():
        return None
    return torch.load(path, map_location="cpu", weights_only=False)


def current_job() -> str | None:
    """The scheduler job this process runs in, the same across its requeues; None outside one.

    Under submitit (``SUBMITIT_EXECUTOR`` set) it is submitit's job id (``<array>_<task>`` for
    array jobs; the controller's id for the local executor), else ``$SLURM_JOB_ID``.
    """
    executor = os.environ.get("SUBMITIT_EXECUTOR")
    if executor:
        try:
            import submitit

            return f"{executor}:{submitit.JobEnvironment().job_id}"
        except Exception:  # noqa: BLE001 - an unknown environment is simply not a job
            return None
    if os.environ.get("SLURM_JOB_ID"):
        return f"slurm:{os.environ['SLURM_JOB_ID']}"
    return None


def restart_count() -> int:
    """How many times Slurm has requeued this job (``$SLURM_RESTART_COUNT``, 0 outside Slurm)."""
    try:
        return int(os.environ.get("SLURM_RESTART_COUNT") or 0)
    except ValueError:
        return 0


def is_requeue_of(checkpoint: dict[str, Any] | None) -> bool:
    """Whether this process is a requeued run of the job that wrote ``checkpoint``.

    A requeue (preemption, a time limit through submitit's checkpointing, ``scontrol requeue``)
    keeps the job id, and Slurm counts it in ``$SLURM_RESTART_COUNT``; submitit's local
    executor restarts a timed-out job under the same id. A new job with the same overrides has
    another id, and so starts over; so does a second run inside one Slurm allocation that was
    never requeued.
    """
    if checkpoint is None:
        return False
    job = current_job()
    if job is None or checkpoint.get("job") != job:
        return False
    return restart_count() > 0 if os.environ.get("SLURM_JOB_ID") else True
