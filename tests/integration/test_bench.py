"""``python -m framework.bench --quick``: every variant runs, the JSON has the documented shape."""

from __future__ import annotations

import json
import math
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from framework import bench

ROOT = Path(__file__).resolve().parents[2]


def test_quick_benchmark_writes_the_documented_json(tmp_path):
    out = tmp_path / "bench.json"
    result = subprocess.run(
        [sys.executable, "-m", "framework.bench", "--quick", "--json", str(out)],
        cwd=ROOT, capture_output=True, text=True, timeout=600,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr[-3000:]
    data = json.loads(out.read_text())
    assert set(data) == set(bench.MODELS)
    for model, by_variant in data.items():
        assert set(by_variant) == set(bench.VARIANTS), model
        for variant, figures in by_variant.items():
            assert set(figures) == {"step_ms", "peak_mb", "ratio_to_sum"}, (model, variant)
            assert all(isinstance(v, float) and math.isfinite(v) and v > 0 for v in figures.values()), figures
        assert by_variant["sum"]["ratio_to_sum"] == 1.0
    for variant in bench.VARIANTS:
        assert variant in result.stdout  # the table


def test_unknown_variant_is_a_clear_error():
    result = subprocess.run(
        [sys.executable, "-m", "framework.bench", "--quick", "--variants", "nope"],
        cwd=ROOT, capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    assert result.returncode != 0
    assert "unknown variants ['nope']" in result.stderr and "mmpareto_reference_style" in result.stderr


@pytest.mark.parametrize("model", bench.MODELS)
def test_reference_style_step_equals_the_framework_mmpareto_step(model):
    """The comparison is fair: the reference code's way computes the same update."""
    case = bench.model_case(model, quick=True)
    template = bench.build_model(case).double()
    updates = {}
    for variant in ("mmpareto", "mmpareto_reference_style"):
        runner = bench.make_runner(variant, case, template, torch.device("cpu"), Path("."))
        runner.inputs.update({m: t.double() for m, t in runner.inputs.items()})
        model_ = runner.model.eval()  # no BatchNorm statistics updates: both see the same function
        before = [p.detach().clone() for p in model_.parameters()]
        runner.step()
        updates[variant] = [p.detach() - b for p, b in zip(model_.parameters(), before)]
    for a, b in zip(updates["mmpareto"], updates["mmpareto_reference_style"]):
        torch.testing.assert_close(a, b, rtol=1e-9, atol=1e-12)


def test_torchjd_variant_trains_every_parameter():
    """torchjd variants train the same model: after one step every parameter moved."""
    case = bench.model_case("cnn_cgmnist", quick=True)
    runner = bench.make_runner("torchjd_upgrad", case, bench.build_model(case), torch.device("cpu"), Path("."))
    before = [p.detach().clone() for p in runner.model.parameters()]
    runner.step()
    moved = [not torch.equal(p, b) for p, b in zip(runner.model.parameters(), before)]
    assert all(moved)
