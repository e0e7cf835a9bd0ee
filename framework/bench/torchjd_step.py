"""The same model trained through torchjd 0.18, for comparison."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import torch
from torch import Tensor

from ..losses import MultitaskLoss
from ..models.base import MULTIMODAL, MultimodalModel
from .precision import Precision


def torchjd_step(
    model: MultimodalModel,
    optimizer: torch.optim.Optimizer,
    loss: MultitaskLoss,
    inputs: dict[str, Tensor],
    labels: Tensor,
    aggregator: Any,
    amp: Precision | None = None,
) -> Callable[[], None]:
    """``mtl_backward`` on the encoders' features with the heads as task parameters, then
    ``jac_to_grad`` on the encoders' parameters (one Jacobian row per loss) with ``aggregator``.

    ``amp`` (:class:`~.precision.Precision`): the forward pass and losses under its autocast; with
    float16 the losses are scaled by its scaler and the optimizer steps through it. Under autocast
    ``mtl_backward`` runs with ``parallel_chunk_size=1`` (no ``vmap``, see below)."""
    from torchjd.autojac import jac_to_grad, mtl_backward

    amp = amp if amp is not None else Precision("32", inputs[next(iter(inputs))].device)
    shared = [p for params in model.parameter_groups().values() for p in params]
    heads = {MULTIMODAL: list(model.get_submodule("fusion_head").parameters())}
    heads.update({m: list(model.get_submodule(f"unimodal_heads.{m}").parameters()) for m in model.modalities})

    # under autocast torch's vmapped backward of a convolution mixes float32 and the autocast dtype
    # ("expected scalar type BFloat16 but found Float"): torchjd then takes one backward per loss
    chunk = None if amp.name == "32" else 1

    def step() -> None:
        with amp.autocast():
            features = model.encode(inputs)
            losses = loss(model.classify(features), labels)
        names = list(losses)
        scale = amp.loss_scale()
        mtl_backward(
            [losses[n] if scale is None else losses[n] * scale for n in names],
            features=list(features.values()),
            tasks_params=[heads[n] for n in names],
            shared_params=shared,
            parallel_chunk_size=chunk,
        )
        jac_to_grad(shared, aggregator)
        amp.step(optimizer)
        optimizer.zero_grad(set_to_none=True)

    return step
