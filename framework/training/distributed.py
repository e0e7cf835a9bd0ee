"""Data parallelism within one job, on ``torch.distributed``: several processes (ranks), one shard
of every global batch each, the same model on all.

**Launch.** ``torchrun --nproc-per-node N -m framework.main ...`` (torch's env variables
``RANK``, ``WORLD_SIZE``, ``LOCAL_RANK``, ``MASTER_ADDR``, ``MASTER_PORT``), or a Slurm job with
several tasks (``hydra.launcher.tasks_per_node=N``): there submitit's
:class:`submitit.helpers.TorchDistributedEnvironment` exports the same variables from the Slurm
environment (master: the job's first host, port drawn from the job id). One process without
them (``WORLD_SIZE`` unset or 1) is the plain single-process path: no process group, no
collective, nothing of this module runs.

**Backend and device.** ``distributed.backend``: ``auto`` (``nccl`` on CUDA, ``gloo`` on CPU),
``gloo`` or ``nccl``. A rank on CUDA uses ``cuda:<local rank mod visible devices>`` (every task
sees all of its node's GPUs, or each sees only its own). ``distributed.timeout_s`` bounds every
collective: a rank that hangs or died fails the others within it.

**Per-loss gradients** (:class:`GradientReducer`). The integrators decide from per-loss
gradients, so the ranks average every loss's gradient across ranks *before* integrating: each
rank computes its shard's per-loss gradients, :meth:`GradientReducer.mean_` averages them (and the
loss values) in flat buckets of ``distributed.bucket_mb``, a few all-reduce calls per step, and
every rank then runs the integrator on identical inputs, so the parameters stay identical without
a broadcast. This is exact because every rank's shard has the same size (see
:mod:`framework.data.sharding`): the mean over ranks of per-shard mean-loss gradients is the
gradient of the global batch's mean loss, per loss.

**Fewer bytes?** A step sends ``sum_groups k_g d_g`` values (``k_g`` losses reaching a group of
``d_g`` parameters; heads and single-loss groups once). When the update is a fixed linear
combination ``sum_i w_i g_i`` and no statistics are due, one combined gradient (``d`` values) is
exact, and that is what the ``sum`` path sends: one all-reduce of the summed gradient through
:class:`~torch.nn.parallel.DistributedDataParallel` (:meth:`DataParallel.summed_step`). An
integrator that only needs the Gram matrix cannot send less: the Gram matrix of the *averaged*
gradients needs the cross-rank products ``<g_i^r, g_j^s>``, which per-rank Gram matrices do not
hold, and the nonlinear weights (mgda, pcgrad, mmpareto) must see the averaged gradients. So steps
with statistics, and every step of a gradient-dependent integrator, send the per-loss gradients.

**BatchNorm.** ``model.sync_bn=true`` converts BatchNorm layers to :class:`~torch.nn.SyncBatchNorm`
(batch statistics over the global batch; torch supports it on CUDA only). The default,
``false``, normalises each rank's shard by its own statistics (as DDP does); the running buffers
are then rank 0's, broadcast before every evaluation and checkpoint.
"""

from __future__ import annotations

import atexit
import logging
import os
import signal
import sys
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import timedelta
from typing import Any

import torch
import torch.distributed as dist
from torch import Tensor, nn

log = logging.getLogger("framework")

BACKENDS = ("auto", "gloo", "nccl")
"""``distributed.backend``: ``auto`` is ``nccl`` on CUDA and ``gloo`` on CPU."""


@dataclass(frozen=True)
class DistributedSettings:
    """``distributed.*`` of ``conf/train.yaml``."""

    backend: str = "auto"
    timeout_s: float = 300.0
    bucket_mb: float = 25.0

    def __post_init__(self) -> None:
        if self.backend not in BACKENDS:
            raise ValueError(f"distributed.backend={self.backend!r}: valid values: {' | '.join(BACKENDS)}")


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


class GradientReducer:
    """Averages lists of tensors across ranks in place: flat buckets of at most ``bucket_mb``, one
    asynchronous all-reduce each, all awaited together. Counts the values it sends."""

    def __init__(self, world_size: int, bucket_mb: float = 25.0) -> None:
        self.world_size = world_size
        self.bucket_bytes = max(1, int(bucket_mb * 2**20))
        self.bytes_sent = 0  # payload bytes handed to all-reduce, cumulative
        self.calls = 0

    def mean_(self, tensors: Iterable[Tensor]) -> None:
        """Replace each tensor by its mean over the ranks (pre-divided, then summed)."""
        buckets: list[list[Tensor]] = []
        current: list[Tensor] = []
        size = 0
        for t in sorted(tensors, key=lambda t: (str(t.device), str(t.dtype))):
            nbytes = t.numel() * t.element_size()
            if current and (size + nbytes > self.bucket_bytes or _kind(current[0]) != _kind(t)):
                buckets.append(current)
                current, size = [], 0
            current.append(t)
            size += nbytes
        if current:
            buckets.append(current)
        pending = []
        for bucket in buckets:
            flat = torch.cat([t.reshape(-1) for t in bucket]).div_(self.world_size)
            pending.append((bucket, flat, dist.all_reduce(flat, async_op=True)))
            self.bytes_sent += flat.numel() * flat.element_size()
            self.calls += 1
        for bucket, flat, work in pending:
            work.wait()
            for t, chunk in zip(bucket, flat.split([t.numel() for t in bucket]), strict=True):
                t.copy_(chunk.view_as(t))


def _kind(t: Tensor) -> tuple[torch.device, torch.dtype]:
    return t.device, t.dtype


class _Forward(nn.Module):
    """The model's training forward (encode, then classify) as one ``forward``, for DDP."""

    def __init__(self, model: nn.Module, detach_unimodal: bool) -> None:
        super().__init__()
        self.model = model
        self.detach_unimodal = detach_unimodal

    def forward(self, inputs: Mapping[str, Tensor]) -> dict[str, Tensor]:
        features = self.model.encode(inputs)  # type: ignore[operator]
        return self.model.classify(features, detach_unimodal=self.detach_unimodal)  # type: ignore[operator]


class DataParallel:
    """What the trainer does differently on several ranks: start in sync, average gradients
    (per loss through :attr:`reducer`; summed through DDP), sum counts, sync buffers."""

    def __init__(self, context: DistributedContext, model: nn.Module) -> None:
        self.context = context
        self.model = model
        self.reducer = GradientReducer(context.world_size, context.settings.bucket_mb)
        self._ddp: nn.parallel.DistributedDataParallel | None = None
        self.broadcast_state()

    @property
    def rank(self) -> int:
        return self.context.rank

    @property
    def world_size(self) -> int:
        return self.context.world_size

    def broadcast_state(self) -> None:
        """Rank 0's parameters and buffers on every rank (at the start; after a resume all ranks
        loaded the same checkpoint anyway)."""
        with torch.no_grad():
            for t in [*self.model.parameters(), *self.model.buffers()]:
                dist.broadcast(t.data, src=0)

    def sync_buffers(self) -> None:
        """Rank 0's buffers (BatchNorm running statistics) on every rank: before evaluating and
        checkpointing, so that every rank evaluates the model rank 0 saves."""
        buffers = [b for b in self.model.buffers() if b.numel()]
        with torch.no_grad():
            for b in buffers:
                dist.broadcast(b, src=0)

    def summed_step(
        self, inputs: Mapping[str, Tensor], labels: Tensor, loss_fn: Any, detach_unimodal: bool
    ) -> dict[str, float]:
        """Forward and one backward of the summed losses through DDP (one all-reduce of the summed
        gradient, overlapped with the backward); the losses' means over the ranks."""
        if self._ddp is None:
            self._ddp = self._wrap(inputs, labels, loss_fn, detach_unimodal)
        losses = loss_fn(self._ddp(inputs), labels)
        torch.stack(list(losses.values())).sum().backward()
        values = torch.stack([v.detach() for v in losses.values()])
        self.reducer.mean_([values])
        return dict(zip(losses, values.tolist(), strict=True))

    def _wrap(
        self, inputs: Mapping[str, Tensor], labels: Tensor, loss_fn: Any, detach_unimodal: bool
    ) -> nn.parallel.DistributedDataParallel:
        """The model in DDP, built at the first summed step. DDP must know whether some trainable
        parameter gets no gradient from the summed losses: one probing backward tells (the same
        on every rank: the graph does not depend on the data)."""
        forward = _Forward(self.model, detach_unimodal)
        params = [p for p in self.model.parameters() if p.requires_grad]
        device = self.context.device
        buffers = [b.clone() for b in self.model.buffers()]
        with torch.random.fork_rng(devices=[device] if device.type == "cuda" else []):  # leaves no trace:
            losses = loss_fn(forward(inputs), labels)  # RNG and buffers
            grads = torch.autograd.grad(torch.stack(list(losses.values())).sum(), params, allow_unused=True)
        with torch.no_grad():
            for b, saved in zip(self.model.buffers(), buffers, strict=True):
                b.copy_(saved)
        return nn.parallel.DistributedDataParallel(
            forward,
            device_ids=[device] if device.type == "cuda" else None,
            forward_sync_buffers=False,  # buffers: rank 0's, synced before evaluation
            bucket_cap_mb=self.context.settings.bucket_mb,
            find_unused_parameters=any(g is None for g in grads),
        )

    @property
    def ddp_bytes_per_step(self) -> int:
        """Bytes one DDP step all-reduces: every trainable parameter's gradient once."""
        return sum(p.numel() * p.element_size() for p in self.model.parameters() if p.requires_grad)
