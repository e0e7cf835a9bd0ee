"""The benchmark's measurements: the peak of a step's own allocations, and the frozen heap that keeps
each measurement's garbage collection to the steps' own objects."""

from __future__ import annotations

import gc
import weakref

import pytest
import torch

from framework.bench.measure import frozen_heap, measure_peak_mb


class Cycle:
    def __init__(self) -> None:
        self.me = self


def test_a_step_that_allocates_four_mib_peaks_at_four_mib_above_the_held_bytes():
    def step() -> None:
        block = torch.ones(2**20)  # 4 MiB of float32
        del block

    peak = measure_peak_mb(step, lambda: 3 * 2**20, torch.device("cpu"))
    assert peak == pytest.approx(3 + 4, abs=0.01)


def test_the_heap_is_frozen_inside_the_block_only_and_garbage_is_still_collected():
    before = Cycle()
    gone_before = weakref.ref(before)
    del before
    with frozen_heap():
        assert gone_before() is None  # collected on the way in
        assert gc.get_freeze_count() > 0
        during = Cycle()
        gone_during = weakref.ref(during)
        del during
        gc.collect()
        assert gone_during() is None  # the steps' own garbage is collected
    assert gc.get_freeze_count() == 0


def test_the_heap_is_unfrozen_when_the_block_fails():
    with pytest.raises(RuntimeError), frozen_heap():
        raise RuntimeError("a step failed")
    assert gc.get_freeze_count() == 0
