"""Numeric kernels shared by the integrators: Gram matrices, robust norms, fused linear combinations.

They work on one parameter group given as ``grads[i][p]`` (loss ``i``, parameter tensor ``p``) and
never flatten it. Half-precision gradients are upcast to float32 for every reduction
(:func:`upcast`); a tensor whose reduction overflows or underflows there is measured again in
float64.
"""

from __future__ import annotations

import torch
from torch import Tensor

TensorLists = list[list[Tensor]]
"""``grads[i][p]``: the gradient of loss ``i`` on parameter tensor ``p`` of the group."""

LOW_PRECISION = (torch.float16, torch.bfloat16)


def upcast(t: Tensor) -> Tensor:
    """``t`` in a precision fit for reductions: float32 for half types, else unchanged."""
    return t.float() if t.dtype in LOW_PRECISION else t


def working_dtype(t: Tensor) -> torch.dtype:
    return torch.float32 if t.dtype in LOW_PRECISION else t.dtype


class foreach:
    """The multi-tensor ops used here: one kernel launch per list instead of one per tensor.

    ``torch._foreach_*`` is private API, but it is what ``torch.optim``'s foreach optimizers run on,
    and the public API has no multi-tensor equivalent; a group holds tens of tensors, and a Python
    loop of per-tensor ops measured several times slower. Every call goes through here, so a change
    of that API is a change of this class only.
    """

    @staticmethod
    def norms(tensors: list[Tensor]) -> list[Tensor]:
        return list(torch._foreach_norm(tensors))

    @staticmethod
    def mul_(tensors: list[Tensor], scalars: float | list[float]) -> None:
        torch._foreach_mul_(tensors, scalars)

    @staticmethod
    def add_(tensors: list[Tensor], others: list[Tensor], alpha: float = 1.0) -> None:
        torch._foreach_add_(tensors, others, alpha=alpha)

    @staticmethod
    def mul(tensors: list[Tensor], scalars: list[float]) -> list[Tensor]:
        return list(torch._foreach_mul(tensors, scalars))


def robust_norms(tensors: list[Tensor]) -> Tensor:
    """Per-tensor 2-norms as float64 on CPU, free of overflow and underflow.

    Norms are taken in the tensors' working precision; a tensor whose norm came out non-finite, or
    zero, is measured again in float64.
    """
    norms = torch.stack(foreach.norms([upcast(t) for t in tensors])).double().cpu()
    for p in torch.nonzero(~torch.isfinite(norms) | (norms == 0)).flatten().tolist():
        norms[p] = tensors[p].double().norm()
    return norms


def _dot(a: Tensor, b: Tensor) -> Tensor:
    """``<a, b>`` as a ``(1,)`` tensor. A ``(1, n) x (n,)`` matrix-vector product: on CPU (MKL,
    2 threads) ``torch.dot`` measured about 5 ms per call whatever the size, ``torch.mv`` 100x less."""
    return torch.mv(a.reshape(1, -1), b.reshape(-1))


def tensor_grams(grads: TensorLists) -> Tensor:
    """Per-tensor Gram matrices ``G_p[i, j] = <g_{i,p}, g_{j,p}>``, shape ``(P, k, k)``, float64 on CPU.

    Dot products run in the gradients' working precision. Tensors where that overflows or
    underflows (a non-finite entry, or a zero norm) are recomputed in float64.
    """
    k, num_tensors = len(grads), len(grads[0])
    grams = torch.empty(num_tensors, k, k, dtype=torch.float64)
    for i in range(k):
        grams[:, i, i] = torch.stack(foreach.norms([upcast(t) for t in grads[i]])).double().cpu().square()
        for j in range(i + 1, k):
            dots = torch.cat([_dot(upcast(a), upcast(b)) for a, b in zip(grads[i], grads[j], strict=True)])
            grams[:, i, j] = grams[:, j, i] = dots.double().cpu()
    diagonal = grams.diagonal(dim1=1, dim2=2)
    suspect = ~torch.isfinite(grams).all(dim=(1, 2)) | (diagonal == 0).any(dim=1)
    for p in torch.nonzero(suspect).flatten().tolist():
        rows = torch.stack([grads[i][p].double().reshape(-1) for i in range(k)])
        grams[p] = rows @ rows.T
    return grams


def accumulate(grads: TensorLists, weights: Tensor, inplace: bool) -> tuple[list[Tensor], float]:
    """``(t, f)`` with ``f * t[p] = sum_i weights[i] * grads[i][p]``, in few passes over memory.

    With ``f = max_i |w_i|``: ``t = (w_0 / f) g_0`` (no pass when ``w_0 = f``), then one fused
    ``t += (w_i / f) g_i`` pass per other loss. Every factor is at most 1 in magnitude, so nothing
    overflows that the plain sum would not. ``t`` lives in ``grads[0]`` (``inplace``) or in a copy
    of it; other rows are read only. The caller folds ``f`` into its final scaling pass.
    """
    first = grads[0] if inplace else [g.clone() for g in grads[0]]
    w = weights.tolist()
    lead = max(abs(x) for x in w)
    if lead == 0.0:
        foreach.mul_(first, 0.0)
        return first, 1.0
    if w[0] != lead:
        foreach.mul_(first, w[0] / lead)
    for i in range(1, len(grads)):
        if w[i] != 0.0:
            foreach.add_(first, grads[i], alpha=w[i] / lead)
    return first, float(lead)
