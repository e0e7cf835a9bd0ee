"""``trainer.precision``: bf16 autocast and fp16 with a gradient scaler, on CPU (autocast in both
dtypes and ``torch.amp.GradScaler("cpu")`` exist there)."""

from __future__ import annotations

import pytest
import torch
from mlflow.tracking import MlflowClient

from framework import metric_names as names
from framework.losses import MultitaskLoss
from framework.main import build_trainer, train
from framework.training import checkpoint as ckpt
from framework.training.checkpoint import seed_everything
from tests.integration.test_divergence import STEPS_PER_EPOCH, at_steps, only_run
from tests.integration.test_resume import histories, interrupt_at_step

pytestmark = pytest.mark.slow  # whole smoke trainings per precision


def one_step(compose_cfg, precision: str) -> list[torch.Tensor]:
    cfg = compose_cfg("experiment=smoke", f"trainer.precision={precision}", "trainer.statistics.noise_every=0")
    seed_everything(int(cfg.seed))
    trainer = build_trainer(cfg, None, None)
    inputs, labels = next(iter(trainer._source(trainer.splits.train, train=True)))
    before = [p.detach().clone() for p in trainer.model.parameters()]
    trainer.train_step(inputs, labels)
    return [p.detach() - b for p, b in zip(trainer.model.parameters(), before, strict=True)]


@pytest.mark.parametrize(("precision", "tolerance"), [("bf16", 0.08), ("16", 0.01)])
def test_one_step_equals_the_float32_step_within_tolerance(compose_cfg, precision, tolerance):
    """The update of one step under autocast is the float32 update within ``tolerance`` of its norm,
    per tensor (bf16 keeps 8 bits of mantissa, fp16 11); and it is not bit-identical to it, so
    autocast did run."""
    reference = one_step(compose_cfg, "32")
    mixed = one_step(compose_cfg, precision)
    errors = [float((a - b).norm() / a.norm()) for a, b in zip(reference, mixed, strict=True) if a.norm() > 0]
    assert max(errors) <= tolerance, errors
    assert max(errors) > 1e-6, errors


@pytest.mark.parametrize("precision", ["bf16", "16"])
def test_smoke_finishes_with_statistics(compose_cfg, tracking_uri, precision):
    train(compose_cfg("experiment=smoke", f"trainer.precision={precision}", "trainer.statistics.noise_every=3"))
    run = only_run(MlflowClient(tracking_uri))
    assert run.info.status == "FINISHED"
    metrics = run.data.metrics
    assert any(k.startswith("grad/") and "/cos/" in k for k in metrics)
    assert any(names.COV_TRACE in k for k in metrics)
    assert (names.OVERFLOW_STEPS in metrics) == (precision == "16")


def overflow_at(monkeypatch: pytest.MonkeyPatch, step: int) -> None:
    """The weak modality's loss overflows to inf on training step ``step``."""
    current, original = at_steps(monkeypatch), MultitaskLoss.__call__

    def call(self, logits, labels):
        losses = original(self, logits, labels)
        if current[0] == step:
            losses["weak"] = losses["weak"] * float("inf")
        return losses

    monkeypatch.setattr(MultitaskLoss, "__call__", call)


def test_fp16_overflow_skips_exactly_that_step_and_backs_the_scale_off(compose_cfg, tracking_uri, monkeypatch):
    overflow = 3
    overflow_at(monkeypatch, overflow)
    parameters: dict[int, list[torch.Tensor]] = {}
    from framework.training.trainer import Trainer

    step = Trainer.train_step

    def recording(self, *args, **kwargs):
        parameters[self.state.step] = [p.detach().clone() for p in self.model.parameters()]
        return step(self, *args, **kwargs)

    monkeypatch.setattr(Trainer, "train_step", recording)
    train(compose_cfg("experiment=smoke", "trainer.precision=16", "trainer.statistics.noise_every=0"))
    run = only_run(MlflowClient(tracking_uri))
    assert run.info.status == "FINISHED"
    client = MlflowClient(tracking_uri)
    overflows = sorted((m.step, m.value) for m in client.get_metric_history(run.info.run_id, names.OVERFLOW_STEPS))
    assert overflows == [(0, 1.0), (1, 0.0)]
    scales = sorted((m.step, m.value) for m in client.get_metric_history(run.info.run_id, names.LOSS_SCALE))
    assert scales[0][1] == 2.0**15  # 2**16 backed off once
    for s in range(STEPS_PER_EPOCH):
        unchanged = all(torch.equal(a, b) for a, b in zip(parameters[s], parameters[s + 1], strict=True))
        assert unchanged == (s == overflow), s


def test_checkpoint_carries_the_scaler_and_resume_is_exact(compose_cfg, tracking_uri, tmp_path, monkeypatch):
    client = MlflowClient(tracking_uri)
    overflow_at(monkeypatch, 2)  # the scale is 2**15 from step 3 on: a restored scaler must say so
    overrides = ("experiment=smoke", "trainer.epochs=3", "trainer.precision=16")
    monkeypatch.setenv("FRAMEWORK_CHECKPOINT_DIR", str(tmp_path / "straight"))
    expected = train(compose_cfg(*overrides))
    (straight,) = client.search_runs([client.get_experiment_by_name("smoke").experiment_id])
    monkeypatch.setenv("FRAMEWORK_CHECKPOINT_DIR", str(tmp_path / "interrupted"))
    with monkeypatch.context() as patch:
        interrupt_at_step(patch, STEPS_PER_EPOCH + 3, KeyboardInterrupt)
        with pytest.raises(KeyboardInterrupt):
            train(compose_cfg(*overrides))
    state = ckpt.load_checkpoint(next((tmp_path / "interrupted").rglob("checkpoint.pt")))
    assert state["precision"]["scale"] == 2.0**15
    trainer = build_trainer(compose_cfg(*overrides), None, None)
    trainer.load_state_dict(state)
    assert trainer.precision.scaler.get_scale() == 2.0**15
    assert train(compose_cfg(*overrides, "resume=true")) == expected
    (resumed,) = [r for r in client.search_runs([straight.info.experiment_id]) if r.info.run_id != straight.info.run_id]
    assert resumed.info.status == "FINISHED"
    assert histories(client, resumed.info.run_id) == histories(client, straight.info.run_id)
