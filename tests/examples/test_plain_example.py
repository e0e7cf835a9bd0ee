"""``examples/plain_pytorch.py``: its model (no ``parameter_groups()``) trained with
``framework.backward(..., "mmpareto")``; ``.grad`` against independent per-loss ``autograd.grad`` plus
the integrator's matrix API, step by step, 2 and 3 modalities, a step with a modality missing."""

from __future__ import annotations

import importlib.util
import subprocess
import sys
from pathlib import Path

import pytest
import torch

import framework
from framework.integrators import get_integrator
from tests.unit.test_integrated_backward import expected_grads

pytestmark = pytest.mark.slow  # trains the plain example

EXAMPLE = Path(__file__).resolve().parents[2] / "examples" / "plain_pytorch.py"


def load_example():
    spec = importlib.util.spec_from_file_location("plain_pytorch_example", EXAMPLE)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.mark.parametrize("modalities", [("audio", "visual"), ("audio", "visual", "text")])
def test_example_grads_equal_autograd_plus_the_integrator(modalities):
    example = load_example()
    torch.manual_seed(0)
    model = example.Net(modalities)
    optimizer = torch.optim.SGD(model.parameters(), lr=0.05)
    reference = get_integrator("mmpareto")
    for step, present in enumerate([modalities, modalities[1:], modalities, modalities[:-1]]):
        g = torch.Generator().manual_seed(step)
        y = torch.randint(0, 4, (16,), generator=g)
        inputs = {m: torch.randn(16, example.SIZES[m], generator=g) for m in present}
        expected = expected_grads(model, inputs, y, reference)
        optimizer.zero_grad(set_to_none=True)
        features, losses = model(inputs, y)
        decisions = framework.backward(losses, dict(model.encoders.items()), "mmpareto", features)
        assert set(decisions) == set(present)
        grads = {id(p): p.grad for p in model.parameters() if p.grad is not None}
        assert set(grads) == set(expected)
        for key, grad in grads.items():
            torch.testing.assert_close(grad, expected[key], rtol=1e-5, atol=1e-7)
        optimizer.step()


def test_example_runs_and_learns():
    out = subprocess.run([sys.executable, str(EXAMPLE)], capture_output=True, text=True, timeout=300, check=True)
    accuracy = float(out.stdout.strip().splitlines()[-1].split(":")[-1])
    assert accuracy > 0.8, out.stdout
    assert "cos(multimodal, unimodal)" in out.stdout
