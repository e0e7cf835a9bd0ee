"""Tables: accuracy (mean ± std over seeds), conflict rate early/late, gradient size and noise.

Accuracies are in percent. ``std`` is the sample standard deviation over seeds (ddof=1).
Each builder returns a :class:`~analysis.table_render.Table` (:mod:`analysis.table_render`: the
table and its Markdown, LaTeX and CSV output, with the best entry of each column marked); this
module re-exports ``Table``, ``latex_escape`` and ``write_tables``.
"""

from __future__ import annotations

import math
from collections.abc import Callable

import pandas as pd

from framework import metric_names
from framework.metric_names import BEST_EPOCH, MEAN, MULTIMODAL, final_accuracy

from .grouping import Rows, RunSet, mean_std, short_param
from .loading import Histories
from .records import RunRecord
from .table_render import Table, latex_escape, write_tables

__all__ = [
    "EARLY",
    "LATE",
    "Table",
    "accuracy_table",
    "conflict_flags",
    "conflict_table",
    "decisions_table",
    "is_method_decision",
    "latex_escape",
    "noise_table",
    "tables_per_block",
    "training_fraction",
    "write_tables",
]


def _key_columns(runset: RunSet, dataset: str) -> tuple[list[str], dict[str, str]]:
    keys = ["label", *runset.swept.get(dataset, [])]
    headers = {"label": "Integrator", **{p: short_param(p) for p in keys[1:]}}
    return keys, headers


def accuracy_table(runset: RunSet, dataset: str) -> Table:
    """Test accuracy at the best-validation epoch and at the last epoch, per head, in percent."""
    heads = runset.heads(dataset)
    keys, headers = _key_columns(runset, dataset)
    stats = [f"best_{h}" for h in heads] + [f"last_{h}" for h in heads]
    for h in heads:
        name = {MULTIMODAL: "Multimodal", MEAN: "Mean"}.get(h, h)
        headers[f"best_{h}"] = f"{name} (best val)"
        headers[f"last_{h}"] = f"{name} (last)"
    records = []
    for key, runs in runset.rows(dataset).items():
        row: dict = dict(zip(keys, key, strict=False))
        row["n"] = len(runs)
        row["seeds"] = " ".join(r.seed for r in runs)
        for h in heads:
            for kind in ("best", "last"):
                metric = final_accuracy(h, kind)
                values = [100.0 * r.metrics[metric] for r in runs if metric in r.metrics]
                row[f"{kind}_{h}_mean"], row[f"{kind}_{h}_std"], _ = mean_std(values)
        row["best_epoch_mean"], row["best_epoch_std"], _ = mean_std([r.metrics.get(BEST_EPOCH, math.nan) for r in runs])
        records.append(row)
    frame = pd.DataFrame(records)
    title = f"{dataset}: test accuracy (%) at the best-validation epoch and at the last epoch, mean ± std over seeds"
    return Table(dataset, title, frame, keys, stats, headers, best={s: "max" for s in stats})


# ---------------------------------------------------------------------------------------------
# Conflicts early and late


def training_fraction(frame: pd.DataFrame, steps_per_epoch: float | None, epochs: int | None) -> pd.Series:
    """Step -> fraction of training in [0, 1)."""
    if steps_per_epoch and epochs:
        total = steps_per_epoch * epochs
    else:
        total = float(frame["step"].max() + 1) if not frame.empty else 1.0
    return frame["step"] / total


def conflict_flags(histories: Histories, run: RunRecord, group: str) -> pd.DataFrame:
    """Per logged step of ``group``: ``step``, ``frac`` (of training) and ``conflict`` (0/1).

    With two losses on the group the flag is ``cos < 0``, read from the cosine history; with
    more, the logged ``grad/G/conflict`` flag (any pair with cos < 0) is read instead.
    """
    pairs = run.groups().get(group, [])
    if len(pairs) == 1:
        step_key = metric_names.grad(group, metric_names.COSINE, pairs[0])
        cos = histories.get(run, step_key)
        frame = pd.DataFrame({"step": cos["step"], "conflict": (cos["value"] < 0).astype(float)})
    else:
        step_key = metric_names.grad(group, metric_names.CONFLICT)
        flag = histories.get(run, step_key)
        frame = pd.DataFrame({"step": flag["step"], "conflict": flag["value"].astype(float)})
    frame["frac"] = training_fraction(frame, histories.steps_per_epoch(run, step_key), run.epochs)
    return frame


EARLY, LATE = 1.0 / 3.0, 2.0 / 3.0


def tables_per_block(make: Callable[..., Table], runset: RunSet, histories: Histories, dataset: str) -> list[Table]:
    """``make`` (:func:`conflict_table`, :func:`noise_table`) once per block of rows with the same
    parameter groups: one table per model when the models' groups differ."""
    return [make(runset, histories, dataset, rows, block) for block, rows in runset.blocks_by_groups(dataset)]


def _block_title(dataset: str, block: str) -> str:
    return f"{dataset} ({block})" if block else dataset


def conflict_table(
    runset: RunSet,
    histories: Histories,
    dataset: str,
    rows: Rows | None = None,
    block: str = "",
) -> Table:
    """Conflict rate (% of logged steps with cos < 0) per encoder: first third, last third, all.

    ``first half`` is the share of all conflicting steps that fall in the first half of
    training. For MMPareto the conflict rate is how often its conflict branch fired. ``rows``
    (default: all of the dataset's) and ``block`` (named in the title) select a block of rows.
    """
    keys, headers = _key_columns(runset, dataset)
    rows = runset.rows(dataset) if rows is None else rows
    groups = sorted({g for runs in rows.values() for r in runs for g in r.groups()})
    stats = []
    for g in groups:
        for part, title in (("early", "early"), ("late", "late"), ("all", "all"), ("first_half", "share in 1st half")):
            stats.append(f"{g}:{part}")
            headers[f"{g}:{part}"] = f"{g} {title}"
    records = []
    for key, runs in rows.items():
        if not any(r.groups() for r in runs):
            continue  # one-joint-loss: no shared group, nothing to conflict
        row: dict = dict(zip(keys, key, strict=False))
        row["n"] = len(runs)
        for g in groups:
            per_run: dict[str, list[float]] = {"early": [], "late": [], "all": [], "first_half": []}
            for run in runs:
                if g not in run.groups():
                    continue
                flags = conflict_flags(histories, run, g)
                if flags.empty:
                    continue
                per_run["early"].append(100 * _mean(flags.loc[flags["frac"] < EARLY, "conflict"]))
                per_run["late"].append(100 * _mean(flags.loc[flags["frac"] >= LATE, "conflict"]))
                per_run["all"].append(100 * _mean(flags["conflict"]))
                total = flags["conflict"].sum()
                share = flags.loc[flags["frac"] < 0.5, "conflict"].sum() / total if total > 0 else math.nan
                per_run["first_half"].append(100 * share)
            for part, values in per_run.items():
                row[f"{g}:{part}_mean"], row[f"{g}:{part}_std"], _ = mean_std(values)
        records.append(row)
    frame = pd.DataFrame(records, columns=[*keys, "n", *[f"{s}_{x}" for s in stats for x in ("mean", "std")]])
    many = any(len(r.groups().get(g, [])) > 1 for runs in rows.values() for r in runs for g in groups)
    pairs = {p for runs in rows.values() for r in runs for g in groups for p in r.groups().get(g, [])}
    multimodal = all(p.split(".")[0] == MULTIMODAL for p in pairs)
    condition = "cos(g_mm, g_m) < 0" if multimodal else "cos(g_a, g_b) < 0 for the losses a, b reaching it"
    condition += "; on groups that three or more losses reach, any pair" if many else ""
    where = "encoder" if multimodal else "parameter group"
    title = (
        f"{_block_title(dataset, block)}: conflict rate (% of steps with {condition}) per {where}, in the first third (early) "
        "and last third (late) of training and overall; share (%) of conflicting steps in the first half"
    )
    return Table(dataset, title, frame, keys, stats, headers, best={}, digits=1, block=block)


def _mean(values: pd.Series) -> float:
    return float(values.mean()) if len(values) else math.nan


# ---------------------------------------------------------------------------------------------
# Gradient size and noise


def noise_table(
    runset: RunSet,
    histories: Histories,
    dataset: str,
    rows: Rows | None = None,
    block: str = "",
) -> Table:
    """Per encoder and loss: per-batch gradient norm, its spread within an epoch, and the
    gradient covariance trace when logged; averaged over epochs (or probes), then over seeds.

    ``norm`` is the mean of ``grad/G/norm_mean/i`` over epochs, ``spread`` of ``norm_std``,
    ``cov tr`` of ``grad/G/cov_trace/i`` over its logged steps. ``rows`` and ``block`` as in
    :func:`conflict_table`.
    """
    keys, headers = _key_columns(runset, dataset)
    rows = runset.rows(dataset) if rows is None else rows
    runs_in = [r for runs in rows.values() for r in runs]
    pairs: list[tuple[str, str]] = []
    for run in runs_in:
        for g, losses in run.norm_groups().items():
            pairs.extend((g, loss) for loss in losses if (g, loss) not in pairs)
    pairs.sort(key=lambda p: (p[0], p[1] != MULTIMODAL, p[1]))
    has_cov = any(metric_names.parse_grad(k, metric_names.COV_TRACE) for r in runs_in for k in r.metrics)
    kinds = [(metric_names.NORM_MEAN, "norm"), (metric_names.NORM_STD, "spread")]
    kinds += [(metric_names.COV_TRACE, "cov tr")] if has_cov else []
    stats = []
    for g, loss in pairs:
        for kind, title in kinds:
            stats.append(f"{g}:{kind}:{loss}")
            headers[f"{g}:{kind}:{loss}"] = f"{g} {title} {loss}"
    records = []
    for key, runs in rows.items():
        row: dict = dict(zip(keys, key, strict=False))
        row["n"] = len(runs)
        for g, loss in pairs:
            for kind, _ in kinds:
                values = [_mean(histories.get(r, metric_names.grad(g, kind, loss))["value"]) for r in runs]
                row[f"{g}:{kind}:{loss}_mean"], row[f"{g}:{kind}:{loss}_std"], _ = mean_std(values)
        records.append(row)
    frame = pd.DataFrame(records, columns=[*keys, "n", *[f"{s}_{x}" for s in stats for x in ("mean", "std")]])
    title = (
        f"{_block_title(dataset, block)}: per-batch gradient norm (mean over epochs of the per-epoch mean), its within-epoch spread "
        "(std)" + (", and the per-sample gradient covariance trace" if has_cov else "") + ", per encoder and loss"
    )
    return Table(dataset, title, frame, keys, stats, headers, best={}, digits=3, block=block)


# ---------------------------------------------------------------------------------------------
# What the imbalance methods decided


def is_method_decision(key: str) -> bool:
    """``grad/<group>/coeff`` (a method's coefficient on a group's gradient) or ``grad/method/<kind>/<name>``."""
    prefix = metric_names.GRAD_PREFIX
    if not key.startswith(prefix):
        return False
    if key.startswith(metric_names.grad(metric_names.METHOD_GROUP, "")):
        return True
    return key.endswith(f"/{metric_names.COEFF}")


def decisions_table(runset: RunSet, histories: Histories, dataset: str) -> Table:
    """Per run, the mean over its logged steps of every method decision (modulation coefficients
    per encoder, loss weights, imbalance ratios, scores), then mean ± std over seeds. Rows without a
    method (no such metric) are left out."""
    keys, headers = _key_columns(runset, dataset)
    rows = runset.rows(dataset)
    decisions = sorted({k for runs in rows.values() for r in runs for k in r.metrics if is_method_decision(k)})
    stats = []
    for k in decisions:
        stats.append(k)
        headers[k] = k.removeprefix(metric_names.GRAD_PREFIX)
    records = []
    for key, runs in rows.items():
        if not any(is_method_decision(k) for r in runs for k in r.metrics):
            continue
        row: dict = dict(zip(keys, key, strict=False))
        row["n"] = len(runs)
        for k in decisions:
            values = [_mean(histories.get(r, k)["value"]) for r in runs if k in r.metrics]
            row[f"{k}_mean"], row[f"{k}_std"], _ = mean_std(values)
        records.append(row)
    frame = pd.DataFrame(records, columns=[*keys, "n", *[f"{s}_{x}" for s in stats for x in ("mean", "std")]])
    title = (
        f"{dataset}: what the imbalance methods decided, mean over the logged steps, mean ± std over seeds "
        "(coeff: the factor on that encoder's gradient; method/loss_weight, ratio, score: loss weights, "
        "imbalance ratio, per-modality scores)"
    )
    return Table(dataset, title, frame, keys, stats, headers, best={}, digits=3)
