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


def libmtl_sequence(gs: list[np.ndarray], step_size: float) -> list[np.ndarray]:
    """LibMTL's ExcessMTL weights (median-research-group/LibMTL@4336804847eaa5e0b924b743d76beec7ac3fdc97,
    LibMTL/weighting/ExcessMTL.py:15-49, modified from the official code): the first call only
    records the baseline excess risks and keeps the weights at ones; later calls divide by it
    (no epsilon) and take the exponentiated-gradient step, renormalised to sum to ``k``."""
    k, d = gs[0].shape
    loss_weight, grad_sum, initial, out = np.ones(k), np.zeros((k, d)), None, []
    for g in gs:
        grad_sum += g**2
        w = np.array([g[i] / np.sqrt(grad_sum[i] + 1e-7) @ g[i] for i in range(k)])
        if initial is None:
            initial = w
        else:
            loss_weight = loss_weight * np.exp(w / initial * step_size)
            loss_weight = loss_weight / loss_weight.sum() * k
        out.append(loss_weight.copy())
    return out


@pytest.mark.parametrize("k", [2, 3])
def test_default_follows_the_official_first_call(k: int):
    # One warm-up call makes torchjd's baseline the first call's risks, with no step on that call, as
    # in the official code; the weights then agree up to their scale (sum 1 here, k there) and the
    # 1e-7 torchjd adds to the baseline.
    gs = [R.with_conflict(7 * k + step, k, 12) for step in range(6)]
    integrator = get_integrator("excess_mtl")
    for g, expected in zip(gs, libmtl_sequence(gs, 1.0), strict=True):
        _, decision = integrator(torch.tensor(g))
        np.testing.assert_allclose(k * R.as_np(decision.weights), expected, rtol=1e-6)


def test_no_warmup_steps_on_the_first_call_unlike_the_official_code():
    gs = [R.with_conflict(step, 2, 12) for step in range(3)]
    official = libmtl_sequence(gs, 1.0)
    integrator = get_integrator("excess_mtl", n_warmup_steps=0)
    _, decision = integrator(torch.tensor(gs[0]))
    assert np.abs(2 * R.as_np(decision.weights) - official[0]).max() > 1e-3
