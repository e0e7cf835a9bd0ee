"""Direction and magnitude as separate choices: ``integrator.magnitude`` for every integrator."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from framework.integrators import INTEGRATORS, get_integrator
from framework.integrators.magnitude import DESCENT_COSINE_TOL, MAGNITUDE_CHOICES

from . import _refs as R


def conflicting(seed: int, k: int, d: int = 12) -> np.ndarray:
    """``k`` gradients with every pairwise cosine negative, so MMPareto always takes its Pareto branch."""
    r = R.rng(seed)
    while True:
        g = r.standard_normal((k, d))
        g[1:] -= 1.2 * g[0]
        c = R.cosine(g)
        if (c[~np.eye(k, dtype=bool)] < 0).all():
            a = R.two_weight(g, 0.0, 1.0) if k == 2 else 0.5
            if k > 2 or R.INTERIOR[0] + 1e-3 < a < R.INTERIOR[1] - 1e-3:
                return g


@pytest.mark.parametrize("seed", range(5))
@pytest.mark.parametrize("k", [2, 3])
@pytest.mark.parametrize("rescale", ["group", "tensor"])
def test_mgda_with_restore_gamma_is_mmpareto_under_conflict(seed: int, k: int, rescale: str):
    """MMPareto = MGDA's direction with MMPareto's magnitude, where every step conflicts.

    Under conflict MMPareto's weights are the min-norm ones (interior: no clipping), its direction
    is ``k`` times MGDA's, and ``|sum_i g_i| >= k |min-norm point|`` on the group, so both rules
    give ``gamma |u| / |d| * d``. Per tensor that inequality need not hold, so the tensor case
    uses a single tensor.
    """
    g = torch.tensor(conflicting(seed, k))
    segments = [5, 7] if rescale == "group" else None
    mmpareto = get_integrator("mmpareto", gamma=1.7, rescale=rescale)(g, segments=segments).update
    mgda = get_integrator("mgda", magnitude="restore_gamma", gamma=1.7, rescale=rescale)(g, segments=segments).update
    torch.testing.assert_close(mgda, mmpareto, rtol=1e-12, atol=1e-14)
    plain = get_integrator("mgda")(g, segments=segments).update
    assert float(mgda.norm()) > 1.5 * float(plain.norm())  # the magnitude really changed


@pytest.mark.parametrize("name", sorted(INTEGRATORS))
@pytest.mark.parametrize("choice", MAGNITUDE_CHOICES)
def test_every_integrator_takes_every_magnitude(name: str, choice: str):
    g = torch.tensor(conflicting(3, 3))
    base = get_integrator(name, magnitude="none")
    integrator = get_integrator(name, magnitude=choice, gamma=2.0, rescale="group")
    direction = base(g).update
    out = integrator(g).update
    assert torch.isfinite(out).all()
    cosine = float(out @ direction) / max(float(out.norm() * direction.norm()), 1e-300)
    if direction.norm() > 0:
        assert cosine == pytest.approx(1.0, abs=1e-9)  # the magnitude rule never turns the direction
    u = float(g.sum(0).norm())
    if choice == "none":
        torch.testing.assert_close(out, direction, rtol=1e-12, atol=0)
    elif direction.norm() > 0:
        # enlarged only where the direction increases no loss (test_magnitude_descent.py)
        norms, d_norm = g.norm(dim=1), float(direction.norm())
        descent = bool((g @ direction >= -DESCENT_COSINE_TOL * norms * d_norm - 1e-12 * norms * d_norm).all())
        gamma = 2.0 if choice == "restore_gamma" else 1.0
        expected = gamma * max(d_norm, u) if descent else d_norm
        assert float(out.norm()) == pytest.approx(expected, rel=1e-9)
    assert integrator.fixed_combination(3) is None or choice == "none"


def test_labels_and_hparams_show_a_non_default_magnitude():
    assert get_integrator("upgrad", magnitude="restore_gamma").label() == "upgrad(magnitude=restore_gamma)"
    assert (
        get_integrator("mgda", magnitude="restore", rescale="group").label() == "mgda(magnitude=restore,rescale=group)"
    )
    assert get_integrator("mmpareto").label() == "mmpareto"
    assert get_integrator("mmpareto", magnitude="none").label() == "mmpareto(magnitude=none)"
    params = get_integrator("mgda", magnitude="restore_gamma", gamma=2.0).hparams()
    assert params == {"magnitude": "restore_gamma", "gamma": 2.0, "rescale": "tensor"}
    assert get_integrator("mgda", **params).hparams() == params


def test_unknown_magnitude_is_a_one_line_error_naming_the_choices():
    with pytest.raises(ValueError) as info:
        get_integrator("upgrad", magnitude="double")
    message = str(info.value)
    assert "\n" not in message and "double" in message
    assert all(choice in message for choice in MAGNITUDE_CHOICES)
