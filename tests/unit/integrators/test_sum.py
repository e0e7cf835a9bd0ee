"""Uniform sum (the paper's uniform baseline), optionally scaled. Shared behaviour: test_contract.py."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from torch.testing import assert_close

from framework.integrators import get_integrator

from . import _asserts as A
from . import _refs as R


@pytest.mark.parametrize("seed", range(3))
@pytest.mark.parametrize("k", [1, 2, 3, 5])
@pytest.mark.parametrize("scale", [1.0, 1.5, 0.25])
def test_is_scaled_sum(seed: int, k: int, scale: float):
    g = R.rng(seed).standard_normal((k, sum(R.SIZES)))
    out, decision = A.run(get_integrator("sum", scale=scale), g, R.SIZES)
    # scale applies to shared groups; a single loss passes through as its plain gradient
    expected_scale = scale if k > 1 else 1.0
    np.testing.assert_allclose(out, expected_scale * g.sum(0), rtol=1e-14, atol=1e-14)
    # recorded weights are the coefficients of the update: scale on every loss (1 for a single loss)
    np.testing.assert_array_equal(R.as_np(decision.weights), np.full(k, expected_scale))
    np.testing.assert_allclose(decision.update_norm, expected_scale * np.linalg.norm(g.sum(0)), rtol=1e-12)


def test_conflict_is_ignored():
    g = np.array([[1.0, 2.0], [-3.0, -1.0]])
    update, _ = get_integrator("sum")(torch.tensor(g))
    assert_close(update, torch.tensor([-2.0, 1.0], dtype=torch.float64))


@pytest.mark.parametrize("k", [2, 3])
def test_segmentation_is_exact(k: int):
    # the sum never looks at norms: flat, per-tensor and unsegmented results agree bit for bit
    g = torch.tensor(R.rng(k).standard_normal((k, sum(R.SIZES))))
    flat, _ = get_integrator("sum", scale=1.5)(g, segments=R.SIZES)
    per_tensor, _ = get_integrator("sum", scale=1.5).integrate(R.reshape_rows(g, R.SHAPES))
    assert_close(torch.cat([t.reshape(-1) for t in per_tensor]), flat, rtol=0, atol=0)
    assert_close(get_integrator("sum", scale=1.5)(g).update, flat, rtol=0, atol=0)


@pytest.mark.parametrize("dtype", [torch.float64, torch.float32], ids=["float64", "float32"])
@pytest.mark.parametrize("name", R.EDGE_NAMES)
def test_edge_cases_are_the_sum(name: str, dtype: torch.dtype):
    g = R.edge_case(name, dtype)
    out, _ = get_integrator("sum")(g, segments=R.EDGE_SIZES)
    assert torch.isfinite(out).all()
    assert_close(out, g.sum(0), rtol=1e-6, atol=0)


@pytest.mark.parametrize("k", [2, 3, 5])
@pytest.mark.parametrize("scale", [1.0, 1.5])
def test_fixed_combination_is_scale_times_ones(k: int, scale: float):
    weights = get_integrator("sum", scale=scale).fixed_combination(k)
    assert weights.dtype == torch.float64
    np.testing.assert_array_equal(R.as_np(weights), np.full(k, scale))


def test_label():
    assert get_integrator("sum").label() == "sum"
    assert get_integrator("sum", scale=1.0).label() == "sum"
    assert get_integrator("sum", scale=1.5).label() == "sum(scale=1.5)"


def test_hparams_and_invalid_scale():
    assert get_integrator("sum", scale=2).hparams() == {"scale": 2.0}
    assert repr(get_integrator("sum", scale=1.5)) == "Sum(scale=1.5)"
    for bad in (0, -1.0, float("nan")):
        with pytest.raises(ValueError, match="scale") as info:
            get_integrator("sum", scale=bad)
        assert "\n" not in str(info.value)
