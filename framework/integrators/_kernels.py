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
    def norms(tensors: list[Tensor], dtype: torch.dtype | None = None) -> list[Tensor]:
        return list(torch._foreach_norm(tensors, 2, dtype=dtype))

    @staticmethod
    def mul_(tensors: list[Tensor], scalars: float | list[float] | Tensor | list[Tensor]) -> None:
        torch._foreach_mul_(tensors, scalars)

    @staticmethod
    def add_(tensors: list[Tensor], others: list[Tensor], alpha: float = 1.0) -> None:
        torch._foreach_add_(tensors, others, alpha=alpha)

    @staticmethod
    def mul(tensors: list[Tensor], scalars: list[float]) -> list[Tensor]:
        return list(torch._foreach_mul(tensors, scalars))


def robust_norms(tensors: list[Tensor]) -> Tensor:
    """Per-tensor 2-norms as float64 on the tensors' device, free of overflow and underflow.

    The squares are accumulated in float64 (``_foreach_norm``'s ``dtype``): a float32 or half
    tensor's squared norm can neither overflow nor underflow there, so no value needs measuring
    again and nothing is read on the host.
    """
    return torch.stack(foreach.norms([upcast(t) for t in tensors], dtype=torch.float64))


def _dot(a: Tensor, b: Tensor) -> Tensor:
    """``<a, b>`` as a ``(1,)`` tensor. A ``(1, n) x (n,)`` matrix-vector product: on CPU (MKL,
    2 threads) ``torch.dot`` measured about 5 ms per call whatever the size, ``torch.mv`` 100x less."""
    return torch.mv(a.reshape(1, -1), b.reshape(-1))


def tensor_grams(grads: TensorLists) -> Tensor:
    """Per-tensor Gram matrices ``G_p[i, j] = <g_{i,p}, g_{j,p}>``, shape ``(P, k, k)``, float64 on
    the gradients' device.

    Dot products run in the gradients' working precision. Tensors where that overflows or
    underflows (a non-finite entry, or a zero norm) are recomputed in float64.
    """
    k, num_tensors = len(grads), len(grads[0])
    grams = torch.empty(num_tensors, k, k, dtype=torch.float64, device=grads[0][0].device)
    for i in range(k):
        grams[:, i, i] = torch.stack(foreach.norms([upcast(t) for t in grads[i]])).double().square()
        for j in range(i + 1, k):
            dots = torch.cat([_dot(upcast(a), upcast(b)) for a, b in zip(grads[i], grads[j], strict=True)])
            grams[:, i, j] = grams[:, j, i] = dots.double()
    diagonal = grams.diagonal(dim1=1, dim2=2)
    suspect = ~torch.isfinite(grams).all(dim=(1, 2)) | (diagonal == 0).any(dim=1)
    # The one host read of an integration: which tensors need their Gram matrix again in float64
    # (a data-dependent choice of work; always recomputing would cost a float64 pass per pair).
    if not bool(suspect.any()):
        return grams
    for p in torch.nonzero(suspect).flatten().tolist():
        rows = torch.stack([grads[i][p].double().reshape(-1) for i in range(k)])
        grams[p] = rows @ rows.T
    return grams


def accumulate(grads: TensorLists, weights: Tensor, inplace: bool) -> tuple[list[Tensor], Tensor | float]:
    """``(t, f)`` with ``f * t[p] = sum_i weights[i] * grads[i][p]``, in few passes over memory.

    With ``f = max_i |w_i|``: ``t = (w_0 / f) g_0``, then one fused ``t += (w_i / f) g_i`` pass per
    other loss. Every factor is at most 1 in magnitude, so nothing overflows that the plain sum
    would not. ``t`` lives in ``grads[0]`` (``inplace``) or in a copy of it; other rows are read
    only. The caller folds ``f`` into its final scaling pass (:func:`scale_`).

    The weights stay on the gradients' device and ``f`` is a float64 device scalar: nothing is read
    on the host. Half-precision gradients (or a group of mixed dtypes) take the host path instead
    (``f`` a float), where the coefficients are applied as float32 scalars.
    """
    first = grads[0]
    if not device_scalars(first):
        # Half gradients: a device coefficient would be rounded to half precision in the kernel;
        # the weights are read to the host to be applied as float32 scalars.
        return _accumulate_on_host(grads, weights, inplace)
    weights = weights.to(first[0].device, torch.float64)
    lead = weights.abs().max()
    positive = lead > 0
    coefficients = torch.where(positive, weights / torch.where(positive, lead, 1.0), 0.0).to(first[0].dtype)
    if inplace:
        foreach.mul_(first, coefficients[0])
    else:
        first = list(torch._foreach_mul(first, coefficients[0]))
    for i in range(1, len(grads)):
        torch._foreach_addcmul_(first, grads[i], [coefficients[i]] * len(first))
    return first, torch.where(positive, lead, 1.0)


def device_scalars(tensors: list[Tensor]) -> bool:
    """Whether device scalars apply to ``tensors`` exactly as float scalars would: one dtype, not half."""
    dtype = tensors[0].dtype
    return dtype not in LOW_PRECISION and all(t.dtype == dtype for t in tensors)


def scale_(tensors: list[Tensor], factors: Tensor | float) -> None:
    """``tensors[p] *= factors[p]`` (``factors`` a ``(P,)`` tensor) or ``*= factors`` (a scalar).

    Device factors are applied on the device, except to half gradients (see :func:`accumulate`)."""
    if not isinstance(factors, Tensor):
        if factors != 1.0:
            foreach.mul_(tensors, float(factors))
        return
    if not device_scalars(tensors):
        # Half gradients: applied as float32 scalars, read on the host (see accumulate).
        foreach.mul_(tensors, factors.tolist() if factors.dim() else float(factors))
        return
    factors = factors.to(tensors[0].device, tensors[0].dtype)
    foreach.mul_(tensors, list(factors.unbind()) if factors.dim() else factors)


def _accumulate_on_host(grads: TensorLists, weights: Tensor, inplace: bool) -> tuple[list[Tensor], float]:
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
