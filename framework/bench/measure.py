"""Measuring one call: its wall time (synchronised on CUDA) and its peak of live tensor memory."""

from __future__ import annotations

import gc
import os
import sys
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager

import torch


def synchronize(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def timed(fn: Callable[[], None], device: torch.device) -> float:
    """Milliseconds ``fn()`` takes, the device's queued work included."""
    synchronize(device)
    start = time.perf_counter()
    fn()
    synchronize(device)
    return (time.perf_counter() - start) * 1e3


@contextmanager
def quiet_stderr() -> Iterator[None]:
    """Silence the profiler's start/stop lines (written by its C++ side to file descriptor 2)."""
    sys.stderr.flush()
    saved = os.dup(2)
    try:
        with open(os.devnull, "w") as null:
            os.dup2(null.fileno(), 2)
        yield
    finally:
        os.dup2(saved, 2)
        os.close(saved)


@contextmanager
def frozen_heap() -> Iterator[None]:
    """Every object alive now (the imports, the models, the runners) out of the garbage collector's
    reach until the block ends: each measurement's ``gc.collect()``, and any collection that falls
    in a timed step, scan only the steps' own objects. A full collection of the ~700k objects after
    the imports takes about 0.4 s on CPU."""
    gc.collect()
    gc.freeze()
    try:
        yield
    finally:
        gc.unfreeze()


def measure_peak_mb(fn: Callable[[], None], held_bytes: Callable[[], int], device: torch.device) -> float:
    """Held bytes plus the highest point the step's own allocations reach (MiB).

    On CUDA the peak is ``torch.cuda.max_memory_allocated`` above what was allocated before; on CPU
    ``fn`` runs once under ``torch.profiler`` with ``profile_memory=True`` and its allocation and
    free events are replayed in time order.
    """
    gc.collect()
    held = held_bytes()
    if device.type == "cuda":
        synchronize(device)
        base = torch.cuda.memory_allocated(device)
        torch.cuda.reset_peak_memory_stats(device)
        fn()
        synchronize(device)
        return (held + torch.cuda.max_memory_allocated(device) - base) / 2**20
    from torch.profiler import ProfilerActivity, profile

    with quiet_stderr(), profile(activities=[ProfilerActivity.CPU], profile_memory=True) as prof:
        fn()
    events = [
        e
        for e in prof.profiler.kineto_results.events()
        if e.name() == "[memory]" and e.device_type() == torch.autograd.DeviceType.CPU
    ]
    events.sort(key=lambda e: e.start_ns())
    live = peak = 0
    for e in events:
        live += e.nbytes()
        peak = max(peak, live)
    return (held + peak) / 2**20
