"""Uniform sum (the paper's uniform baseline), optionally scaled."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from torch.testing import assert_close

from framework.integrators import get_integrator

from . import _refs as R


@pytest.mark.parametrize("seed", range(3))
@pytest.mark.parametrize("k", [1, 2, 3, 5])
@pytest.mark.parametrize("scale", [1.0, 1.5, 0.25])
def test_is_scaled_sum(seed: int, k: int, scale: float):
    g = R.rng(seed).standard_normal((k, sum(R.SIZES)))
    integrator = get_integrator("sum", scale=scale)
    out = integrator(torch.tensor(g), segments=R.SIZES)
    # scale applies to shared groups; a single loss passes through as its plain gradient
    expected_scale = scale if k > 1 else 1.0
    np.testing.assert_allclose(R.as_np(out), expected_scale * g.sum(0), rtol=1e-14, atol=1e-14)
    # recorded weights are the uniform 1/k; the scale is a magnitude rule on top of them
    w = R.as_np(integrator.last.weights)
    np.testing.assert_allclose(w, np.full(k, 1.0 / k), rtol=1e-15)
    np.testing.assert_allclose(integrator.last.update_norm, expected_scale * np.linalg.norm(g.sum(0)), rtol=1e-12)


def test_conflict_is_ignored():
    g = np.array([[1.0, 2.0], [-3.0, -1.0]])
    assert_close(get_integrator("sum")(torch.tensor(g)), torch.tensor([-2.0, 1.0], dtype=torch.float64))


@pytest.mark.parametrize("k", [2, 3])
def test_flat_api_equals_tensor_api(k: int):
    g = torch.tensor(R.rng(k).standard_normal((k, sum(R.SIZES))))
    flat = get_integrator("sum", scale=1.5)(g, segments=R.SIZES)
    per_tensor = get_integrator("sum", scale=1.5).integrate_tensors(R.reshape_rows(g, R.SHAPES))
    assert [tuple(t.shape) for t in per_tensor] == R.SHAPES
    assert_close(torch.cat([t.reshape(-1) for t in per_tensor]), flat, rtol=0, atol=0)
    assert_close(get_integrator("sum", scale=1.5)(g), flat, rtol=0, atol=0)


def test_inplace_matches_out_of_place():
    g = torch.tensor(R.rng(0).standard_normal((3, sum(R.SIZES))))
    expected = get_integrator("sum").integrate_tensors(R.reshape_rows(g, R.SHAPES))
    lists = R.reshape_rows(g, R.SHAPES)
    out = get_integrator("sum").integrate_tensors(lists, inplace=True)
    for o, e, storage in zip(out, expected, lists[0]):
        assert_close(o, e, rtol=0, atol=0)
        assert o.data_ptr() == storage.data_ptr()


def test_out_of_place_leaves_inputs_untouched():
    g = torch.tensor(R.rng(1).standard_normal((3, sum(R.SIZES))))
    lists = R.reshape_rows(g, R.SHAPES)
    copies = [[t.clone() for t in row] for row in lists]
    for name in ("sum", "pcgrad", "mgda", "mmpareto"):
        get_integrator(name).integrate_tensors(lists)
        for row, copy in zip(lists, copies):
            for t, c in zip(row, copy):
                assert torch.equal(t, c), name


def test_decision_fields():
    g = R.rng(3).standard_normal((3, 8))
    integrator = get_integrator("sum")
    integrator(torch.tensor(g), segments=[3, 5])
    d = integrator.last
    np.testing.assert_allclose(R.as_np(d.gram), R.gram(g), rtol=1e-12)
    np.testing.assert_allclose(R.as_np(d.cosine), R.cosine(g), rtol=1e-12, atol=1e-14)
    np.testing.assert_allclose(R.as_np(d.norms), np.linalg.norm(g, axis=1), rtol=1e-12)
    np.testing.assert_allclose(d.sum_norm, np.linalg.norm(g.sum(0)), rtol=1e-12)
    assert abs(float(d.weights.sum()) - 1.0) < 1e-15


@pytest.mark.parametrize("dtype", [torch.float64, torch.float32], ids=["float64", "float32"])
@pytest.mark.parametrize("name", R.EDGE_NAMES)
def test_edge_cases(name: str, dtype: torch.dtype):
    g = R.edge_case(name, dtype)
    out = get_integrator("sum")(g, segments=R.EDGE_SIZES)
    assert torch.isfinite(out).all()
    assert_close(out, g.sum(0), rtol=1e-6, atol=0)


def test_float32_in_float32_out():
    g = torch.randn(2, 5, generator=torch.Generator().manual_seed(0))
    assert get_integrator("sum")(g).dtype == torch.float32


def test_hparams_and_invalid_scale():
    assert get_integrator("sum", scale=2).hparams() == {"scale": 2.0}
    for bad in (0, -1.0, float("nan")):
        with pytest.raises(ValueError, match="scale") as info:
            get_integrator("sum", scale=bad)
        assert "\n" not in str(info.value)
