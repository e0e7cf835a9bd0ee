"""Mean through torchjd's MeanWeighting: a fixed combination with weights 1/k."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from framework.integrators import get_integrator

from . import _refs as R


@pytest.mark.parametrize("k", [2, 3, 5])
def test_mean_and_fixed_weights(k: int):
    g = R.with_conflict(k, k, 12)
    integrator = get_integrator("mean")
    out, decision = integrator(torch.tensor(g))
    np.testing.assert_allclose(R.as_np(out), g.mean(0), rtol=1e-14, atol=1e-15)
    assert torch.equal(integrator.fixed_weights(k), torch.full((k,), 1.0 / k, dtype=torch.float64))
    assert torch.equal(integrator.fixed_combination(k), decision.weights)


def test_a_magnitude_rule_makes_it_no_fixed_combination():
    assert get_integrator("mean", magnitude="restore").fixed_combination(2) is None
    assert get_integrator("mean").label() == "mean" and get_integrator("mean").hparams() == {}
