"""The reference code's MMPareto step, written out for comparison (not used for training)."""

from __future__ import annotations

import contextlib
import functools
import operator
from collections.abc import Callable
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor

from ..losses import MultitaskLoss
from ..models.base import MULTIMODAL, MultimodalModel


def _grad(p: Tensor) -> Tensor:
    assert p.grad is not None  # read after a backward that reaches every parameter of the group
    return p.grad


def two_vector_weight(v11: float, v12: float, v22: float) -> float:
    """Weight of the first vector in ``min |a v1 + (1 - a) v2|``, as the reference solver's
    ``_min_norm_element_from2`` returns it: 0.999 or 0.001 in its two degenerate cases, else the
    exact, unclipped minimiser."""
    if v12 >= v11:
        return 0.999
    if v12 >= v22:
        return 0.001
    return (v22 - v12) / (v11 + v22 - 2.0 * v12)


def reference_style_step(
    model: MultimodalModel,
    optimizer: torch.optim.Optimizer,
    loss: MultitaskLoss,
    inputs: dict[str, Tensor],
    labels: Tensor,
    gamma: float = 1.5,
    autocast: Callable[[], contextlib.AbstractContextManager[Any]] = contextlib.nullcontext,
) -> Callable[[], None]:
    """The reference code's MMPareto step.

    One ``backward(retain_graph=True)`` per loss through the whole model, the encoders' gradients
    cloned tensor by tensor into dicts and concatenated for the cosine; the two-vector min-norm
    solver's dot products over the tensor lists (which, as in the reference, include the
    ``"concat"`` entry); then one more full backward of the summed loss and a Python loop over the
    named parameters that rescales each tensor. It needs one encoder per modality (two losses per
    group).
    """
    groups = {group: group.split(".", 1)[1] for group in model.parameter_groups()}
    named = {
        group: [(n, p) for n, p in model.named_parameters() if n.startswith(f"encoders.{m}.")]
        for group, m in groups.items()
    }
    group_of = {n: group for group, params in named.items() for n, _ in params}

    def min_norm_2d(vecs: list[list[Tensor]]) -> list[float]:
        v11 = v12 = v22 = 0.0
        for a, b in zip(vecs[0], vecs[1], strict=False):
            v12 += torch.mul(a, b).sum().item()
            v11 += torch.mul(a, a).sum().item()
            v22 += torch.mul(b, b).sum().item()
        weight = two_vector_weight(v11, v12, v22)
        return [weight, 1.0 - weight]

    def step() -> None:
        with autocast():
            logits = model(inputs)
            losses = loss(logits, labels)
        grads: dict[str, dict[str, dict[str, Tensor]]] = {group: {} for group in groups}
        for name, value in losses.items():
            value.backward(retain_graph=True)
            for group, modality in groups.items():
                if name in (MULTIMODAL, modality):
                    record = {n: _grad(p).data.clone() for n, p in named[group]}
                    record["concat"] = torch.cat([record[n].flatten() for n, _ in named[group]])
                    grads[group][name] = record
            optimizer.zero_grad(set_to_none=True)
        weights = {}
        for group, modality in groups.items():
            tasks = (MULTIMODAL, modality)
            cos = F.cosine_similarity(grads[group][MULTIMODAL]["concat"], grads[group][modality]["concat"], dim=0)
            if cos > 0:
                weights[group] = [0.5, 0.5]
            else:
                weights[group] = min_norm_2d([list(grads[group][t].values()) for t in tasks])
        total = functools.reduce(operator.add, losses.values())
        total.backward()
        for n, p in model.named_parameters():
            if p.grad is None or n not in group_of:
                continue
            group = group_of[n]
            k = weights[group]
            modality = groups[group]
            three_norm = torch.norm(p.grad.data.clone())
            new_grad = 2 * k[0] * grads[group][MULTIMODAL][n] + 2 * k[1] * grads[group][modality][n]
            new_norm = torch.norm(new_grad)
            diff = three_norm / new_norm
            p.grad = diff * new_grad * gamma if diff > 1 else new_grad * gamma
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)

    return step
