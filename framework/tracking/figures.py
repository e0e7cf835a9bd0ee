"""End-of-run figures: one per parameter group, from the metrics the run logged.

``figures/grad_<group>.png`` has three panels: the cosine between each pair of losses over the
training steps, the conflict rate per epoch, and the integrator's weight on each loss's gradient
over the steps. :func:`framework.tracking.lifecycle.tracked_run` logs them as a run ends FINISHED.
"""

from __future__ import annotations

import re
import tempfile
from collections import defaultdict
from collections.abc import Iterable
from pathlib import Path
from typing import Any

from mlflow.entities import Metric

from .. import metric_names as names

FOLDER = "figures"


def series(points: Iterable[Metric]) -> dict[str, list[tuple[int, float]]]:
    """Points by key, each as (step, value) sorted by step (the last point of a step wins)."""
    by_key: dict[str, dict[int, float]] = defaultdict(dict)
    for point in sorted(points, key=lambda m: (m.step, m.timestamp)):
        by_key[point.key][point.step] = point.value
    return {key: sorted(values.items()) for key, values in by_key.items()}


def groups(keys: Iterable[str]) -> list[str]:
    """The parameter groups with a cosine, conflict rate or weight among ``keys``."""
    pattern = re.compile(
        rf"{re.escape(names.GRAD_PREFIX)}(.+)/(?:{names.COSINE}/[^/]+|{names.CONFLICT_RATE}|{names.WEIGHT}/[^/]+)"
    )
    return sorted({m.group(1) for key in keys if (m := pattern.fullmatch(key))})


def figure_name(group: str) -> str:
    return f"grad_{re.sub(r'[^A-Za-z0-9_.-]+', '_', group)}.png"


def draw(group: str, data: dict[str, list[tuple[int, float]]], path: Path) -> None:
    from matplotlib.figure import Figure  # no pyplot: no global figure state, safe in any thread

    fig = Figure(figsize=(15, 3.8))
    axes = fig.subplots(1, 3)
    panels: list[tuple[Any, str, str, str]] = [
        (axes[0], names.COSINE, "cosine between loss gradients", "step"),
        (axes[1], names.CONFLICT_RATE, "conflict rate", "epoch"),
        (axes[2], names.WEIGHT, "integrator weight", "step"),
    ]
    for axis, kind, title, xlabel in panels:
        if kind == names.CONFLICT_RATE:
            chosen = {kind: data.get(names.grad(group, kind), [])}
        else:
            chosen = {
                loss: data[key]
                for key in sorted(data)
                if (p := names.parse_grad(key, kind)) and p[0] == group
                for loss in [p[1]]
            }
        for label, values in chosen.items():
            if values:
                steps, ys = zip(*values, strict=True)
                axis.plot(steps, ys, marker="o" if len(values) < 20 else None, label=label, linewidth=1.2)
        if kind == names.COSINE:
            axis.axhline(0.0, color="grey", linewidth=0.8, linestyle="--")
        if kind == names.CONFLICT_RATE:
            axis.set_ylim(-0.05, 1.05)
        axis.set_title(title)
        axis.set_xlabel(xlabel)
        if any(chosen.values()) and kind != names.CONFLICT_RATE:
            axis.legend(fontsize="small")
        axis.grid(alpha=0.3)
    fig.suptitle(f"gradients on {group}")
    # fixed margins: tight_layout renders the figure once more to measure it, doubling the cost
    fig.subplots_adjust(left=0.05, right=0.99, bottom=0.14, top=0.84, wspace=0.18)
    fig.savefig(path, dpi=90)


def log_figures(tracker: Any, points: Iterable[Metric]) -> list[str]:
    """Draw one figure per parameter group from ``points`` and log it under ``figures/``;
    returns the artifact paths."""
    data = series(points)
    logged = []
    with tempfile.TemporaryDirectory() as folder:
        for group in groups(data):
            path = Path(folder) / figure_name(group)
            draw(group, data, path)
            tracker.log_artifact(path, FOLDER)
            logged.append(f"{FOLDER}/{path.name}")
    return logged
