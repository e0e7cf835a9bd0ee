"""MGDA (conventional Pareto): closed form, torchjd's MGDA, scipy brute force, optimality.

Shared behaviour (APIs, decision fields, scale equivariance, low precision, ...): test_contract.py.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch
from torch.testing import assert_close
from torchjd.aggregation import MGDA as TorchjdMGDA

from framework.integrators import get_integrator

from . import _asserts as A
from . import _refs as R


def run(g, sizes=None):
    return A.run(get_integrator("mgda"), g, sizes)


def random_matrix(seed: int, k: int, d: int) -> np.ndarray:
    r = R.rng(seed)
    return r.standard_normal((k, d)) * r.uniform(0.2, 5.0, size=(k, 1))


@pytest.mark.parametrize("seed", range(10))
def test_two_losses_closed_form(seed: int):
    g = random_matrix(seed, 2, 15)
    g1, g2 = g
    a = float(np.clip((g2 @ g2 - g1 @ g2) / ((g1 - g2) @ (g1 - g2)), 0.0, 1.0))
    out, decision = run(g, [5, 10])
    np.testing.assert_allclose(R.as_np(decision.weights), [a, 1 - a], rtol=1e-12, atol=1e-15)
    np.testing.assert_allclose(out, a * g1 + (1 - a) * g2, rtol=1e-10, atol=1e-12)


@pytest.mark.parametrize(
    ("g", "weights"),
    [
        ([[1.0, 0.0], [0.0, 1.0]], [0.5, 0.5]),
        ([[1.0, 0.0], [2.0, 0.0]], [1.0, 0.0]),  # g1 is the min-norm point: no clipping (unlike mmpareto)
        ([[3.0, 1.0], [1.0, 0.0]], [0.0, 1.0]),
        ([[1.0, 0.0], [-1.0, 0.0]], [0.5, 0.5]),
        ([[2.0, 0.0], [-1.0, 0.0]], [1 / 3, 2 / 3]),
    ],
)
def test_two_losses_known_values(g, weights):
    g = np.array(g)
    out, decision = run(g)
    np.testing.assert_allclose(R.as_np(decision.weights), weights, rtol=1e-14, atol=1e-15)
    np.testing.assert_allclose(out, np.array(weights) @ g, rtol=1e-14, atol=1e-15)


@pytest.mark.parametrize("seed", range(10))
def test_matches_torchjd_two_losses(seed: int):
    g = torch.tensor(random_matrix(seed + 50, 2, 12))
    expected = TorchjdMGDA(epsilon=1e-9, max_iters=10000)(g)
    assert_close(get_integrator("mgda")(g).update, expected, rtol=1e-9, atol=1e-10)


@pytest.mark.parametrize("seed", range(5))
@pytest.mark.parametrize("k", [3, 4, 5])
def test_matches_torchjd_many_losses(seed: int, k: int):
    # torchjd runs Frank-Wolfe (sublinear: ~3e-3 relative after 1000 steps); ours is exact, so its
    # update can only be shorter.
    g = torch.tensor(random_matrix(seed + 100, k, 20))
    expected = TorchjdMGDA(epsilon=1e-9, max_iters=1000)(g)
    out, _ = get_integrator("mgda")(g)
    scale = float(g.norm(dim=1).max())
    assert_close(out, expected, rtol=0, atol=1e-2 * scale)
    assert float(out.norm()) <= float(expected.norm()) * (1 + 1e-12) + 1e-14


@pytest.mark.parametrize("seed", range(8))
@pytest.mark.parametrize("k", [3, 4, 5, 6])
def test_matches_scipy_min_norm(seed: int, k: int):
    g = random_matrix(seed + 200, k, 3 * k)
    G = R.gram(g)
    out, decision = run(g)
    w = R.as_np(decision.weights)
    w_ref = R.scipy_min_norm(G)
    np.testing.assert_allclose(out, w_ref @ g, rtol=0, atol=1e-5 * np.abs(g).max())
    assert w @ G @ w <= w_ref @ G @ w_ref * (1 + 1e-9) + 1e-15
    np.testing.assert_allclose(out, w @ g, rtol=1e-12, atol=1e-13)


@pytest.mark.parametrize("seed", range(15))
@pytest.mark.parametrize("k", [2, 3, 4, 6])
def test_optimality_and_common_descent(seed: int, k: int):
    # KKT on the simplex, and the classic consequences: <d, g_i> >= |d|^2, |d| <= min_i |g_i|.
    g = random_matrix(seed + 300, k, 8)
    out, decision = run(g)
    w = R.as_np(decision.weights)
    assert (w >= 0).all() and abs(w.sum() - 1) < 1e-12
    assert R.kkt_violation(R.gram(g), w) < 1e-10
    scale = np.abs(R.gram(g)).max()
    assert (g @ out >= out @ out - 1e-10 * scale).all()
    assert np.linalg.norm(out) <= np.linalg.norm(g, axis=1).min() * (1 + 1e-12)


@pytest.mark.parametrize("k", [3, 5])
def test_rank_deficient_more_losses_than_dims(k: int):
    # k > d: the min-norm point is 0 whenever 0 is in the convex hull
    g = np.array([[1.0, 0.0], [-1.0, 1.0], [-1.0, -1.0], [0.5, 2.0], [2.0, -3.0]])[:k]
    out, decision = run(g)
    np.testing.assert_allclose(out, np.zeros(2), atol=1e-12)
    assert R.kkt_violation(R.gram(g), R.as_np(decision.weights)) < 1e-12


@pytest.mark.parametrize("seed", range(3))
@pytest.mark.parametrize("k", [2, 4])
def test_segmentation_does_not_change_the_update(seed: int, k: int):
    # MGDA decides on the group Gram matrix only and has no per-tensor rule
    g = torch.tensor(random_matrix(seed, k, sum(R.SIZES)))
    flat, _ = get_integrator("mgda")(g, segments=R.SIZES)
    assert_close(get_integrator("mgda")(g).update, flat, rtol=1e-13, atol=1e-14)


def test_has_no_fixed_combination_or_magnitude_rule():
    integrator = get_integrator("mgda")
    assert integrator.magnitude is None and integrator.fixed_combination(2) is None
    assert integrator.label() == "mgda" and integrator.hparams() == {}


def _edge_params():
    for name in R.EDGE_NAMES:
        for dtype in (torch.float64, torch.float32):
            yield pytest.param(name, dtype, id=f"{name}-{str(dtype)[6:]}")


@pytest.mark.parametrize(("name", "dtype"), list(_edge_params()))
def test_edge_cases_finite_and_optimal(name: str, dtype: torch.dtype):
    g = R.edge_case(name, dtype)
    out, decision = run(g, R.EDGE_SIZES)
    assert np.isfinite(out).all()
    g64 = R.as_np(g)
    w = R.as_np(decision.weights)
    assert np.isfinite(w).all() and abs(w.sum() - 1) < 1e-9
    rtol = 1e-10 if dtype == torch.float64 else 1e-5
    np.testing.assert_allclose(
        out,
        R.two_weight(g64, 0, 1) * g64[0] + (1 - R.two_weight(g64, 0, 1)) * g64[1],
        rtol=rtol,
        atol=rtol * max(np.abs(g64).max(), 1e-300),
    )
    if name in ("zeros", "one_zero_row", "first_zero_row", "opposite", "opposite_scaled"):
        np.testing.assert_allclose(out, 0.0, atol=min(rtol, 1e-7) * max(np.abs(g64).max(), 1e-300))
