"""Nash-MTL: the update as the Nash bargaining solution between the losses.

Navon et al., "Multi-Task Learning as a Bargaining Game", ICML 2022 (Algorithm 1).
torchjd's ``NashMTL`` (its weighting; solved with cvxpy's ECOS, warm-started from the last call).
"""

from __future__ import annotations

import warnings
from typing import Any, ClassVar

import torch
from torch import Tensor

from ._torchjd import GramianWeightingIntegrator, aggregation
from .registry import register


def gram_factor(gram: Tensor) -> Tensor:
    """A ``(k, k)`` matrix ``L`` with ``L L^T = gram`` (``V sqrt(diag(lambda))``, negative rounding
    eigenvalues clipped to zero)."""
    eigenvalues, vectors = torch.linalg.eigh(gram)
    return vectors * eigenvalues.clamp_min(0).sqrt()


SOLVER_FALLBACK = "solver_fallback"
SOLVED = ("optimal", "optimal_inaccurate")


@register("nash_mtl")
class NashMTL(GramianWeightingIntegrator):
    """``max_norm``: the largest norm of the update (0: no clipping); ``update_weights_every``: solve
    for new weights every this many calls (reuse the last ones in between); ``optim_niter``: the
    number of linearised problems solved per update. torchjd's defaults.

    torchjd's weighting takes the ``k x d`` gradient matrix ``J`` but uses it only through ``J J^T``
    and ``|w^T J|``; it is given ``L`` with ``L L^T = G`` (:func:`gram_factor` of the group's float64
    Gram matrix), which gives both, without a copy of the group and without float32 overflow. A zero
    Gram matrix (all gradients zero) gets zero weights and leaves the state alone (torchjd divides by
    its norm).

    torchjd's weighting needs the number of losses when it is built: it is sized for the group's
    ``k`` on its first call, and its state (step, last weights) is then for that ``k``.

    In exact arithmetic the bargaining solution is invariant to a common scale of the gradients, but
    torchjd's solver is not: its stopping test mixes the normalised Gramian with unnormalised weights,
    it starts from ones, and ECOS fails on very small or large Gramians (then the last weights are
    kept). Measured: the update moves by 1e-8 to 50% when all gradients are scaled by 0.1 or 10, and
    is ``c`` times the ``c = 1`` one at ``c = 1e-8`` (``scale_degree`` ``None``).

    When ECOS finds the linearised problem unbounded or infeasible (or fails), torchjd keeps the
    previous iterate: uniform weights on a group's first solve, the last weights later. Each solve
    reports whether that happened as the ``solver_fallback`` event (``grad/G/events/solver_fallback``,
    steps per epoch), so that a run shows how often Nash-MTL did not bargain.
    """

    scale_degree: int | None = None
    per_group_state: ClassVar[bool] = True
    module: Any  # torchjd's NashMTL weighting (a private class: n_tasks, step, alpha_param, prob)

    def __init__(self, max_norm: float = 1.0, update_weights_every: int = 1, optim_niter: int = 20) -> None:
        self.max_norm = float(max_norm)
        self.update_weights_every = int(update_weights_every)
        self.optim_niter = int(optim_niter)
        aggregator = aggregation().NashMTL(
            n_tasks=1,
            max_norm=self.max_norm,
            update_weights_every=self.update_weights_every,
            optim_niter=self.optim_niter,
        )
        self._use(aggregator.weighting)

    def _rebuild(self) -> None:
        """torchjd's Nash-MTL weighting builds its cvxpy problem on its first call (``step == 0``)
        from the state it saves; after a load past that call, build it here. Every solve sets the
        problem's parameters before use."""
        if self.module.step != 0:
            self.module._init_optim_problem()

    def weights(self, gram: Tensor) -> Tensor:
        gram = gram.double()
        k = gram.shape[0]
        if not (torch.isfinite(gram).all() and gram.diagonal().sum() > 0):
            return torch.zeros(k, dtype=torch.float64)
        if self.module.n_tasks != k:
            if self.module.step != 0:
                raise ValueError(
                    f"nash_mtl: its state is for {self.module.n_tasks} losses, got {k} "
                    "(one integrator per parameter group, with a fixed number of losses)"
                )
            self.module.n_tasks = k
            self.module.reset()
        solves = self.module.step % self.module.update_weights_every == 0
        with warnings.catch_warnings():
            # cvxpy warns, once per process, that torchjd's problem is not DPP (no compilation cache)
            warnings.filterwarnings("ignore", message=".*not DPP.*", category=UserWarning)
            weights = self._call(gram_factor(gram)).double().cpu()
        if solves:
            self.report(SOLVER_FALLBACK, self._solve_failed())
        return weights

    def _solve_failed(self) -> bool:
        """Whether the last linearised problem had no solution, so torchjd kept the previous iterate."""
        return self.module.alpha_param.value is None or self.module.prob.status not in SOLVED

    def method_hparams(self) -> dict[str, Any]:
        return {
            "max_norm": self.max_norm,
            "update_weights_every": self.update_weights_every,
            "optim_niter": self.optim_niter,
        }
