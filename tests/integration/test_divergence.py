"""Diverging runs: ``trainer.on_nonfinite`` stops them (FAILED, the step in the error) or skips the
non-finite steps (no update, counted in ``train/skipped_steps``); never FINISHED with NaN losses."""

from __future__ import annotations

import math
from pathlib import Path

import pytest
import torch
from mlflow.tracking import MlflowClient

from framework import metric_names as names
from framework.losses import MultitaskLoss
from framework.main import train
from framework.training import checkpoint as ckpt
from framework.training.gradients import GradientEngine
from framework.training.trainer import NonFiniteError, Trainer

pytestmark = pytest.mark.slow  # whole trainings until they diverge

STEPS_PER_EPOCH = 8  # smoke: 512 samples / 64 per batch


def only_run(client: MlflowClient):
    (run,) = client.search_runs([client.get_experiment_by_name("smoke").experiment_id])
    return run


def at_steps(monkeypatch: pytest.MonkeyPatch) -> list[int]:
    """A one-item list that holds the step the trainer is in (Trainer.train_step wrapped)."""
    current = [-1]
    original = Trainer.train_step

    def train_step(self, *args, **kwargs):
        current[0] = self.state.step
        return original(self, *args, **kwargs)

    monkeypatch.setattr(Trainer, "train_step", train_step)
    return current


def nan_loss_at(monkeypatch: pytest.MonkeyPatch, steps: set[int]) -> None:
    """The weak modality's loss is NaN on the training steps ``steps``."""
    current, original = at_steps(monkeypatch), MultitaskLoss.__call__

    def call(self, logits, labels):
        losses = original(self, logits, labels)
        if current[0] in steps:
            losses["weak"] = losses["weak"] * float("nan")
        return losses

    monkeypatch.setattr(MultitaskLoss, "__call__", call)


def inf_grad_at(monkeypatch: pytest.MonkeyPatch, steps: set[int]) -> None:
    """After the engine's backward on the steps ``steps``, one gradient holds an inf (finite losses)."""
    current, original = at_steps(monkeypatch), GradientEngine.backward

    def backward(self, *args, **kwargs):
        decisions = original(self, *args, **kwargs)
        if current[0] in steps:
            grad = next(p.grad for ps in self.groups.values() for p in ps if p.grad is not None)
            grad.view(-1)[0] = float("inf")
        return decisions

    monkeypatch.setattr(GradientEngine, "backward", backward)


def test_huge_learning_rate_stops_the_run_failed_naming_the_step(compose_cfg, tracking_uri):
    cfg = compose_cfg("experiment=smoke", "optimizer.lr=1e8")
    with pytest.raises(NonFiniteError, match=r"non-finite (loss|gradient) at step \d+") as raised:
        train(cfg)
    run = only_run(MlflowClient(tracking_uri))
    assert run.info.status == "FAILED"
    step = int(run.data.tags["error"].split(" at step ")[1].split()[0])
    assert run.data.tags["error"] == f"NonFiniteError: {raised.value}"
    assert "losses multimodal=" in run.data.tags["error"]
    # the checkpoint kept is from before the non-finite step, and its model is finite
    state = ckpt.load_checkpoint(Path(cfg.checkpoint.dir) / "checkpoint.pt")
    assert state is not None and state["state"]["step"] <= step
    assert all(torch.isfinite(v).all() for v in state["model"].values())


@pytest.mark.parametrize("inject", ["loss", "gradient"])
def test_stop_fails_at_the_first_nonfinite_step_and_keeps_the_last_finite_checkpoint(
    compose_cfg, tracking_uri, monkeypatch, inject
):
    bad = STEPS_PER_EPOCH + 3  # in epoch 1, after epoch 0's checkpoint
    (nan_loss_at if inject == "loss" else inf_grad_at)(monkeypatch, {bad})
    cfg = compose_cfg("experiment=smoke", "trainer.epochs=3")
    with pytest.raises(NonFiniteError, match=rf"non-finite {inject} at step {bad} \(epoch 1\)"):
        train(cfg)
    run = only_run(MlflowClient(tracking_uri))
    assert run.info.status == "FAILED" and f"at step {bad} (epoch 1)" in run.data.tags["error"]
    if inject == "loss":
        assert "weak=nan" in run.data.tags["error"]
    state = ckpt.load_checkpoint(Path(cfg.checkpoint.dir) / "checkpoint.pt")
    assert state is not None and state["state"]["epoch"] == 1 and state["state"]["step"] == STEPS_PER_EPOCH


def test_skip_step_skips_the_update_counts_the_steps_and_finishes(compose_cfg, tracking_uri, monkeypatch):
    nan_loss_at(monkeypatch, {1, 5})  # two in epoch 0
    inf_grad_at(monkeypatch, {STEPS_PER_EPOCH + 2})  # one in epoch 1
    results = train(compose_cfg("experiment=smoke", "trainer.epochs=3", "trainer.on_nonfinite=skip_step"))
    client = MlflowClient(tracking_uri)
    run = only_run(client)
    assert run.info.status == "FINISHED"
    skipped = sorted((m.step, m.value) for m in client.get_metric_history(run.info.run_id, names.SKIPPED_STEPS))
    assert skipped == [(0, 2.0), (1, 1.0), (2, 0.0)]
    losses = client.get_metric_history(run.info.run_id, names.train_loss("weak"))
    assert all(math.isfinite(m.value) for m in losses), "skipped steps stay out of the epoch's mean loss"
    assert all(math.isfinite(v) for v in results.values())


def test_skip_step_cannot_finish_a_run_whose_every_step_is_nonfinite(compose_cfg, tracking_uri, monkeypatch):
    nan_loss_at(monkeypatch, set(range(100)))
    with pytest.raises(NonFiniteError, match="every step of epoch 0"):
        train(compose_cfg("experiment=smoke", "trainer.on_nonfinite=skip_step"))
    assert only_run(MlflowClient(tracking_uri)).info.status == "FAILED"


def test_a_skipped_step_leaves_the_parameters_unchanged(compose_cfg, tracking_uri, monkeypatch):
    """With every step of the one epoch but the first skipped, the parameters after the epoch are
    those after step 0 (checked against a one-step run); then the epoch fails as diverged."""
    one_step = compose_cfg("experiment=smoke", "trainer.epochs=1", "trainer.max_steps_per_epoch=1")
    train(one_step)
    after_one = ckpt.load_checkpoint(Path(one_step.checkpoint.dir) / "checkpoint.pt")["model"]
    nan_loss_at(monkeypatch, set(range(1, STEPS_PER_EPOCH)))
    cfg = compose_cfg("experiment=smoke", "trainer.epochs=1", "trainer.on_nonfinite=skip_step")
    train(cfg)
    state = ckpt.load_checkpoint(Path(cfg.checkpoint.dir) / "checkpoint.pt")
    for key, value in after_one.items():
        assert torch.equal(state["model"][key], value), key
