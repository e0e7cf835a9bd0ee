"""Per-tensor gradient lists as the engine fills them: ``None`` where a loss does not reach a tensor."""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Mapping, Sequence

import torch
from torch import Tensor


def filled(grads: Sequence[Tensor | None], params: list[Tensor]) -> list[Tensor]:
    return [g if g is not None else torch.zeros_like(p) for g, p in zip(grads, params, strict=True)]


def add_up(total: list[Tensor | None], grads: Sequence[Tensor | None]) -> None:
    for i, g in enumerate(grads):
        if g is not None:
            current = total[i]
            total[i] = g if current is None else current + g


def accumulate(params: Sequence[Tensor], grads: Sequence[Tensor | None]) -> None:
    """``.grad += g`` where ``g`` is not ``None``, as ``Tensor.backward`` does."""
    for p, g in zip(params, grads, strict=True):
        if g is None:
            continue
        if p.grad is None:
            p.grad = g
        else:
            p.grad.add_(g)


def split_by_group(
    grads: Sequence[Tensor | None], groups: Mapping[str, list[Tensor]], names: Iterable[str]
) -> Iterator[tuple[str, Sequence[Tensor | None]]]:
    """``grads`` of the parameters of the groups ``names``, concatenated in that order, cut back
    into each group's part."""
    position = 0
    for name in names:
        size = len(groups[name])
        yield name, grads[position : position + size]
        position += size
