"""Averaging across ranks: per-loss gradients in buckets, the summed gradient through DDP, and
the model's state kept identical on every rank.

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

from collections.abc import Iterable, Mapping
from typing import Any

import torch
import torch.distributed as dist
from torch import Tensor, nn

from .launch import DistributedContext


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
