"""ExcessMTL through torchjd's ExcessMTLWeighting, against a numpy transcription of Eqs. 6, 7, 9."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from framework.integrators import get_integrator

from . import _refs as R


def ref_sequence(gs: list[np.ndarray], step_size: float, warmup: int) -> list[np.ndarray]:
    k, d = gs[0].shape
    sq_sum, weights, baseline, warm_sum, out = np.zeros((k, d)), np.full(k, 1.0 / k), None, np.zeros(k), []
    for n, g in enumerate(gs):
        sq_sum += g**2
        risk = (g**2 / np.sqrt(sq_sum + 1e-7)).sum(1)
        if n < warmup:
            warm_sum += risk
            out.append(weights.copy())
            continue
        if baseline is None:
            baseline = warm_sum / warmup if warmup else risk
            if warmup:
                risk = risk / (baseline + 1e-7)
        else:
            risk = risk / (baseline + 1e-7)
        logits = np.log(weights) + risk * step_size
        weights = np.exp(logits - logits.max())
        weights /= weights.sum()
        out.append(weights.copy())
    return out


@pytest.mark.parametrize(("step_size", "warmup"), [(1.0, 0), (0.5, 2)])
@pytest.mark.parametrize("k", [2, 3, 5])
def test_weights_match_numpy(step_size: float, warmup: int, k: int):
    gs = [R.with_conflict(10 * k + step, k, 12) for step in range(5)]
    integrator = get_integrator("excess_mtl", robust_step_size=step_size, n_warmup_steps=warmup)
    for g, expected in zip(gs, ref_sequence(gs, step_size, warmup), strict=True):
        _, decision = integrator(torch.tensor(g))
        np.testing.assert_allclose(R.as_np(decision.weights), expected, rtol=1e-12, atol=1e-15)


def test_state_holds_the_squared_gradient_sums():
    integrator = get_integrator("excess_mtl")
    g = R.with_conflict(0, 3, 12)
    integrator(torch.tensor(g))
    integrator(torch.tensor(g))
    np.testing.assert_allclose(R.as_np(integrator.module._sq_grad_sum), 2 * g**2, rtol=1e-15)
