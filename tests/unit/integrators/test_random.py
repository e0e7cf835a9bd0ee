"""RLW through torchjd's RandomWeighting: softmax of Gaussian draws from the adapter's own stream."""

from __future__ import annotations

import pytest
import torch

from framework.integrators import get_integrator

from . import _refs as R


@pytest.mark.parametrize("k", [2, 3, 5])
def test_weights_are_softmax_of_the_seeded_draws(k: int):
    integrator = get_integrator("random", seed=9)
    generator = torch.Generator().manual_seed(9)
    for step in range(4):
        g = torch.tensor(R.with_conflict(step, k, 12))
        out, decision = integrator(g)
        expected = torch.softmax(torch.randn(k, generator=generator, dtype=torch.float64), dim=0)
        torch.testing.assert_close(decision.weights, expected, rtol=1e-15, atol=0)
        torch.testing.assert_close(out, expected @ g, rtol=1e-13, atol=1e-14)


def test_draws_do_not_depend_on_the_gradients_dtype():
    g = torch.tensor(R.with_conflict(0, 3, 12))
    _, a = get_integrator("random", seed=1)(g)
    _, b = get_integrator("random", seed=1)(g.float())
    assert torch.equal(a.weights, b.weights)
