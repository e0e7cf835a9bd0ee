"""Launching data parallelism: this process's place among the ranks, its device, and its process
group.

**Launch.** ``torchrun --nproc-per-node N -m framework.main ...`` (torch's env variables
``RANK``, ``WORLD_SIZE``, ``LOCAL_RANK``, ``MASTER_ADDR``, ``MASTER_PORT``), or a Slurm job with
several tasks (``hydra.launcher.tasks_per_node=N``): there submitit's
:class:`submitit.helpers.TorchDistributedEnvironment` exports the same variables from the Slurm
environment (master: the job's first host, port drawn from the job id). One process without
them (``WORLD_SIZE`` unset or 1) is the plain single-process path: no process group, no
collective, nothing of the data-parallel path runs.

**Backend and device.** ``distributed.backend``: ``auto`` (``nccl`` on CUDA, ``gloo`` on CPU),
``gloo`` or ``nccl``. A rank on CUDA uses ``cuda:<local rank mod visible devices>`` (every task
sees all of its node's GPUs, or each sees only its own). ``distributed.timeout_s`` bounds every
collective: a rank that hangs or died fails the others within it.
"""

from __future__ import annotations

import atexit
import logging
import os
import signal
import sys
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import timedelta
from typing import Any

import torch
import torch.distributed as dist

from ..config.schema import DistributedSettings as DistributedSettings  # the schema node of distributed.*

log = logging.getLogger("framework")

BACKENDS = ("auto", "gloo", "nccl")
"""``distributed.backend``: ``auto`` is ``nccl`` on CUDA and ``gloo`` on CPU."""


@dataclass(frozen=True)
class Launch:
    """Where a launcher put this process: its rank, the number of ranks, its rank on the node."""

    rank: int
    world_size: int
    local_rank: int
    launcher: str  # torchrun | submitit


def launch() -> Launch | None:
    """This process's place among several ranks, from the launcher's environment; ``None`` for a
    single process. Reads only (:func:`init` exports submitit's variables)."""
    if int(os.environ.get("WORLD_SIZE", "1") or 1) > 1:
        return Launch(
            int(os.environ["RANK"]), int(os.environ["WORLD_SIZE"]), int(os.environ.get("LOCAL_RANK", "0")), "torchrun"
        )
    if os.environ.get("SUBMITIT_EXECUTOR"):
        import submitit

        env = submitit.JobEnvironment()
        if env.num_tasks > 1:
            return Launch(env.global_rank, env.num_tasks, env.local_rank, "submitit")
    return None


def world_size() -> int:
    """The number of ranks this process is one of (1 for a single process)."""
    found = launch()
    return found.world_size if found is not None else 1


def rank_device(choice: str, local_rank: int) -> torch.device:
    """The device of a rank: ``device=auto|cuda`` -> ``cuda:<local rank mod visible GPUs>`` when CUDA
    is available, else the CPU."""
    if choice in ("auto", "cuda") and torch.cuda.is_available():
        return torch.device("cuda", local_rank % torch.cuda.device_count())
    return torch.device("cpu")


def resolve_backend(backend: str, device: torch.device) -> str:
    if backend == "auto":
        return "nccl" if device.type == "cuda" else "gloo"
    return backend


@dataclass(frozen=True)
class DistributedContext:
    """This rank in an initialised process group."""

    rank: int
    world_size: int
    local_rank: int
    device: torch.device
    backend: str
    settings: DistributedSettings

    @property
    def is_main(self) -> bool:
        """Rank 0: the one that logs to MLflow and writes checkpoints."""
        return self.rank == 0

    def broadcast_object(self, obj: Any) -> Any:
        """Rank 0's ``obj`` on every rank (a sync point too)."""
        box = [obj]
        dist.broadcast_object_list(box, src=0, device=self.device if self.backend == "nccl" else None)
        return box[0]

    def sum(self, values: Sequence[float]) -> list[float]:
        """``values`` summed over the ranks (one all-reduce, float64)."""
        if not values:
            return []
        flat = torch.tensor(list(values), dtype=torch.float64, device=self.device)
        dist.all_reduce(flat)
        return flat.tolist()


def init(settings: DistributedSettings, device_choice: str) -> DistributedContext | None:
    """Join the job's process group (once per process); ``None`` for a single process.

    Under torchrun, a SIGTERM from its agent means another rank failed: it is turned into a
    :class:`RankFailure` (unless this rank is already failing), so the run ends FAILED rather
    than being killed half-way through recording its failure.
    """
    where = launch()
    if where is None:
        return None
    if where.launcher == "submitit":
        import submitit.helpers

        submitit.helpers.TorchDistributedEnvironment().export(set_cuda_visible_devices=False, overwrite=True)
    device = rank_device(device_choice, where.local_rank)
    backend = resolve_backend(settings.backend, device)
    if device.type == "cuda":
        torch.cuda.set_device(device)
    if not dist.is_initialized():
        init_process_group(backend, where.rank, where.world_size, settings.timeout_s)
        atexit.register(shutdown)
        if where.launcher == "torchrun":
            signal.signal(signal.SIGTERM, _on_sigterm)
    if where.rank != 0:
        logging.getLogger("framework").setLevel(logging.WARNING)  # rank 0 reports
    log.info(
        "data parallel: %d ranks (%s), backend %s, rank 0 on %s", where.world_size, where.launcher, backend, device
    )
    return DistributedContext(where.rank, where.world_size, where.local_rank, device, backend, settings)


def init_process_group(
    backend: str, rank: int, world_size: int, timeout_s: float = 300.0, init_method: str | None = None
) -> None:
    """:func:`torch.distributed.init_process_group`, so that :func:`shutdown` can end the group.

    ``torch._dynamo`` keeps references to the default group when it is first imported after the
    group exists (the first optimizer imports it), and ``destroy_process_group`` cannot drop those:
    gloo's threads would then live until the interpreter finalizes (see :func:`shutdown`). So it
    is imported first."""
    import torch._dynamo  # noqa: F401

    dist.init_process_group(
        backend, init_method=init_method, rank=rank, world_size=world_size, timeout=timedelta(seconds=timeout_s)
    )


class RankFailure(RuntimeError):
    """The launcher stopped this rank because another one failed."""


def _on_sigterm(signum: int, frame: Any) -> None:
    del signum, frame
    if sys.exc_info()[0] is not None:  # already failing: let the error path record it
        return
    signal.signal(signal.SIGTERM, signal.SIG_IGN)
    raise RankFailure("stopped by the launcher (SIGTERM): another rank failed")


def shutdown() -> None:
    """Destroy this process's group while the interpreter is alive (at exit, or by a caller).

    Destroying a group created by :func:`init_process_group` joins gloo's threads. A gloo thread
    still alive when the interpreter finalizes may need the GIL to free the tensors of the last
    collective; Python then ends it in the middle of C++ code, and the process aborts
    ("terminate called without an active exception", SIGABRT) after its run has finished.
    """
    if dist.is_initialized():
        dist.destroy_process_group()
