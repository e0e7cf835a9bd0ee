"""Figures (PNG, matplotlib Agg), one set per dataset, one line or bar per table row.

- ``<dataset>_cosine.png``: cos(g_multimodal, g_modality) over training per encoder (Fig. 1(a))
- ``<dataset>_grad_norm_hist.png``: per-batch gradient norms in the last epoch, multimodal vs
  unimodal (Fig. 1(d))
- ``<dataset>_accuracy_bars.png``: test accuracy per head and integrator (Fig. 1(c))
- ``<dataset>_conflict_rate.png``: conflict rate per epoch and encoder
- ``<dataset>_cov_trace.png``: gradient covariance trace over training (when logged)

Lines are means over seeds; step-level series are smoothed with a centred moving average of
half an epoch.
"""

from __future__ import annotations

import math
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt
from matplotlib.figure import Figure
from matplotlib.ticker import NullFormatter
import numpy as np
import pandas as pd

from framework import metric_names
from framework.metric_names import MULTIMODAL

from .grouping import RunSet
from .loading import Histories
from .records import RunRecord
from .tables import Table


def colors(runset: RunSet, dataset: str) -> dict[tuple[str, ...], tuple]:
    cmap = plt.get_cmap("tab10")
    return {key: cmap(i % 10) for i, key in enumerate(runset.rows(dataset))}


def _mean_series(frames: list[pd.DataFrame]) -> pd.Series:
    """Mean over runs of ``value`` by ``step`` (runs may have missing steps)."""
    frames = [f for f in frames if not f.empty]
    if not frames:
        return pd.Series(dtype=float)
    joined = pd.concat([f.set_index("step")["value"].rename(i) for i, f in enumerate(frames)], axis=1)
    return joined.mean(axis=1, skipna=True).sort_index()


def _steps_per_epoch(histories: Histories, runs: list[RunRecord], key: str) -> float | None:
    values = [v for v in (histories.steps_per_epoch(r, key) for r in runs) if v]
    return float(np.median(values)) if values else None


def _save(fig: Figure, path: Path, tight: bool = False) -> Path:
    fig.tight_layout()
    fig.savefig(path, dpi=110, bbox_inches="tight" if tight else None)
    plt.close(fig)
    return path


def cosine_figure(runset: RunSet, histories: Histories, dataset: str, out: Path) -> Path | None:
    rows = runset.rows(dataset)
    pairs = sorted({(g, p) for r in runset.in_dataset(dataset) for g, ps in r.groups().items() for p in ps})
    if not pairs:
        return None
    palette = colors(runset, dataset)
    fig, axes = plt.subplots(1, len(pairs), figsize=(5.5 * len(pairs), 4), squeeze=False)
    for ax, (group, pair) in zip(axes[0], pairs, strict=False):
        key = metric_names.grad(group, metric_names.COSINE, pair)
        for row, runs in rows.items():
            having = [r for r in runs if key in r.metrics]
            if not having:
                continue
            series = _mean_series([histories.get(r, key) for r in having])
            per_epoch = _steps_per_epoch(histories, having, key)
            window = max(1, round(per_epoch / 2)) if per_epoch else max(1, len(series) // 50)
            smooth = series.rolling(window, center=True, min_periods=1).mean()
            x = series.index.to_numpy() / per_epoch if per_epoch else series.index.to_numpy()
            ax.plot(x, smooth.to_numpy(), color=palette[row], lw=1.4, label=runset.row_name(dataset, row))
        ax.axhline(0.0, color="black", lw=0.8, ls=":")
        a, b = pair.split(".", 1)
        ax.set_title(f"{group}: cos(g_{a}, g_{b})")
        ax.set_xlabel("epoch")
        ax.set_ylabel("cosine (mean over seeds, smoothed)")
        ax.legend(fontsize=7)
    fig.suptitle(f"{dataset}: cosine between multimodal and unimodal gradients over training")
    return _save(fig, out / f"{dataset}_cosine.png")


def _last_epoch(histories: Histories, run: RunRecord, key: str) -> np.ndarray:
    """Values of a step-level metric in the run's last epoch (all of them if epochs are unknown):
    the model changes least there, closest to the paper's fixed encoder."""
    frame = histories.get(run, key)
    per_epoch = histories.steps_per_epoch(run, key)
    if per_epoch and run.epochs:
        frame = frame[frame["step"] >= per_epoch * (run.epochs - 1)]
    return frame["value"].to_numpy()


def norm_histogram_figure(runset: RunSet, histories: Histories, dataset: str, out: Path) -> Path | None:
    rows = runset.rows(dataset)
    groups = sorted({g for r in runset.in_dataset(dataset) for g, ls in r.norm_groups().items() if len(ls) > 1})
    columns = [k for k, runs in rows.items() if any(len(r.norm_groups().get(g, [])) > 1 for r in runs for g in groups)]
    if not groups or not columns:
        return None
    fig, axes = plt.subplots(
        len(groups), len(columns), figsize=(max(6.0, 3.4 * len(columns)), 2.8 * len(groups)), squeeze=False
    )
    for i, group in enumerate(groups):
        for j, row in enumerate(columns):
            ax = axes[i][j]
            runs = rows[row]
            losses = sorted(
                {loss for r in runs for loss in r.norm_groups().get(group, [])}, key=lambda n: (n != MULTIMODAL, n)
            )
            keys = {loss: metric_names.grad(group, metric_names.NORM, loss) for loss in losses}
            values = {
                loss: np.concatenate([_last_epoch(histories, r, key) for r in runs]) for loss, key in keys.items()
            }
            pooled = np.concatenate([v[np.isfinite(v) & (v > 0)] for v in values.values()]) if values else np.array([])
            if pooled.size == 0:
                ax.set_axis_off()
                continue
            bins = np.geomspace(pooled.min(), pooled.max() * 1.0001, 40) if pooled.min() < pooled.max() else 10
            for loss, v in values.items():
                v = v[np.isfinite(v) & (v > 0)]
                name = "multimodal" if loss == MULTIMODAL else f"unimodal ({loss})"
                ax.hist(v, bins=bins, alpha=0.55, label=f"{name}: {v.mean():.3g} ± {v.std():.3g}")
            ax.set_xscale("log")
            ax.xaxis.set_minor_formatter(NullFormatter())
            ax.set_title(f"{runset.row_name(dataset, row)}\n{group}", fontsize=8)
            ax.set_xlabel("|g| per batch")
            ax.legend(fontsize=6)
    fig.suptitle(
        f"{dataset}: per-batch gradient norms per encoder\n(steps of the last epoch, all seeds; legend: mean ± std)"
    )
    return _save(fig, out / f"{dataset}_grad_norm_hist.png")


def accuracy_bars_figure(table: Table, runset: RunSet, out: Path) -> Path | None:
    frame = table.frame
    if frame.empty:
        return None
    dataset = table.dataset
    heads = runset.heads(dataset)
    palette = colors(runset, dataset)
    keys = [tuple(str(frame[k].iloc[i]) for k in table.keys) for i in range(len(frame))]
    fig, axes = plt.subplots(1, 2, figsize=(max(8, 1.2 * len(heads) * len(keys) / 2 + 4), 4.2), sharey=True)
    width = 0.8 / max(len(keys), 1)
    for ax, kind, title in zip(
        axes, ("best", "last"), ("at the best-validation epoch", "at the last epoch"), strict=False
    ):
        for i, key in enumerate(keys):
            means = [frame[f"{kind}_{h}_mean"].iloc[i] for h in heads]
            stds = [frame[f"{kind}_{h}_std"].iloc[i] for h in heads]
            stds = [0.0 if math.isnan(s) else s for s in stds]
            x = np.arange(len(heads)) + (i - (len(keys) - 1) / 2) * width
            ax.bar(x, means, width, yerr=stds, capsize=2, color=palette.get(key), label=runset.row_name(dataset, key))
        ax.set_xticks(np.arange(len(heads)), [h if h != MULTIMODAL else "multimodal" for h in heads])
        ax.set_title(f"test accuracy {title}")
        ax.set_ylabel("accuracy (%)")
        ax.grid(axis="y", alpha=0.3)
    handles, labels = axes[0].get_legend_handles_labels()
    fig.legend(handles, labels, fontsize=8, loc="upper center", bbox_to_anchor=(0.5, 0.0), ncol=min(len(labels), 4))
    fig.suptitle(f"{dataset}: test accuracy per head (mean ± std over seeds)")
    return _save(fig, out / f"{dataset}_accuracy_bars.png", tight=True)


def conflict_rate_figure(runset: RunSet, histories: Histories, dataset: str, out: Path) -> Path | None:
    rows = runset.rows(dataset)
    groups = sorted({g for r in runset.in_dataset(dataset) for g in r.groups()})
    if not groups:
        return None
    palette = colors(runset, dataset)
    fig, axes = plt.subplots(1, len(groups), figsize=(5.5 * len(groups), 4), squeeze=False)
    for ax, group in zip(axes[0], groups, strict=False):
        key = metric_names.grad(group, metric_names.CONFLICT_RATE)
        for row, runs in rows.items():
            having = [r for r in runs if key in r.metrics]
            if not having:
                continue
            series = _mean_series([histories.get(r, key) for r in having])
            ax.plot(series.index.to_numpy() + 1, 100 * series.to_numpy(), marker="o", ms=3, color=palette[row],
                    label=runset.row_name(dataset, row))  # fmt: skip
        ax.set_title(f"{group}: steps with cos < 0")
        ax.set_xlabel("epoch")
        ax.set_ylabel("conflict rate (%)")
        ax.legend(fontsize=7)
    fig.suptitle(f"{dataset}: conflict rate per epoch (mean over seeds)")
    return _save(fig, out / f"{dataset}_conflict_rate.png")


def dataset_steps_per_epoch(runset: RunSet, histories: Histories, dataset: str) -> float | None:
    """Steps per epoch from any run of the dataset with a step-level metric (one-joint-loss runs
    log none but the covariance traces); the median over such runs."""
    values = []
    for run in runset.in_dataset(dataset):
        for group, losses in run.norm_groups().items():
            value = histories.steps_per_epoch(run, metric_names.grad(group, metric_names.NORM, losses[0]))
            if value:
                values.append(value)
            break
    return float(np.median(values)) if values else None


def cov_trace_figure(runset: RunSet, histories: Histories, dataset: str, out: Path) -> Path | None:
    from matplotlib.lines import Line2D

    rows = runset.rows(dataset)
    traced = {  # metric key -> (group, loss)
        k: parsed
        for r in runset.in_dataset(dataset)
        for k in r.metrics
        if (parsed := metric_names.parse_grad(k, metric_names.COV_TRACE))
    }
    if not traced:
        return None
    keys = sorted(traced)
    groups = sorted({group for group, _ in traced.values()})
    palette = colors(runset, dataset)
    fallback = dataset_steps_per_epoch(runset, histories, dataset)
    fig, axes = plt.subplots(1, len(groups), figsize=(5.5 * len(groups), 4), squeeze=False)
    shown: list[tuple[str, ...]] = []
    for ax, group in zip(axes[0], groups, strict=False):
        for row, runs in rows.items():
            for key, loss in [(k, traced[k][1]) for k in keys if traced[k][0] == group]:
                having = [r for r in runs if key in r.metrics]
                if not having:
                    continue
                series = _mean_series([histories.get(r, key) for r in having])
                norm_key = metric_names.grad(group, metric_names.NORM, MULTIMODAL)
                per_epoch = _steps_per_epoch(histories, having, norm_key) or fallback
                x = series.index.to_numpy() / per_epoch if per_epoch else series.index.to_numpy()
                ax.plot(x, series.to_numpy(), ls="-" if loss == MULTIMODAL else "--", color=palette[row], lw=1.2,
                        marker=".", ms=3)  # fmt: skip
                if row not in shown:
                    shown.append(row)
        ax.set_yscale("log")
        ax.set_title(f"{group}: tr Cov of per-sample gradients", fontsize=10)
        ax.set_xlabel("epoch" if fallback else "step")
        ax.set_ylabel("covariance trace")
    handles = [Line2D([], [], color=palette[row], lw=2, label=runset.row_name(dataset, row)) for row in shown]
    handles += [Line2D([], [], color="gray", ls="-", label="multimodal loss"),
                Line2D([], [], color="gray", ls="--", label="unimodal loss")]  # fmt: skip
    fig.legend(handles=handles, fontsize=8, loc="upper center", bbox_to_anchor=(0.5, 0.0), ncol=min(len(handles), 5))
    fig.suptitle(f"{dataset}: gradient noise on a fixed probe batch over training (mean over seeds)")
    return _save(fig, out / f"{dataset}_cov_trace.png", tight=True)
