"""MMPareto (docs/mmpareto.md, "The MMPareto update") against hand-computed float64 references.

Recorded weights are the coefficients of the direction ``h = sum_i w_i g_i``, so ``w = k * a`` with
``a`` the simplex weights of the spec (ones when there is no conflict). Shared behaviour (APIs,
decision fields, single loss, scale equivariance, low precision, finiteness on edge cases):
test_contract.py.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch
from torch.testing import assert_close

from framework.integrators import Decision, get_integrator
from framework.integrators.mmpareto import mmpareto_weights

from . import _asserts as A
from . import _refs as R
from ._asserts import tol

RESCALES = ["tensor", "group"]


def run(g: np.ndarray | torch.Tensor, sizes=None, **params) -> tuple[np.ndarray, Decision]:
    return A.run(get_integrator("mmpareto", **params), g, sizes)


# ------------------------------------------------------------------ no conflict: gamma * sum


@pytest.mark.parametrize("seed", range(4))
@pytest.mark.parametrize("k", [2, 3, 4])
@pytest.mark.parametrize("gamma", [0.5, 1.5, 3.0])
@pytest.mark.parametrize("rescale", RESCALES)
def test_no_conflict_is_gamma_times_sum(seed: int, k: int, gamma: float, rescale: str):
    g = R.aligned(seed, k, sum(R.SIZES))
    out, decision = run(g, R.SIZES, gamma=gamma, rescale=rescale)
    np.testing.assert_allclose(out, gamma * g.sum(0), rtol=1e-14, atol=1e-14 * np.abs(g).max())
    np.testing.assert_array_equal(R.as_np(decision.weights), np.ones(k))  # k * (1/k)


@pytest.mark.parametrize("rescale", RESCALES)
def test_identical_rows_is_gamma_times_sum(rescale: str):
    g = np.tile(R.rng(0).standard_normal(12), (3, 1))
    out, _ = run(g, [5, 7], rescale=rescale)
    np.testing.assert_allclose(out, 1.5 * 3 * g[0], rtol=1e-15)


# ------------------------------------------------------------------ two losses in conflict: closed form


@pytest.mark.parametrize("seed", range(8))
@pytest.mark.parametrize("gamma", [1.0, 1.5])
@pytest.mark.parametrize("rescale", RESCALES)
@pytest.mark.parametrize("ratio", [0.2, 1.0, 5.0])
def test_two_losses_conflict_closed_form(seed: int, gamma: float, rescale: str, ratio: float):
    g = R.conflicting_pair(seed, sum(R.SIZES), ratio)
    g1, g2 = g
    assert g1 @ g2 < 0
    a = float((g2 @ g2 - g1 @ g2) / ((g1 - g2) @ (g1 - g2)))
    h = 2 * (a * g1 + (1 - a) * g2)
    u = g1 + g2
    expected = np.empty_like(h)
    if rescale == "group":
        expected[:] = gamma * max(1.0, np.linalg.norm(u) / np.linalg.norm(h)) * h
    else:
        start = 0
        for size in R.SIZES:
            s = slice(start, start + size)
            expected[s] = gamma * max(1.0, np.linalg.norm(u[s]) / np.linalg.norm(h[s])) * h[s]
            start += size
    out, decision = run(g, R.SIZES, gamma=gamma, rescale=rescale)
    np.testing.assert_allclose(out, expected, **tol(g))
    np.testing.assert_allclose(R.as_np(decision.weights), [2 * a, 2 * (1 - a)], rtol=1e-12)


def test_tensor_and_group_rescale_differ_when_segments_differ():
    # Per-tensor ratios |u_p| / |h_p| that straddle 1 make the two modes give different updates.
    for seed in range(50):
        g = R.conflicting_pair(seed, sum(R.SIZES))
        _, _, h = R.ref_mmpareto(g, R.SIZES, 1.5, "tensor")
        pairs = zip(R.split(g.sum(0), R.SIZES), R.split(h, R.SIZES), strict=False)
        ratios = [np.linalg.norm(up) / np.linalg.norm(hp) for up, hp in pairs]
        if min(ratios) < 1 < max(ratios):
            break
    else:
        pytest.fail("no straddling case generated")
    per_tensor, _ = run(g, R.SIZES, rescale="tensor")
    group, _ = run(g, R.SIZES, rescale="group")
    assert not np.allclose(per_tensor, group)
    np.testing.assert_allclose(per_tensor, R.ref_mmpareto(g, R.SIZES, 1.5, "tensor")[0], **tol(g))
    np.testing.assert_allclose(group, R.ref_mmpareto(g, R.SIZES, 1.5, "group")[0], **tol(g))


@pytest.mark.parametrize("seed", range(3))
def test_one_segment_tensor_equals_group(seed: int):
    g = R.conflicting_pair(seed, 10)
    assert_close(run(g, None, rescale="tensor")[0], run(g, None, rescale="group")[0], rtol=0, atol=0)
    assert_close(run(g, [10], rescale="tensor")[0], run(g, None, rescale="group")[0], rtol=0, atol=0)


@pytest.mark.parametrize("swap", [False, True])
@pytest.mark.parametrize("rescale", RESCALES)
def test_min_norm_weight_is_not_clipped_at_extreme_ratios(swap: bool, rescale: str):
    # g1 = (-1e4, 0.5), g2 = (1, 0): a = 10001 / (10001^2 + 0.25) ~ 1e-4, far below 0.001. The
    # reference solver returns it unclipped, and the update descends on both losses.
    g = np.array([[-1e4, 0.5], [1.0, 0.0]])
    if swap:
        g = g[::-1].copy()
    a = R.reference_two_weight(g)
    assert (a < 0.001) != swap and (a > 0.999) == swap
    out, decision = run(g, None, rescale=rescale)
    np.testing.assert_allclose(R.as_np(decision.weights), 2 * np.array([a, 1.0 - a]), rtol=1e-12)
    h = 2 * (a * g[0] + (1.0 - a) * g[1])
    expected = 1.5 * max(1.0, np.linalg.norm(g.sum(0)) / np.linalg.norm(h)) * h
    # h cancels a ~1e4 gradient down to ~1: compare against the update's norm
    np.testing.assert_allclose(out, expected, rtol=0, atol=1e-10 * np.linalg.norm(expected))
    assert (g @ out > 0).all()
    clipped = float(np.clip(a, 0.001, 0.999))
    h_clipped = 2 * (clipped * g[0] + (1.0 - clipped) * g[1])
    assert (g @ h_clipped < 0).any()


@pytest.mark.parametrize("zero", [0, 1])
def test_zero_gradient_takes_the_reference_degenerate_weight(zero: int):
    # cos = 0 is not > 0, so the solver runs; its degenerate cases give 0.999 (first gradient zero) or
    # 0.001 (second zero), and the magnitude rule restores the other gradient times gamma.
    g = R.rng(3).standard_normal((2, 12))
    g[zero] = 0.0
    out, decision = run(g, [5, 7])
    expected_a = 0.999 if zero == 0 else 0.001
    np.testing.assert_allclose(R.as_np(decision.weights), 2 * np.array([expected_a, 1 - expected_a]), rtol=1e-15)
    np.testing.assert_allclose(out, 1.5 * g[1 - zero], rtol=1e-12)


# ------------------------------------------------------------------ more than two losses


@pytest.mark.parametrize("seed", range(5))
@pytest.mark.parametrize("k", [3, 4, 5])
@pytest.mark.parametrize("rescale", RESCALES)
def test_k_losses_uniform_when_all_cosines_positive(seed: int, k: int, rescale: str):
    g = R.aligned(seed + 100, k, sum(R.SIZES))
    out, decision = run(g, R.SIZES, rescale=rescale)
    np.testing.assert_array_equal(R.as_np(decision.weights), np.ones(k))
    np.testing.assert_allclose(out, 1.5 * g.sum(0), **tol(g, 1e-14))


@pytest.mark.parametrize("seed", range(6))
@pytest.mark.parametrize("k", [3, 4, 5])
@pytest.mark.parametrize("rescale", RESCALES)
def test_k_losses_min_norm_weights_when_any_conflict(seed: int, k: int, rescale: str):
    g = R.with_conflict(seed, k, sum(R.SIZES))
    out, decision = run(g, R.SIZES, rescale=rescale)
    weights = R.as_np(decision.weights) / k  # the simplex weights a
    assert (weights >= 0).all() and abs(weights.sum() - 1) < 1e-12
    scipy_w = R.scipy_min_norm(R.gram(g))
    # the min-norm point is unique even where weights are not: compare h, and optimality
    assert R.kkt_violation(R.gram(g), weights) < 1e-10
    np.testing.assert_allclose(weights @ g, scipy_w @ g, rtol=1e-5, atol=1e-6 * np.abs(g).max())
    assert weights @ R.gram(g) @ weights <= scipy_w @ R.gram(g) @ scipy_w * (1 + 1e-9) + 1e-15
    expected, _, _ = R.ref_mmpareto(g, R.SIZES, 1.5, rescale, weights=weights)
    np.testing.assert_allclose(out, expected, **tol(g))


def test_k3_single_nonpositive_cosine_switches_to_min_norm():
    # g0, g1 aligned; g2 orthogonal to g0 (cos exactly 0, which is "not > 0") -> min-norm weights.
    g = np.array([[1.0, 0.0, 0.0], [1.0, 1.0, 0.0], [0.0, 1.0, 1.0]])
    assert R.cosine(g)[0, 2] == 0.0
    out, decision = run(g)
    weights = R.as_np(decision.weights) / 3  # the simplex weights a
    assert not np.allclose(weights, 1 / 3)
    assert R.kkt_violation(R.gram(g), weights) < 1e-12
    np.testing.assert_allclose(out, R.ref_mmpareto(g, [3], 1.5, "tensor", weights=weights)[0], rtol=1e-12)


# ------------------------------------------------------------------ properties


@pytest.mark.parametrize("seed", range(25))
@pytest.mark.parametrize("k", [2, 3, 4])
def test_group_update_is_common_descent_direction(seed: int, k: int):
    # With one rescale for the whole group the update is a positive multiple of h, the min-norm
    # point (KKT: <h, g_i> >= |h|^2 / k >= 0), or of the uniform sum when all cosines are > 0.
    if k == 2:
        g = R.conflicting_pair(seed, 12, ratio=float(R.rng(seed).uniform(0.2, 5)))
    else:
        g = R.with_conflict(seed, k, 12)
    out, _ = run(g, [4, 8], rescale="group")
    assert np.linalg.norm(out) > 0
    inner = g @ out
    assert (inner >= -1e-12 * np.linalg.norm(out) * np.linalg.norm(g, axis=1)).all(), inner


@pytest.mark.parametrize("seed", range(10))
@pytest.mark.parametrize("k", [2, 3, 4, 5])
@pytest.mark.parametrize("rescale", RESCALES)
def test_update_norm_is_gamma_max_of_h_and_u(seed: int, k: int, rescale: str):
    # Spec step 5: |grad_p| = gamma * max(1, |u_p|/|h_p|) * |h_p| = gamma * max(|h_p|, |u_p|),
    # with |h_p| <= k max_i |g_ip| and |u_p| <= k max_i |g_ip|.
    g = R.with_conflict(seed, k, sum(R.SIZES)) if seed % 2 else R.aligned(seed, k, sum(R.SIZES))
    gamma = 1.7
    out, decision = run(g, R.SIZES, gamma=gamma, rescale=rescale)
    h = R.as_np(decision.weights) @ g  # weights are k * a
    u = g.sum(0)
    starts = np.cumsum([0, *R.SIZES[:-1]])
    parts = [slice(None)] if rescale == "group" else [slice(a, a + n) for a, n in zip(starts, R.SIZES, strict=False)]
    for s in parts:
        np.testing.assert_allclose(
            np.linalg.norm(out[s]), gamma * max(np.linalg.norm(h[s]), np.linalg.norm(u[s])), rtol=1e-10
        )
        assert np.linalg.norm(out[s]) <= gamma * k * np.linalg.norm(g[:, s], axis=1).max() * (1 + 1e-12)
    assert np.linalg.norm(out) >= gamma * np.linalg.norm(u) * (1 - 1e-12) if rescale == "group" else True
    assert np.linalg.norm(out) <= gamma * k * np.sqrt(
        sum(np.linalg.norm(g[:, s], axis=1).max() ** 2 for s in parts)
    ) * (1 + 1e-12)


@pytest.mark.parametrize("seed", range(4))
@pytest.mark.parametrize("k", [2, 3, 4])
def test_row_permutation_invariance(seed: int, k: int):
    g = R.with_conflict(seed, k, sum(R.SIZES))
    perm = R.rng(seed).permutation(k)
    out, _ = run(g, R.SIZES)
    out_p, _ = run(g[perm], R.SIZES)
    np.testing.assert_allclose(out_p, out, **tol(g, 1e-9))


def test_gamma_is_a_pure_factor():
    g = R.conflicting_pair(3, sum(R.SIZES))
    base, _ = run(g, R.SIZES, gamma=1.0)
    for gamma in [1e-3, 0.5, 2.0, 7.0]:
        np.testing.assert_allclose(run(g, R.SIZES, gamma=gamma)[0], gamma * base, rtol=1e-14)


@pytest.mark.parametrize("rescale", RESCALES)
def test_zero_h_on_a_segment_gives_exactly_zero_there(rescale: str):
    # |g1| = |g2| -> a = 1/2 exactly; on the first segment g2 = -g1, so h_p = 0 exactly there.
    r = R.rng(5)
    x, y = 3 * r.standard_normal(4), r.standard_normal(6)
    g = np.stack([np.concatenate([x, y]), np.concatenate([-x, y])])
    assert g[0] @ g[1] < 0
    out, decision = run(g, [4, 6], rescale=rescale)
    np.testing.assert_array_equal(R.as_np(decision.weights), [1.0, 1.0])  # a = 1/2 exactly
    np.testing.assert_array_equal(out[:4], np.zeros(4))
    # on the second segment h_p = u_p = 2y; on the group |u| = |h| too, so both modes give gamma * 2y
    np.testing.assert_allclose(out[4:], 1.5 * 2 * y, rtol=1e-14)


@pytest.mark.parametrize("rescale", RESCALES)
@pytest.mark.parametrize("factor", [1.0, 3.0, 0.1])
def test_opposite_rows_give_zero(rescale: str, factor: float):
    g0 = R.rng(2).standard_normal(9)
    g = np.stack([g0, -factor * g0])
    out, _ = run(g, [4, 5], rescale=rescale)
    np.testing.assert_allclose(out, np.zeros(9), atol=1e-13 * np.abs(g).max())
    assert np.isfinite(out).all()


# ------------------------------------------------------------------ decision, capabilities, hparams


@pytest.mark.parametrize("seed", range(4))
@pytest.mark.parametrize("k", [2, 3, 4])
def test_weights_are_k_times_simplex_weights(seed: int, k: int):
    g = R.with_conflict(seed, k, sum(R.SIZES)) if seed % 2 else R.aligned(seed, k, sum(R.SIZES))
    _, decision = run(g, R.SIZES)
    w = R.as_np(decision.weights)
    assert (w >= 0).all() and abs(w.sum() - k) < 1e-12
    np.testing.assert_array_equal(w, k * R.as_np(mmpareto_weights(decision.gram)))
    # a numpy Gram matrix differs from the tensor-wise one by ulps, and so do the min-norm weights
    np.testing.assert_allclose(w, k * R.as_np(mmpareto_weights(torch.tensor(R.gram(g)))), rtol=1e-12, atol=1e-14)


@pytest.mark.parametrize("seed", range(4))
@pytest.mark.parametrize("k", [3, 4])
def test_direction_under_conflict_is_k_times_mgda_for_many_losses(seed: int, k: int):
    # k > 2 with a conflict: the spec's weights are MGDA's min-norm weights (no clip), times k;
    # MMPareto = MGDA's direction with the restore-and-enlarge magnitude rule.
    g = R.with_conflict(seed, k, sum(R.SIZES))
    mgda, mgda_decision = A.run(get_integrator("mgda"), g, R.SIZES)
    out, decision = run(g, R.SIZES, rescale="group")
    np.testing.assert_allclose(R.as_np(decision.weights), k * R.as_np(mgda_decision.weights), rtol=1e-15)
    h = k * mgda
    expected = 1.5 * max(1.0, np.linalg.norm(g.sum(0)) / np.linalg.norm(h)) * h
    np.testing.assert_allclose(out, expected, **tol(g, 1e-12))


def test_capabilities_and_label():
    integrator = get_integrator("mmpareto")
    assert integrator.magnitude is not None
    for k in (2, 3):
        assert integrator.fixed_combination(k) is None  # a magnitude rule: never a fixed combination
    assert integrator.label() == "mmpareto"
    assert get_integrator("mmpareto", gamma=1.0).label() == "mmpareto(gamma=1.0)"
    assert get_integrator("mmpareto", rescale="group").label() == "mmpareto(rescale=group)"
    assert get_integrator("mmpareto", gamma=1.5, rescale="tensor").label() == "mmpareto"


def test_hparams_and_repr():
    integrator = get_integrator("mmpareto", gamma=2, rescale="group")
    assert integrator.hparams() == {"gamma": 2.0, "rescale": "group"}
    assert repr(integrator) == "MMPareto(gamma=2.0, rescale='group')"
    assert get_integrator("mmpareto").hparams() == {"gamma": 1.5, "rescale": "tensor"}


@pytest.mark.parametrize("params", [{"gamma": 0}, {"gamma": -1.0}, {"gamma": float("nan")}, {"rescale": "foo"}])
def test_invalid_params(params: dict):
    with pytest.raises(ValueError, match="mmpareto") as info:
        get_integrator("mmpareto", **params)
    assert "\n" not in str(info.value)
    if "rescale" in params:
        assert "tensor" in str(info.value) and "group" in str(info.value)


# ------------------------------------------------------------------ degenerate and extreme inputs


def _edge_params():
    for name in R.EDGE_NAMES:
        for dtype in (torch.float64, torch.float32):
            yield pytest.param(name, dtype, id=f"{name}-{str(dtype)[6:]}")


@pytest.mark.parametrize("rescale", RESCALES)
@pytest.mark.parametrize(("name", "dtype"), list(_edge_params()))
def test_edge_cases_match_reference(name: str, dtype: torch.dtype, rescale: str):
    g = R.edge_case(name, dtype)
    out, decision = run(g, R.EDGE_SIZES, rescale=rescale)
    assert np.isfinite(out).all()
    assert torch.isfinite(decision.weights).all()
    g64 = R.as_np(g)
    if name in ("zeros", "opposite", "opposite_scaled"):
        expected = np.zeros(g64.shape[1])  # h = 0 (up to round-off): no common descent direction
    else:
        expected, _, _ = R.ref_mmpareto(g64, R.EDGE_SIZES, 1.5, rescale)
    rtol = 1e-10 if dtype == torch.float64 else 2e-5
    np.testing.assert_allclose(out, expected, **tol(g64, rtol))
    if name == "zero_segment":
        np.testing.assert_array_equal(out[3:7], 0.0)
    if name in ("one_zero_row", "first_zero_row", "identical"):
        np.testing.assert_allclose(out, 1.5 * g64.sum(0), **tol(g64, rtol))
