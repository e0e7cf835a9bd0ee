"""MoDo through torchjd's MoDoWeighting on the group Gram matrix, against a numpy transcription."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from framework.integrators import get_integrator

from . import _refs as R


def project_onto_simplex(y: np.ndarray) -> np.ndarray:
    """Euclidean projection onto the probability simplex (sort-based)."""
    u = np.sort(y)[::-1]
    css = np.cumsum(u) - 1.0
    rho = np.nonzero(u - css / np.arange(1, len(y) + 1) > 0)[0][-1]
    return np.maximum(y - css[rho] / (rho + 1.0), 0.0)


@pytest.mark.parametrize(("lr", "rho"), [(0.1, 0.1), (0.01, 0.0)])
@pytest.mark.parametrize("k", [2, 3, 5])
def test_weights_follow_projected_gradient_steps(lr: float, rho: float, k: int):
    integrator = get_integrator("modo", lr=lr, rho=rho)
    weights = np.full(k, 1.0 / k)
    for step in range(5):
        g = R.with_conflict(10 * k + step, k, 12) * 0.5
        weights = project_onto_simplex(weights - lr * (R.gram(g) @ weights + rho * weights))
        out, decision = integrator(torch.tensor(g))
        np.testing.assert_allclose(R.as_np(decision.weights), weights, rtol=1e-12, atol=1e-14)
        np.testing.assert_allclose(R.as_np(out), weights @ g, rtol=1e-12, atol=1e-12)


def test_lr_is_torchjd_gamma_and_gamma_stays_the_magnitude_rule():
    integrator = get_integrator("modo", lr=0.3, magnitude="restore_gamma", gamma=2.0)
    assert integrator.module.gamma == 0.3
    assert integrator.hparams() == {
        "lr": 0.3,
        "rho": 0.1,
        "magnitude": "restore_gamma",
        "gamma": 2.0,
        "rescale": "tensor",
    }
