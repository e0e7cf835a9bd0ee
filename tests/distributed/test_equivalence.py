"""The design's proof: two ranks with half the batch each end where one process with the whole
batch does, for sum (DDP and per-loss), mgda, pcgrad and mmpareto (gloo, CPU)."""

from __future__ import annotations

import pytest
import torch
import torch.multiprocessing as mp

from tests.distributed import _workers

pytestmark = pytest.mark.distributed

TOLERANCE = 1e-5


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("equivalence")
    _workers.single(tmp / "single.pt")
    mp.spawn(_workers.ranked, args=(2, str(tmp / "store"), str(tmp / "ranked.pt")), nprocs=2, join=True)
    ranks = [torch.load(f"{tmp / 'ranked.pt'}.rank{r}", weights_only=False) for r in range(2)]
    return torch.load(tmp / "single.pt", weights_only=False), ranks


def max_abs_diff(a: dict, b: dict) -> float:
    assert a.keys() == b.keys()
    return max(float((a[k].double() - b[k].double()).abs().max()) for k in a if a[k].is_floating_point())


@pytest.mark.parametrize("case", list(_workers.CASES))
def test_two_ranks_with_half_batches_match_one_process(trained, case, record_property):
    single, (rank0, rank1) = trained
    assert single[case]["steps"] == rank0[case]["steps"] == 14  # 7 global batches a epoch, 2 epochs
    moved = max_abs_diff(single[case]["params"], _workers_initial(case))
    diff = max_abs_diff(single[case]["params"], rank0[case]["params"])
    record_property(f"{case}_max_abs_diff", diff)
    print(
        f"\n[equivalence] {case}: max |w(2 ranks) - w(1 process)| = {diff:.3g} (parameters moved by up to {moved:.3g})"
    )
    assert moved > 1e-2, "the runs must actually train"
    assert diff < TOLERANCE
    # the ranks never diverge: no broadcast, identical integration
    assert max_abs_diff(rank0[case]["params"], rank1[case]["params"]) == 0.0
    # evaluation split across ranks counts every sample once: the same accuracies
    assert rank0[case]["results"] == pytest.approx(single[case]["results"], abs=1e-12)
    if case == "sum_ddp":  # the first step finds the plan (per-loss); then DDP, and the reducer sends losses only
        assert rank0[case]["bytes"] < rank0["sum"]["bytes"] / 5


def _workers_initial(case: str) -> dict:
    return _workers.build_model(_workers.CASES[case][0], _workers.make_splits().spec).state_dict()
