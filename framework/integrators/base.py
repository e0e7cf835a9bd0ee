"""Base class of integrators: turn the per-loss gradients on one parameter group into one update.

An integrator sees the group as ``k`` per-loss gradients, each split into the group's parameter
tensors. Every integrator here decides from Gram matrices of those gradients (group-level and
per-tensor), so the trainer never has to flatten a group into one vector: the Gram matrices are
accumulated tensor by tensor and the update is applied tensor by tensor with ``torch._foreach``
ops. The flat ``(k, d)`` API of :meth:`Integrator.__call__` runs the very same code on views.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import torch
from torch import Tensor

TensorLists = list[list[Tensor]]
"""``grads[i][p]``: the gradient of loss ``i`` on parameter tensor ``p`` of the group."""


@dataclass(frozen=True)
class Decision:
    """What an integrator decided for one group on one step (CPU, float64).

    ``gram`` is the group Gram matrix ``G[i, j] = <g_i, g_j>``; ``weights`` are the integrator's
    weights on the per-loss gradients (before any magnitude rule); ``update_norm`` is ``|update|``.
    """

    gram: Tensor
    weights: Tensor
    update_norm: float

    @property
    def norms(self) -> Tensor:
        return self.gram.diagonal().clamp_min(0).sqrt()

    @property
    def cosine(self) -> Tensor:
        return cosine_from_gram(self.gram)

    @property
    def sum_norm(self) -> float:
        return float(self.gram.sum().clamp_min(0).sqrt())


def cosine_from_gram(gram: Tensor) -> Tensor:
    """Pairwise cosines; 0 where either gradient is zero."""
    norms = gram.diagonal().clamp_min(0).sqrt()
    denom = norms[:, None] * norms[None, :]
    safe = torch.where(denom > 0, denom, torch.ones_like(denom))
    return torch.where(denom > 0, gram / safe, torch.zeros_like(gram)).clamp(-1.0, 1.0)


LOW_PRECISION = (torch.float16, torch.bfloat16)


def _working(t: Tensor) -> Tensor:
    return t.float() if t.dtype in LOW_PRECISION else t


def robust_norms(tensors: list[Tensor]) -> Tensor:
    """Per-tensor 2-norms as float64 on CPU, free of overflow and underflow.

    Norms are taken in the tensors' precision (float32 for half types); a tensor whose norm came
    out non-finite, or zero, is measured again in float64.
    """
    norms = torch.stack(torch._foreach_norm([_working(t) for t in tensors])).double().cpu()
    for p in torch.nonzero(~torch.isfinite(norms) | (norms == 0)).flatten().tolist():
        norms[p] = tensors[p].double().norm()
    return norms


def _dot(a: Tensor, b: Tensor) -> Tensor:
    """``<a, b>`` as a ``(1,)`` tensor. A ``(1, n) x (n,)`` matrix-vector product: on CPU (MKL,
    2 threads) ``torch.dot`` measured about 5 ms per call whatever the size, ``torch.mv`` 100x less."""
    return torch.mv(a.reshape(1, -1), b.reshape(-1))


def tensor_grams(grads: TensorLists) -> Tensor:
    """Per-tensor Gram matrices ``G_p[i, j] = <g_{i,p}, g_{j,p}>``, shape ``(P, k, k)``, float64 on CPU.

    Dot products run in the gradients' precision (float32 for half types). Tensors where that
    overflows or underflows (a non-finite entry, or a zero norm) are recomputed in float64.
    """
    k, num_tensors = len(grads), len(grads[0])
    grams = torch.empty(num_tensors, k, k, dtype=torch.float64)
    for i in range(k):
        grams[:, i, i] = torch.stack(torch._foreach_norm([_working(t) for t in grads[i]])).double().cpu().square()
        for j in range(i + 1, k):
            dots = torch.cat([_dot(_working(a), _working(b)) for a, b in zip(grads[i], grads[j])])
            grams[:, i, j] = grams[:, j, i] = dots.double().cpu()
    diagonal = grams.diagonal(dim1=1, dim2=2)
    suspect = ~torch.isfinite(grams).all(dim=(1, 2)) | (diagonal == 0).any(dim=1)
    for p in torch.nonzero(suspect).flatten().tolist():
        rows = torch.stack([grads[i][p].double().reshape(-1) for i in range(k)])
        grams[p] = rows @ rows.T
    return grams


def accumulate(grads: TensorLists, coefficients: Tensor, inplace: bool) -> tuple[list[Tensor], float]:
    """``(t, f)`` with ``f * t[p] = sum_i coefficients[i] * grads[i][p]``, in few passes over memory.

    With ``(k,)`` coefficients and ``f = max_i |c_i|``: ``t = (c_0 / f) g_0`` (no pass when
    ``c_0 = f``), then one fused ``t += (c_i / f) g_i`` pass per other loss. Every factor is at most
    1 in magnitude, so nothing overflows that the plain sum would not. ``t`` lives in ``grads[0]``
    (``inplace``) or in a copy of it; other rows are read only. The caller folds ``f`` into its
    final scaling pass. ``(P, k)`` coefficients are applied term by term, with ``f = 1``.
    """
    k = len(grads)
    first = grads[0] if inplace else [g.clone() for g in grads[0]]
    if coefficients.dim() == 1:
        c = coefficients.tolist()
        lead = max(abs(x) for x in c)
        if lead == 0.0:
            torch._foreach_mul_(first, 0.0)
            return first, 1.0
        if c[0] != lead:
            torch._foreach_mul_(first, c[0] / lead)
        for i in range(1, k):
            if c[i] != 0.0:
                torch._foreach_add_(first, grads[i], alpha=c[i] / lead)
        return first, float(lead)
    columns = coefficients.T.tolist()
    torch._foreach_mul_(first, columns[0])
    for i in range(1, k):
        torch._foreach_add_(first, torch._foreach_mul(grads[i], columns[i]))
    return first, 1.0


def combine(grads: TensorLists, coefficients: Tensor, inplace: bool) -> list[Tensor]:
    """``out[p] = sum_i coefficients[p, i] * grads[i][p]``; ``coefficients`` is ``(k,)`` or ``(P, k)``.

    With ``inplace`` the result is written into ``grads[0]`` and the other lists are left as they are.
    """
    out, factor = accumulate(grads, coefficients, inplace)
    if factor != 1.0:
        torch._foreach_mul_(out, factor)
    assert len(out) == len(grads[0])
    return out


class Integrator(ABC):
    """Turns ``k`` per-loss gradients on one parameter group into one update.

    Row (loss) 0 is the multimodal loss. A single loss passes through unchanged (a parameter that
    one loss reaches gets its plain gradient). After each call, :attr:`last` holds the
    :class:`Decision` for logging.
    """

    name: str = ""

    def __init__(self) -> None:
        self.last: Decision | None = None

    @abstractmethod
    def integrate(self, grads: TensorLists, grams: Tensor, inplace: bool = False) -> list[Tensor]:
        """Return the per-tensor update from per-loss per-tensor ``grads`` and their ``(P, k, k)`` ``grams``."""

    def integrate_tensors(self, grads: TensorLists, inplace: bool = False) -> list[Tensor]:
        """Tensor-by-tensor entry point used by the trainer (``inplace`` reuses ``grads``' storage)."""
        if len(grads) == 0 or len(grads[0]) == 0:
            raise ValueError("integrator needs at least one loss and one parameter tensor")
        grams = tensor_grams(grads)
        if len(grads) == 1:
            update = grads[0] if inplace else [g.clone() for g in grads[0]]
            self.last = record(grams, torch.ones(1, dtype=torch.float64), update)
            return update
        return self.integrate(grads, grams, inplace=inplace)

    def __call__(self, grads: Tensor, segments: Sequence[int] | None = None) -> Tensor:
        """Combine a ``(k, d)`` matrix of per-loss gradients into a ``(d,)`` update.

        ``segments`` are the sizes of the group's parameter tensors, in order (default: one).
        """
        if grads.dim() != 2 or grads.shape[0] == 0:
            raise ValueError(f"grads must have shape (k, d) with k >= 1, got {tuple(grads.shape)}")
        sizes = [grads.shape[1]] if segments is None else [int(s) for s in segments]
        if sum(sizes) != grads.shape[1] or any(s < 0 for s in sizes):
            raise ValueError(f"segments {sizes} must be non-negative and sum to d={grads.shape[1]}")
        per_loss = [list(torch.split(row, sizes)) for row in grads]
        return torch.cat(self.integrate_tensors(per_loss, inplace=False))

    def state_dict(self) -> dict[str, Any]:
        return {}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        del state

    def __repr__(self) -> str:
        params = ", ".join(f"{k}={v!r}" for k, v in self.hparams().items())
        return f"{type(self).__name__}({params})"

    def hparams(self) -> dict[str, Any]:
        return {}


def record(grams: Tensor, weights: Tensor, update: list[Tensor], update_norm: float | None = None) -> Decision:
    """The decision for logging; ``update_norm`` is measured from ``update`` unless given."""
    if update_norm is None:
        update_norm = float(robust_norms(update).square().sum().sqrt()) if update else 0.0
    return Decision(gram=grams.sum(0), weights=weights.detach().double().cpu(), update_norm=update_norm)
