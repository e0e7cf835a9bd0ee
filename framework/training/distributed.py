"""Data parallelism within one job, on ``torch.distributed``: several processes (ranks), one shard
of every global batch each, the same model on all.

:mod:`framework.training.launch` starts it (the launcher's environment, the device, the process
group); :mod:`framework.training.reduce` averages across the ranks (per-loss gradients, the summed
gradient through DDP, buffers). This module gathers their public names.
"""

from __future__ import annotations

from .launch import (
    BACKENDS,
    DistributedContext,
    DistributedSettings,
    Launch,
    RankFailure,
    init,
    init_process_group,
    launch,
    rank_device,
    resolve_backend,
    shutdown,
    world_size,
)
from .reduce import DataParallel, GradientReducer

__all__ = [
    "BACKENDS",
    "DataParallel",
    "DistributedContext",
    "DistributedSettings",
    "GradientReducer",
    "Launch",
    "RankFailure",
    "init",
    "init_process_group",
    "launch",
    "rank_device",
    "resolve_backend",
    "shutdown",
    "world_size",
]
