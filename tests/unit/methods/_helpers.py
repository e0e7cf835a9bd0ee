"""A small trainer on synthetic data, and the gradients one of its steps hands the optimizer."""

from __future__ import annotations

import copy
from functools import partial

import torch

from framework.data.synthetic import synthetic_splits
from framework.integrators import get_integrator
from framework.losses import MultitaskLoss
from framework.methods import Method
from framework.models.encoders import MLPEncoder
from framework.models.fusion import ConcatFusion
from framework.models.late_fusion import LateFusionModel
from framework.training.trainer import Trainer, TrainerSettings

MODALITIES = {"a": {"dim": 8, "signal": 1.0}, "b": {"dim": 6, "signal": 0.3}}
LR = 0.1


def make_model(seed: int = 0, modalities: dict | None = None):
    torch.manual_seed(seed)
    splits = synthetic_splits(modalities or MODALITIES, train_size=96, val_size=48, test_size=48, seed=seed)
    model = LateFusionModel(splits.spec, partial(MLPEncoder, hidden=[16], dim=8), ConcatFusion)
    return model, splits


def make_trainer(method: Method | None, model, splits, detach: bool = False, integrator: str = "sum") -> Trainer:
    method = method or Method()
    model = method.prepare(model, seed=0)
    optimizer = torch.optim.SGD(model.parameters(), lr=LR)
    settings = TrainerSettings(epochs=2, batch_size=32, eval_batch_size=48, progress=False,
                               statistics={"log_every": 1, "noise_every": 0})  # fmt: skip
    return Trainer(model, splits, MultitaskLoss(detach), get_integrator(integrator), optimizer, None, settings,
                   torch.device("cpu"), method=method)  # fmt: skip


def batch(splits, size: int = 32):
    return splits.train.batch(torch.arange(size))


def step_gradients(trainer: Trainer, inputs, labels) -> list[dict[str, torch.Tensor]]:
    """The ``.grad`` of every parameter at each optimizer step of one trainer step (one per sub-step)."""
    seen: list[dict[str, torch.Tensor]] = []
    original = trainer.optimizer.step

    def record(*args, **kwargs):
        seen.append({n: p.grad.detach().clone() for n, p in trainer.model.named_parameters() if p.grad is not None})
        return original(*args, **kwargs)

    trainer.optimizer.step = record  # type: ignore[method-assign]
    trainer.train_step(inputs, labels)
    trainer.optimizer.step = original  # type: ignore[method-assign]
    return seen


def twin(model):
    return copy.deepcopy(model)


def encoder_names(model, modality: str) -> list[str]:
    return [n for n, _ in model.named_parameters() if n.startswith(f"encoders.{modality}.")]
