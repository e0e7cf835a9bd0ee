"""Fidelity harness: the framework's real trainer beside a transcription of the authors' code.

A fidelity test trains two models from identical weights on identical batches and compares every
parameter after each step:

* the framework side is the real :class:`~framework.training.trainer.Trainer`, built by
  ``framework.main.build_trainer(cfg, None, checkpoint_path)`` from a Hydra config composed like
  ``python -m framework.main`` does (fixture :func:`framework_trainer`; defaults: the smoke
  experiment's synthetic data and MLP encoders, SGD as ``conf/optimizer/sgd.yaml`` (momentum 0.9,
  weight decay 1e-4, the authors' optimizer), a constant learning rate, CPU, float64, no step
  statistics and no noise probe. Without statistics a plain-sum step is one backward pass of the
  summed losses; ``trainer.statistics.log_every=1`` (the config's default, what real runs do)
  makes the gradient engine take per-loss gradients on every step instead);
* the reference side is a transcription of the authors' training step, written in the test file.
  It imports nothing from ``framework``; its model is built from fresh ``nn.Linear`` layers and
  deep copies of the framework's encoders (:func:`fresh_linear`, :func:`copy.deepcopy`), so only
  the weights are shared, never the step.

Test files get the helpers from the :func:`harness` fixture (a conftest is not importable under
``--import-mode=importlib``): :func:`sgd_like` (the reference's optimizer, the config's SGD),
:func:`fresh_linear`, :func:`draw_batches` (the same batches for both sides), :func:`framework_steps` (train
the real trainer on them, recording the parameters, and optionally the ``.grad`` handed to the
optimizer, after each step), :func:`named_params` / :func:`max_param_diff` (compare two models,
or one model against a recorded snapshot, through a name mapping).

Everything runs in float64 (:func:`float64` sets the default dtype for the test and restores it),
so agreement is asserted to ~1e-10, not hidden by float32 rounding.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Mapping
from pathlib import Path
from types import SimpleNamespace

import pytest
import torch
from omegaconf import DictConfig
from torch import Tensor, nn

from framework.main import build_trainer
from framework.training.trainer import Trainer

Batch = tuple[dict[str, Tensor], Tensor]

BASE_OVERRIDES = (
    "experiment=smoke",
    "device=cpu",
    "optimizer=sgd",
    "scheduler=constant",
    "trainer.progress=false",
    "trainer.statistics.log_every=0",
    "trainer.statistics.noise_every=0",
)
"""The defaults of :func:`framework_trainer`; later overrides (the test's) win."""


@pytest.fixture
def float64() -> Iterator[None]:
    """float64 as the default dtype for the test (models, data, draws), restored afterwards."""
    previous = torch.get_default_dtype()
    torch.set_default_dtype(torch.float64)
    yield
    torch.set_default_dtype(previous)


@pytest.fixture
def framework_trainer(
    compose_cfg: Callable[..., DictConfig], tmp_path: Path, float64: None
) -> Callable[..., tuple[Trainer, DictConfig]]:
    """``build(*overrides) -> (trainer, cfg)``: the real trainer, as ``framework.main`` builds it.

    The config is ``conf/train.yaml`` with :data:`BASE_OVERRIDES` then ``overrides`` (e.g.
    ``"method=ogm_ge"``, ``"method.scope=all"``); the global RNG is seeded with ``cfg.seed``
    first, as ``framework.main.train`` does, so the initial weights are reproducible.
    """

    def build(*overrides: str) -> tuple[Trainer, DictConfig]:
        cfg = compose_cfg(*BASE_OVERRIDES, *overrides)
        torch.manual_seed(int(cfg.seed))
        trainer = build_trainer(cfg, None, tmp_path / "checkpoint.pt")
        return trainer, cfg

    return build


def sgd_like(cfg: DictConfig, params: Iterator[nn.Parameter] | list[nn.Parameter]) -> torch.optim.SGD:
    """A ``torch.optim.SGD`` with the config's learning rate, momentum and weight decay."""
    opt = cfg.optimizer
    return torch.optim.SGD(
        params,
        lr=float(opt.lr),
        momentum=float(opt.get("momentum", 0.0)),
        weight_decay=float(opt.get("weight_decay", 0.0)),
    )


def fresh_linear(layer: nn.Module, scale: float = 1.0) -> nn.Linear:
    """A new ``nn.Linear`` holding ``layer``'s weight (and bias, if any) times ``scale``."""
    weight = layer.weight.detach()
    bias = getattr(layer, "bias", None)
    out = nn.Linear(weight.shape[1], weight.shape[0], bias=bias is not None)
    with torch.no_grad():
        out.weight.copy_(weight * scale)
        if bias is not None:
            out.bias.copy_(bias.detach() * scale)
    return out


def draw_batches(trainer: Trainer, count: int, size: int = 32, seed: int = 1) -> list[Batch]:
    """``count`` random training batches of ``size`` samples (independent of the trainer's shuffle),
    floating inputs in the default dtype (float32 datasets, CG-MNIST, become float64)."""
    dataset = trainer.splits.train
    generator = torch.Generator().manual_seed(seed)
    out = []
    for _ in range(count):
        index = torch.randperm(len(dataset), generator=generator)[:size]
        inputs, labels = dataset.batch(index)  # type: ignore[attr-defined]
        dtype = torch.get_default_dtype()
        out.append(
            ({m: t.to(dtype) if t.is_floating_point() else t.clone() for m, t in inputs.items()}, labels.clone())
        )
    return out


def snapshot(model: nn.Module) -> dict[str, Tensor]:
    return {n: p.detach().clone() for n, p in model.named_parameters()}


def framework_steps(
    trainer: Trainer, batches: list[Batch], record_grads: bool = False
) -> tuple[list[dict[str, Tensor]], list[list[dict[str, Tensor]]]]:
    """Run ``trainer.train_step`` on each batch (``state.step`` advanced as ``train_epoch`` does).

    Returns the parameters after each step and, with ``record_grads``, per step the ``.grad`` of
    every parameter at each optimizer step (one per sub-step of the method)."""
    params, grads = [], []
    original = trainer.optimizer.step

    def record(*args, **kwargs):  # type: ignore[no-untyped-def]
        grads[-1].append(
            {n: p.grad.detach().clone() for n, p in trainer.model.named_parameters() if p.grad is not None}
        )
        return original(*args, **kwargs)

    if record_grads:
        trainer.optimizer.step = record  # type: ignore[method-assign]
    try:
        for index, (inputs, labels) in enumerate(batches):
            grads.append([])
            trainer.train_step(inputs, labels, index, len(batches))
            trainer.state.step += 1
            params.append(snapshot(trainer.model))
    finally:
        trainer.optimizer.step = original  # type: ignore[method-assign]
    return params, grads


def renamed(params: Mapping[str, Tensor], prefixes: Mapping[str, str]) -> dict[str, Tensor]:
    """``params`` with each name's prefix replaced (``{"encoders.strong.": "audio_net."}``);
    names with no listed prefix are dropped."""
    out = {}
    for name, value in params.items():
        for old, new in prefixes.items():
            if name.startswith(old):
                out[new + name[len(old) :]] = value
                break
    return out


def named_params(model: nn.Module | Mapping[str, Tensor]) -> dict[str, Tensor]:
    if isinstance(model, nn.Module):
        return {n: p.detach() for n, p in model.named_parameters()}
    return dict(model)


def max_param_diff(
    model_a: nn.Module | Mapping[str, Tensor],
    model_b: nn.Module | Mapping[str, Tensor],
    prefixes: Mapping[str, str] | None = None,
) -> float:
    """The largest absolute difference between corresponding parameters.

    ``model_a``'s names are mapped to ``model_b``'s by ``prefixes`` (:func:`renamed`; identity when
    ``None``); every parameter of ``model_b`` must have a counterpart of the same shape."""
    a = named_params(model_a)
    b = named_params(model_b)
    if prefixes is not None:
        a = renamed(a, prefixes)
    missing = sorted(set(b) - set(a))
    assert not missing, f"no counterpart for {missing}; mapped names: {sorted(a)}"
    worst = 0.0
    for name, value in b.items():
        assert a[name].shape == value.shape, f"{name}: shapes {tuple(a[name].shape)} vs {tuple(value.shape)}"
        worst = max(worst, float((a[name].to(value.dtype) - value).abs().max()))
    return worst


@pytest.fixture(scope="session")
def harness() -> SimpleNamespace:
    """The helpers of this module, for the test files."""
    return SimpleNamespace(
        sgd_like=sgd_like,
        fresh_linear=fresh_linear,
        draw_batches=draw_batches,
        snapshot=snapshot,
        framework_steps=framework_steps,
        renamed=renamed,
        named_params=named_params,
        max_param_diff=max_param_diff,
    )
