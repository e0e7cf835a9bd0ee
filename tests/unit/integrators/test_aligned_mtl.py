"""Aligned-MTL through torchjd's AlignedMTLWeighting."""

from __future__ import annotations

import pytest
import torch
import torchjd.aggregation as tjd

from framework.integrators import get_integrator

from . import _refs as R


@pytest.mark.parametrize("scale_mode", ["min", "median", "rmse"])
@pytest.mark.parametrize("k", [2, 3, 5])
def test_scale_modes_and_preference_match_torchjd(scale_mode: str, k: int):
    g = torch.tensor(R.with_conflict(k, k, 12))
    out, _ = get_integrator("aligned_mtl", scale_mode=scale_mode)(g)
    torch.testing.assert_close(out, tjd.AlignedMTL(scale_mode=scale_mode)(g), rtol=1e-12, atol=1e-13)
    pref = [float(i + 1) for i in range(k)]
    out, _ = get_integrator("aligned_mtl", pref_vector=pref, scale_mode=scale_mode)(g)
    expected = tjd.AlignedMTL(pref_vector=torch.tensor(pref, dtype=torch.float64), scale_mode=scale_mode)(g)
    torch.testing.assert_close(out, expected, rtol=1e-12, atol=1e-13)


def test_unknown_scale_mode_is_a_one_line_error():
    with pytest.raises(ValueError) as info:
        get_integrator("aligned_mtl", scale_mode="max")
    assert "\n" not in str(info.value) and "scale_mode" in str(info.value) and "median" in str(info.value)
