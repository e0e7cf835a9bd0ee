"""Gradient-conflict statistics per parameter group, under one naming scheme.

Per step (every ``log_every`` steps), for group ``G`` and losses ``i, j``::

    grad/G/cos/i.j        cosine between the two per-loss gradients
    grad/G/conflict       1 if any pair has cosine < 0, else 0
    grad/G/norm/i         |g_i|
    grad/G/norm_ratio/j   |g_multimodal| / |g_j| for each other loss j
    grad/G/update_to_sum  |update| / |sum_i g_i|
    grad/G/weight/i       the integrator's weight on g_i

Per epoch::

    grad/G/conflict_rate  fraction of observed steps with a conflict
    grad/G/norm_mean/i, grad/G/norm_std/i   mean and spread of the per-batch |g_i|
"""

from __future__ import annotations

import math
from collections import defaultdict

from .gradients import GroupStep


def step_metrics(steps: list[GroupStep]) -> dict[str, float]:
    metrics: dict[str, float] = {}
    for step in steps:
        prefix = f"grad/{step.group}"
        d = step.decision
        norms, cosine = d.norms.tolist(), d.cosine.tolist()
        names = step.losses
        conflict = False
        for i, a in enumerate(names):
            metrics[f"{prefix}/norm/{a}"] = norms[i]
            metrics[f"{prefix}/weight/{a}"] = float(d.weights[i])
            for j in range(i + 1, len(names)):
                metrics[f"{prefix}/cos/{a}.{names[j]}"] = cosine[i][j]
                conflict |= cosine[i][j] < 0
            if i > 0:
                metrics[f"{prefix}/norm_ratio/{a}"] = norms[0] / norms[i] if norms[i] > 0 else math.nan
        metrics[f"{prefix}/conflict"] = float(conflict)
        metrics[f"{prefix}/update_to_sum"] = d.update_norm / d.sum_norm if d.sum_norm > 0 else math.nan
    return metrics


class EpochStatistics:
    """Accumulates per-step statistics into per-epoch summaries."""

    def __init__(self) -> None:
        self.reset()

    def reset(self) -> None:
        self._conflicts: dict[str, list[float]] = defaultdict(list)
        self._norms: dict[tuple[str, str], list[float]] = defaultdict(list)

    def observe(self, steps: list[GroupStep]) -> None:
        for step in steps:
            cosine = step.decision.cosine
            k = len(step.losses)
            self._conflicts[step.group].append(float(any(cosine[i, j] < 0 for i in range(k) for j in range(i + 1, k))))
            for name, norm in zip(step.losses, step.decision.norms.tolist()):
                self._norms[(step.group, name)].append(norm)

    def summary(self) -> dict[str, float]:
        metrics = {f"grad/{g}/conflict_rate": sum(v) / len(v) for g, v in self._conflicts.items() if v}
        for (group, name), values in self._norms.items():
            mean = sum(values) / len(values)
            metrics[f"grad/{group}/norm_mean/{name}"] = mean
            metrics[f"grad/{group}/norm_std/{name}"] = math.sqrt(sum((v - mean) ** 2 for v in values) / len(values))
        return metrics
