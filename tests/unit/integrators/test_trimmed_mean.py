"""Trimmed mean through torchjd's TrimmedMean; its trim number depends on the group's k."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from framework.integrators import get_integrator

from . import _refs as R


@pytest.mark.parametrize("k", [2, 3, 4, 5])
def test_default_is_the_coordinatewise_median(k: int):
    g = R.with_conflict(k, k, 12)
    out, _ = get_integrator("trimmed_mean")(torch.tensor(g))
    np.testing.assert_allclose(R.as_np(out), np.median(g, axis=0), rtol=1e-14, atol=1e-15)  # k = 2: the mean


@pytest.mark.parametrize(("k", "trim"), [(2, 0), (3, 0), (3, 1), (5, 1), (5, 2)])
def test_explicit_trim_number(k: int, trim: int):
    g = R.with_conflict(k + 7, k, 12)
    out, _ = get_integrator("trimmed_mean", trim_number=trim)(torch.tensor(g))
    expected = np.sort(g, axis=0)[trim : k - trim].mean(0)
    np.testing.assert_allclose(R.as_np(out), expected, rtol=1e-14, atol=1e-15)


def test_too_large_trim_number_is_a_one_line_error_naming_what_is_valid():
    with pytest.raises(ValueError) as info:
        get_integrator("trimmed_mean", trim_number=1)(torch.tensor(R.with_conflict(0, 2, 6)))
    message = str(info.value)
    assert "\n" not in message and "trim_number=1" in message and "k=2" in message and "0 to 0" in message
    with pytest.raises(ValueError, match="trim_number"):
        get_integrator("trimmed_mean", trim_number=-1)
