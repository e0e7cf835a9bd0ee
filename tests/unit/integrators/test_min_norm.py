"""The min-norm (MGDA) sub-problem solver: closed form, scipy brute force, KKT optimality."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from framework.integrators.min_norm import MAX_EXACT_LOSSES, min_norm_weights, two_vector_weight

from . import _refs as R


def solve(G: np.ndarray) -> np.ndarray:
    w = min_norm_weights(torch.tensor(G))
    assert w.dtype == torch.float64 and w.shape == (len(G),)
    w = R.as_np(w)
    assert (w >= 0).all() and abs(w.sum() - 1) < 1e-12, w
    return w


@pytest.mark.parametrize("seed", range(10))
def test_two_vector_weight_closed_form(seed: int):
    g = R.rng(seed).standard_normal((2, 6))
    G = R.gram(g)
    expected = np.clip((G[1, 1] - G[0, 1]) / (G[0, 0] + G[1, 1] - 2 * G[0, 1]), 0, 1)
    assert two_vector_weight(G[0, 0], G[0, 1], G[1, 1]) == pytest.approx(expected, rel=1e-14, abs=1e-16)
    clipped = np.clip(expected, 0.001, 0.999)
    assert two_vector_weight(G[0, 0], G[0, 1], G[1, 1], 0.001, 0.999) == pytest.approx(clipped, rel=1e-14)
    np.testing.assert_allclose(solve(G), [expected, 1 - expected], rtol=1e-14, atol=1e-16)
    # the closed form really is the minimiser of |a g1 + (1 - a) g2| on [0, 1]
    grid = np.linspace(0, 1, 2001)
    norms = np.linalg.norm(grid[:, None] * g[0] + (1 - grid[:, None]) * g[1], axis=1)
    assert np.linalg.norm(expected * g[0] + (1 - expected) * g[1]) <= norms.min() + 1e-12


@pytest.mark.parametrize(
    ("g00", "g01", "g11", "expected"),
    [
        (1.0, 1.0, 1.0, 0.5),  # identical vectors: any a is optimal -> 1/2
        (0.0, 0.0, 0.0, 0.5),  # both zero
        (1.0, -1.0, 1.0, 0.5),  # opposite, equal norms
        (4.0, -2.0, 1.0, 1 / 3),  # v1 = -v0 / 2
        (1.0, 0.0, 0.0, 0.0),  # v1 = 0 is the min-norm point
        (0.0, 0.0, 1.0, 1.0),  # v0 = 0
        (1.0, 2.0, 4.0, 1.0),  # v1 = 2 v0
    ],
)
def test_two_vector_weight_degenerate(g00: float, g01: float, g11: float, expected: float):
    assert two_vector_weight(g00, g01, g11) == pytest.approx(expected, abs=1e-15)


def test_two_vector_weight_clip_on_degenerate():
    assert two_vector_weight(1.0, 1.0, 1.0, 0.6, 0.9) == 0.6
    assert two_vector_weight(1.0, 0.0, 0.0, 0.001, 0.999) == 0.001


def test_single_vector():
    np.testing.assert_array_equal(solve(np.array([[3.0]])), [1.0])


@pytest.mark.parametrize("seed", range(10))
@pytest.mark.parametrize("k", [3, 4, 5, 7])
@pytest.mark.parametrize("d", [2, 20])
def test_kkt_and_scipy(seed: int, k: int, d: int):
    g = R.rng(seed).standard_normal((k, d)) * R.rng(seed + 1).uniform(0.1, 10, size=(k, 1))
    G = R.gram(g)
    w = solve(G)
    assert R.kkt_violation(G, w) < 1e-10
    w_ref = R.scipy_min_norm(G)
    assert w @ G @ w <= w_ref @ G @ w_ref * (1 + 1e-8) + 1e-12 * np.abs(G).max()
    np.testing.assert_allclose(w @ g, w_ref @ g, rtol=0, atol=2e-5 * np.abs(g).max())


@pytest.mark.parametrize("k", [3, 4, 6])
def test_duplicated_and_zero_vectors(k: int):
    base = R.rng(k).standard_normal((2, 5))
    g = np.concatenate([np.tile(base[:1], (k - 1, 1)), base[1:]])  # k - 1 copies of one vector
    G = R.gram(g)
    w = solve(G)
    assert R.kkt_violation(G, w) < 1e-10
    a = R.two_weight(base, 0, 1)
    np.testing.assert_allclose(w @ g, a * base[0] + (1 - a) * base[1], atol=1e-10)
    g[0] = 0.0
    w = solve(R.gram(g))
    np.testing.assert_allclose(w @ g, 0.0, atol=1e-12)


@pytest.mark.parametrize("k", [2, 3, 5])
def test_all_zero_gram(k: int):
    w = solve(np.zeros((k, k)))
    assert np.isfinite(w).all()


@pytest.mark.parametrize("scale", [1e-200, 1e-30, 1e30, 1e200])
def test_scale_invariance(scale: float):
    g = R.rng(0).standard_normal((4, 6))
    G = R.gram(g)
    np.testing.assert_allclose(solve(G * scale), solve(G), rtol=1e-9, atol=1e-12)


def test_near_parallel_ill_conditioned():
    r = R.rng(1)
    base = r.standard_normal(10)
    g = np.stack([base + 1e-7 * r.standard_normal(10) for _ in range(4)] + [-0.3 * base])
    G = R.gram(g)
    w = solve(G)
    assert R.kkt_violation(G, w) < 1e-9


def test_too_many_losses_raises():
    G = np.eye(MAX_EXACT_LOSSES + 1)
    with pytest.raises(ValueError, match=str(MAX_EXACT_LOSSES)):
        min_norm_weights(torch.tensor(G))
    w = solve(np.eye(MAX_EXACT_LOSSES))  # the limit itself is solved: orthonormal -> uniform
    np.testing.assert_allclose(w, np.full(MAX_EXACT_LOSSES, 1 / MAX_EXACT_LOSSES), rtol=1e-12)
