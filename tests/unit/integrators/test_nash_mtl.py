"""Nash-MTL through torchjd's NashMTL weighting, given a k x k factor of the group Gram matrix.

Shared checks (torchjd on the (k, d) matrix, state, seeds, scale): test_torchjd_adapters.py.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch
import torchjd.aggregation as tjd

from framework.integrators import get_integrator
from framework.integrators.nash_mtl import gram_factor
from framework.training.plan import GroupDecision
from framework.training.statistics import EpochStatistics

from . import _refs as R

pytestmark = pytest.mark.filterwarnings("ignore:You are solving a parameterized problem that is not DPP")


@pytest.mark.parametrize("k", [2, 3, 5])
def test_gram_factor(k: int):
    g = torch.tensor(R.with_conflict(k, k, 12))
    gram = g @ g.T
    factor = gram_factor(gram)
    torch.testing.assert_close(factor @ factor.T, gram, rtol=1e-13, atol=1e-13 * float(gram.abs().max()))
    low_rank = torch.cat([g[:1], 2 * g[:1]])  # rank 1: no Cholesky, the factor still works
    factor = gram_factor(low_rank @ low_rank.T)
    torch.testing.assert_close(factor @ factor.T, low_rank @ low_rank.T, rtol=1e-13, atol=1e-12)


@pytest.mark.parametrize("k", [2, 3, 5])
def test_equals_torchjd_given_the_factor(k: int):
    # torchjd uses J only through J J^T and |w^T J|: the same numbers from L (exact up to rounding)
    integrator = get_integrator("nash_mtl")
    reference = tjd.NashMTL(n_tasks=k).weighting
    for step in range(5):
        g = torch.tensor(R.with_conflict(10 * k + step, k, 12))
        _, decision = integrator(g)
        expected = reference(gram_factor(decision.gram))  # the Gram matrix the adapter used
        torch.testing.assert_close(decision.weights, expected, rtol=1e-12, atol=1e-14)


def test_update_norm_is_clipped_to_max_norm():
    for max_norm in (1.0, 0.25):
        out, _ = get_integrator("nash_mtl", max_norm=max_norm)(torch.tensor(R.with_conflict(1, 3, 12)) * 10)
        assert float(out.norm()) <= max_norm * (1 + 1e-9)


def test_zero_gradients_give_zero_update_and_keep_the_state():
    integrator = get_integrator("nash_mtl")
    out, decision = integrator(torch.zeros(3, 6, dtype=torch.float64))
    assert torch.equal(out, torch.zeros(6, dtype=torch.float64))
    assert torch.equal(decision.weights, torch.zeros(3, dtype=torch.float64))
    assert integrator.module.step == 0


def test_number_of_losses_is_fixed_after_the_first_call():
    integrator = get_integrator("nash_mtl")
    integrator(torch.tensor(R.with_conflict(0, 2, 6)))
    with pytest.raises(ValueError) as info:
        integrator(torch.tensor(R.with_conflict(0, 3, 6)))
    assert "nash_mtl" in str(info.value) and "\n" not in str(info.value)
    assert get_integrator("nash_mtl").for_group()(torch.tensor(R.with_conflict(0, 3, 6))).update.shape == (6,)


@pytest.mark.parametrize("scale", [1e-20, 1e20])
def test_float32_extremes_are_finite(scale: float):
    # torchjd's own J J^T overflows or underflows in float32 here; the framework's Gram matrix does not
    g = (torch.tensor(R.with_conflict(2, 3, 9)) * scale).float()
    out, decision = get_integrator("nash_mtl")(g)
    assert torch.isfinite(out).all() and torch.isfinite(decision.weights).all()


def _solve(g: np.ndarray):
    integrator = get_integrator("nash_mtl")
    _, decision = integrator(torch.tensor(g))
    return integrator, decision


def test_solver_fallback_is_reported():
    # Found by scanning seeds: ECOS calls the first linearised problem unbounded, and torchjd keeps
    # its starting point, uniform weights (scaled to max_norm).
    g = _fallback_matrix()
    integrator, decision = _solve(g)
    assert integrator.module.prob.status == "unbounded"
    w = R.as_np(decision.weights)
    np.testing.assert_allclose(w, np.full_like(w, w[0]), rtol=1e-12)
    assert decision.events == {"solver_fallback": 1}


def test_solved_steps_report_no_fallback():
    integrator, decision = _solve(R.with_conflict(0, 3, 12))
    assert integrator.module.prob.status in ("optimal", "optimal_inaccurate")
    assert decision.events == {"solver_fallback": 0}


def test_fallbacks_are_counted_per_epoch():
    stats = EpochStatistics()
    for g in (_fallback_matrix(), R.with_conflict(0, 3, 12), _fallback_matrix()):
        _, decision = _solve(g)
        stats.observe([GroupDecision("encoder.a", ("multimodal", "a", "b"), decision)])
    assert stats.summary()["grad/encoder.a/events/solver_fallback"] == 2.0


def _fallback_matrix() -> np.ndarray:
    r = np.random.default_rng(29)
    k = int(r.integers(2, 4))
    return r.standard_normal((k, 10)) * r.uniform(0.01, 3, size=(k, 1))
