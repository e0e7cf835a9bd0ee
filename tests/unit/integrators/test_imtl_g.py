"""IMTL-G through torchjd's IMTLGWeighting, on the trace-normalised Gram matrix."""

from __future__ import annotations

import numpy as np
import pytest
import torch
import torchjd.aggregation as tjd

from framework.integrators import get_integrator

from . import _refs as R


@pytest.mark.parametrize("seed", range(3))
@pytest.mark.parametrize("k", [2, 3, 5])
def test_equal_projections_on_the_unit_gradients(seed: int, k: int):
    g = R.with_conflict(seed, k, 12)
    out, decision = get_integrator("imtl_g")(torch.tensor(g))
    projections = g @ R.as_np(out) / np.linalg.norm(g, axis=1)
    np.testing.assert_allclose(projections, np.full(k, projections[0]), rtol=1e-9)
    np.testing.assert_allclose(R.as_np(decision.weights).sum(), 1.0, rtol=1e-12)


def test_huge_gradients_are_not_zeroed():
    # torchjd zeroes the weights when |sum(pinv(G) sqrt(diag G))| < 1e-12, which is ~1/|g|
    g = R.with_conflict(0, 3, 12)
    huge = torch.tensor(g * 1e14)
    assert torch.equal(tjd.IMTLG()(huge), torch.zeros(12, dtype=torch.float64))
    out, _ = get_integrator("imtl_g")(huge)
    expected = tjd.IMTLG()(torch.tensor(g)) * 1e14
    torch.testing.assert_close(out, expected, rtol=1e-10, atol=1e-10 * float(expected.abs().max()))
