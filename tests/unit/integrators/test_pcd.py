"""PCD through torchjd's PCDWeighting: row 0 (the multimodal loss) is the primary objective."""

from __future__ import annotations

import numpy as np
import pytest
import torch
import torchjd.aggregation as tjd

from framework.integrators import get_integrator

from . import _refs as R


@pytest.mark.parametrize("k", [2, 3, 5])
def test_no_conflict_follows_the_primary_gradient(k: int):
    # every secondary loss already gets tau of its progress along g_0: the update is g_0 itself
    g = R.aligned(k, k, 12)
    out, decision = get_integrator("pcd")(torch.tensor(g))
    np.testing.assert_allclose(R.as_np(out), g[0], rtol=1e-12, atol=1e-12 * np.abs(g).max())
    assert R.as_np(decision.weights)[1:].max() < 1e-12


@pytest.mark.parametrize("seed", range(5))
@pytest.mark.parametrize("k", [2, 3])
def test_secondary_losses_make_progress_and_norm_is_the_primary_one(seed: int, k: int):
    g = R.with_conflict(seed, k, 12)
    out = R.as_np(get_integrator("pcd")(torch.tensor(g)).update)
    assert (g[1:] @ out > 0).all()
    np.testing.assert_allclose(np.linalg.norm(out), np.linalg.norm(g[0]), rtol=1e-10)


def test_tau_per_secondary_loss_matches_torchjd():
    g = torch.tensor(R.with_conflict(4, 3, 12))
    out, _ = get_integrator("pcd", tau=[0.1, 0.3])(g)
    expected = tjd.PCD(tau=torch.tensor([0.1, 0.3], dtype=torch.float64))(g)
    torch.testing.assert_close(out, expected, rtol=1e-13, atol=1e-13)
    assert get_integrator("pcd", tau=[0.1, 0.3]).hparams()["tau"] == [0.1, 0.3]
