"""Minimum-norm point of the convex hull of gradients (the MGDA sub-problem), from their Gram matrix.

``min_a a^T G a`` subject to ``a >= 0, sum(a) = 1``. Two gradients have a closed form; for more,
the problem is solved exactly by enumerating supports (``k`` is the number of losses, a handful).
"""

from __future__ import annotations

import itertools

import numpy as np
import torch
from torch import Tensor

MAX_EXACT_LOSSES = 10


def two_vector_weight(g00: float, g01: float, g11: float, low: float = 0.0, high: float = 1.0) -> float:
    """Weight ``a`` of the first vector in ``min |a v0 + (1 - a) v1|``, clipped to ``[low, high]``.

    The minimiser is ``a = (|v1|^2 - v0.v1) / |v0 - v1|^2``; with ``v0 == v1`` every ``a`` is optimal
    and ``1/2`` is returned.
    """
    denom = g00 + g11 - 2.0 * g01
    if denom <= 0.0:
        return min(max(0.5, low), high)
    return min(max((g11 - g01) / denom, low), high)


def sener_koltun_two_vector_weight(g00: float, g01: float, g11: float) -> float:
    """Weight ``a`` of the first vector as Sener & Koltun's ``_min_norm_element_from2`` returns it.

    ``0.999`` if ``v0.v1 >= |v0|^2``, else ``0.001`` if ``v0.v1 >= |v1|^2`` (the two degenerate
    cases, where the exact minimiser lies at or beyond an end of the segment), else the exact
    minimiser ``(|v1|^2 - v0.v1) / |v0 - v1|^2``, which then lies strictly inside ``(0, 1)``: no clipping.
    """
    if g01 >= g00:
        return 0.999
    if g01 >= g11:
        return 0.001
    return (g11 - g01) / (g00 + g11 - 2.0 * g01)


def two_vector_weight_tensor(g00: Tensor, g01: Tensor, g11: Tensor) -> Tensor:
    """:func:`two_vector_weight` (unclipped bounds ``[0, 1]``) on 0-dim tensors, on their device."""
    denom = g00 + g11 - 2.0 * g01
    degenerate = denom <= 0.0
    return torch.where(degenerate, 0.5, (g11 - g01) / torch.where(degenerate, 1.0, denom)).clamp(0.0, 1.0)


def sener_koltun_two_vector_weight_tensor(g00: Tensor, g01: Tensor, g11: Tensor) -> Tensor:
    """:func:`sener_koltun_two_vector_weight` on 0-dim tensors, on their device."""
    denom = g00 + g11 - 2.0 * g01
    exact = (g11 - g01) / torch.where(denom != 0.0, denom, 1.0)  # used only where denom > 0
    return torch.where(g01 >= g00, 0.999, torch.where(g01 >= g11, 0.001, exact))


def min_norm_weights(gram: Tensor) -> Tensor:
    """Exact min-norm weights on the simplex for a ``(k, k)`` Gram matrix (float64 result).

    One or two losses: on ``gram``'s device, nothing read on the host. More: solved on the host.
    """
    k = gram.shape[0]
    if k == 1:
        return torch.ones(1, dtype=torch.float64, device=gram.device)
    if k == 2:
        g = gram.detach().double()
        a = two_vector_weight_tensor(g[0, 0], g[0, 1], g[1, 1])
        return torch.stack([a, 1.0 - a])
    # Three or more losses: the exact solver enumerates supports in numpy, one read of the Gram matrix.
    host = gram.detach().double().cpu().numpy()
    if k > MAX_EXACT_LOSSES:
        raise ValueError(f"min-norm solver supports at most {MAX_EXACT_LOSSES} losses per group, got {k}")
    return torch.from_numpy(_enumerate_supports(host))


def _enumerate_supports(g: np.ndarray) -> np.ndarray:
    k = g.shape[0]
    scale = max(float(np.abs(np.diag(g)).max()), 1e-300)
    gs = g / scale
    best, best_value = np.full(k, 1.0 / k), float(np.full(k, 1.0 / k) @ gs @ np.full(k, 1.0 / k))
    for size in range(1, k + 1):
        for support in itertools.combinations(range(k), size):
            idx = list(support)
            kkt = np.zeros((size + 1, size + 1))
            kkt[:size, :size] = gs[np.ix_(idx, idx)]
            kkt[:size, size] = kkt[size, :size] = 1.0
            rhs = np.zeros(size + 1)
            rhs[size] = 1.0
            solution = np.linalg.lstsq(kkt, rhs, rcond=None)[0][:size]
            if solution.min() < -1e-12 or abs(solution.sum() - 1.0) > 1e-9:
                continue
            a = np.zeros(k)
            a[idx] = np.clip(solution, 0.0, None)
            a /= a.sum()
            value = float(a @ gs @ a)
            if value < best_value - 1e-15:
                best, best_value = a, value
    return best
