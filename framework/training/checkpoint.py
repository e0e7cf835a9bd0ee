"""Atomic training checkpoints: what they hold besides the trainer's state, and which job wrote them.

A checkpoint is written to a temporary file in the same directory, fsynced, then renamed over
the old one: a reader (or a job killed mid-write) only ever sees a whole checkpoint. The last two
are kept: before the new one takes ``checkpoint.pt``'s name, the old one is renamed to
``checkpoint.prev.pt`` (:func:`previous_path`). A checkpoint that cannot be read (truncated, corrupt,
not a checkpoint) gives a one-line warning naming the file, and the previous one is used. One that
cannot be written (a full disk) raises :class:`CheckpointWriteError`, one line naming the file and
the system's reason (``[Errno 28] No space left on device``), and leaves those before as they were. Every
checkpoint records the scheduler job that wrote it (:func:`current_job`), so a requeue of that job
resumes from it, and the global RNG states (:func:`rng_state`), so a resumed run draws the same
numbers as an uninterrupted one.
"""

from __future__ import annotations

import logging
import os
import random
import tempfile
from pathlib import Path
from typing import Any, cast

import numpy as np
import torch

JOB_KEY = "job"

log = logging.getLogger("framework")


def previous_path(path: str | Path) -> Path:
    """Where the checkpoint before ``path`` is kept: ``checkpoint.pt`` -> ``checkpoint.prev.pt``."""
    path = Path(path)
    return path.with_name(f"{path.stem}.prev{path.suffix}")


def rng_state() -> dict[str, Any]:
    """The global RNG states of torch (CPU and CUDA), numpy and Python."""
    return {
        "torch": torch.get_rng_state(),
        "numpy": np.random.get_state(),
        "python": random.getstate(),
        "cuda": torch.cuda.get_rng_state_all() if torch.cuda.is_available() else None,
    }


def set_rng_state(state: dict[str, Any]) -> None:
    """Restore what :func:`rng_state` captured (CUDA states only where CUDA is available)."""
    torch.set_rng_state(state["torch"])
    np.random.set_state(state["numpy"])
    random.setstate(state["python"])
    if state.get("cuda") is not None and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


def seed_everything(seed: int) -> None:
    """Seed the global RNGs of Python, numpy and torch."""
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)


def save_checkpoint(state: dict[str, Any], path: str | Path) -> None:
    """Write ``state`` atomically to ``path``, stamped with the job that wrote it; the checkpoint
    ``path`` held before is kept as :func:`previous_path` (each rename is atomic, and between the
    two the previous one is still whole)."""
    state = {**state, JOB_KEY: current_job()}  # a requeue of this job resumes from here
    path = Path(path)
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    except OSError as error:
        raise write_error(path, error) from error
    try:
        with os.fdopen(fd, "wb") as handle:
            torch.save(state, handle)
            handle.flush()
            os.fsync(handle.fileno())
        if path.is_file():
            os.replace(path, previous_path(path))
        os.replace(tmp, path)
    except Exception as error:
        Path(tmp).unlink(missing_ok=True)
        raise write_error(path, error) from error
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


class CheckpointWriteError(OSError):
    """A checkpoint could not be written (a full disk, no permission, an I/O error). The message is
    one line naming the file and the operating system's reason; ``errno`` is its error number."""


def write_error(path: Path, error: BaseException) -> CheckpointWriteError:
    """``error`` (raised while writing ``path``) as one line with the real cause: torch's zip writer
    reports a full disk as a RuntimeError ("unexpected pos ...") raised while the ENOSPC is handled."""
    cause = _os_error(error)
    reason = f"[Errno {cause.errno}] {cause.strerror or os.strerror(cast(int, cause.errno))}" if cause else _why(error)
    failure = CheckpointWriteError(f"cannot write checkpoint {path}: {reason}; the checkpoints written before are kept")
    failure.errno = cause.errno if cause else None
    return failure


def _os_error(error: BaseException | None) -> OSError | None:
    """The first ``OSError`` with an error number in ``error``'s chain (causes and contexts)."""
    seen: set[int] = set()
    while error is not None and id(error) not in seen:
        seen.add(id(error))
        if isinstance(error, OSError) and error.errno:
            return error
        error = error.__cause__ or error.__context__
    return None


def _read(path: Path) -> dict[str, Any]:
    checkpoint = torch.load(path, map_location="cpu", weights_only=False)
    if not isinstance(checkpoint, dict):
        raise ValueError(f"holds a {type(checkpoint).__name__}, not a checkpoint")
    return checkpoint


def _why(error: BaseException) -> str:
    text = " ".join(str(error).split())
    return f"{type(error).__name__}: {text[:200]}" if text else type(error).__name__


def load_checkpoint(path: str | Path) -> dict[str, Any] | None:
    """The checkpoint at ``path``; if it is unreadable, the previous one (:func:`previous_path`),
    with a one-line warning naming the file. ``None`` when there is none.

    Raises ``ValueError`` when checkpoints exist but none can be read (a resume would otherwise
    silently start over).
    """
    path = Path(path)
    previous = previous_path(path)
    failures: list[str] = []
    for candidate in (path, previous):
        if not candidate.is_file():
            continue
        try:
            checkpoint = _read(candidate)
        except Exception as error:  # truncated or corrupt: any unpickling error
            failures.append(f"{candidate} ({_why(error)})")
            fallback = "using the previous one" if candidate == path and previous.is_file() else "none left to use"
            log.warning("checkpoint %s is unreadable (%s): %s", candidate, _why(error), fallback)
            continue
        if candidate == previous and failures:
            log.warning("resuming from the previous checkpoint %s", previous)
        return checkpoint
    if failures:
        raise ValueError(f"no readable checkpoint: {'; '.join(failures)}; delete them to start over")
    return None


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
        except Exception:
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
    if job is None or checkpoint.get(JOB_KEY) != job:
        return False
    return restart_count() > 0 if os.environ.get("SLURM_JOB_ID") else True


def checkpoint_to_resume(path: str | Path, resume: bool) -> tuple[dict[str, Any] | None, bool]:
    """The checkpoint a run continues from (``None``: it starts afresh), and whether this process
    is a requeue of the job that wrote it.

    A run continues when ``resume`` is set (``resume=true``), or when this process is a requeue
    of the job that wrote the checkpoint (preemption, a time limit).
    """
    if not (resume or current_job() is not None):
        return None, False
    checkpoint = load_checkpoint(path)
    requeued = is_requeue_of(checkpoint)
    return (checkpoint if resume or requeued else None), requeued
