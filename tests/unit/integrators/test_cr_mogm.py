"""CR-MOGM through torchjd's CRMOGMWeighting: an EMA of a wrapped weighting's weights."""

from __future__ import annotations

import numpy as np
import pytest
import torch
import torchjd.aggregation as tjd

from framework.integrators import get_integrator
from framework.integrators.cr_mogm import WRAPPED

from . import _refs as R


def grams(k: int, steps: int = 4) -> list[torch.Tensor]:
    return [torch.tensor(R.with_conflict(step, k, 12)) for step in range(steps)]


def test_weights_are_the_ema_of_the_wrapped_weights():
    alpha, k = 0.6, 3
    integrator = get_integrator("cr_mogm", alpha=alpha)
    previous = None
    for g in grams(k):
        _, decision = integrator(g)
        gram = g @ g.T
        fresh = tjd.MGDAWeighting()(gram / gram.trace())
        expected = fresh if previous is None else alpha * previous + (1 - alpha) * fresh
        torch.testing.assert_close(decision.weights, expected, rtol=1e-12, atol=1e-14)
        previous = decision.weights


def test_alpha_zero_is_the_wrapped_weighting_and_initial_weights():
    for g in grams(2):
        _, decision = get_integrator("cr_mogm", alpha=0.0)(g)
        torch.testing.assert_close(decision.weights, tjd.MGDAWeighting()(g @ g.T), rtol=1e-10, atol=1e-12)
    g = grams(2)[0]
    _, decision = get_integrator("cr_mogm", alpha=0.5, initial_weights=[1.0, 0.0])(g)
    expected = 0.5 * torch.tensor([1.0, 0.0], dtype=torch.float64) + 0.5 * tjd.MGDAWeighting()(g @ g.T)
    torch.testing.assert_close(decision.weights, expected, rtol=1e-10, atol=1e-12)


@pytest.mark.parametrize("weighting", list(WRAPPED))
def test_every_wrapped_weighting_runs(weighting: str):
    out, decision = get_integrator("cr_mogm", weighting=weighting)(grams(3)[0])
    assert torch.isfinite(out).all() and decision.weights.shape == (3,)
    if weighting == "mean":  # the EMA of constant weights is constant
        np.testing.assert_allclose(R.as_np(decision.weights), np.full(3, 1 / 3), rtol=1e-14)


def test_unknown_weighting_is_a_one_line_error():
    with pytest.raises(ValueError) as info:
        get_integrator("cr_mogm", weighting="pcgrad")
    assert "\n" not in str(info.value) and "mgda" in str(info.value) and "pcgrad" in str(info.value)
