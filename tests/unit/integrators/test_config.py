"""ConFIG through torchjd's ConFIG, against an independent numpy transcription of Equation 2."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from framework.integrators import get_integrator

from . import _refs as R


def ref_config(g: np.ndarray, pref: np.ndarray | None = None) -> np.ndarray:
    """``d = pinv(U) w`` (``U``: unit rows), normalised; the update is ``sum_i <g_i, d> d``."""
    units = g / np.linalg.norm(g, axis=1, keepdims=True)
    w = np.ones(len(g)) if pref is None else pref
    d = np.linalg.pinv(units) @ w
    d /= np.linalg.norm(d)
    return (g @ d).sum() * d


@pytest.mark.parametrize("seed", range(3))
@pytest.mark.parametrize("k", [2, 3, 5])
def test_matches_numpy_and_has_equal_cosines(seed: int, k: int):
    g = R.with_conflict(seed, k, 12)
    out, decision = get_integrator("config")(torch.tensor(g))
    out = R.as_np(out)
    np.testing.assert_allclose(out, ref_config(g), rtol=1e-12, atol=1e-12 * np.abs(g).max())
    cos = (g @ out) / (np.linalg.norm(g, axis=1) * np.linalg.norm(out))
    np.testing.assert_allclose(cos, np.full(k, cos[0]), rtol=1e-10)  # the same cosine with every gradient
    assert cos[0] > 0
    np.testing.assert_allclose(R.as_np(decision.weights) @ g, out, rtol=1e-10, atol=1e-10 * np.abs(g).max())


def test_pref_vector_with_float32_gradients():
    g = R.with_conflict(1, 3, 12)
    pref = np.array([1.0, 2.0, 0.5])
    out, _ = get_integrator("config", pref_vector=pref.tolist())(torch.tensor(g).float())
    np.testing.assert_allclose(R.as_np(out), ref_config(g, pref), rtol=1e-4, atol=1e-5 * np.abs(g).max())


@pytest.mark.parametrize("scale", [1e-25, 1e25])
def test_float32_extreme_scales(scale: float):
    # torchjd's row norms square the entries: they would underflow / overflow in float32
    g = R.with_conflict(2, 3, 12)
    out, _ = get_integrator("config")(torch.tensor(g * scale).float())
    np.testing.assert_allclose(R.as_np(out) / scale, ref_config(g), rtol=1e-4, atol=1e-5 * np.abs(g).max())
