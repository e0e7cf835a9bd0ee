"""examples/lightning_mmpareto.py: trains on CPU at 32-true, bf16-mixed and (with a CPU GradScaler)
16-mixed, logs the cosines, writes the same ``.grad`` as ``framework.backward``, checkpoints the
integrator state, and refuses several processes."""

from __future__ import annotations

import copy
import importlib.util
import math
from pathlib import Path
from types import SimpleNamespace

import pytest
import torch

import framework

pytestmark = pytest.mark.slow  # trains the Lightning example

L = pytest.importorskip("lightning")

SCRIPT = Path(__file__).resolve().parents[2] / "examples" / "lightning_mmpareto.py"
_spec = importlib.util.spec_from_file_location("lightning_mmpareto", SCRIPT)
example = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(example)


class FirstStep(L.Callback):
    """The weights and batch before the first step, and the encoders' ``.grad`` the step sees."""

    def on_train_batch_start(self, trainer, module, batch, batch_idx):
        if trainer.global_step == 0:
            self.weights, self.batch = copy.deepcopy(module.state_dict()), batch

    def on_before_optimizer_step(self, trainer, module, optimizer):
        if trainer.global_step == 0:
            self.grads = {n: p.grad.detach().clone() for n, p in module.encoders.named_parameters()}


def cosines(trainer) -> dict[str, float]:
    return {k: float(v) for k, v in trainer.callback_metrics.items() if "/cos/" in k}


@pytest.mark.parametrize("precision", ["32-true", "bf16-mixed"])
def test_trains_logs_cosines_and_grad_equals_framework_backward(precision, tmp_path):
    first = FirstStep()
    trainer, _ = example.train(1, precision, root=str(tmp_path), accelerator="cpu", callbacks=[first])
    logged = cosines(trainer)
    assert set(logged) == {"grad/audio/cos/multimodal.audio", "grad/visual/cos/multimodal.visual"}
    assert all(math.isfinite(v) and -1 <= v <= 1 for v in logged.values())
    assert 0 <= float(trainer.callback_metrics["val/acc"]) <= 1
    assert list(tmp_path.glob("lightning_logs/version_0/metrics.csv"))  # written under root only

    fresh = example.AVModule()
    fresh.load_state_dict(first.weights)
    with torch.autocast("cpu", dtype=torch.bfloat16, enabled=precision == "bf16-mixed"):
        _, losses = fresh.losses(first.batch)
    framework.backward(losses, dict(fresh.encoders.items()), "mmpareto")  # no features: the other path
    tolerance = {"rtol": 1e-5, "atol": 1e-7} if precision == "32-true" else {"rtol": 2e-2, "atol": 1e-3}
    for name, p in fresh.encoders.named_parameters():
        torch.testing.assert_close(first.grads[name], p.grad, **tolerance)
    summed = example.AVModule()
    summed.load_state_dict(first.weights)
    with torch.autocast("cpu", dtype=torch.bfloat16, enabled=precision == "bf16-mixed"):
        sum(summed.losses(first.batch)[1].values()).backward()
    assert any(not torch.allclose(first.grads[n], p.grad) for n, p in summed.encoders.named_parameters())


def test_fp16_uses_lightnings_scaler(tmp_path):
    """16-mixed on CPU (Lightning turns the flag into bf16 there; a plugin keeps fp16): the integrator
    gets the trainer's GradScaler, and LightningOptimizer.step unscales (the step sees the unscaled
    update), steps and updates it once per step."""
    from lightning.pytorch.plugins.precision import MixedPrecision

    scaler = torch.amp.GradScaler("cpu", init_scale=2.0**8)
    calls = []
    for name in ("step", "update"):
        method = getattr(scaler, name)
        setattr(scaler, name, lambda *a, _m=method, _n=name, **k: calls.append(_n) or _m(*a, **k))
    first = FirstStep()
    plugin = MixedPrecision("16-mixed", "cpu", scaler=scaler)
    trainer, module = example.train(1, None, root=str(tmp_path), accelerator="cpu", plugins=[plugin], callbacks=[first])
    assert module.integrated.scaler is scaler
    assert calls == ["step", "update"] * trainer.global_step and trainer.global_step == 8
    assert scaler.get_scale() == 2.0**8  # no overflow, no growth yet
    assert all(math.isfinite(v) and -1 <= v <= 1 for v in cosines(trainer).values())
    fresh = example.AVModule()
    fresh.load_state_dict(first.weights)
    with torch.autocast("cpu", dtype=torch.float16):
        _, losses = fresh.losses(first.batch)
    framework.backward(losses, dict(fresh.encoders.items()), "mmpareto")
    for name, p in fresh.encoders.named_parameters():
        torch.testing.assert_close(first.grads[name], p.grad, rtol=2e-2, atol=1e-3)


def integrated_grads(module, batch) -> list[torch.Tensor]:
    module.zero_grad(set_to_none=True)
    features, losses = module.losses(batch)
    module.integrated(losses, features)
    return [p.grad.clone() for p in module.encoders.parameters()]


def test_checkpoint_restores_the_integrator_state(tmp_path):
    """GradVac keeps targets across steps: the loaded module integrates a new batch as the trained
    one does, and a fresh integrator on the same weights does not."""
    trainer, module = example.train(1, "32-true", "gradvac", root=str(tmp_path), accelerator="cpu")
    trainer.save_checkpoint(tmp_path / "last.ckpt")
    # the integrator state is tensors and plain values: Lightning's weights_only=True load reads it
    loaded = example.AVModule.load_from_checkpoint(tmp_path / "last.ckpt", weights_only=True)
    assert loaded.hparams.integrator == "gradvac"
    fresh = example.AVModule("gradvac")
    fresh.load_state_dict(loaded.state_dict())
    g = torch.Generator().manual_seed(7)
    batch = (
        {m: torch.randn(32, int(o["dim"]), generator=g) for m, o in example.MODALITIES.items()},
        torch.randint(0, example.CLASSES, (32,), generator=g),
    )
    restored, trained, reset = (integrated_grads(m, batch) for m in (loaded, module, fresh))
    for a, b in zip(restored, trained, strict=True):
        torch.testing.assert_close(a, b)
    assert any(not torch.allclose(a, b) for a, b in zip(restored, reset, strict=True))


def test_main_prints_accuracy_and_cosines(tmp_path, capsys):
    results = example.main(["--epochs", "1", "--root", str(tmp_path)])
    out = capsys.readouterr().out
    assert f"final validation accuracy: {results['val/acc']:.3f}" in out
    assert "mean cosine   audio (multimodal.audio)" in out and "mean cosine  visual (multimodal.visual)" in out


def test_several_processes_are_refused_in_one_line():
    module = example.AVModule()
    module.trainer = SimpleNamespace(world_size=2, scaler=None)
    with pytest.raises(RuntimeError, match=r"2 processes refused.*DDP all-reduce.*framework\.main") as error:
        module.setup("fit")
    assert "\n" not in str(error.value)
