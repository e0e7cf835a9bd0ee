"""``python -m framework.bench --quick``: every variant runs, the JSON has the documented shape."""

from __future__ import annotations

import json
import math
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from framework.bench.cases import MODELS, build_model, make_batch, model_case
from framework.bench.variants import VARIANTS, make_runner

pytestmark = pytest.mark.slow  # runs the benchmark CLI in subprocesses (~1.5 min)

ROOT = Path(__file__).resolve().parents[2]


def test_quick_benchmark_writes_the_documented_json(tmp_path):
    out = tmp_path / "bench.json"
    result = subprocess.run(
        [sys.executable, "-m", "framework.bench", "--quick", "--json", str(out)],
        cwd=ROOT, capture_output=True, text=True, timeout=600,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr[-3000:]
    data = json.loads(out.read_text())
    assert set(data) == set(MODELS)
    for model, by_variant in data.items():
        case = model_case(model, quick=True)
        assert set(by_variant) == set(VARIANTS) - set(case.unsupported), model
        for variant, figures in by_variant.items():
            assert set(figures) == {"step_ms", "peak_mb", "ratio_to_sum"}, (model, variant)
            assert all(isinstance(v, float) and math.isfinite(v) and v > 0 for v in figures.values()), figures
        assert by_variant["sum"]["ratio_to_sum"] == 1.0
    for variant in VARIANTS:
        assert variant in result.stdout  # the table
    assert "no mmpareto_reference_style (the reference code" in result.stderr  # said, not silently absent
    versus = result.stdout.split("step time relative to resnet18_av:")[1]
    row = next(line for line in versus.splitlines() if line.startswith("| mmpareto "))
    cells = [c.strip() for c in row.strip("|").split("|")]
    transformer_ms, resnet_ms, ratio = (float(c) for c in cells[1:])
    assert transformer_ms == pytest.approx(data["transformer_xmodal"]["mmpareto"]["step_ms"], abs=0.05)
    assert resnet_ms == pytest.approx(data["resnet18_av"]["mmpareto"]["step_ms"], abs=0.05)
    expected = data["transformer_xmodal"]["mmpareto"]["step_ms"] / data["resnet18_av"]["mmpareto"]["step_ms"]
    assert ratio == pytest.approx(expected, abs=6e-4)


def test_unknown_variant_is_a_clear_error(capsys):
    from framework.bench.cli import main

    with pytest.raises(SystemExit) as exit_:
        main(["--quick", "--variants", "nope"])
    stderr = capsys.readouterr().err
    assert exit_.value.code == 2
    assert "unknown variants ['nope']" in stderr and "mmpareto_reference_style" in stderr


def test_unknown_model_is_a_clear_error(capsys):
    from framework.bench.cli import main

    with pytest.raises(SystemExit) as exit_:
        main(["--quick", "--models", "resnet18_av,vit"])
    stderr = capsys.readouterr().err
    assert exit_.value.code == 2 and "Traceback" not in stderr
    assert "unknown models ['vit']" in stderr and "transformer_xmodal" in stderr


@pytest.mark.parametrize(
    "model", [m for m in MODELS if "mmpareto_reference_style" not in model_case(m, True).unsupported]
)
def test_reference_style_step_equals_the_framework_mmpareto_step(model):
    """The comparison is fair: the reference code's way computes the same update."""
    case = model_case(model, quick=True)
    template = build_model(case).double()
    updates = {}
    for variant in ("mmpareto", "mmpareto_reference_style"):
        runner = make_runner(variant, case, template, torch.device("cpu"), Path("."))
        runner.inputs.update({m: t.double() for m, t in runner.inputs.items()})
        model_ = runner.model.eval()  # no BatchNorm statistics updates: both see the same function
        before = [p.detach().clone() for p in model_.parameters()]
        runner.step()
        updates[variant] = [p.detach() - b for p, b in zip(model_.parameters(), before, strict=False)]
    for a, b in zip(updates["mmpareto"], updates["mmpareto_reference_style"], strict=False):
        torch.testing.assert_close(a, b, rtol=1e-9, atol=1e-12)


def test_torchjd_variant_trains_every_parameter():
    """torchjd variants train the same model: after one step every parameter moved."""
    case = model_case("cnn_cgmnist", quick=True)
    runner = make_runner("torchjd_upgrad", case, build_model(case), torch.device("cpu"), Path("."))
    before = [p.detach().clone() for p in runner.model.parameters()]
    runner.step()
    moved = [not torch.equal(p, b) for p, b in zip(runner.model.parameters(), before, strict=False)]
    assert all(moved)


def test_transformer_case_has_three_loss_groups_and_refuses_the_reference_style():
    """The transformer benchmark exercises the k > 2 rule; the reference code's step cannot run it."""
    from framework.integrators import get_integrator
    from framework.losses import MultitaskLoss
    from framework.training.gradients import GradientEngine

    case = model_case("transformer_xmodal", quick=True)
    model = build_model(case)
    inputs, labels = make_batch(case, case.batch_size)
    engine = GradientEngine(model, get_integrator("mmpareto"))
    features = model.encode(inputs)
    engine.backward(features, MultitaskLoss()(model.classify(features), labels))
    reach = [len(losses) for losses in engine.plan.reach.values()]
    assert max(reach) == 3 and min(reach) == 2
    with pytest.raises(ValueError, match="does not apply to transformer_xmodal: the reference code"):
        make_runner("mmpareto_reference_style", case, build_model(case), torch.device("cpu"), Path("."))


def test_benchmarked_transformer_is_the_configured_one():
    """The full-size transformer case is built with conf/model/transformer_xmodal.yaml's settings."""
    from omegaconf import OmegaConf

    conf = OmegaConf.load(ROOT / "conf" / "model" / "transformer_xmodal.yaml")
    case = model_case("transformer_xmodal", quick=False)
    for key in ("dim", "depth", "heads", "mlp_ratio", "patch_size"):
        assert case.build.keywords[key] == conf[key], key
    assert case.spec == model_case("resnet18_av", quick=False).spec  # the same batch as resnet18_av


def test_full_run_budgets_fit_five_minutes():
    """The rounds' time budgets leave about 80 s for warmup, memory steps and the probe in 270 s."""
    budgets = [model_case(m, quick=False).budget_s for m in MODELS]
    assert all(math.isfinite(b) for b in budgets) and sum(budgets) <= 190


def test_help_describes_the_benchmark():
    result = subprocess.run(
        [sys.executable, "-m", "framework.bench", "--help"], cwd=ROOT, capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    assert result.returncode == 0 and "Step-time benchmark" in result.stdout and "--quick" in result.stdout
    assert all(flag in result.stdout for flag in ("--device", "--precision", "--batch-size", "bf16", "cuda:N"))


# --device / --precision / --batch-size, and scripts/gpu_check.sh --dry-run

NO_CUDA = pytest.mark.skipif(torch.cuda.is_available(), reason="checks the behaviour without CUDA")


def test_device_and_precision_flags_parse():
    from framework.bench.cli import main
    from framework.bench.precision import PRECISIONS, check_precision, resolve_device

    assert PRECISIONS == ("32", "bf16", "16")
    assert resolve_device("cpu") == torch.device("cpu")
    assert resolve_device("auto").type == ("cuda" if torch.cuda.is_available() else "cpu")
    for precision in PRECISIONS:  # torch 2.13's CPU autocast runs bfloat16 and float16
        check_precision(precision, torch.device("cpu"))
    with pytest.raises(SystemExit) as exit_:
        main(["--quick", "--precision", "8"])
    assert exit_.value.code == 2


@NO_CUDA
def test_cuda_device_without_cuda_fails_in_one_line(capsys):
    from framework.bench.cli import main

    with pytest.raises(SystemExit) as exit_:
        main(["--quick", "--device", "cuda"])
    message = str(exit_.value.code)  # sys.exit(message): printed to stderr, exit status 1
    assert capsys.readouterr().out == "" and isinstance(exit_.value.code, str)
    assert len(message.splitlines()) == 1 and "--device cuda: CUDA is not available" in message, message


def test_bf16_runs_on_cpu_and_says_so(tmp_path):
    out = tmp_path / "bench.json"
    result = subprocess.run(
        [sys.executable, "-m", "framework.bench", "--quick", "--models", "cnn_cgmnist", "--variants",
         "sum,mmpareto,torchjd_upgrad", "--precision", "bf16", "--batch-size", "6", "--json", str(out)],
        cwd=ROOT, capture_output=True, text=True, timeout=300,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr[-3000:]
    assert "device: cpu, precision: bf16" in result.stdout
    assert "batch 6, cpu" in result.stderr and "precision bf16" in result.stderr
    rows = [line for line in result.stdout.splitlines() if line.startswith("| cnn_cgmnist ")]
    assert len(rows) == 3 and all(line.rstrip(" |").endswith("bf16") and "| cpu " in line for line in rows)
    assert set(json.loads(out.read_text())["cnn_cgmnist"]) == {"sum", "mmpareto", "torchjd_upgrad"}
    assert "mmpareto" in result.stdout.split("torchjd's own step")[0]


@pytest.mark.parametrize("variant", ["mmpareto", "torchjd_upgrad"])
def test_fp16_step_on_cpu_uses_the_grad_scaler(variant):
    case = model_case("cnn_cgmnist", quick=True)
    runner = make_runner(variant, case, build_model(case), torch.device("cpu"), Path("."), precision="16")
    before = [p.detach().clone() for p in runner.model.parameters()]
    runner.step()
    assert all(torch.isfinite(p).all() for p in runner.model.parameters())
    assert any(not torch.equal(p, b) for p, b in zip(runner.model.parameters(), before, strict=True))
    assert all(p.dtype == torch.float32 for p in runner.model.parameters())


def test_fp16_skips_the_reference_style_step():
    from framework.bench.variants import precision_unsupported

    assert precision_unsupported("32") == {}
    assert "mmpareto_reference_style" in precision_unsupported("16")
    assert "mmpareto_reference_style" not in precision_unsupported("bf16")


@NO_CUDA
def test_gpu_check_dry_run_without_a_gpu(tmp_path):
    if not (ROOT / ".venv" / "bin" / "python").is_file():
        pytest.skip("needs the venv (bash scripts/setup.sh)")
    env = {**os.environ, "OUT": str(tmp_path), "GPU_CHECK_NO_SETUP": "1"}
    result = subprocess.run(
        ["bash", str(ROOT / "scripts" / "gpu_check.sh"), "--dry-run"],
        cwd=ROOT, env=env, capture_output=True, text=True, timeout=240,
    )  # fmt: skip
    assert result.returncode == 0, result.stdout[-4000:]
    assert "gpu_check: no GPU (" in result.stdout and "dry run OK" in result.stdout
    assert "--device cuda --precision bf16" in result.stdout  # what it would run
    assert "skipped" in result.stdout and "device: cpu, precision: bf16" in result.stdout
    assert "gpu_check: no GPU (" in (tmp_path / "gpu_check.log").read_text()


@NO_CUDA
def test_gpu_check_without_a_gpu_exits_2_in_one_line(tmp_path):
    if not (ROOT / ".venv" / "bin" / "python").is_file():
        pytest.skip("needs the venv (bash scripts/setup.sh)")
    env = {**os.environ, "OUT": str(tmp_path), "GPU_CHECK_NO_SETUP": "1"}
    result = subprocess.run(
        ["bash", str(ROOT / "scripts" / "gpu_check.sh")], cwd=ROOT, env=env, capture_output=True, text=True, timeout=120
    )
    assert result.returncode == 2
    assert result.stdout.strip().splitlines()[-1].startswith("gpu_check: no GPU (")
