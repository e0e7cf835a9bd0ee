"""The gradient-noise probe on models torch.func cannot vmap (GRU/LSTM encoders): the exact
per-sample loop it falls back to, against a brute-force loop; and a probe that cannot run at all
turns itself off instead of failing the run."""

from __future__ import annotations

import logging
import math
from functools import partial

import pytest
import torch
from mlflow.tracking import MlflowClient
from torch import Tensor, nn

from framework.data.base import DatasetSpec, Splits, TensorMultimodalDataset
from framework.integrators import get_integrator
from framework.losses import MultitaskLoss
from framework.models.encoders import MLPEncoder
from framework.models.fusion import ConcatFusion
from framework.models.late_fusion import LateFusionModel
from framework.tracking import RunTracker
from framework.training.gradients import GradientEngine
from framework.training.noise import LOOP, VMAP, ProbeError, covariance_traces, probe_method
from framework.training.statistics import NOISE_PROBE_TAG, GradientStatistics, StatisticsSettings
from framework.training.trainer import Trainer, TrainerSettings

SPEC = DatasetSpec({"seq": (6, 3), "vec": (4,)}, num_classes=3)


class RecurrentEncoder(nn.Module):
    """A ``[B, T, F]`` sequence through a GRU or LSTM (two layers, dropout between them in train
    mode), then a linear map of the last step's hidden state."""

    def __init__(self, input_shape: tuple[int, ...], cell: type[nn.Module] = nn.GRU, hidden: int = 5) -> None:
        super().__init__()
        self.rnn = cell(input_shape[-1], hidden, num_layers=2, batch_first=True, dropout=0.3)
        self.proj = nn.Linear(hidden, 4)
        self.out_dim = 4

    def forward(self, x: Tensor) -> Tensor:
        out, _ = self.rnn(x)
        return torch.tanh(self.proj(out[:, -1]))


class SingleSampleRaises(nn.Module):
    """An encoder that trains and evaluates on batches, but raises on a batch of one: the probe
    fails with vmap and with the loop (both run the model on one sample)."""

    def __init__(self, input_shape: tuple[int, ...]) -> None:
        super().__init__()
        self.linear = nn.Linear(input_shape[-1], 3)
        self.out_dim = 3

    def forward(self, x: Tensor) -> Tensor:
        if x.shape[0] == 1:
            raise RuntimeError("this encoder needs batches\nsecond line")
        return self.linear(x.mean(1))


def model_with(seq_encoder, dtype=torch.float64) -> LateFusionModel:
    torch.manual_seed(0)
    mlp = partial(MLPEncoder, hidden=[6], dim=4)
    return LateFusionModel(SPEC, mlp, ConcatFusion, encoders={"seq": seq_encoder}).to(dtype)


def data(n: int, dtype=torch.float64, seed: int = 1) -> tuple[dict[str, Tensor], Tensor]:
    generator = torch.Generator().manual_seed(seed)
    inputs = {m: torch.randn(n, *shape, generator=generator, dtype=dtype) for m, shape in SPEC.modalities.items()}
    return inputs, torch.randint(SPEC.num_classes, (n,), generator=generator)


def planned(model, inputs, labels, loss):
    features = model.encode(inputs)
    logits = model.classify(features, detach_unimodal=loss.detach_unimodal)
    return GradientEngine(model, get_integrator("sum")).make_plan(features, loss(logits, labels))


def brute_force(model, loss, inputs, labels, plan):
    """Per sample and per loss: a forward of the model itself in eval mode on one sample and
    ``torch.autograd.grad``; the trace from the stacked float64 gradients, two-pass."""
    was_training = model.training
    model.eval()
    out: dict[str, dict[str, float]] = {}
    groups = model.parameter_groups()
    for group in plan.groups:
        params = groups[group]
        for name in plan.reach[group]:
            rows = []
            for i in range(labels.shape[0]):
                value = loss(model({m: t[i : i + 1] for m, t in inputs.items()}), labels[i : i + 1])[name]
                grads = torch.autograd.grad(value, params, allow_unused=True)
                flat = [
                    (torch.zeros_like(p) if g is None else g).reshape(-1) for g, p in zip(grads, params, strict=True)
                ]
                rows.append(torch.cat(flat).double())
            g = torch.stack(rows)
            out.setdefault(group, {})[name] = float((g - g.mean(0)).square().sum(1).mean())
    model.train(was_training)
    return out


def max_relative_difference(got, expected) -> float:
    assert {g: set(v) for g, v in got.items()} == {g: set(v) for g, v in expected.items()}
    return max(abs(got[g][n] - v) / abs(v) for g, by_loss in expected.items() for n, v in by_loss.items())


def framework_warnings(caplog) -> list[str]:
    return [r.getMessage() for r in caplog.records if r.name == "framework" and r.levelno == logging.WARNING]


@pytest.mark.parametrize("chunk", [None, 3])
@pytest.mark.parametrize("cell", [nn.GRU, nn.LSTM], ids=["gru", "lstm"])
def test_rnn_encoder_falls_back_to_the_loop_and_matches_brute_force(cell, chunk, caplog):
    model = model_with(partial(RecurrentEncoder, cell=cell))
    inputs, labels = data(7)
    loss = MultitaskLoss()
    plan = planned(model, inputs, labels, loss)
    with pytest.raises(RuntimeError):  # what the run died of before the fallback
        covariance_traces(model, loss, inputs, labels, model.parameter_groups(), plan, method=VMAP)
    assert probe_method(model) is None  # a forced method is not remembered
    model.train()
    state = {k: v.clone() for k, v in model.state_dict().items()}
    rng = torch.get_rng_state()
    with caplog.at_level(logging.WARNING, logger="framework"):
        got = covariance_traces(model, loss, inputs, labels, model.parameter_groups(), plan, chunk_size=chunk)
    warned = framework_warnings(caplog)
    assert len(warned) == 1 and "per-sample loop" in warned[0] and "RuntimeError: " in warned[0]
    assert "\n" not in warned[0]
    assert probe_method(model) == LOOP
    assert model.training and torch.equal(torch.get_rng_state(), rng)
    assert all(torch.equal(v, state[k]) for k, v in model.state_dict().items())
    assert all(p.grad is None for p in model.parameters())
    assert all(math.isfinite(v) and v > 0 for by_loss in got.values() for v in by_loss.values())
    expected = brute_force(model, loss, inputs, labels, plan)
    assert set(got) == {"encoder.seq", "encoder.vec"}
    assert max_relative_difference(got, expected) < 1e-10
    # remembered: the next call loops straight away, without a second warning
    caplog.clear()
    with caplog.at_level(logging.WARNING, logger="framework"):
        again = covariance_traces(model, loss, inputs, labels, model.parameter_groups(), plan, chunk_size=chunk)
    assert framework_warnings(caplog) == [] and again == got


@pytest.mark.parametrize("chunk", [None, 1, 4])
def test_forced_loop_equals_vmap_where_vmap_works(chunk):
    torch.manual_seed(0)
    model = model_with(partial(MLPEncoder, hidden=[5], dim=4))
    inputs, labels = data(9)
    loss = MultitaskLoss()
    plan = planned(model, inputs, labels, loss)
    groups = model.parameter_groups()
    vmapped = covariance_traces(model, loss, inputs, labels, groups, plan, chunk_size=chunk, method=VMAP)
    looped = covariance_traces(model, loss, inputs, labels, groups, plan, chunk_size=chunk, method=LOOP)
    assert max_relative_difference(looped, vmapped) < 1e-12
    assert covariance_traces(model, loss, inputs, labels, groups, plan, chunk_size=chunk) == vmapped
    assert probe_method(model) == VMAP


def test_forced_loop_equals_vmap_on_attention_with_detached_unimodal_heads():
    from framework.models.transformer import CrossModalTransformer

    torch.manual_seed(0)
    spec = DatasetSpec({"audio": (1, 8, 8), "visual": (2, 3, 8, 8)}, num_classes=4)
    model = CrossModalTransformer(spec, dim=8, depth=2, heads=2, patch_size=4).double()
    inputs = {m: torch.randn(5, *shape, dtype=torch.float64) for m, shape in spec.modalities.items()}
    labels = torch.randint(4, (5,))
    loss = MultitaskLoss(detach_unimodal=True)
    plan = planned(model, inputs, labels, loss)
    kwargs = {"detach_unimodal": True}
    args = (model, loss, inputs, labels, model.parameter_groups(), plan, 2, kwargs)
    assert max_relative_difference(covariance_traces(*args, method=LOOP), covariance_traces(*args, method=VMAP)) < 1e-12


def test_probe_failing_in_both_paths_raises_probe_error_and_remembers_nothing():
    model = model_with(SingleSampleRaises)
    inputs, labels = data(4)
    loss = MultitaskLoss()
    plan = planned(model, inputs, labels, loss)
    with pytest.raises(
        ProbeError, match=r"vmap \(RuntimeError: this encoder needs batches\) and with a loop \(RuntimeError"
    ):
        covariance_traces(model, loss, inputs, labels, model.parameter_groups(), plan)
    assert probe_method(model) is None and model.training


def statistics_for(model, n: int = 6, **settings) -> tuple[GradientStatistics, MultitaskLoss]:
    inputs, labels = data(n, dtype=next(model.parameters()).dtype)
    settings = StatisticsSettings(**{"noise_every": 1, "probe_size": n, "probe_chunk": 4, **settings})
    return GradientStatistics(settings, (inputs, labels)), MultitaskLoss()


def test_statistics_turn_a_failing_probe_off_with_one_warning(caplog):
    model = model_with(SingleSampleRaises)
    stats, loss = statistics_for(model)
    plan = planned(model, *stats.probe, loss)
    assert stats.probe_status == "unchecked" and stats.wants_noise(0)
    with caplog.at_level(logging.WARNING, logger="framework"):
        assert stats.noise(model, plan, loss) == {}
        assert stats.noise(model, plan, loss) == {}
    warned = framework_warnings(caplog)
    assert len(warned) == 1 and "off for the rest of the run" in warned[0] and "ProbeError" in warned[0]
    assert stats.probe_status == "off" and not stats.wants_noise(0)


def test_check_probe_decides_the_path_before_training_and_touches_nothing(caplog):
    gru = model_with(RecurrentEncoder)
    stats, loss = statistics_for(gru)
    gru.train()
    state = {k: v.clone() for k, v in gru.state_dict().items()}
    rng = torch.get_rng_state()
    with caplog.at_level(logging.WARNING, logger="framework"):
        assert stats.check_probe(gru, None, loss) == "loop"
    assert len(framework_warnings(caplog)) == 1
    assert gru.training and torch.equal(torch.get_rng_state(), rng)
    assert all(torch.equal(v, state[k]) for k, v in gru.state_dict().items())
    assert all(p.grad is None for p in gru.parameters())
    metrics = stats.noise(gru, planned(gru, *stats.probe, loss), loss)
    assert len(metrics) == 4 and all(math.isfinite(v) for v in metrics.values())
    assert len(framework_warnings(caplog)) == 1  # the check decided; no second warning

    mlp = model_with(partial(MLPEncoder, hidden=[5], dim=4))
    stats, loss = statistics_for(mlp)
    assert stats.check_probe(mlp, planned(mlp, *stats.probe, loss), loss) == "vmap"

    broken = model_with(SingleSampleRaises)
    stats, loss = statistics_for(broken)
    caplog.clear()
    with caplog.at_level(logging.WARNING, logger="framework"):
        assert stats.check_probe(broken, None, loss) == "off"
    assert len(framework_warnings(caplog)) == 1 and not stats.wants_noise(0)
    assert GradientStatistics(StatisticsSettings()).check_probe(mlp, None, loss) == "off"  # no probe


def splits(n: int = 24) -> Splits:
    def split(size, seed):
        inputs, labels = data(size, dtype=torch.float32, seed=seed)
        return TensorMultimodalDataset(inputs, labels, SPEC)

    return Splits(split(n, 1), split(8, 2), split(8, 3))


def trainer_for(model, tracker=None) -> Trainer:
    stats = StatisticsSettings(log_every=1, noise_every=2, probe_size=5, probe_chunk=2)
    settings = TrainerSettings(epochs=2, batch_size=8, progress=False, statistics=stats)
    optimizer = torch.optim.SGD(model.parameters(), lr=1e-2)
    return Trainer(
        model, splits(), MultitaskLoss(), get_integrator("pcgrad"), optimizer, None, settings, torch.device("cpu"),
        tracker=tracker,
    )  # fmt: skip


def test_training_a_gru_model_with_the_probe_logs_the_covariance_traces(tmp_path, caplog):
    model = model_with(RecurrentEncoder, dtype=torch.float32)
    tracker = RunTracker("noise-rnn", "gru", tracking_uri=f"sqlite:///{tmp_path / 'mlflow.db'}")
    trainer = trainer_for(model, tracker)
    with caplog.at_level(logging.WARNING, logger="framework"):
        status = trainer.statistics.check_probe(trainer.model, trainer.engine.plan, trainer.loss)
        tracker.set_tags({NOISE_PROBE_TAG: status})
        trainer.fit()
    tracker.end()
    assert status == trainer.statistics.probe_status == "loop"
    assert sum("per-sample loop" in m for m in framework_warnings(caplog)) == 1
    client = MlflowClient(tracker.tracking_uri)
    run = client.get_run(tracker.run_id)
    assert run.info.status == "FINISHED" and run.data.tags[NOISE_PROBE_TAG] == "loop"
    for m in ("seq", "vec"):
        for name in ("multimodal", m):
            history = client.get_metric_history(tracker.run_id, f"grad/encoder.{m}/cov_trace/{name}")
            assert sorted(point.step for point in history) == [0, 2, 4]
            assert all(math.isfinite(point.value) and point.value > 0 for point in history)


def test_training_with_a_probe_that_cannot_run_finishes_without_traces(caplog):
    model = model_with(SingleSampleRaises, dtype=torch.float32)
    trainer = trainer_for(model)
    with caplog.at_level(logging.WARNING, logger="framework"):
        trainer.fit()
    assert trainer.statistics.probe_status == "off" and trainer.state.step == 6
    assert sum("off for the rest of the run" in m for m in framework_warnings(caplog)) == 1
