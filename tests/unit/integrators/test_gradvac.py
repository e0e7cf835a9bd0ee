"""GradVac through torchjd's GradVacWeighting, on the trace-normalised Gram matrix, seeded."""

from __future__ import annotations

import numpy as np
import pytest
import torch
import torchjd.aggregation as tjd

from framework.integrators import get_integrator

from . import _refs as R


@pytest.mark.parametrize("k", [2, 3, 5])
def test_equals_torchjd_on_the_normalised_gramian_with_the_same_draws(k: int):
    integrator = get_integrator("gradvac", seed=4, beta=0.3)
    reference = tjd.GradVacWeighting(beta=0.3)
    for step in range(5):
        g = torch.tensor(R.with_conflict(10 * k + step, k, 12))
        _, decision = integrator(g)
        gram = g @ g.T
        with torch.random.fork_rng(devices=[]):
            torch.set_rng_state(torch.Generator().manual_seed(4).get_state())
            for _ in range(step):  # the draws of the earlier steps
                for _ in range(k):
                    torch.randperm(k - 1)
            expected = reference(gram / gram.trace())
        torch.testing.assert_close(decision.weights, expected, rtol=1e-13, atol=1e-14)


@pytest.mark.parametrize("k", [2, 3, 5])
def test_first_step_without_conflict_is_the_sum(k: int):
    # the targets start at 0: no pair with cosine >= 0 is corrected
    g = R.aligned(k, k, 12)
    out, _ = get_integrator("gradvac")(torch.tensor(g))
    np.testing.assert_allclose(R.as_np(out), g.sum(0), rtol=1e-13, atol=1e-13 * np.abs(g).max())


def test_first_step_on_a_conflicting_pair_is_pcgrad():
    # targets 0: each gradient is corrected to cosine 0 with the other, i.e. projected on its normal plane
    g = R.conflicting_pair(3, 12)
    out = R.as_np(get_integrator("gradvac")(torch.tensor(g)).update)
    inner = g[0] @ g[1]
    expected = g[0] - inner / (g[1] @ g[1]) * g[1] + g[1] - inner / (g[0] @ g[0]) * g[0]
    np.testing.assert_allclose(out, expected, rtol=1e-6, atol=1e-6 * np.abs(g).max())  # eps = 1e-8, relative
