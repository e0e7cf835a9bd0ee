"""The benchmarked variants: an explicit registry, variant name -> the factory of its runner.

A factory gets a :class:`~.runner.Setup` (its own copy of the initial model, optimizer, batch,
loss) and returns the :class:`~.runner.Runner` whose step is timed. :data:`VARIANTS` lists the
names in registration order, which is the order of the tables.
"""

from __future__ import annotations

import copy
import dataclasses
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch

from ..integrators import get_integrator
from ..losses import MultitaskLoss
from ..models.base import MultimodalModel
from ..registry import Registry
from ..training.gradients import GradientEngine
from .cases import ModelCase, make_batch, make_optimizer
from .precision import NO_REFERENCE_SCALING, Precision
from .reference import reference_style_step
from .runner import Runner, Setup
from .stats import stats_runner
from .torchjd_step import torchjd_step

VariantFactory = Callable[[Setup], Runner]
VARIANT_FACTORIES: Registry[VariantFactory] = Registry("variant")
"""Variant name -> factory(setup) -> Runner (``setup.name`` says which), filled by :func:`register_variant`."""
register_variant = VARIANT_FACTORIES.register


FRAMEWORK_INTEGRATORS = ("sum", "pcgrad", "mgda", "mmpareto", "upgrad", "cagrad", "nash_mtl")
"""The integrators benchmarked through the framework's engine, with their default parameters
(``conf/integrator/<name>.yaml``'s, e.g. ``cagrad`` c=0.5)."""


@register_variant(*FRAMEWORK_INTEGRATORS)
def framework_runner(setup: Setup) -> Runner:
    """The framework's ``GradientEngine`` with the integrator of the variant's name."""
    model, optimizer, loss, inputs, labels = setup.model, setup.optimizer, setup.loss, setup.inputs, setup.labels
    engine = GradientEngine(model, get_integrator(setup.name))
    amp = Precision(setup.precision, setup.device)

    def step() -> None:
        with amp.autocast():
            features = model.encode(inputs)
            losses = loss(model.classify(features), labels)
        engine.backward(features, losses, loss_scale=amp.loss_scale())
        amp.step(optimizer)
        optimizer.zero_grad(set_to_none=True)

    return setup.runner(step)


@register_variant("mmpareto_reference_style")
def reference_runner(setup: Setup) -> Runner:
    """The reference code's way of taking an MMPareto step (:mod:`.reference`); under ``bf16`` its
    forward pass and losses run under autocast (it has no loss scaling for ``16``)."""
    amp = Precision(setup.precision, setup.device)
    return setup.runner(
        reference_style_step(
            setup.model, setup.optimizer, setup.loss, setup.inputs, setup.labels, autocast=amp.autocast
        )
    )


register_variant("mmpareto_stats")(stats_runner)

TORCHJD_AGGREGATORS: dict[str, tuple[str, Callable[[int], dict[str, Any]]]] = {
    "torchjd_mgda": ("MGDA", lambda k: {}),
    "torchjd_upgrad": ("UPGrad", lambda k: {}),
    "torchjd_cagrad": ("CAGrad", lambda k: {"c": 0.5}),
    "torchjd_nash_mtl": ("NashMTL", lambda k: {"n_tasks": k}),
}
"""Variant name -> (class name in ``torchjd.aggregation``, its arguments for ``k`` losses), with
the same parameters as the framework's integrator of the same name."""


@register_variant(*TORCHJD_AGGREGATORS)
def torchjd_runner(setup: Setup) -> Runner:
    """torchjd's ``mtl_backward`` and ``jac_to_grad`` with the variant's aggregator (:mod:`.torchjd_step`)."""
    import torchjd.aggregation

    class_name, arguments = TORCHJD_AGGREGATORS[setup.name]
    k = 1 + len(setup.model.modalities)
    aggregator = getattr(torchjd.aggregation, class_name)(**arguments(k))
    amp = Precision(setup.precision, setup.device)
    return setup.runner(
        torchjd_step(setup.model, setup.optimizer, setup.loss, setup.inputs, setup.labels, aggregator, amp)
    )


VARIANTS = tuple(VARIANT_FACTORIES)


def precision_unsupported(precision: str) -> dict[str, str]:
    """The variants that cannot run at ``precision`` (variant -> why)."""
    from ..training.trainer import TrainerSettings

    if precision == "32":
        return {}
    out = {}
    if precision == "16":
        out["mmpareto_reference_style"] = NO_REFERENCE_SCALING
    if "precision" not in {f.name for f in dataclasses.fields(TrainerSettings)}:
        out["mmpareto_stats"] = "this trainer has no trainer.precision (float32 only)"
    return out


def make_runner(
    variant: str,
    case: ModelCase,
    template: MultimodalModel,
    device: torch.device,
    workdir: Path,
    precision: str = "32",
) -> Runner:
    """The runner of ``variant`` on ``case``: its own copy of ``template`` on ``device``, in train
    mode, with a fresh optimizer and the case's fixed batch, stepping at ``precision``."""
    factory = VARIANT_FACTORIES.lookup(variant)
    if variant in case.unsupported:
        raise ValueError(f"variant {variant!r} does not apply to {case.name}: {case.unsupported[variant]}")
    model = copy.deepcopy(template).to(device)
    model.train()
    inputs, labels = make_batch(case, case.batch_size)
    inputs, labels = {m: t.to(device) for m, t in inputs.items()}, labels.to(device)
    setup = Setup(
        variant, case, model, make_optimizer(model), inputs, labels, MultitaskLoss(), device, workdir, precision
    )
    return factory(setup)
