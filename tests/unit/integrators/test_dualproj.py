"""DualProj through torchjd's DualProjWeighting, on the trace-normalised Gram matrix."""

from __future__ import annotations

import numpy as np
import pytest
import torch
import torchjd.aggregation as tjd

from framework.integrators import get_integrator

from . import _refs as R


@pytest.mark.parametrize("k", [2, 3, 5])
def test_no_conflict_is_the_mean_and_conflict_is_resolved(k: int):
    g = R.aligned(k, k, 12)
    out, _ = get_integrator("dualproj")(torch.tensor(g))
    np.testing.assert_allclose(R.as_np(out), g.mean(0), rtol=1e-12, atol=1e-12 * np.abs(g).max())
    g = R.with_conflict(k, k, 12)
    out = R.as_np(get_integrator("dualproj")(torch.tensor(g)).update)
    cos = g @ out / (np.linalg.norm(g, axis=1) * np.linalg.norm(out))
    assert (cos >= -1e-4).all()  # torchjd's projector regularises by 1e-4 (relative here)


def test_small_groups_are_projected_too():
    # torchjd's projector treats trace(G) < 1e-4 as zero (the plain mean); normalising first does not
    g = R.with_conflict(3, 3, 12)
    small = torch.tensor(g * 1e-3)
    torch.testing.assert_close(tjd.DualProj()(small), small.mean(0))
    out, _ = get_integrator("dualproj")(small)
    expected = tjd.DualProj()(torch.tensor(g)) * 1e-3
    torch.testing.assert_close(out, expected, rtol=1e-12, atol=1e-15)


def test_pref_vector_matches_torchjd():
    g = torch.tensor(R.with_conflict(5, 3, 12))
    pref = [0.2, 0.5, 0.3]
    out, _ = get_integrator("dualproj", pref_vector=pref)(g)
    expected = tjd.DualProj(pref_vector=torch.tensor(pref, dtype=torch.float64))(g)
    torch.testing.assert_close(out, expected, rtol=1e-12, atol=1e-14)
