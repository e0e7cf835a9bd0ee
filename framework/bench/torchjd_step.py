"""The same model trained through torchjd 0.18, for comparison."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import torch
from torch import Tensor

from ..losses import MultitaskLoss
from ..models.base import MULTIMODAL, MultimodalModel


def torchjd_step(
    model: MultimodalModel,
    optimizer: torch.optim.Optimizer,
    loss: MultitaskLoss,
    inputs: dict[str, Tensor],
    labels: Tensor,
    aggregator: Any,
) -> Callable[[], None]:
    """``mtl_backward`` on the encoders' features with the heads as task parameters, then
    ``jac_to_grad`` on the encoders' parameters (one Jacobian row per loss) with ``aggregator``."""
    from torchjd.autojac import jac_to_grad, mtl_backward

    shared = [p for params in model.parameter_groups().values() for p in params]
    heads = {MULTIMODAL: list(model.fusion_head.parameters())}
    heads.update({m: list(model.unimodal_heads[m].parameters()) for m in model.modalities})

    def step() -> None:
        features = model.encode(inputs)
        losses = loss(model.classify(features), labels)
        names = list(losses)
        mtl_backward(
            [losses[n] for n in names],
            features=list(features.values()),
            tasks_params=[heads[n] for n in names],
            shared_params=shared,
        )
        jac_to_grad(shared, aggregator)
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)

    return step
