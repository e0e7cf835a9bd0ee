"""Every experiment preset runs end to end in a fast mode, so that none rots.

Each preset trains one step of one epoch through ``framework.main.train`` on a tiny fixture that the
test writes in the dataset's real on-disk layout. Only sizes are shrunk (frame size, spectrogram
size, encoder width, probe batch); the code path is the one users run.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from pathlib import Path

import pytest
import torch
from tests.cli import all_runs

from framework.integrators import INTEGRATORS, get_integrator
from framework.main import build_trainer, train
from framework.training.gradients import GradientEngine

pytestmark = pytest.mark.slow  # trains every experiment preset (~3 min)

CONF = Path(__file__).resolve().parents[2] / "conf"
FAST = ("trainer.epochs=1", "trainer.max_steps_per_epoch=1", "trainer.num_workers=0", "trainer.statistics.probe_size=4")
SMALL_RESNET = ("model.encoder.width=8",)
SMALL_TRANSFORMER = ("model.dim=32", "model.depth=2", "model.heads=2")

# preset -> the dataset config it reads (its fixture: tests/fixtures/writers.py), and smaller model sizes
PRESETS: dict[str, tuple[str, tuple[str, ...]]] = {
    "avmnist_cnn": ("avmnist", ()),
    "avmnist_transformer": ("avmnist", SMALL_TRANSFORMER),
    "cgmnist_cnn": ("cgmnist_file", ()),
    "cremad_resnet18": ("cremad", SMALL_RESNET),
    "cremad_transformer": ("cremad", SMALL_TRANSFORMER),
    "kinetics_sounds_resnet18": ("kinetics_sounds", SMALL_RESNET),
    "modelnet40_resnet18": ("modelnet40_views", SMALL_RESNET),
}
# multi-task presets (one input, one head per task; tasks left and right), the same way
MULTITASK_PRESETS: dict[str, tuple[str, tuple[str, ...]]] = {
    "multi_fashion_lenet": ("multi_fashion", ()),
    "multi_fashion_mnist_lenet": ("multi_fashion_mnist", ()),
    "multi_mnist_lenet": ("multi_mnist", ()),
    "multi_mnist_resnet18": ("multi_mnist", ("model.trunk.width=8",)),
}


def test_every_preset_has_a_fast_mode_run():
    presets = {p.stem for p in (CONF / "experiment").glob("*.yaml")} - {"smoke"}
    assert presets == set(PRESETS) | set(MULTITASK_PRESETS), "add the new preset (and its fixture) to PRESETS"


def _finished_run(uri: str):
    (run,) = all_runs(uri)
    return run


@pytest.mark.parametrize("preset", sorted(PRESETS))
def test_preset_runs_one_step_on_its_fixture(preset, compose_cfg, tracking_uri, tmp_path, writers):
    dataset, sizes = PRESETS[preset]
    cfg = compose_cfg(f"experiment={preset}", *FAST, *sizes, *writers.dataset(dataset, tmp_path / "data"))
    assert cfg.optimizer.lr == 2.0e-3 and cfg.optimizer.momentum == 0.9 and cfg.optimizer.weight_decay == 1.0e-4
    assert cfg.trainer.batch_size == 64
    results = train(cfg)
    run = _finished_run(tracking_uri)
    assert run.info.status == "FINISHED"
    heads = [k.split("/")[-1] for k in results if k.startswith("best/test/acc/")]
    assert "multimodal" in heads and len(heads) == 3
    assert all(0.0 <= results[f"best/test/acc/{h}"] <= 1.0 for h in heads)
    assert any(k.startswith("grad/") and "/cos/" in k for k in run.data.metrics)


@pytest.mark.parametrize("preset", sorted(MULTITASK_PRESETS))
def test_multitask_preset_runs_one_step_on_its_fixture(preset, compose_cfg, tracking_uri, tmp_path, writers):
    dataset, sizes = MULTITASK_PRESETS[preset]
    cfg = compose_cfg(f"experiment={preset}", *FAST, *sizes, *writers.dataset(dataset, tmp_path / "data"))
    assert cfg.objective == "best/val/acc/mean" and cfg.trainer.batch_size == 256
    results = train(cfg)
    run = _finished_run(tracking_uri)
    assert run.info.status == "FINISHED"
    heads = [k.split("/")[-1] for k in results if k.startswith("best/test/acc/")]
    assert sorted(heads) == ["left", "mean", "right"]
    assert all(0.0 <= results[f"best/test/acc/{h}"] <= 1.0 for h in heads) and "best/val/acc/mean" in results
    assert {"test/acc/left", "test/acc/right", "train/loss/left", "train/loss/right"} <= run.data.metrics.keys()
    assert "grad/trunk/cos/left.right" in run.data.metrics  # the trunk is one group, reached by both tasks


def test_multitask_runs_report_accuracy_per_task_and_the_mean(compose_cfg, tracking_uri, tmp_path, writers):
    """Two integrators on Multi-MNIST (a third task, stage groups), then analysis.report: a column per
    task and one for the mean, no multimodal column, no run left out."""
    from analysis.report import main as report

    data = writers.dataset("multi_mnist", tmp_path / "data")
    for integrator in ("sum", "mmpareto"):
        cfg = compose_cfg("experiment=multi_mnist_lenet", f"integrator={integrator}", "dataset.third_task=same",
                          "model.group_by=stage", f"checkpoint.dir={tmp_path}/ckpt/{integrator}",
                          *FAST, *data)  # fmt: skip
        results = train(cfg)
        assert {"best/test/acc/same", "best/test/acc/mean"} <= results.keys()
    metrics = all_runs(tracking_uri)[0].data.metrics
    assert {"grad/trunk.conv1/cos/left.right", "grad/trunk.fc/cos/right.same"} <= metrics.keys()
    out = tmp_path / "report"
    argv = ["--experiment", "multi_mnist_lenet", "--out", str(out), "--tracking-uri", tracking_uri, "--no-summary-run"]
    assert report(argv) == 0
    table = (out / "accuracy.md").read_text()
    assert all(f"{h} (best val)" in table for h in ("left", "right", "same", "Mean")) and "Multimodal" not in table
    assert "multi_mnist" in table and "| sum |" in table and "| mmpareto |" in table
    assert "- left out: 0 " in (out / "report.md").read_text()
    conflicts = (out / "conflicts.md").read_text()  # no loss is the multimodal one: any pair, per group
    assert "cos(g_a, g_b) < 0" in conflicts and "per parameter group" in conflicts and "g_mm" not in conflicts


def _assert_three_losses_on_shared_groups(metrics: Mapping[str, object]) -> None:
    # the first layer of each modality is reached by the multimodal loss and both unimodal losses
    for group in ("embed.audio", "layer0.audio", "layer0.image"):
        assert {f"grad/{group}/weight/{n}" for n in ("multimodal", "audio", "image")} <= metrics.keys()
        assert f"grad/{group}/cos/audio.image" in metrics
    # the last layer only by the multimodal loss and its own modality's loss
    assert "grad/layer1.audio/weight/audio" in metrics and "grad/layer1.audio/weight/image" not in metrics


class _Recorder:
    """Takes the trainer's metrics in place of an MLflow run."""

    def __init__(self) -> None:
        self.metrics: dict[str, float] = {}

    def log_metrics(self, metrics: Mapping[str, float], step: int) -> None:
        self.metrics.update(metrics)


def test_transformer_steps_with_every_integrator_on_three_losses_on_shared_groups(compose_cfg, tmp_path, writers):
    """Every registered integrator, as its config builds it, takes a step of the real trainer on
    the cross-modal transformer (groups reached by three losses, and by two); one trainer, its
    engine rebuilt per integrator. Whole runs into MLflow follow for the integrators whose paths
    differ (summed, native, stateful, torchjd)."""
    overrides = writers.dataset("avmnist", tmp_path / "data")
    base = compose_cfg("experiment=avmnist_transformer", *FAST, *SMALL_TRANSFORMER, *overrides)
    trainer = build_trainer(base, None, None)
    inputs, labels = next(iter(trainer._source(trainer.splits.train, train=True)))
    for name in sorted(INTEGRATORS):
        cfg = compose_cfg("experiment=avmnist_transformer", f"integrator={name}", *FAST, *SMALL_TRANSFORMER, *overrides)
        integrator = get_integrator(**cfg.integrator)
        trainer.integrator, trainer.engine = integrator, GradientEngine(trainer.model, integrator)
        trainer.tracker = recorder = _Recorder()  # type: ignore[assignment]
        before = [p.detach().clone() for p in trainer.model.parameters()]
        losses = trainer.train_step(inputs, labels)
        assert all(math.isfinite(float(v)) for v in losses.values()), name
        assert any(not torch.equal(p, b) for p, b in zip(trainer.model.parameters(), before, strict=True)), name
        try:
            _assert_three_losses_on_shared_groups(recorder.metrics)
        except AssertionError as error:
            raise AssertionError(f"integrator={name}: {error}") from error


@pytest.mark.parametrize("integrator", ["sum", "mmpareto", "mgda", "pcgrad", "gradvac", "nash_mtl"])
def test_transformer_runs_with_three_losses_on_shared_groups(integrator, compose_cfg, tracking_uri, tmp_path, writers):
    overrides = writers.dataset("avmnist", tmp_path / "data")
    train(
        compose_cfg("experiment=avmnist_transformer", f"integrator={integrator}", *FAST, *SMALL_TRANSFORMER, *overrides)
    )
    _assert_three_losses_on_shared_groups(_finished_run(tracking_uri).data.metrics)


def test_disk_preset_loads_through_worker_processes(compose_cfg, tracking_uri, tmp_path, writers):
    overrides = writers.dataset("cremad", tmp_path / "data")
    fast = [o for o in FAST if not o.startswith("trainer.num_workers")]
    results = train(
        compose_cfg("experiment=cremad_resnet18", *fast, "trainer.num_workers=2", *SMALL_RESNET, *overrides)
    )
    assert _finished_run(tracking_uri).info.status == "FINISHED"
    assert 0.0 <= results["best/test/acc/multimodal"] <= 1.0


def test_resnet18_av_with_another_fusion(compose_cfg, tracking_uri, tmp_path, writers):
    overrides = writers.dataset("cremad", tmp_path / "data")
    cfg = compose_cfg("experiment=cremad_resnet18", "model/fusion=film", *FAST, *SMALL_RESNET, *overrides)
    assert cfg.model.fusion._target_ == "framework.models.fusion.FiLMFusion"
    train(cfg)
    assert _finished_run(tracking_uri).info.status == "FINISHED"
