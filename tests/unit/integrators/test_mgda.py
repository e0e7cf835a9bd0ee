"""MGDA (conventional Pareto): closed form, torchjd's MGDA, scipy brute force, optimality."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from torch.testing import assert_close
from torchjd.aggregation import MGDA as TorchjdMGDA

from framework.integrators import get_integrator

from . import _refs as R


NAME = "mgda"


def run(g, sizes=None):
    integrator = get_integrator("mgda")
    g = g if isinstance(g, torch.Tensor) else torch.tensor(g, dtype=torch.float64)
    out = integrator(g, segments=sizes)
    assert out.shape == (g.shape[1],) and out.dtype == g.dtype
    return R.as_np(out), integrator


def random_matrix(seed: int, k: int, d: int) -> np.ndarray:
    r = R.rng(seed)
    return r.standard_normal((k, d)) * r.uniform(0.2, 5.0, size=(k, 1))


@pytest.mark.parametrize("seed", range(10))
def test_two_losses_closed_form(seed: int):
    g = random_matrix(seed, 2, 15)
    g1, g2 = g
    a = float(np.clip((g2 @ g2 - g1 @ g2) / ((g1 - g2) @ (g1 - g2)), 0.0, 1.0))
    out, integrator = run(g, [5, 10])
    np.testing.assert_allclose(R.as_np(integrator.last.weights), [a, 1 - a], rtol=1e-12, atol=1e-15)
    np.testing.assert_allclose(out, a * g1 + (1 - a) * g2, rtol=1e-10, atol=1e-12)


@pytest.mark.parametrize(("g", "weights"), [
    ([[1.0, 0.0], [0.0, 1.0]], [0.5, 0.5]),
    ([[1.0, 0.0], [2.0, 0.0]], [1.0, 0.0]),  # g1 is the min-norm point: no clipping (unlike mmpareto)
    ([[3.0, 1.0], [1.0, 0.0]], [0.0, 1.0]),
    ([[1.0, 0.0], [-1.0, 0.0]], [0.5, 0.5]),
    ([[2.0, 0.0], [-1.0, 0.0]], [1 / 3, 2 / 3]),
])
def test_two_losses_known_values(g, weights):
    g = np.array(g)
    out, integrator = run(g)
    np.testing.assert_allclose(R.as_np(integrator.last.weights), weights, rtol=1e-14, atol=1e-15)
    np.testing.assert_allclose(out, np.array(weights) @ g, rtol=1e-14, atol=1e-15)


@pytest.mark.parametrize("seed", range(10))
def test_matches_torchjd_two_losses(seed: int):
    g = torch.tensor(random_matrix(seed + 50, 2, 12))
    expected = TorchjdMGDA(epsilon=1e-9, max_iters=10000)(g)
    assert_close(get_integrator("mgda")(g), expected, rtol=1e-9, atol=1e-10)


@pytest.mark.parametrize("seed", range(5))
@pytest.mark.parametrize("k", [3, 4, 5])
def test_matches_torchjd_many_losses(seed: int, k: int):
    # torchjd runs Frank-Wolfe (sublinear: ~3e-3 relative after 1000 steps); ours is exact, so its
    # update can only be shorter.
    g = torch.tensor(random_matrix(seed + 100, k, 20))
    expected = TorchjdMGDA(epsilon=1e-9, max_iters=1000)(g)
    out = get_integrator("mgda")(g)
    scale = float(g.norm(dim=1).max())
    assert_close(out, expected, rtol=0, atol=1e-2 * scale)
    assert float(out.norm()) <= float(expected.norm()) * (1 + 1e-12) + 1e-14


@pytest.mark.parametrize("seed", range(8))
@pytest.mark.parametrize("k", [3, 4, 5, 6])
def test_matches_scipy_min_norm(seed: int, k: int):
    g = random_matrix(seed + 200, k, 3 * k)
    G = R.gram(g)
    out, integrator = run(g)
    w = R.as_np(integrator.last.weights)
    w_ref = R.scipy_min_norm(G)
    np.testing.assert_allclose(out, w_ref @ g, rtol=0, atol=1e-5 * np.abs(g).max())
    assert w @ G @ w <= w_ref @ G @ w_ref * (1 + 1e-9) + 1e-15
    np.testing.assert_allclose(out, w @ g, rtol=1e-12, atol=1e-13)


@pytest.mark.parametrize("seed", range(15))
@pytest.mark.parametrize("k", [2, 3, 4, 6])
def test_optimality_and_common_descent(seed: int, k: int):
    # KKT on the simplex, and the classic consequences: <d, g_i> >= |d|^2, |d| <= min_i |g_i|.
    g = random_matrix(seed + 300, k, 8)
    out, integrator = run(g)
    w = R.as_np(integrator.last.weights)
    assert (w >= 0).all() and abs(w.sum() - 1) < 1e-12
    assert R.kkt_violation(R.gram(g), w) < 1e-10
    scale = np.abs(R.gram(g)).max()
    assert (g @ out >= out @ out - 1e-10 * scale).all()
    assert np.linalg.norm(out) <= np.linalg.norm(g, axis=1).min() * (1 + 1e-12)


@pytest.mark.parametrize("k", [3, 5])
def test_rank_deficient_more_losses_than_dims(k: int):
    # k > d: the min-norm point is 0 whenever 0 is in the convex hull
    g = np.array([[1.0, 0.0], [-1.0, 1.0], [-1.0, -1.0], [0.5, 2.0], [2.0, -3.0]])[:k]
    out, integrator = run(g)
    np.testing.assert_allclose(out, np.zeros(2), atol=1e-12)
    assert R.kkt_violation(R.gram(g), R.as_np(integrator.last.weights)) < 1e-12


@pytest.mark.parametrize("seed", range(3))
@pytest.mark.parametrize("k", [2, 4])
def test_flat_api_equals_tensor_api(seed: int, k: int):
    g = torch.tensor(random_matrix(seed, k, sum(R.SIZES)))
    flat = get_integrator("mgda")(g, segments=R.SIZES)
    per_tensor = get_integrator("mgda").integrate_tensors(R.reshape_rows(g, R.SHAPES))
    assert [tuple(t.shape) for t in per_tensor] == R.SHAPES
    assert_close(torch.cat([t.reshape(-1) for t in per_tensor]), flat, rtol=1e-14, atol=1e-14)
    # segmentation does not change MGDA (it decides on the group Gram only)
    assert_close(get_integrator("mgda")(g), flat, rtol=1e-13, atol=1e-14)


def test_inplace_matches_out_of_place():
    g = torch.tensor(random_matrix(4, 3, sum(R.SIZES)))
    expected = get_integrator("mgda").integrate_tensors(R.reshape_rows(g, R.SHAPES))
    lists = R.reshape_rows(g, R.SHAPES)
    out = get_integrator("mgda").integrate_tensors(lists, inplace=True)
    for o, e, storage in zip(out, expected, lists[0]):
        assert_close(o, e, rtol=1e-15, atol=0)
        assert o.data_ptr() == storage.data_ptr()


@pytest.mark.parametrize("k", [2, 3, 4])
def test_decision_fields(k: int):
    g = random_matrix(k, k, 10)
    out, integrator = run(g, [3, 7])
    d = integrator.last
    np.testing.assert_allclose(R.as_np(d.gram), R.gram(g), rtol=1e-12)
    np.testing.assert_allclose(R.as_np(d.cosine), R.cosine(g), rtol=1e-12, atol=1e-14)
    np.testing.assert_allclose(R.as_np(d.norms), np.linalg.norm(g, axis=1), rtol=1e-12)
    np.testing.assert_allclose(d.sum_norm, np.linalg.norm(g.sum(0)), rtol=1e-12)
    np.testing.assert_allclose(d.update_norm, np.linalg.norm(out), rtol=1e-12)
    assert abs(float(d.weights.sum()) - 1) < 1e-12


def _edge_params():
    for name in R.EDGE_NAMES:
        for dtype in (torch.float64, torch.float32):
            marks = []
            if dtype == torch.float32 and name in ("huge", "tiny"):
                marks = []
            yield pytest.param(name, dtype, id=f"{name}-{str(dtype)[6:]}", marks=marks)


@pytest.mark.parametrize(("name", "dtype"), list(_edge_params()))
def test_edge_cases_finite_and_optimal(name: str, dtype: torch.dtype):
    g = R.edge_case(name, dtype)
    out, integrator = run(g, R.EDGE_SIZES)
    assert np.isfinite(out).all()
    g64 = R.as_np(g)
    w = R.as_np(integrator.last.weights)
    assert np.isfinite(w).all() and abs(w.sum() - 1) < 1e-9
    rtol = 1e-10 if dtype == torch.float64 else 1e-5
    np.testing.assert_allclose(out, R.two_weight(g64, 0, 1) * g64[0] + (1 - R.two_weight(g64, 0, 1)) * g64[1],
                               rtol=rtol, atol=rtol * max(np.abs(g64).max(), 1e-300))
    if name in ("zeros", "one_zero_row", "first_zero_row", "opposite", "opposite_scaled"):
        np.testing.assert_allclose(out, 0.0, atol=min(rtol, 1e-7) * max(np.abs(g64).max(), 1e-300))


@pytest.mark.parametrize(("dtype", "scale"), [
    *[pytest.param(torch.float64, s, id=f"float64-{s:g}") for s in (1e-150, 1e-30, 1e20, 1e150)],
    *[pytest.param(torch.float32, s, id=f"float32-{s:g}") for s in (1e-15, 1e15)],
    pytest.param(torch.float32, 1e-30, id="float32-1e-30"),
    pytest.param(torch.float32, 1e20, id="float32-1e+20"),
])
def test_scale_equivariance(dtype: torch.dtype, scale: float):
    g = random_matrix(9, 2, 9)
    g[1] -= 1.5 * g[0]  # conflict, interior weight
    base, _ = run(g)
    out, _ = run(torch.tensor(g * scale, dtype=dtype))
    rtol = 1e-12 if dtype == torch.float64 else 1e-5
    np.testing.assert_allclose(out / scale, base, rtol=rtol, atol=rtol * np.abs(base).max())


@pytest.mark.parametrize(("dtype", "magnitude"), [
    pytest.param(torch.bfloat16, 100.0, id="bfloat16-100"),
    pytest.param(torch.float16, 1.0, id="float16-1"),
    pytest.param(torch.float16, 100.0, id="float16-100"),
])
def test_low_precision_gradients(dtype: torch.dtype, magnitude: float):
    # float16 gradients with entries ~100 over 1000 coordinates: |g|^2 ~ 1e7 > 65504 (float16 max)
    r = R.rng(0)
    g = r.standard_normal((2, 1000))
    g[1] = -0.5 * g[0] + 0.5 * g[1]
    x = torch.tensor(g * magnitude).to(dtype)
    out = get_integrator(NAME)(x, segments=[400, 600])
    assert out.dtype == dtype and torch.isfinite(out).all()
    expected = get_integrator(NAME)(x.double(), segments=[400, 600])
    assert_close(out.double(), expected, rtol=0.05, atol=0.05 * float(expected.abs().max()))
