"""Shared assertions and runners for the integrator tests (after torchjd's tests/unit/aggregation).

``run`` calls an integrator through its flat API and checks the structure every call must have;
the ``assert_*`` helpers state properties once, for the contract tests and the per-method files.
"""

from __future__ import annotations

import numpy as np
import torch
from torch import Tensor

from framework.integrators import Decision, Integration, Integrator

from . import _refs as R


def as_tensor(g: np.ndarray | Tensor, dtype: torch.dtype = torch.float64) -> Tensor:
    return g if isinstance(g, Tensor) else torch.tensor(g, dtype=dtype)


def integrate(integrator: Integrator, g: np.ndarray | Tensor, sizes=None) -> Integration[Tensor]:
    """``integrator(g, segments=sizes)``, with the structure of the result checked."""
    g = as_tensor(g)
    result = integrator(g, segments=sizes)
    assert isinstance(result, Integration) and isinstance(result.decision, Decision)
    update, decision = result
    assert update.shape == (g.shape[1],) and update.dtype == g.dtype
    k = g.shape[0]
    assert decision.gram.shape == (k, k) and decision.weights.shape == (k,)
    assert decision.gram.dtype == decision.weights.dtype == torch.float64
    assert decision.gram.device.type == decision.weights.device.type == "cpu"
    return result


def run(integrator: Integrator, g: np.ndarray | Tensor, sizes=None) -> tuple[np.ndarray, Decision]:
    """:func:`integrate` with the update as a float64 numpy array."""
    update, decision = integrate(integrator, g, sizes)
    return R.as_np(update), decision


def tol(g: np.ndarray, rtol: float = 1e-10) -> dict:
    """``rtol`` and an ``atol`` of ``rtol`` times the largest entry (for entries that cancel)."""
    return {"rtol": rtol, "atol": rtol * max(float(np.abs(g).max()), 1e-300)}


def assert_same_tensors(a: list[Tensor], b: list[Tensor]) -> None:
    assert len(a) == len(b)
    for x, y in zip(a, b, strict=True):
        assert x.shape == y.shape and x.dtype == y.dtype
        assert torch.equal(x, y)


def assert_decision_matches_numpy(decision: Decision, g: np.ndarray, update: np.ndarray, rtol: float = 1e-12) -> None:
    """``gram``, ``cosine``, ``norms``, ``sum_norm``, ``update_norm`` recomputed from the raw rows."""
    scale = max(float(np.abs(R.gram(g)).max()), 1e-300)
    np.testing.assert_allclose(R.as_np(decision.gram), R.gram(g), rtol=rtol, atol=rtol * scale)
    np.testing.assert_allclose(R.as_np(decision.cosine), R.cosine(g), rtol=rtol, atol=rtol)
    np.testing.assert_allclose(R.as_np(decision.norms), np.linalg.norm(g, axis=1), rtol=rtol)
    np.testing.assert_allclose(decision.sum_norm, np.linalg.norm(g.sum(0)), rtol=rtol, atol=rtol * np.sqrt(scale))
    np.testing.assert_allclose(decision.update_norm, np.linalg.norm(update), rtol=rtol, atol=rtol * np.sqrt(scale))
    assert torch.isfinite(decision.weights).all()


def assert_update_along_direction(
    g: np.ndarray, sizes, update: np.ndarray, weights: np.ndarray, exact: bool, rtol: float = 1e-12
) -> None:
    """On every tensor ``p``, ``update_p = s_p d_p`` with ``s_p >= 0`` and ``d = weights @ g``.

    ``exact`` (no magnitude rule): ``s_p = 1``, i.e. ``update = sum_i w_i g_i``.
    """
    d = weights @ g
    if exact:
        np.testing.assert_allclose(update, d, **tol(g, rtol))
        return
    scale = float(np.abs(g).max())
    for up, dp in zip(R.split(update, sizes), R.split(d, sizes), strict=True):
        if np.linalg.norm(dp) <= 1e-12 * scale:
            continue
        s = float(up @ dp) / float(dp @ dp)
        assert s >= 0.0, s
        np.testing.assert_allclose(up, s * dp, rtol=rtol, atol=rtol * max(s, 1.0) * scale)
