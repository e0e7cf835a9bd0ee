"""The magnitude rule enlarges a direction only where it is a common descent direction.

``restore``/``restore_gamma`` scale ``d`` up to ``gamma |u|``. Where ``d`` increases some loss to
first order (``g_i . d < 0`` beyond the tolerance, on the group) the rule keeps the method's own
update (scale 1) instead: a regularised solver's residue at a point with no common descent
direction, or a method that does not descend on every loss, is never blown up to a full step.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch

from framework.integrators import Integrator, get_integrator
from framework.integrators.magnitude import DESCENT_COSINE_TOL

from . import _refs as R

# No common descent direction: g_1 = -2 g_0.
OPPOSED = torch.tensor([[1.0, 0.0], [-2.0, 0.0]], dtype=torch.float64)


def _update(name: str, g: torch.Tensor, segments=None, **params) -> torch.Tensor:
    return get_integrator(name, **params)(g, segments=segments).update


@pytest.mark.parametrize("name", ["upgrad", "dualproj", "cagrad", "sum", "mean"])
@pytest.mark.parametrize("choice", ["restore", "restore_gamma"])
@pytest.mark.parametrize("rescale", ["tensor", "group"])
def test_no_common_descent_keeps_the_methods_own_update(name: str, choice: str, rescale: str):
    own = _update(name, OPPOSED)
    out = _update(name, OPPOSED, magnitude=choice, rescale=rescale)
    assert (OPPOSED @ own).min() < 0  # the method's own update increases loss 0 here
    torch.testing.assert_close(out, own, rtol=1e-12, atol=0)
    if name in ("upgrad", "dualproj"):
        assert float(out.norm()) < 1e-3  # the solver's residue, not a full step against loss 0


def test_the_opposed_pair_no_longer_gets_a_full_step_against_loss_0():
    out = _update("upgrad", OPPOSED, magnitude="restore_gamma")
    assert float((OPPOSED @ out)[0]) > -1e-3  # was -1.5: gamma |u| against the first loss


def _descent_pair() -> torch.Tensor:
    """Two conflicting gradients (cos < 0) with a common descent direction, on tensors of 3 + 2."""
    g = np.array([[1.0, 0.2, -0.3, 0.5, 0.1], [-0.6, 1.0, 0.4, -0.2, 0.3]])
    assert g[0] @ g[1] < 0
    return torch.tensor(g)


@pytest.mark.parametrize("name", ["upgrad", "dualproj", "mgda"])
@pytest.mark.parametrize("rescale", ["tensor", "group"])
def test_a_common_descent_direction_is_still_enlarged(name: str, rescale: str):
    g = _descent_pair()
    own = _update(name, g, segments=[3, 2])
    out = _update(name, g, segments=[3, 2], magnitude="restore_gamma", gamma=1.5, rescale=rescale)
    assert (g @ own >= 0).all()
    u = g.sum(0)
    if rescale == "group":
        expected = 1.5 * max(1.0, float(u.norm() / own.norm())) * own
    else:
        pieces = []
        for o, s in zip(own.split([3, 2]), u.split([3, 2]), strict=True):
            pieces.append(1.5 * max(1.0, float(s.norm() / o.norm())) * o)
        expected = torch.cat(pieces)
    torch.testing.assert_close(out, expected, rtol=1e-12, atol=1e-15)
    assert float(out.norm()) > 1.4 * float(own.norm())


class FixedWeights(Integrator):
    """The direction ``w @ g`` for given weights ``w``, with a magnitude rule."""

    def __init__(self, weights: np.ndarray, magnitude: str) -> None:
        self.w = torch.tensor(weights)
        self.set_magnitude(magnitude, gamma=1.5, rescale="group")

    def weights(self, gram: torch.Tensor) -> torch.Tensor:
        return self.w


@pytest.mark.parametrize("factor", [0.5, 2.0])
def test_a_direction_tilted_against_a_loss_is_enlarged_only_within_the_tolerance(factor: float):
    # d makes cos(g_0, d) = -factor * tol: enlarged at factor 0.5, the method's own at factor 2.
    c = -factor * DESCENT_COSINE_TOL
    g0 = np.array([1.0, 0.0])
    d = np.array([c, np.sqrt(1 - c * c)])
    g1 = 3 * d - 0.1 * g0
    g = np.stack([g0, g1])
    weights = np.linalg.solve(g.T, d)
    assert (weights > 0).all() and g1 @ d > 0
    own = FixedWeights(weights, "none")(torch.tensor(g)).update
    out = FixedWeights(weights, "restore_gamma")(torch.tensor(g)).update
    np.testing.assert_allclose(own.numpy(), d, rtol=1e-12)
    expected = 1.5 * max(1.0, float(np.linalg.norm(g.sum(0)))) if factor < 1 else 1.0
    assert float(out.norm()) == pytest.approx(expected, rel=1e-12)


def _weakly_stationary(count: int) -> list[torch.Tensor]:
    """``4 x 3`` Gaussian matrices (varied row norms) with 0 in the convex hull of their rows."""
    r = np.random.default_rng(0)
    out = []
    while len(out) < count:
        g = r.standard_normal((4, 3)) * r.uniform(0.1, 10, (4, 1))
        weights = R.scipy_min_norm(g @ g.T)
        if np.linalg.norm(weights @ g) < 1e-6 * np.abs(g).max():
            out.append(torch.tensor(g))
    return out


@pytest.mark.parametrize(
    ("name", "params"), [("mmpareto", {}), ("mmpareto", {"rescale": "group"}), ("mgda", {"magnitude": "restore_gamma"})]
)
def test_no_common_descent_direction_gives_a_zero_update_not_an_enlarged_residue(name: str, params: dict):
    # The min-norm point is 0 up to the solver's round-off (|d| ~ 1e-15..1e-13 of the gradients):
    # enlarging that residue to gamma |u| is a full step in a round-off direction.
    for g in _weakly_stationary(12):
        out = get_integrator(name, **params)(g).update
        assert float(out.norm()) <= 1e-9 * float(g.norm()), (name, params, g)
