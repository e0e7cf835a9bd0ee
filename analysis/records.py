"""One MLflow run, flattened to what the analysis needs, and what it tells about itself.

Metric names are read with :mod:`framework.metric_names` only: the heads from the final
accuracies, the parameter groups and loss pairs from the ``grad/`` metrics it logged.
"""

from __future__ import annotations

import re
from collections import defaultdict
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field

from framework import metric_names
from framework.metric_names import MEAN, MULTIMODAL


@dataclass
class RunRecord:
    """One MLflow run: its identity, status, row label, seed, dataset, params, tags, final metrics."""

    run_id: str
    name: str
    experiment: str
    status: str
    label: str
    seed: str
    dataset: str
    start_time: int
    params: dict[str, str] = field(default_factory=dict)
    tags: dict[str, str] = field(default_factory=dict)
    metrics: dict[str, float] = field(default_factory=dict)

    @property
    def heads(self) -> list[str]:
        """``multimodal`` first, then the modalities, as found in the final metrics."""
        return multimodal_first(metric_names.heads_of(self.metrics))

    @property
    def modalities(self) -> list[str]:
        """The per-modality (multimodal models) or per-task (multi-task models) heads: every head but
        ``multimodal`` and the tasks' ``mean``."""
        return [h for h in self.heads if h not in (MULTIMODAL, MEAN)]

    @property
    def epochs(self) -> int | None:
        value = self.params.get("trainer.epochs")
        try:
            return int(value) if value is not None else None
        except ValueError:
            return None

    def groups(self) -> dict[str, list[str]]:
        """Parameter group -> the ``a.b`` loss pairs whose cosine is logged (``grad/G/cos/a.b``)."""
        return {g: sorted(p) for g, p in self._logged_by_group(metric_names.COSINE).items()}

    def norm_groups(self) -> dict[str, list[str]]:
        """Parameter group -> losses whose per-step gradient norm is logged (``grad/G/norm/i``)."""
        return {g: multimodal_first(v) for g, v in self._logged_by_group(metric_names.NORM).items()}

    def _logged_by_group(self, kind: str) -> dict[str, list[str]]:
        """Group -> the ``X`` of every ``grad/<group>/<kind>/X`` metric, groups sorted."""
        out: dict[str, list[str]] = defaultdict(list)
        for key in self.metrics:
            parsed = metric_names.parse_grad(key, kind)
            if parsed:
                out[parsed[0]].append(parsed[1])
        return dict(sorted(out.items()))


@dataclass
class Excluded:
    """A run read but left out of the means, and why."""

    run: RunRecord
    reason: str


def multimodal_first(names: Iterable[str]) -> list[str]:
    """``multimodal`` first (if present), then the other names sorted, each once."""
    names = sorted(set(names))
    return ([MULTIMODAL] if MULTIMODAL in names else []) + [n for n in names if n != MULTIMODAL]


def dataset_name(params: Mapping[str, str], experiment: str) -> str:
    """``framework.data.cgmnist.cgmnist_splits`` -> ``cgmnist``; the experiment if unknown."""
    target = params.get("dataset._target_")
    if not target:
        return experiment
    leaf = target.rsplit(".", 1)[-1]
    return re.sub(r"_splits$", "", leaf) or experiment
