"""Gradient-conflict statistics: names, values, epoch summaries, and a run with known conflict."""

from __future__ import annotations

import math
from functools import partial

import pytest
import torch
from mlflow.tracking import MlflowClient

from framework.data.base import DatasetSpec, Splits, TensorMultimodalDataset
from framework.integrators import INTEGRATORS, get_integrator
from framework.losses import MultitaskLoss
from framework.models.encoders import MLPEncoder
from framework.models.fusion import ConcatFusion
from framework.models.late_fusion import LateFusionModel
from framework.tracking import RunTracker
from framework.training.gradients import GradientEngine
from framework.training.plan import GroupDecision
from framework.training.statistics import (
    EpochStatistics,
    GradientStatistics,
    StatisticsSettings,
    probe_batch,
    step_metrics,
)
from framework.training.trainer import Trainer, TrainerSettings


def decide(name, rows, **params):
    return get_integrator(name, **params)(torch.tensor(rows, dtype=torch.float64)).decision


@pytest.mark.parametrize("name", sorted(INTEGRATORS))
def test_step_metrics_names_and_closed_form_values(name):
    g_mm, g_u = [3.0, 0.0], [-1.0, 2.0]
    decision = decide(name, [g_mm, g_u])
    metrics = step_metrics([GroupDecision("encoder.a", ("multimodal", "a"), decision)])
    p = "grad/encoder.a"
    assert set(metrics) == {
        f"{p}/cos/multimodal.a", f"{p}/conflict", f"{p}/norm/multimodal", f"{p}/norm/a",
        f"{p}/norm_ratio/a", f"{p}/update_to_sum", f"{p}/weight/multimodal", f"{p}/weight/a",
    }  # fmt: skip
    assert metrics[f"{p}/cos/multimodal.a"] == pytest.approx(-3.0 / (3.0 * math.sqrt(5.0)))
    assert metrics[f"{p}/conflict"] == 1.0
    assert metrics[f"{p}/norm/multimodal"] == pytest.approx(3.0)
    assert metrics[f"{p}/norm/a"] == pytest.approx(math.sqrt(5.0))
    assert metrics[f"{p}/norm_ratio/a"] == pytest.approx(3.0 / math.sqrt(5.0))
    update = get_integrator(name)(torch.tensor([g_mm, g_u], dtype=torch.float64)).update
    assert metrics[f"{p}/update_to_sum"] == pytest.approx(float(update.norm()) / math.sqrt(2.0**2 + 2.0**2))
    weights = decision.weights.tolist()
    assert [metrics[f"{p}/weight/multimodal"], metrics[f"{p}/weight/a"]] == pytest.approx(weights)
    if name in ("mgda", "mmpareto"):  # min-norm weights of two vectors: (|b|^2 - a.b) / |a - b|^2
        # (mmpareto logs the weights of its direction h = k * sum_i a_i g_i: k times the simplex ones)
        assert weights[0] / sum(weights) == pytest.approx((5.0 + 3.0) / (16.0 + 4.0))


def test_three_losses_log_every_pair_and_conflict_if_any_pair_conflicts():
    decision = decide("mmpareto", [[1.0, 0.0, 0.0], [1.0, 1.0, 0.0], [0.5, -2.0, 0.1]])
    metrics = step_metrics([GroupDecision("trunk", ("multimodal", "a", "b"), decision)])
    assert metrics["grad/trunk/cos/multimodal.a"] > 0 and metrics["grad/trunk/cos/multimodal.b"] > 0
    assert metrics["grad/trunk/cos/a.b"] < 0
    assert metrics["grad/trunk/conflict"] == 1.0
    assert {"grad/trunk/norm_ratio/a", "grad/trunk/norm_ratio/b"} <= set(metrics)


def test_zero_gradient_gives_nan_ratio_not_an_error():
    decision = decide("sum", [[1.0, 0.0], [0.0, 0.0]])
    metrics = step_metrics([GroupDecision("g", ("multimodal", "a"), decision)])
    assert math.isnan(metrics["grad/g/norm_ratio/a"])
    assert metrics["grad/g/cos/multimodal.a"] == 0.0 and metrics["grad/g/conflict"] == 0.0


def test_epoch_summary_conflict_rate_and_norm_mean_and_spread():
    stats = EpochStatistics()
    rows = [([3.0, 0.0], [-1.0, 0.0]), ([1.0, 0.0], [2.0, 0.0]), ([0.0, 2.0], [0.0, -4.0]), ([1.0, 1.0], [1.0, 0.0])]
    for a, b in rows:
        stats.observe([GroupDecision("g", ("multimodal", "a"), decide("pcgrad", [a, b]))])
    summary = stats.summary()
    assert summary["grad/g/conflict_rate"] == pytest.approx(0.5)
    norms_mm = torch.tensor([3.0, 1.0, 2.0, math.sqrt(2.0)], dtype=torch.float64)
    norms_a = torch.tensor([1.0, 2.0, 4.0, 1.0], dtype=torch.float64)
    assert summary["grad/g/norm_mean/multimodal"] == pytest.approx(float(norms_mm.mean()))
    assert summary["grad/g/norm_std/multimodal"] == pytest.approx(float(norms_mm.std(unbiased=False)))
    assert summary["grad/g/norm_mean/a"] == pytest.approx(float(norms_a.mean()))
    assert summary["grad/g/norm_std/a"] == pytest.approx(float(norms_a.std(unbiased=False)))
    stats.reset()
    assert stats.summary() == {}


def test_the_schema_nodes_are_the_settings_classes(compose_cfg):
    from typing import get_type_hints

    from omegaconf import OmegaConf

    from framework.config.schema import TrainSchema

    assert get_type_hints(TrainSchema)["trainer"] is TrainerSettings
    assert get_type_hints(TrainerSettings)["statistics"] is StatisticsSettings
    assert OmegaConf.to_object(OmegaConf.structured(TrainerSettings)) == TrainerSettings()
    cfg = compose_cfg()  # conf/train.yaml, merged into the schema: same class, same defaults
    assert OmegaConf.get_type(cfg, "trainer") is TrainerSettings
    assert OmegaConf.to_object(cfg.trainer) == TrainerSettings() == TrainerSettings(**cfg.trainer)
    assert TrainerSettings(precision=16).precision == "16"  # YAML's precision: 16 is an int


def test_settings_ranges_are_checked_by_validation():
    from omegaconf import OmegaConf

    from framework.config.validation import ConfigError, check_trainer

    for key, value in (("noise_every", -1), ("probe_chunk", 0)):
        trainer = OmegaConf.structured(TrainerSettings)
        trainer.statistics[key] = value
        with pytest.raises(ConfigError, match=rf"trainer\.statistics\.{key}"):
            check_trainer(trainer)
    assert TrainerSettings(statistics={"log_every": 3}).statistics == StatisticsSettings(log_every=3)


def test_probe_batch_is_fixed_and_independent_of_the_global_rng():
    spec = DatasetSpec({"x": (2,)}, 2)
    data = TensorMultimodalDataset({"x": torch.arange(40.0).reshape(20, 2)}, torch.arange(20) % 2, spec)
    torch.manual_seed(1)
    first = probe_batch(data, 6, seed=3)
    torch.manual_seed(2)
    second = probe_batch(data, 6, seed=3)
    assert torch.equal(first[0]["x"], second[0]["x"]) and torch.equal(first[1], second[1])
    assert first[1].shape == (6,) and probe_batch(data, 100)[1].shape == (20,)


def test_for_training_builds_the_probe_on_the_device_only_when_noise_is_wanted():
    spec = DatasetSpec({"x": (2,)}, 2)
    data = TensorMultimodalDataset({"x": torch.arange(40.0).reshape(20, 2)}, torch.arange(20) % 2, spec)
    cpu = torch.device("cpu")
    stats = GradientStatistics.for_training(StatisticsSettings(probe_size=6, probe_seed=3), data, cpu, True)
    expected = probe_batch(data, 6, seed=3)
    assert stats.probe is not None and stats.detach_unimodal
    assert torch.equal(stats.probe[0]["x"], expected[0]["x"]) and torch.equal(stats.probe[1], expected[1])
    assert stats.probe[1].device == cpu and stats.wants_noise(0)
    for settings in (StatisticsSettings(noise_every=0), StatisticsSettings(probe_size=0)):
        off = GradientStatistics.for_training(settings, data, cpu, False)
        assert off.probe is None and not off.wants_noise(0)


def test_noise_traces_the_plans_groups_on_the_probe():
    model, splits = conflicting_setup()
    loss = MultitaskLoss()
    settings = StatisticsSettings(probe_size=5, probe_chunk=2)
    stats = GradientStatistics.for_training(settings, splits.train, torch.device("cpu"), loss.detach_unimodal)
    inputs, labels = stats.probe
    features = model.encode(inputs)
    plan = GradientEngine(model, get_integrator("sum")).make_plan(features, loss(model.classify(features), labels))
    metrics = stats.noise(model, plan, loss)
    assert set(metrics) == {f"grad/encoder.{m}/cov_trace/{name}" for m in ("a", "b") for name in ("multimodal", m)}
    assert all(value >= 0 for value in metrics.values())
    assert GradientStatistics(settings).noise(model, plan, loss) == {}  # no probe, no traces


# --- a run whose gradients conflict by construction -------------------------------------------


def conflicting_setup(n: int = 24):
    """Two modalities, one ReLU unit per encoder, positive inputs, every label 0.

    The fusion head scores class 0 by +z and the unimodal heads by -z, so L_mm pulls every feature
    up and L_m pulls it down: on each encoder every component of g_mm is negative and every
    component of g_m positive, so their cosine is negative on every step.
    """
    spec = DatasetSpec({"a": (3,), "b": (2,)}, num_classes=2)
    generator = torch.Generator().manual_seed(0)

    def split(size):
        inputs = {m: 0.5 + torch.rand(size, *shape, generator=generator) for m, shape in spec.modalities.items()}
        return TensorMultimodalDataset(inputs, torch.zeros(size, dtype=torch.long), spec)

    model = LateFusionModel(spec, partial(MLPEncoder, hidden=[], dim=1), ConcatFusion)
    with torch.no_grad():
        for encoder in model.encoders.values():
            linear = encoder.net[1]
            linear.weight.fill_(0.3)
            linear.bias.fill_(0.1)
        model.fusion_head.weight.copy_(torch.tensor([[1.0, 1.0], [-1.0, -1.0]]))
        model.fusion_head.bias.zero_()
        for head in model.unimodal_heads.values():
            head.weight.copy_(torch.tensor([[-1.0], [1.0]]))
            head.bias.zero_()
    return model, Splits(split(n), split(8), split(8))


@pytest.mark.parametrize("name", sorted(INTEGRATORS))
def test_known_conflict_gives_negative_cosines_and_full_conflict_rate_in_mlflow(name, tmp_path, monkeypatch):
    calls = {"log_batch": 0, "log_metric": 0}
    original_batch = MlflowClient.log_batch

    def counting_batch(self, *args, **kwargs):
        if kwargs.get("metrics"):
            calls["log_batch"] += 1
        return original_batch(self, *args, **kwargs)

    def forbidden(self, *args, **kwargs):
        calls["log_metric"] += 1
        raise AssertionError("metrics must be sent in batches, not one call per scalar")

    monkeypatch.setattr(MlflowClient, "log_batch", counting_batch)
    monkeypatch.setattr(MlflowClient, "log_metric", forbidden)
    model, splits = conflicting_setup()
    tracker = RunTracker("conflict", f"{name}-conflict", tracking_uri=f"sqlite:///{tmp_path / 'mlflow.db'}")
    stats = StatisticsSettings(log_every=1, noise_every=2, probe_size=5, probe_chunk=2)
    settings = TrainerSettings(epochs=2, batch_size=8, progress=False, statistics=stats)
    trainer = Trainer(
        model, splits, MultitaskLoss(), get_integrator(name), torch.optim.SGD(model.parameters(), lr=1e-3),
        None, settings, torch.device("cpu"), tracker=tracker,
    )  # fmt: skip
    trainer.fit()
    tracker.end()
    client = MlflowClient(tracker.tracking_uri)
    metrics = client.get_run(tracker.run_id).data.metrics
    steps = 2 * 3
    for m in ("a", "b"):
        p = f"grad/encoder.{m}"
        cosines = client.get_metric_history(tracker.run_id, f"{p}/cos/multimodal.{m}")
        assert sorted(c.step for c in cosines) == list(range(steps))
        assert all(-1.0 <= c.value < 0 for c in cosines)
        assert all(c.value == 1.0 for c in client.get_metric_history(tracker.run_id, f"{p}/conflict"))
        rates = client.get_metric_history(tracker.run_id, f"{p}/conflict_rate")
        assert [r.value for r in sorted(rates, key=lambda r: r.step)] == [1.0, 1.0]
        for key in ("norm/multimodal", f"norm/{m}", f"norm_ratio/{m}", "update_to_sum", "weight/multimodal",
                    f"weight/{m}", "norm_mean/multimodal", f"norm_std/{m}"):  # fmt: skip
            assert math.isfinite(metrics[f"{p}/{key}"]), key
        traces = client.get_metric_history(tracker.run_id, f"{p}/cov_trace/{m}")
        assert sorted(t.step for t in traces) == [0, 2, 4]
        assert all(t.value > 0 for t in traces)
        assert f"{p}/cov_trace/multimodal" in metrics
    assert calls["log_metric"] == 0
    assert 1 <= calls["log_batch"] <= 2 + 1  # flushed once per epoch (and at the end if anything is left)
