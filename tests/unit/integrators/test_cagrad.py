"""CAGrad through torchjd's CAGradWeighting, on the trace-normalised Gram matrix."""

from __future__ import annotations

import numpy as np
import torch
import torchjd.aggregation as tjd

from framework.integrators import get_integrator

from . import _refs as R


def test_small_gradient_groups_are_not_zeroed():
    # torchjd returns zero weights when trace(G) < norm_eps = 1e-4; normalising first makes it relative
    g = R.with_conflict(1, 3, 12)
    small = torch.tensor(g * 1e-3)
    assert float((small @ small.T).trace()) < 1e-4
    assert torch.equal(tjd.CAGrad(c=0.5)(small), torch.zeros(12, dtype=torch.float64))
    out, _ = get_integrator("cagrad")(small)
    expected = tjd.CAGrad(c=0.5)(torch.tensor(g)) * 1e-3
    torch.testing.assert_close(out, expected, rtol=1e-8, atol=1e-8 * float(expected.abs().max()))


def test_c_zero_is_the_mean_and_larger_c_moves_away():
    g = R.with_conflict(2, 3, 12)
    out, _ = get_integrator("cagrad", c=0.0)(torch.tensor(g))
    np.testing.assert_allclose(R.as_np(out), g.mean(0), rtol=1e-8, atol=1e-8)
    far, _ = get_integrator("cagrad", c=0.9)(torch.tensor(g))
    assert np.linalg.norm(R.as_np(far) - g.mean(0)) > 1e-3
