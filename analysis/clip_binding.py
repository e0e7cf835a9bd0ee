"""How often a [0.001, 0.999] clip of MMPareto's two-loss min-norm weight would have bound.

MMPareto's weight ``a`` of the multimodal gradient under a conflict is the exact min-norm weight
(``docs/mmpareto.md``, step 3). A clip to ``[0.001, 0.999]`` changes the update exactly on the
conflict steps where ``a`` falls outside that range. The runs log the direction's coefficient
``w = 2a`` (``grad/<group>/weight/multimodal``) and whether the step had a conflict
(``grad/<group>/conflict``) every ``trainer.statistics.log_every`` steps; this counts, per run
label and group, the logged conflict steps and those with ``a`` outside the range.

    python -m analysis.clip_binding --experiment reproduce_cgmnist --experiment reproduce_avmnist \\
        --filter label=mmpareto --filter 'label=mmpareto(gamma=1.0)'
"""

from __future__ import annotations

import argparse
import os
from collections import defaultdict
from collections.abc import Sequence
from dataclasses import dataclass

import pandas as pd
from mlflow.tracking import MlflowClient

from framework import metric_names
from framework.metric_names import CONFLICT, MULTIMODAL, WEIGHT

from .loading import Filter, Histories, load_runs

LOW, HIGH = 0.001, 0.999


@dataclass
class Count:
    """Logged steps, conflict steps among them, and conflict steps whose weight lies outside the clip."""

    steps: int = 0
    conflicts: int = 0
    outside: int = 0

    def add(self, other: Count) -> None:
        self.steps += other.steps
        self.conflicts += other.conflicts
        self.outside += other.outside


def count_outside(weights: pd.DataFrame, conflicts: pd.DataFrame, k: int = 2) -> Count:
    """Steps present in both histories; ``a = w / k`` outside ``[LOW, HIGH]`` on conflict steps."""
    merged = weights.merge(conflicts, on="step", suffixes=("_w", "_c"))
    on_conflict = merged[merged["value_c"] > 0.5]
    a = on_conflict["value_w"] / k
    return Count(len(merged), len(on_conflict), int(((a < LOW) | (a > HIGH)).sum()))


def clip_binding_table(client: MlflowClient, experiments: Sequence[str], filters: Sequence[Filter]) -> pd.DataFrame:
    """One row per (dataset, label, group): steps, conflict steps, steps outside the clip, runs."""
    runset = load_runs(client, experiments, filters)
    histories = Histories(client)
    counts: dict[tuple[str, str, str], Count] = defaultdict(Count)
    runs: dict[tuple[str, str, str], int] = defaultdict(int)
    for run in runset.runs:
        for group, losses in run.norm_groups().items():
            if losses != [MULTIMODAL, *losses[1:]] or len(losses) != 2:
                continue
            weights = histories.get(run, metric_names.grad(group, WEIGHT, MULTIMODAL))
            conflicts = histories.get(run, metric_names.grad(group, CONFLICT))
            key = (run.dataset, run.label, group)
            counts[key].add(count_outside(weights, conflicts))
            runs[key] += 1
    rows = [
        {
            "dataset": d,
            "label": label,
            "group": g,
            "runs": runs[(d, label, g)],
            "logged_steps": c.steps,
            "conflict_steps": c.conflicts,
            "outside_clip": c.outside,
            "outside_per_conflict": c.outside / c.conflicts if c.conflicts else float("nan"),
        }
        for (d, label, g), c in sorted(counts.items())
    ]
    return pd.DataFrame(rows)


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--experiment", action="append", required=True, help="MLflow experiment (repeatable)")
    parser.add_argument(
        "--filter", action="append", default=[], help="key=value (repeatable; values of one key are alternatives)"
    )
    parser.add_argument("--tracking-uri", default=os.environ.get("MLFLOW_TRACKING_URI", "sqlite:///mlflow.db"))
    args = parser.parse_args(argv)
    filters = [Filter.parse(text) for text in args.filter]
    table = clip_binding_table(MlflowClient(args.tracking_uri), args.experiment, filters)
    print(table.to_string(index=False, float_format="{:.4f}".format) if not table.empty else "no two-loss groups found")


if __name__ == "__main__":
    main()
