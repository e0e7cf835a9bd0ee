"""The framework's integrators against a transcription of LibMTL's weighting rules.

LibMTL (median-research-group/LibMTL@4336804847eaa5e0b924b743d76beec7ac3fdc97) implements MGDA,
PCGrad, CAGrad, GradVac, Nash-MTL and Aligned-MTL independently of torchjd, on which several of the
framework's integrators are built. Each rule is transcribed below in numpy (cvxpy/scipy where
LibMTL solves a problem), importing nothing from ``framework``, and applied to the same gradient
matrices as ``get_integrator(name)``: random, with conflicts, and with one gradient 1e-3 times the
others. LibMTL's combination is ``sum_i w_i g_i`` over the flattened shared parameters
(``abstract_weighting.py:102-122``), so a group of one tensor is LibMTL's whole model.

Where the two differ by a convention it is stated at the rule, and the comparison is made with the
convention aligned; every rule also has a deliberately wrong control (the other convention, or a
broken step) that must differ. ``MAX_DIFF`` records the measured agreement.
"""

from __future__ import annotations


import cvxpy as cp
import numpy as np
import pytest
import torch
from scipy.optimize import minimize

from tests.unit.integrators import _asserts as A
from framework.integrators import get_integrator

LIBMTL = "median-research-group/LibMTL@4336804847eaa5e0b924b743d76beec7ac3fdc97 LibMTL/weighting"


# ---------------------------------------------------------------- gradient matrices


def matrix(kind: str, k: int, seed: int = 0, d: int = 10) -> np.ndarray:
    """``random``: i.i.d. normal rows; ``conflict``: every other row pushed against row 0 (cos < 0);
    ``ratio``: ``conflict`` with row 0 scaled by 1e-3."""
    r = np.random.default_rng(1000 * seed + 10 * k + {"random": 0, "conflict": 1, "ratio": 2}[kind])
    g = r.standard_normal((k, d))
    if kind != "random":
        g[1:] -= 1.5 * g[0] * np.linalg.norm(g[1:], axis=1, keepdims=True) / np.linalg.norm(g[0])
        assert (g[1:] @ g[0] < 0).all()
    if kind == "ratio":
        g[0] *= 1e-3
    return g


KINDS = ["random", "conflict", "ratio"]
CASES = [pytest.param(kind, k, id=f"{kind}-k{k}") for kind in KINDS for k in (2, 3, 4)]


def framework_update(name: str, g: np.ndarray, **params) -> np.ndarray:
    update, _ = A.run(get_integrator(name, **params), g)
    return update


def rel_diff(a: np.ndarray, b: np.ndarray) -> float:
    return float(np.abs(a - b).max() / max(np.abs(b).max(), 1e-300))


# Tolerances on max |framework - LibMTL| / max |LibMTL| over CASES (conventions aligned). Measured
# (CPU, float64): mgda 3e-10 (Frank-Wolfe's residual), pcgrad 7e-16, cagrad 1.8e-5 (SLSQP against
# CLARABEL), gradvac 2e-15, nash_mtl 5e-9 (1.5e-2 at the 1e-3 ratio: NASH_RATIO_TOL), aligned_mtl 3e-15.
MAX_DIFF = {
    "mgda": 1e-9,
    "pcgrad": 1e-12,
    "cagrad": 1e-4,
    "gradvac": 1e-12,
    "nash_mtl": 1e-7,
    "aligned_mtl": 1e-12,
}


# ---------------------------------------------------------------- MGDA (MGDA.py)


def libmtl_min_norm_weights(g: np.ndarray, exact_ends: bool, stop: float = 1e-5, max_iter: int = 250) -> np.ndarray:
    """LibMTL's ``_find_min_norm_element`` (MGDA.py:22-108): Sener & Koltun's solver.

    The two-vector step (MGDA.py:24-35) returns 0.999 / 0.001 when one vector's projection on the
    other is longer than itself (the min-norm point is then the shorter vector, weight 1 / 0); with
    ``exact_ends`` it returns 1 / 0. More than two vectors: the best pair (MGDA.py:37-45), then
    Frank-Wolfe steps with the two-vector line search (MGDA.py:93-108) until the weights move by
    less than ``stop`` (1e-5, MGDA.py:77) or ``max_iter`` (250) iterations.
    """
    high, low = (1.0, 0.0) if exact_ends else (0.999, 0.001)

    def from2(v11: float, v12: float, v22: float) -> tuple[float, float]:
        if v12 >= v11:
            return high, v11
        if v12 >= v22:
            return low, v22
        gamma = -(v12 - v22) / (v11 + v22 - 2 * v12)
        return gamma, v22 + gamma * (v12 - v22)

    def projection_to_simplex(y: np.ndarray) -> np.ndarray:  # MGDA.py:47-58
        m = len(y)
        sorted_y = np.sort(y)[::-1]
        tmpsum, tmax_f = 0.0, (y.sum() - 1.0) / m
        for i in range(m - 1):
            tmpsum += sorted_y[i]
            tmax = (tmpsum - 1) / (i + 1.0)
            if tmax > sorted_y[i + 1]:
                tmax_f = tmax
                break
        return np.maximum(y - tmax_f, 0.0)

    def next_point(cur: np.ndarray, grad: np.ndarray, n: int) -> np.ndarray:  # MGDA.py:60-74
        proj = grad - grad.sum() / n
        tm1 = -cur[proj < 0] / proj[proj < 0]
        tm2 = (1.0 - cur[proj > 0]) / proj[proj > 0]
        t = 1.0
        if (tm1 > 1e-7).any():
            t = tm1[tm1 > 1e-7].min()
        if (tm2 > 1e-7).any():
            t = min(t, tm2[tm2 > 1e-7].min())
        return projection_to_simplex(proj * t + cur)

    gram = g @ g.T
    n = len(g)
    best, dmin = None, 1e8
    for i in range(n):
        for j in range(i + 1, n):
            c, dist = from2(gram[i, i], gram[i, j], gram[j, j])
            if dist < dmin:
                dmin, best = dist, (i, j, c)
    assert best is not None
    sol = np.zeros(n)
    sol[best[0]], sol[best[1]] = best[2], 1 - best[2]
    if n < 3:
        return sol
    for _ in range(max_iter):
        new = next_point(sol, -gram @ sol, n)
        nc, _ = from2(sol @ gram @ sol, sol @ gram @ new, new @ gram @ new)
        new_sol = nc * sol + (1 - nc) * new
        if np.abs(new_sol - sol).sum() < stop:
            return sol
        sol = new_sol
    return sol


def libmtl_mgda(g: np.ndarray, normalisation: str = "none", exact_ends: bool = True, **solver) -> np.ndarray:
    """MGDA.py:110-136: normalise the gradients (``mgda_gn``: none, l2, loss, loss+), weigh, combine
    the *normalised* gradients with the min-norm weights."""
    if normalisation == "l2":
        g = g / np.linalg.norm(g, axis=1, keepdims=True)
    elif normalisation != "none":
        raise ValueError(normalisation)
    return libmtl_min_norm_weights(g, exact_ends, **solver) @ g


@pytest.mark.parametrize(("kind", "k"), CASES)
def test_mgda_matches_libmtl(kind: str, k: int):
    """Conventions: ``mgda_gn='none'`` (the framework's MGDA has no normalisation option); the
    two-vector step's degenerate ends exact (1 / 0, not 0.999 / 0.001); Frank-Wolfe run to 1e-13
    (LibMTL stops at 1e-5: the framework's weights are the exact min-norm ones).
    Controls: ``mgda_gn='l2'``; LibMTL's default solver tolerance where it has not converged."""
    g = matrix(kind, k)
    ours = framework_update("mgda", g)
    ref = libmtl_mgda(g, stop=1e-13, max_iter=200_000)
    assert rel_diff(ours, ref) < MAX_DIFF["mgda"]
    control = libmtl_mgda(g, normalisation="l2")
    assert rel_diff(ours, control) > 1e-3


def test_mgda_libmtl_degenerate_end_is_0999():
    """Two aligned gradients with ``g_0 . g_1 >= |g_0|^2``: the min-norm point is ``g_0`` (weight 1);
    LibMTL's literal rule gives 0.999 (MGDA.py:25-28), off by 1e-3 of ``g_0 - g_1``."""
    g = np.array([[1.0, 0.0, 0.0], [2.0, 0.5, 0.0]])
    ours = framework_update("mgda", g)
    np.testing.assert_allclose(ours, libmtl_mgda(g, exact_ends=True), rtol=0, atol=1e-15)
    np.testing.assert_allclose(libmtl_mgda(g, exact_ends=False) - ours, 0.001 * (g[1] - g[0]), atol=1e-15)


# ---------------------------------------------------------------- PCGrad (PCGrad.py)


def libmtl_pcgrad(g: np.ndarray, perms: list[list[int]], eps: float = 1e-8, skip_self: bool = False) -> np.ndarray:
    """PCGrad.py:28-37: for each ``i``, over every ``j`` (``i`` included, unless ``skip_self``) in the
    order ``perms[i]``, subtract the projection of ``g_i^PC`` on ``g_j`` when ``g_i^PC . g_j < 0``
    (denominator ``|g_j|^2 + 1e-8``); the update is the sum of the ``g_i^PC``."""
    pc = g.copy()
    for i in range(len(g)):
        for j in perms[i]:
            if skip_self and j == i:
                continue
            inner = pc[i] @ g[j]
            if inner < 0:
                pc[i] -= inner * g[j] / (g[j] @ g[j] + eps)
    return pc.sum(0)


def replayed_perms(seed: int, k: int, calls: int) -> list[list[list[int]]]:
    """The framework's order: ``torch.randperm(k)`` per gradient, on a generator seeded with ``seed``."""
    generator = torch.Generator().manual_seed(seed)
    return [[torch.randperm(k, generator=generator).tolist() for _ in range(k)] for _ in range(calls)]


@pytest.mark.parametrize(("kind", "k"), CASES)
def test_pcgrad_matches_libmtl_with_the_same_order(kind: str, k: int):
    """Conventions: LibMTL shuffles with Python's ``random``; the framework with ``torch.randperm`` on
    its own seeded generator: the reference replays the framework's permutations (three calls, so
    the generator's sequence is checked too). LibMTL adds 1e-8 to ``|g_j|^2``, the framework nothing:
    aligned with ``eps=0``; LibMTL's literal rule is within ``1e-8 / min |g_j|^2`` (relative). LibMTL
    also visits ``j = i`` (see the next test); on these matrices that never projects.
    Control: the reversed permutations (with k >= 3 and a conflict, the order matters)."""
    integrator = get_integrator("pcgrad", seed=5)
    worst, literal, control = 0.0, 0.0, 0.0
    for step, perms in enumerate(replayed_perms(5, k, calls=3)):
        g = matrix(kind, k, seed=step)
        ours, _ = A.run(integrator, g)
        worst = max(worst, rel_diff(ours, libmtl_pcgrad(g, perms, eps=0.0)))
        literal = max(literal, rel_diff(ours, libmtl_pcgrad(g, perms)) * float((g * g).sum(1).min()) / 1e-8)
        control = max(control, rel_diff(ours, libmtl_pcgrad(g, [p[::-1] for p in perms], eps=0.0)))
    assert worst < MAX_DIFF["pcgrad"]
    assert literal < 10
    if k >= 3 and kind != "random":
        assert control > 1e-3


def test_pcgrad_libmtl_also_projects_on_the_gradients_own_direction():
    """LibMTL's loop visits ``j = i`` too (PCGrad.py:30-36); torchjd's PCGrad (``_pcgrad.py``,
    ``if j == i: continue``) and the framework skip it. The two differ where, with k >= 3,
    earlier projections have turned ``g_i^PC`` against ``g_i`` itself before ``i`` comes in the
    order: LibMTL then projects once more. Measured on the 200 matrices below (3-5 x 4, row norms
    0.1 to 10): 9 differ, by up to 8% of the update; with ``skip_self`` all match to 2e-15."""
    differ = 0
    for seed in range(200):
        r = np.random.default_rng(seed)
        k = int(r.integers(3, 6))
        g = r.standard_normal((k, 4)) * r.uniform(0.1, 10, (k, 1))
        ours, _ = A.run(get_integrator("pcgrad", seed=seed), g)
        perms = replayed_perms(seed, k, calls=1)[0]
        assert rel_diff(ours, libmtl_pcgrad(g, perms, eps=0.0, skip_self=True)) < MAX_DIFF["pcgrad"]
        differ += rel_diff(ours, libmtl_pcgrad(g, perms, eps=0.0)) > 1e-6
    assert differ > 0


# ---------------------------------------------------------------- CAGrad (CAGrad.py)


def libmtl_cagrad(g: np.ndarray, calpha: float = 0.5, rescale: int = 0, ftol: float = 1e-14) -> np.ndarray:
    """CAGrad.py:37-63: ``w = argmin_{simplex} w^T G b + c sqrt(w^T G w + 1e-8)`` (``b`` uniform,
    ``c = calpha |g_0| + 1e-8``, ``|g_0| = sqrt(mean(G) + 1e-8)``) by SLSQP from the uniform point;
    ``update = mean(g) + c / |g_w| g_w``, divided by ``1 + calpha^2`` (``rescale=1``, LibMTL's
    default) or ``1 + calpha`` (``rescale=2``)."""
    k = len(g)
    gram = g @ g.T
    g0_norm = np.sqrt(gram.mean() + 1e-8)
    b = np.ones(k) / k
    c = calpha * g0_norm + 1e-8

    def objective(x: np.ndarray) -> float:
        return float(x @ gram @ b + c * np.sqrt(x @ gram @ x + 1e-8))

    res = minimize(
        objective,
        b.copy(),
        bounds=[(0, 1)] * k,
        constraints=({"type": "eq", "fun": lambda x: 1 - x.sum()},),
        options={"ftol": ftol, "maxiter": 1000},
    )
    gw = res.x @ g
    update = g.mean(0) + c / (np.linalg.norm(gw) + 1e-8) * gw
    return update / {0: 1.0, 1: 1 + calpha**2, 2: 1 + calpha}[rescale]


@pytest.mark.parametrize(("kind", "k"), CASES)
def test_cagrad_matches_libmtl(kind: str, k: int):
    """Conventions: ``rescale=0`` (the paper's update and torchjd's; LibMTL's default ``rescale=1``
    divides it by ``1 + c^2``); ``calpha = c = 0.5``; SLSQP run to ``ftol`` 1e-14 (LibMTL: scipy's
    default 1e-6) against torchjd's CLARABEL: agreement to the solvers' precision.
    Control: LibMTL's default ``rescale=1`` (a factor 1/1.25)."""
    g = matrix(kind, k)
    ours = framework_update("cagrad", g, c=0.5)
    ref = libmtl_cagrad(g, calpha=0.5, rescale=0)
    assert rel_diff(ours, ref) < MAX_DIFF["cagrad"]
    assert rel_diff(ours, libmtl_cagrad(g, calpha=0.5, rescale=1)) > 0.15


# ---------------------------------------------------------------- GradVac (GradVac.py)


class LibMTLGradVac:
    """GradVac.py:26-77. ``segments``: LibMTL's parameter granularity (``GradVac_group_type``): one
    segment is ``0`` (whole model); one per parameter tensor is ``2`` (all_matrix). State: the EMA
    ``rho_T[i, j, segment]`` of the cosines, zeros at the first step (GradVac.py:42, 73)."""

    def __init__(self, k: int, segments: list[int], beta: float = 0.5, eps: float = 1e-8) -> None:
        self.segments, self.beta, self.eps = segments, beta, eps
        self.rho = np.zeros((k, k, len(segments)))

    def step(self, g: np.ndarray, orders: list[list[int]]) -> np.ndarray:
        """``orders[i]``: the other indices in the order ``i`` visits them (GradVac.py:60-62)."""
        bounds = np.cumsum([0, *self.segments])
        pc = g.copy()
        for i in range(len(g)):
            for j in orders[i]:
                for s in range(len(self.segments)):
                    sl = slice(bounds[s], bounds[s + 1])
                    pi, gj = pc[i, sl], g[j, sl]
                    rho = pi @ gj / (np.linalg.norm(pi) * np.linalg.norm(gj) + self.eps)
                    target = self.rho[i, j, s]
                    if rho < target:
                        w = (
                            np.linalg.norm(pi)
                            * (target * np.sqrt(1 - rho**2) - rho * np.sqrt(1 - target**2))
                            / (np.linalg.norm(gj) * np.sqrt(1 - target**2) + self.eps)
                        )
                        pc[i, sl] = pi + gj * w
                    self.rho[i, j, s] = (1 - self.beta) * target + self.beta * rho
        return pc.sum(0)


def gradvac_orders(generator: torch.Generator, k: int) -> list[list[int]]:
    """The framework's (torchjd's) order: ``torch.randperm(k - 1)`` over the others, per gradient."""
    orders = []
    for i in range(k):
        others = [j for j in range(k) if j != i]
        orders.append([others[p] for p in torch.randperm(k - 1, generator=generator).tolist()])
    return orders


STEPS = 4


@pytest.mark.parametrize(("kind", "k"), CASES)
def test_gradvac_matches_libmtl_over_steps(kind: str, k: int):
    """Conventions: ``GradVac_group_type=0`` (whole model; the framework's GradVac is per group, so a
    group of several tensors is LibMTL's whole model, not its per-matrix ``2``); ``beta=0.5``;
    the order replays the framework's permutations (seed 3); ``eps`` relative to the group's scale
    (the framework normalises the Gram by its trace; here the rows are divided by ``sqrt(trace)``
    and the update multiplied back); four steps on four matrices, so the EMA state is compared.
    Controls (with conflicts): per-tensor targets (``group_type=2`` on segments 4 + 6); no state
    (targets reset every step)."""
    segments = [4, 6]
    integrator = get_integrator("gradvac", beta=0.5, seed=3)
    generator = torch.Generator().manual_seed(3)
    ref, per_tensor = LibMTLGradVac(k, [10]), LibMTLGradVac(k, segments)
    worst, control_tensor, control_state = 0.0, 0.0, 0.0
    for step in range(STEPS):
        g = matrix(kind, k, seed=step)
        ours, _ = A.run(integrator, g, segments)
        scale = np.sqrt(np.trace(g @ g.T))
        orders = gradvac_orders(generator, k)
        expected = ref.step(g / scale, orders) * scale
        worst = max(worst, rel_diff(ours, expected))
        control_tensor = max(control_tensor, rel_diff(ours, per_tensor.step(g / scale, orders) * scale))
        stateless = LibMTLGradVac(k, [10]).step(g / scale, orders) * scale
        if step > 0:
            control_state = max(control_state, rel_diff(ours, stateless))
    assert worst < MAX_DIFF["gradvac"]
    if kind != "random":  # the rule acts only where a cosine falls below its target (k=2 random: never)
        assert control_tensor > 1e-3 and control_state > 1e-3


# ---------------------------------------------------------------- Nash-MTL (Nash_MTL.py)


class LibMTLNashMTL:
    """Nash_MTL.py:28-132, with ``update_weights_every=1``, ``optim_niter=20``, ``max_norm=1``.

    The problem is built once (Nash_MTL.py:75-100); every step divides ``G`` by its Frobenius norm
    (Nash_MTL.py:118-120) and iterates the linearised problem with ECOS from the last weights (the
    warm start, Nash_MTL.py:49, 64-65) until the stopping test (Nash_MTL.py:35-43). The update
    ``sum_i alpha_i g_i`` is then clipped to norm ``max_norm`` by ``clip_grad_norm_``
    (Nash_MTL.py:129-130: factor ``max_norm / (|u| + 1e-6)`` when below 1).
    """

    def __init__(self, k: int, every: int = 1, max_norm: float = 1.0, clip_eps: float = 1e-6, niter: int = 20) -> None:
        self.k, self.every, self.max_norm, self.clip_eps, self.niter = k, every, max_norm, clip_eps, niter
        self.calls = 0
        self.prvs_alpha = np.ones(k, dtype=np.float32)
        self.alpha = cp.Variable(shape=(k,), nonneg=True)
        self.prvs_alpha_param = cp.Parameter(shape=(k,), value=self.prvs_alpha)
        self.G_param = cp.Parameter(shape=(k, k), value=np.eye(k))
        self.norm_param = cp.Parameter(shape=(1,), value=np.array([1.0]))
        g_prvs = self.G_param @ self.prvs_alpha_param
        phi_tag = 1 / self.prvs_alpha_param + (1 / g_prvs) @ self.G_param
        phi = phi_tag @ (self.alpha - self.prvs_alpha_param)
        g_alpha = self.G_param @ self.alpha
        constraints = [-cp.log(self.alpha[i] * self.norm_param) - cp.log(g_alpha[i]) <= 0 for i in range(k)]
        self.problem = cp.Problem(cp.Minimize(cp.sum(g_alpha) + phi / self.norm_param), constraints)

    def _stop(self, gtg: np.ndarray, alpha_t: np.ndarray) -> bool:
        return bool(
            self.alpha.value is None
            or np.linalg.norm(gtg @ alpha_t - 1 / (alpha_t + 1e-10)) < 1e-3
            or np.linalg.norm(self.alpha.value - self.prvs_alpha_param.value) < 1e-6
        )

    def step(self, g: np.ndarray) -> np.ndarray:
        self.calls += 1
        if (self.calls - 1) % self.every == 0:  # Nash_MTL.py:109-125
            self._solve(g)
        update = np.asarray(self.prvs_alpha, dtype=np.float64) @ g
        norm = np.linalg.norm(update)
        if self.max_norm > 0 and self.max_norm / (norm + self.clip_eps) < 1:
            update = update * self.max_norm / (norm + self.clip_eps)
        return update

    def _solve(self, g: np.ndarray) -> None:
        gtg = g @ g.T
        normalisation = np.linalg.norm(gtg).reshape((1,))
        gtg = gtg / normalisation.item()
        self.G_param.value = gtg
        self.norm_param.value = normalisation
        alpha_t = self.prvs_alpha
        for _ in range(self.niter):
            self.alpha.value = alpha_t
            self.prvs_alpha_param.value = alpha_t
            try:
                self.problem.solve(solver=cp.ECOS, warm_start=True, max_iters=100)
            except (cp.SolverError, ValueError):
                self.alpha.value = self.prvs_alpha_param.value
            if self._stop(gtg, alpha_t):
                break
            alpha_t = self.alpha.value
        if alpha_t is not None:
            self.prvs_alpha = alpha_t


NASH_RATIO_TOL = 5e-2
"""At a 1e-3 norm ratio ECOS ends every linearised problem ``optimal_inaccurate`` and the 20
iterations do not meet the stopping test: LibMTL's own update moves by up to 5e-3 (relative) when
the gradients are perturbed by 1e-14; the framework's (Gram from ``L L^T``) is within 1.5e-2."""


@pytest.mark.filterwarnings("ignore::UserWarning")
@pytest.mark.parametrize(("kind", "k"), CASES)
def test_nash_mtl_matches_libmtl_over_steps(kind: str, k: int):
    """Conventions: ``max_norm=1`` clips with ``max_norm / |u|`` (torchjd) against
    ``max_norm / (|u| + 1e-6)`` (``clip_grad_norm_``): aligned with ``clip_eps=0``, and LibMTL's
    literal clip is within 1e-6. ``update_weights_every=2`` over four steps, so that the state (the
    last weights, reused on the odd steps; the warm start of the solver) is compared. Both sides
    run the same ECOS iterations on the same normalised Gram matrix (the framework's from
    ``L L^T``, LibMTL's from ``J J^T``): agreement to the solver's precision (see
    :data:`NASH_RATIO_TOL` for the 1e-3 ratio).
    Controls: weights recomputed every step (the state ignored); no clipping (``max_norm=0``)."""
    integrator = get_integrator("nash_mtl", update_weights_every=2)
    ref = LibMTLNashMTL(k, every=2, clip_eps=0.0)
    literal = LibMTLNashMTL(k, every=2)
    stateless = LibMTLNashMTL(k, every=1, clip_eps=0.0)
    unclipped = LibMTLNashMTL(k, every=2, max_norm=0.0)
    worst, literal_diff, control_state, control_clip = 0.0, 0.0, 0.0, 0.0
    for step in range(STEPS):
        g = matrix(kind, k, seed=step)
        ours, _ = A.run(integrator, g)
        worst = max(worst, rel_diff(ours, ref.step(g)))
        literal_diff = max(literal_diff, rel_diff(ours, literal.step(g)))
        control_state = max(control_state, rel_diff(ours, stateless.step(g)))
        control_clip = max(control_clip, rel_diff(ours, unclipped.step(g)))
    tol = NASH_RATIO_TOL if kind == "ratio" else MAX_DIFF["nash_mtl"]
    assert worst < tol
    assert literal_diff < tol + 2e-6
    assert control_clip > 0.3
    if kind != "ratio" or k < 4:  # at ratio-k4 the recomputed weights happen to repeat
        assert control_state > 0.1


# ---------------------------------------------------------------- Aligned-MTL (Aligned_MTL.py)


def libmtl_aligned_mtl(g: np.ndarray, eps: float = float(np.finfo(np.float32).eps)) -> np.ndarray:
    """Aligned_MTL.py:24-43: eigen-decompose ``M = G``, keep the eigenvalues above
    ``max(lambda) k eps`` (LibMTL's ``torch.finfo()``: float32's eps), ``B = sqrt(lambda_min)
    V diag(lambda^-1/2) V^T``, ``alpha = B.sum(0)`` (sum of the aligned gradients), update
    ``alpha @ g``."""
    gram = g @ g.T
    lam, vectors = np.linalg.eigh(gram)
    rank = int((lam > lam.max() * len(gram) * eps).sum())
    order = np.argsort(lam)[::-1]
    lam, vectors = lam[order][:rank], vectors[:, order][:, :rank]
    balance = np.sqrt(lam[-1]) * (vectors / np.sqrt(lam)) @ vectors.T
    return balance.sum(0) @ g


@pytest.mark.parametrize(("kind", "k"), CASES)
def test_aligned_mtl_matches_libmtl(kind: str, k: int):
    """Conventions: LibMTL sums the aligned gradients (``B.sum(0)``), torchjd and the framework
    average them (``B @ (1/k)``): the reference is divided by ``k``; the rank tolerance uses
    float32's eps in LibMTL, float64's in torchjd: aligned with float64's. At a 1e-3 norm ratio the
    smallest eigenvalue (about 1e-7 of the largest) is below LibMTL's float32 tolerance, so LibMTL's
    literal rule treats ``G`` as rank ``k - 1`` and its update is another one.
    Control: LibMTL's sum, undivided (a factor ``k``)."""
    g = matrix(kind, k)
    ours = framework_update("aligned_mtl", g)
    aligned = libmtl_aligned_mtl(g, eps=float(np.finfo(np.float64).eps))
    assert rel_diff(ours, aligned / k) < MAX_DIFF["aligned_mtl"]
    assert rel_diff(ours, aligned) > 0.4
    literal = libmtl_aligned_mtl(g)
    if kind == "ratio":  # float32's tolerance drops the small gradient's component: another update
        assert rel_diff(ours, literal / k) > 0.5
    else:
        assert rel_diff(ours, literal / k) < MAX_DIFF["aligned_mtl"]
