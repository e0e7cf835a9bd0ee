"""FairGrad through torchjd's FairGradWeighting, solved on the trace-normalised Gram matrix.

The weights solve ``G w = w^(-1/alpha)``; checked here by their residual, at any scale.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch
import torchjd.aggregation as tjd

from framework.integrators import get_integrator

from . import _refs as R


def residual(gram: np.ndarray, w: np.ndarray, alpha: float) -> float:
    """``|G w - w^(-1/alpha)|`` relative to ``|w^(-1/alpha)|``."""
    target = np.power(w, -1.0 / alpha)
    return float(np.linalg.norm(gram @ w - target) / np.linalg.norm(target))


@pytest.mark.parametrize("alpha", [0.5, 1.0, 2.0])
@pytest.mark.parametrize("scale", [1e-6, 1e-3, 1.0, 1e3, 1e6])
@pytest.mark.parametrize("k", [2, 3, 5])
def test_weights_solve_the_fairness_equation_at_any_scale(alpha: float, scale: float, k: int):
    g = R.with_conflict(k, k, 12) * scale
    _, decision = get_integrator("fairgrad", alpha=alpha)(torch.tensor(g))
    w = R.as_np(decision.weights)
    assert (w > 0).all()
    assert residual(R.gram(g), w, alpha) < 1e-7


def test_torchjd_on_the_raw_gramian_misses_small_gradients():
    # why the adapter normalises: scipy starts from uniform weights, far from the solution (~1/|g|)
    g = R.conflicting_pair(11, 9) * 1e-3
    raw = tjd.FairGradWeighting(alpha=1.0)(torch.tensor(R.gram(g))).numpy()
    _, decision = get_integrator("fairgrad")(torch.tensor(g))
    assert residual(R.gram(g), raw, 1.0) > 1e-2
    assert residual(R.gram(g), R.as_np(decision.weights), 1.0) < 1e-9


def test_scale_degree_follows_alpha():
    assert get_integrator("fairgrad").scale_degree == 0  # alpha = 1
    assert get_integrator("fairgrad", alpha=0.0).scale_degree == 1
    assert get_integrator("fairgrad", alpha=2.0).scale_degree is None  # (1 - 2) / 3, not an integer
    g = R.with_conflict(3, 3, 12)
    out, _ = get_integrator("fairgrad", alpha=0.0)(torch.tensor(g))
    np.testing.assert_allclose(R.as_np(out), g.mean(0), rtol=1e-13, atol=1e-15)
    base, _ = get_integrator("fairgrad", alpha=3.0)(torch.tensor(g))
    scaled, _ = get_integrator("fairgrad", alpha=3.0)(torch.tensor(g * 10.0))
    np.testing.assert_allclose(R.as_np(scaled), R.as_np(base) * 10.0 ** (-0.5), rtol=1e-8)


def test_zero_gradients_and_invalid_alpha():
    out, decision = get_integrator("fairgrad")(torch.zeros(2, 4, dtype=torch.float64))
    assert torch.equal(out, torch.zeros(4, dtype=torch.float64)) and torch.isfinite(decision.weights).all()
    with pytest.raises(ValueError, match="alpha"):
        get_integrator("fairgrad", alpha=-1.0)
