"""SDMGrad through torchjd's SDMGradWeighting, on the (trace-normalised) single-batch Gram matrix."""

from __future__ import annotations

import numpy as np
import pytest
import torch
import torchjd.aggregation as tjd

from framework.integrators import get_integrator

from . import _refs as R


@pytest.mark.parametrize("k", [2, 3, 5])
def test_equals_torchjd_on_the_normalised_gramian(k: int):
    integrator = get_integrator("sdmgrad")
    reference = tjd.SDMGradWeighting()
    for step in range(5):
        g = torch.tensor(R.with_conflict(10 * k + step, k, 12))
        _, decision = integrator(g)
        gram = g @ g.T
        torch.testing.assert_close(decision.weights, reference(gram / gram.trace()), rtol=1e-12, atol=1e-13)
        w = R.as_np(decision.weights)
        assert (w >= 0).all()
        np.testing.assert_allclose(w.sum(), 1.0, rtol=1e-12)  # (simplex + lambda * pref) / (1 + lambda)


def test_pref_vector_and_lambda_pull_towards_it():
    g = torch.tensor(R.with_conflict(1, 3, 12))
    pref = [0.8, 0.1, 0.1]
    _, decision = get_integrator("sdmgrad", lambda_=1e6, pref_vector=pref)(g)
    np.testing.assert_allclose(R.as_np(decision.weights), pref, atol=1e-5)
