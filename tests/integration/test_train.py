"""End-to-end training through ``framework.main.train``, tracked in a temporary MLflow store."""

from __future__ import annotations

import mlflow
import pytest
from mlflow.tracking import MlflowClient

from framework.main import train
from framework.training.trainer import Trainer

pytestmark = pytest.mark.slow  # whole smoke trainings

SMOKE = ("experiment=smoke", "trainer.epochs=3")


def runs(uri: str):
    client = MlflowClient(uri)
    return client, client.search_runs([e.experiment_id for e in client.search_experiments()])


def test_run_records_accuracies_statistics_params_and_config(compose_cfg, tracking_uri):
    results = train(compose_cfg(*SMOKE, "integrator=mmpareto", "seed=3"))
    client, found = runs(tracking_uri)
    (run,) = found
    assert run.info.status == "FINISHED"
    assert run.info.run_name == "mmpareto-seed3"
    assert run.data.params["integrator.gamma"] == "1.5" and run.data.params["seed"] == "3"
    metrics = run.data.metrics
    for head in ("multimodal", "strong", "weak"):
        for key in (f"val/acc/{head}", f"test/acc/{head}", f"best/test/acc/{head}", f"last/test/acc/{head}"):
            assert 0.0 <= metrics[key] <= 1.0
        assert metrics[f"train/loss/{head}"] > 0
    assert results["best/test/acc/multimodal"] == metrics["best/test/acc/multimodal"]
    assert metrics["best/test/acc/strong"] > 0.5, "the strong modality's signal is easy to learn"
    history = client.get_metric_history(run.info.run_id, "grad/encoder.weak/cos/multimodal.weak")
    assert len(history) == 3 * 8  # 512 samples / 64 per batch, every step
    assert all(-1.0 <= m.value <= 1.0 for m in history)
    for key in ("norm/multimodal", "norm/weak", "weight/multimodal", "norm_ratio/weak", "update_to_sum", "conflict"):
        assert f"grad/encoder.weak/{key}" in metrics
    for key in ("conflict_rate", "norm_mean/weak", "norm_std/multimodal", "cov_trace/multimodal", "cov_trace/weak"):
        assert f"grad/encoder.weak/{key}" in metrics
    traces = client.get_metric_history(run.info.run_id, "grad/encoder.strong/cov_trace/strong")
    assert [m.step for m in traces] == [0]  # trainer.statistics.noise_every=200 > 24 steps
    assert "config.yaml" in [a.path for a in client.list_artifacts(run.info.run_id)]


def test_same_seed_gives_identical_metrics(compose_cfg):
    first = train(compose_cfg(*SMOKE, "integrator=pcgrad", "seed=1"))
    second = train(compose_cfg(*SMOKE, "integrator=pcgrad", "seed=1"))
    other = train(compose_cfg(*SMOKE, "integrator=pcgrad", "seed=2"))
    assert first == second
    assert first != other


def test_schedule_steps_the_learning_rate(compose_cfg, tracking_uri):
    train(compose_cfg(*SMOKE, "scheduler=step", "scheduler.step_size=1", "scheduler.gamma=0.5"))
    client, (run,) = runs(tracking_uri)
    lrs = [m.value for m in sorted(client.get_metric_history(run.info.run_id, "lr"), key=lambda m: m.step)]
    assert lrs == pytest.approx([0.01, 0.005, 0.0025])


def test_crash_marks_run_failed_and_keeps_what_was_logged(compose_cfg, tracking_uri, monkeypatch):
    original = Trainer.train_epoch

    def crash_in_second_epoch(self):
        if self.state.epoch == 1:
            raise RuntimeError("boom")
        return original(self)

    monkeypatch.setattr(Trainer, "train_epoch", crash_in_second_epoch)
    with pytest.raises(RuntimeError, match="boom"):
        train(compose_cfg(*SMOKE))
    client, (run,) = runs(tracking_uri)
    assert run.info.status == "FAILED"
    assert run.data.tags["error"] == "RuntimeError: boom"
    assert "val/acc/multimodal" in run.data.metrics
    assert len(client.get_metric_history(run.info.run_id, "grad/encoder.strong/norm/multimodal")) == 8


def test_one_joint_reports_probe_accuracy_and_no_integration(compose_cfg, tracking_uri):
    train(compose_cfg(*SMOKE, "loss=one_joint"))
    _, (run,) = runs(tracking_uri)
    assert run.info.run_name == "one_joint-seed0"
    assert not any(k.startswith("grad/") and "/cos/" in k for k in run.data.metrics)
    assert run.data.metrics["best/test/acc/strong"] > 0.4


def test_invalid_value_is_refused_before_any_run_opens(compose_cfg, tracking_uri):
    with pytest.raises(ValueError, match=r"integrator\.gamma=-1: must be > 0"):
        train(compose_cfg(*SMOKE, "integrator.gamma=-1"))
    _, found = runs(tracking_uri)
    assert found == []  # validation runs before the MLflow run is opened
    mlflow.set_tracking_uri(tracking_uri)
