"""The integrations that keep their work on the device raise no synchronisation on CUDA.

``torch.cuda.set_sync_debug_mode("error")`` turns every synchronising call into an error; the
integrations of ``sum``, ``mgda``, ``mmpareto`` and ``pcgrad`` with two losses per group, and the
engine's backward, must run through it. Their one expected host read (tensor_grams' flag for Gram
entries to recompute in float64, see tests/unit/test_host_syncs.py) runs with the mode at "default".
"""

from __future__ import annotations

from contextlib import contextmanager

import pytest
import torch

from framework.integrators import _kernels, get_integrator

pytestmark = [
    pytest.mark.cuda,
    pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA"),
]

NAMES = ["sum", "mgda", "mmpareto", "pcgrad"]


@contextmanager
def sync_errors():
    torch.cuda.synchronize()
    torch.cuda.set_sync_debug_mode("error")
    try:
        yield
    finally:
        torch.cuda.set_sync_debug_mode("default")


def _grads(k: int) -> list[list[torch.Tensor]]:
    generator = torch.Generator(device="cuda").manual_seed(0)
    shapes = [(64, 32), (32,), (8, 64)]
    rows = [[torch.randn(s, device="cuda", generator=generator) for s in shapes] for _ in range(k)]
    rows[1] = [-0.5 * a + 0.3 * b for a, b in zip(rows[0], rows[1], strict=True)]  # cosine < 0
    return rows


@pytest.fixture
def allowed_gram_check(monkeypatch):
    """tensor_grams' one read (whether any Gram entry needs float64) runs outside the error mode."""
    original = _kernels.tensor_grams

    def tensor_grams(grads):
        torch.cuda.set_sync_debug_mode("default")
        try:
            return original(grads)
        finally:
            torch.cuda.set_sync_debug_mode("error")

    monkeypatch.setattr("framework.integrators.base.tensor_grams", tensor_grams)


@pytest.mark.parametrize("name", NAMES)
def test_integration_of_two_losses_does_not_synchronise(name, allowed_gram_check):
    integrator = get_integrator(name)
    grads = _grads(2)
    expected = get_integrator(name).integrate([[g.cpu() for g in row] for row in grads]).update
    with sync_errors():
        update, decision = integrator.integrate(grads, inplace=True)
    for got, want in zip(update, expected, strict=True):
        torch.testing.assert_close(got.cpu(), want, rtol=1e-5, atol=1e-6)
    assert decision.gram.device.type == "cpu" and decision.gram.dtype == torch.float64
    assert decision.weights.device.type == "cpu" and decision.weights.dtype == torch.float64
