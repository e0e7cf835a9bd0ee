"""GradDrop through torchjd's GradDrop, against a numpy transcription with the same random draws."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from framework.integrators import get_integrator

from . import _refs as R


def ref_graddrop(g: np.ndarray, u: np.ndarray, leak: np.ndarray) -> np.ndarray:
    """Gradient positive sign purity ``P``; each coordinate keeps the positive values when ``P > U``,
    the negative ones when ``P < U`` (plus each row's leak)."""
    purity = 0.5 * (1.0 + g.sum(0) / np.abs(g).sum(0))
    out = np.zeros(g.shape[1])
    for i, row in enumerate(g):
        keep = (purity > u) * (row > 0) + (purity < u) * (row < 0)
        out += (leak[i] + (1 - leak[i]) * keep) * row
    return out


@pytest.mark.parametrize("seed", range(3))
@pytest.mark.parametrize("k", [2, 3, 5])
def test_matches_numpy_with_the_same_draws(seed: int, k: int):
    g = R.with_conflict(seed, k, 40)
    integrator = get_integrator("graddrop", seed=seed)
    generator = torch.Generator().manual_seed(seed)  # the adapter's private stream
    for step in range(3):
        gs = g * (1 + step)
        u = torch.rand(40, generator=generator, dtype=torch.float64).numpy()
        out, _ = integrator(torch.tensor(gs))
        np.testing.assert_allclose(R.as_np(out), ref_graddrop(gs, u, np.zeros(k)), rtol=1e-14, atol=1e-14)


def test_full_leak_is_the_sum_and_same_signs_pass():
    g = R.with_conflict(0, 3, 20)
    out, _ = get_integrator("graddrop", leak=[1.0, 1.0, 1.0])(torch.tensor(g).float())  # float32: leak cast
    np.testing.assert_allclose(R.as_np(out), g.sum(0), rtol=1e-5, atol=1e-5)
    positive = np.abs(g)
    out, _ = get_integrator("graddrop")(torch.tensor(positive))
    np.testing.assert_allclose(R.as_np(out), positive.sum(0), rtol=1e-14)  # purity 1: all kept
