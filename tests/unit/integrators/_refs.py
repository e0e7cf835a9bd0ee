"""Independent float64 numpy references for the integrator tests.

Nothing here imports ``framework.integrators``: every expected value is recomputed from the
spec (docs/mmpareto.md) on the raw gradient rows, never from the code under test.
"""

from __future__ import annotations

import numpy as np
import torch
from scipy.optimize import minimize

INTERIOR = (0.001, 0.999)
"""Random pairs keep their min-norm weight this far from the reference solver's degenerate ends."""

# (shapes of the parameter tensors of one group) used by the tensor-API tests
SHAPES = [(3, 4), (5,), (2, 2, 2)]
SIZES = [int(np.prod(s)) for s in SHAPES]


def rng(seed: int) -> np.random.Generator:
    return np.random.default_rng(seed)


def as_np(x) -> np.ndarray:
    return x.detach().double().cpu().numpy() if isinstance(x, torch.Tensor) else np.asarray(x, dtype=np.float64)


def gram(g: np.ndarray) -> np.ndarray:
    return g @ g.T


def cosine(g: np.ndarray) -> np.ndarray:
    n = np.linalg.norm(g, axis=1)
    out = np.zeros((len(g), len(g)))
    for i in range(len(g)):
        for j in range(len(g)):
            if n[i] > 0 and n[j] > 0:
                out[i, j] = float(g[i] @ g[j]) / (n[i] * n[j])
    return np.clip(out, -1.0, 1.0)


def split(v: np.ndarray, sizes) -> list[np.ndarray]:
    return np.split(v, np.cumsum(sizes)[:-1])


# ---------------------------------------------------------------- random gradient matrices


def conflicting_pair(seed: int, d: int, ratio: float = 1.0) -> np.ndarray:
    """Two gradients with cos < 0 whose min-norm weight is strictly inside :data:`INTERIOR`."""
    r = rng(seed)
    while True:
        g = r.standard_normal((2, d))
        g[1] = -0.6 * g[0] * ratio + r.standard_normal(d) * 0.8 * ratio
        c = cosine(g)[0, 1]
        a = two_weight(g, 0.0, 1.0)
        if c < -0.05 and INTERIOR[0] + 1e-3 < a < INTERIOR[1] - 1e-3:
            return g


def aligned(seed: int, k: int, d: int) -> np.ndarray:
    """``k`` gradients with every pairwise cosine > 0 (a shared component plus noise)."""
    r = rng(seed)
    common = r.standard_normal(d)
    g = common + 0.3 * np.linalg.norm(common) / np.sqrt(d) * r.standard_normal((k, d))
    g *= r.uniform(0.2, 3.0, size=(k, 1))
    c = cosine(g)
    assert (c[~np.eye(k, dtype=bool)] > 0).all()
    return g


def with_conflict(seed: int, k: int, d: int) -> np.ndarray:
    """``k`` Gaussian gradients of varied norms, resampled until some pairwise cosine is < 0."""
    r = rng(seed)
    while True:
        g = r.standard_normal((k, d)) * r.uniform(0.3, 3.0, size=(k, 1))
        c = cosine(g)
        if (c[~np.eye(k, dtype=bool)] < -0.05).any():
            return g


# ---------------------------------------------------------------- min-norm references


def two_weight(g: np.ndarray, low: float, high: float) -> float:
    """Closed form ``a = (|g2|^2 - g1.g2) / |g1 - g2|^2`` clipped to ``[low, high]``."""
    g1, g2 = g[0], g[1]
    denom = float((g1 - g2) @ (g1 - g2))
    if denom == 0.0:
        return 0.5
    return float(np.clip((g2 @ g2 - g1 @ g2) / denom, low, high))


def reference_two_weight(g: np.ndarray) -> float:
    """The spec's two-loss weight (Sener & Koltun's ``_min_norm_element_from2``): 0.999 if
    ``g1.g2 >= |g1|^2``, else 0.001 if ``g1.g2 >= |g2|^2``, else the exact minimiser, unclipped."""
    g1, g2 = g[0], g[1]
    g11, g12, g22 = float(g1 @ g1), float(g1 @ g2), float(g2 @ g2)
    if g12 >= g11:
        return 0.999
    if g12 >= g22:
        return 0.001
    return (g22 - g12) / (g11 + g22 - 2.0 * g12)


def scipy_min_norm(G: np.ndarray) -> np.ndarray:
    """Brute-force ``min a^T G a`` on the simplex with SLSQP from several starts."""
    k = G.shape[0]
    scale = max(float(np.abs(np.diag(G)).max()), 1e-300)
    Gs = G / scale
    best, best_val = None, np.inf
    starts = [np.full(k, 1.0 / k)] + [np.eye(k)[i] * 0.9 + 0.1 / k for i in range(k)]
    for x0 in starts:
        res = minimize(
            lambda a: a @ Gs @ a,
            x0,
            jac=lambda a: 2 * Gs @ a,
            bounds=[(0.0, 1.0)] * k,
            constraints=[{"type": "eq", "fun": lambda a: a.sum() - 1.0, "jac": lambda a: np.ones(k)}],
            method="SLSQP",
            options={"ftol": 1e-15, "maxiter": 1000},
        )
        a = np.clip(res.x, 0.0, None)
        a /= a.sum()
        val = a @ Gs @ a
        if val < best_val:
            best, best_val = a, val
    return best


def kkt_violation(G: np.ndarray, a: np.ndarray) -> float:
    """Largest violation of the min-norm optimality conditions, relative to max |G|.

    ``a`` is optimal on the simplex iff ``(G a)_i >= a^T G a`` for all ``i`` (equality on the support).
    """
    scale = max(float(np.abs(G).max()), 1e-300)
    Ga = G @ a
    value = a @ Ga
    below = np.maximum(value - Ga, 0.0).max()
    on_support = np.abs(Ga - value)[a > 1e-9].max() if (a > 1e-9).any() else 0.0
    return float(max(below, on_support) / scale)


# ---------------------------------------------------------------- integrator references


def ref_mmpareto(g: np.ndarray, sizes, gamma: float, rescale: str, weights: np.ndarray | None = None):
    """MMPareto per the spec, in float64. Returns ``(update, weights, h)``.

    ``weights`` may be supplied (e.g. a scipy min-norm solution for k > 2 with conflict).
    """
    k = len(g)
    if weights is None:
        c = cosine(g)
        if k == 1 or (c[~np.eye(k, dtype=bool)] > 0).all():
            weights = np.full(k, 1.0 / k)
        elif k == 2:
            a = reference_two_weight(g)
            weights = np.array([a, 1.0 - a])
        else:
            weights = scipy_min_norm(gram(g))
    h = k * (weights @ g)
    u = g.sum(0)
    out = np.zeros_like(h)
    if rescale == "group":
        hn, un = np.linalg.norm(h), np.linalg.norm(u)
        out = gamma * max(1.0, un / hn) * h if hn > 0 else out
    else:
        for hp, up, op in zip(split(h, sizes), split(u, sizes), split(out, sizes), strict=False):
            hn, un = np.linalg.norm(hp), np.linalg.norm(up)
            if hn > 0:
                op[:] = gamma * max(1.0, un / hn) * hp
    return out, weights, h


def ref_pcgrad(g: np.ndarray, perms: list[list[int]]) -> np.ndarray:
    """PCGrad on explicit vectors: ``perms[i]`` is the order in which g_i meets the others."""
    k = len(g)
    total = np.zeros(g.shape[1])
    for i in range(k):
        gi = g[i].copy()
        for j in perms[i]:
            if j == i:
                continue
            inner = gi @ g[j]
            if inner < 0:
                gi = gi - inner / (g[j] @ g[j]) * g[j]
        total += gi
    return total


def torch_perms(seed: int, k: int, calls: int = 1) -> list[list[list[int]]]:
    """The permutations a ``torch.Generator().manual_seed(seed)`` yields: k per call."""
    gen = torch.Generator().manual_seed(seed)
    return [[torch.randperm(k, generator=gen).tolist() for _ in range(k)] for _ in range(calls)]


def reshape_rows(g: torch.Tensor, shapes) -> list[list[torch.Tensor]]:
    sizes = [int(np.prod(s)) for s in shapes]
    return [[p.reshape(s).clone() for p, s in zip(torch.split(row, sizes), shapes, strict=False)] for row in g]


# ---------------------------------------------------------------- degenerate inputs

EDGE_SIZES = [3, 4, 2]


def edge_case(name: str, dtype: torch.dtype, k: int = 2) -> torch.Tensor:
    """A ``(k, 9)`` gradient matrix (segments ``EDGE_SIZES``) exercising a degenerate situation."""
    r = rng(7)
    g = r.standard_normal((k, sum(EDGE_SIZES)))
    g[1] = -0.5 * g[0] + 0.5 * g[1]  # rows 0 and 1 conflict
    if name == "zeros":
        g[:] = 0.0
    elif name == "one_zero_row":
        g[1] = 0.0
    elif name == "first_zero_row":
        g[0] = 0.0
    elif name == "opposite":
        g[1] = -g[0]
    elif name == "opposite_scaled":
        g[1] = -3.0 * g[0]
    elif name == "identical":
        g[1:] = g[0]
    elif name == "zero_segment":
        g[:, 3:7] = 0.0
    elif name == "opposite_segment":
        g[1, :3] = -g[0, :3]
    elif name == "tiny":
        g *= 1e-30
    elif name == "huge":
        g *= 1e20
    else:
        raise KeyError(name)
    return torch.tensor(g, dtype=dtype)


EDGE_NAMES = [
    "zeros",
    "one_zero_row",
    "first_zero_row",
    "opposite",
    "opposite_scaled",
    "identical",
    "zero_segment",
    "opposite_segment",
    "tiny",
    "huge",
]
