"""UPGrad (Quinton & Rey 2024) through torchjd's UPGradWeighting on the group Gram matrix.

References: torchjd's own ``UPGrad`` aggregator on the same ``(k, d)`` matrix, and an independent
exact (non-negative least squares) projection of each gradient onto the dual cone
``{x : g_j . x >= 0 for all j}``. Shared behaviour (APIs, decision fields, scale equivariance, ...):
test_contract.py.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch
from scipy.optimize import nnls
from torch.testing import assert_close
from torchjd.aggregation import UPGrad as TorchjdUPGrad
from torchjd.linalg import QuadprogProjector

from framework.integrators import get_integrator

from . import _asserts as A
from . import _refs as R

# Same weighting, same QP solver (quadprog) on the same Gram matrix: the only difference is that
# the framework accumulates the Gram tensor by tensor. Measured over these inputs: at most 1.1e-15
# relative; 1e-12 leaves room for other BLAS builds.
TORCHJD_RTOL = 1e-12


def matrix(kind: str, seed: int, k: int, d: int = 12) -> np.ndarray:
    return R.with_conflict(seed, k, d) if kind == "conflict" else R.aligned(seed, k, d)


def run(g, sizes=None, **params):
    return A.run(get_integrator("upgrad", **params), g, sizes)


def dual_cone_projection(g: np.ndarray, x0: np.ndarray) -> np.ndarray:
    """``argmin |x - x0|^2`` subject to ``g x >= 0``, by its dual: ``x = x0 + g^T l`` with
    ``l = argmin_{l >= 0} |g^T l + x0|^2`` (a non-negative least-squares problem, solved exactly)."""
    multipliers, _ = nnls(g.T, -x0)
    x = x0 + g.T @ multipliers
    scale = np.linalg.norm(g, axis=1) * np.linalg.norm(x0)
    assert (g @ x >= -1e-12 * scale).all()  # feasible
    assert (np.abs(multipliers * (g @ x)) <= 1e-10 * scale * (1 + multipliers)).all()  # complementary
    return x


@pytest.mark.parametrize("seed", range(5))
@pytest.mark.parametrize("k", [2, 3, 5])
@pytest.mark.parametrize("kind", ["conflict", "aligned"])
def test_matches_torchjd_upgrad(kind: str, seed: int, k: int):
    g = matrix(kind, seed, k)
    expected = TorchjdUPGrad()(torch.tensor(g))
    out, decision = run(g, [5, 7])
    assert_close(torch.tensor(out), expected, rtol=TORCHJD_RTOL, atol=TORCHJD_RTOL * float(expected.abs().max()))
    np.testing.assert_allclose(out, R.as_np(decision.weights) @ g, **A.tol(g, 1e-13))


@pytest.mark.parametrize("seed", range(4))
@pytest.mark.parametrize("k", [2, 3, 5])
def test_matches_independent_dual_cone_projection(seed: int, k: int):
    # UPGrad = mean_i of the projection of g_i onto the dual cone of all rows. torchjd's default
    # projector solves it on the trace-normalised Gramian plus reg_eps = 1e-4 * I, which moves the
    # result: over 60 random conflicting matrices (k = 2, 3, 5) the largest relative distance to the
    # exact projection was 1.8e-2, hence 5e-2 here (without the regularisation: see the next test).
    g = R.with_conflict(seed, k, 12)
    exact = np.mean([dual_cone_projection(g, g[i]) for i in range(k)], axis=0)
    out, _ = run(g)
    assert np.linalg.norm(out - exact) <= 5e-2 * np.linalg.norm(exact)


@pytest.mark.parametrize("seed", range(4))
@pytest.mark.parametrize("k", [2, 3, 5])
def test_reference_projection_is_torchjd_without_regularisation(seed: int, k: int):
    # the reference above is the projection torchjd computes with reg_eps = norm_eps = 0
    # (measured: 5e-16 relative), so the gap above is torchjd's regularisation, nothing else
    g = R.with_conflict(seed, k, 12)
    exact = np.mean([dual_cone_projection(g, g[i]) for i in range(k)], axis=0)
    unregularised = TorchjdUPGrad(projector=QuadprogProjector(norm_eps=0.0, reg_eps=0.0))(torch.tensor(g))
    np.testing.assert_allclose(R.as_np(unregularised), exact, **A.tol(g, 1e-12))


@pytest.mark.parametrize("seed", range(5))
@pytest.mark.parametrize("k", [2, 3, 5])
def test_no_conflict_is_the_mean(seed: int, k: int):
    # all pairwise inner products >= 0: every g_i already lies in the dual cone, so UPGrad is the
    # mean (the QP's constraints all bind; quadprog returns them to ~1e-16)
    g = R.aligned(seed, k, 12)
    assert (R.gram(g) >= 0).all()
    out, decision = run(g, [5, 7])
    np.testing.assert_allclose(out, g.mean(0), **A.tol(g, 1e-13))
    np.testing.assert_allclose(R.as_np(decision.weights), np.full(k, 1.0 / k), rtol=1e-13)


def test_orthogonal_gradients_are_the_mean():
    # inner product exactly 0 is "no conflict" too
    g = np.array([[1.0, 0.0, 0.0], [0.0, 2.0, 0.0], [0.0, 0.0, 0.5]])
    out, _ = run(g)
    np.testing.assert_allclose(out, g.mean(0), rtol=1e-13, atol=1e-15)


@pytest.mark.parametrize("seed", range(10))
@pytest.mark.parametrize("k", [2, 3, 5])
def test_update_does_not_conflict_with_any_gradient(seed: int, k: int):
    # <update, g_i> >= 0 for every i (the non-conflicting property). The regularised QP only
    # guarantees it up to reg_eps = 1e-4 relative; measured minimum cosine over these inputs: +0.028.
    g = R.with_conflict(seed, k, 12)
    out, _ = run(g)
    cos = (g @ out) / (np.linalg.norm(g, axis=1) * np.linalg.norm(out))
    assert (cos >= -1e-4).all(), cos
    assert np.linalg.norm(out) > 0


@pytest.mark.parametrize("seed", range(4))
@pytest.mark.parametrize("k", [2, 3, 5])
@pytest.mark.parametrize("kind", ["conflict", "aligned"])
def test_pref_vector_matches_torchjd(kind: str, seed: int, k: int):
    g = matrix(kind, seed, k)
    pref = R.rng(seed).uniform(0.1, 1.0, size=k)
    pref /= pref.sum()
    expected = TorchjdUPGrad(pref_vector=torch.tensor(pref))(torch.tensor(g))
    out, _ = run(g, pref_vector=pref.tolist())
    assert_close(torch.tensor(out), expected, rtol=TORCHJD_RTOL, atol=TORCHJD_RTOL * float(expected.abs().max()))
    if kind == "aligned":
        # no conflict: the projections are the gradients themselves, combined with the preference
        np.testing.assert_allclose(out, pref @ g, **A.tol(g, 1e-13))
    else:
        assert not np.allclose(out, run(g)[0])  # the preference changes the update


def test_hparams_label_and_capabilities():
    integrator = get_integrator("upgrad", pref_vector=[1, 3])
    assert integrator.hparams() == {"pref_vector": [1.0, 3.0]}
    assert integrator.magnitude is None and integrator.fixed_combination(2) is None
    assert get_integrator("upgrad").hparams() == {"pref_vector": None}
    assert get_integrator("upgrad").label() == "upgrad"
