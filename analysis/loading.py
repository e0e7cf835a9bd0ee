"""Reading runs from MLflow: which runs count, ``--filter``, and metric histories on demand.

A run *counts* when it is FINISHED, is not a report's summary run (tag ``summary=true``) and
has a final test accuracy (:data:`framework.metric_names.FINAL_MULTIMODAL`, or
``best/test/acc/<task>`` for multi-task runs). Everything else found is
kept in :attr:`RunSet.excluded` with the reason, so a report lists it instead of silently mixing
it in or dropping it. How the counted runs group into rows: :mod:`analysis.grouping`.
"""

from __future__ import annotations

import math
import re
from collections import defaultdict
from collections.abc import Sequence
from dataclasses import dataclass

import pandas as pd
from mlflow.entities import Run, ViewType
from mlflow.tracking import MlflowClient

from framework.metric_names import FINAL_MULTIMODAL

from .grouping import RunSet
from .records import Excluded, RunRecord, dataset_name

SUMMARY_TAG = "summary"
"""Tag set to ``"true"`` on a report's summary run; such runs never count as training runs."""


@dataclass(frozen=True)
class Filter:
    """``key=value``: ``key`` a param or a tag (``params.K`` / ``tags.K`` to say which)."""

    key: str
    value: str

    @classmethod
    def parse(cls, text: str) -> Filter:
        if "=" not in text:
            raise ValueError(f"--filter expects key=value, got {text!r}")
        key, value = text.split("=", 1)
        if not key.strip():
            raise ValueError(f"--filter expects key=value, got {text!r}")
        return cls(key.strip(), value.strip())

    def values_of(self, run: RunRecord) -> list[str]:
        if self.key.startswith("params."):
            found = [run.params.get(self.key[7:])]
        elif self.key.startswith("tags."):
            found = [run.tags.get(self.key[5:])]
        elif self.key == "status":
            found = [run.status]
        else:
            found = [run.params.get(self.key), run.tags.get(self.key)]
        return [v for v in found if v is not None]


def matches(run: RunRecord, filters: Sequence[Filter]) -> bool:
    """Filters on different keys must all hold; several values for one key are alternatives."""
    by_key: dict[str, list[Filter]] = defaultdict(list)
    for f in filters:
        by_key[f.key].append(f)
    return all(any(f.value in f.values_of(run) for f in group) for group in by_key.values())


def _record(run: Run, experiment: str) -> RunRecord:
    tags = {k: v for k, v in run.data.tags.items()}
    params = dict(run.data.params)
    name = run.info.run_name or tags.get("mlflow.runName", run.info.run_id)
    seed = tags.get("seed", params.get("seed", ""))
    label = tags.get("label") or re.sub(r"-seed\d+$", "", name) or tags.get("integrator", "unknown")
    return RunRecord(
        run_id=run.info.run_id,
        name=name,
        experiment=experiment,
        status=run.info.status,
        label=label,
        seed=str(seed),
        dataset=dataset_name(params, experiment),
        start_time=int(run.info.start_time or 0),
        params=params,
        tags=tags,
        metrics=dict(run.data.metrics),
    )


def search_all(client: MlflowClient, experiment_ids: list[str]) -> list[Run]:
    runs: list[Run] = []
    token = None
    while True:
        page = client.search_runs(
            experiment_ids, run_view_type=ViewType.ACTIVE_ONLY, max_results=1000, page_token=token
        )
        runs.extend(page)
        token = page.token
        if not token:
            return runs


def _why_left_out(record: RunRecord) -> str | None:
    """Why a run does not count, or ``None`` when it does."""
    if record.status == "FINISHED":
        if record.heads:  # best/test/acc/<head>: multimodal and modalities, or tasks and their mean
            return None
        return f"finished without a final metric {FINAL_MULTIMODAL} (or best/test/acc/<task> for multi-task runs)"
    if record.status in ("RUNNING", "SCHEDULED"):
        return f"unfinished ({record.status}: still running, or died unclosed)"
    error = record.tags.get("error", "")
    return record.status + (f": {error}" if error else "")


def load_runs(client: MlflowClient, experiments: Sequence[str], filters: Sequence[Filter] = ()) -> RunSet:
    """All runs of ``experiments`` that pass ``filters``, split into counted and excluded."""
    ids: dict[str, str] = {}
    for name in experiments:
        found = client.get_experiment_by_name(name)
        if found is None:
            known = ", ".join(sorted(e.name for e in client.search_experiments())) or "none"
            raise ValueError(f"no MLflow experiment named {name!r} (known: {known})")
        ids[found.experiment_id] = name
    records = [_record(run, ids[run.info.experiment_id]) for run in search_all(client, list(ids))]
    records = [r for r in records if r.tags.get(SUMMARY_TAG, "").lower() != "true"]
    records = [r for r in records if matches(r, filters)]

    counted: list[RunRecord] = []
    excluded: list[Excluded] = []
    for record in sorted(records, key=lambda r: (r.experiment, r.start_time)):
        reason = _why_left_out(record)
        if reason is None:
            counted.append(record)
        else:
            excluded.append(Excluded(record, reason))
    return RunSet.of(counted, excluded, experiments)


class Histories:
    """Cached ``get_metric_history`` as DataFrames (``step``, ``value``), fetched only on demand."""

    def __init__(self, client: MlflowClient) -> None:
        self.client = client
        self._cache: dict[tuple[str, str], pd.DataFrame] = {}
        self.calls = 0

    def get(self, run: RunRecord, key: str) -> pd.DataFrame:
        cache_key = (run.run_id, key)
        if cache_key not in self._cache:
            if key in run.metrics:
                self.calls += 1
                history = self.client.get_metric_history(run.run_id, key)
                frame = pd.DataFrame(
                    {"step": [m.step for m in history], "value": [m.value for m in history]},
                    columns=["step", "value"],
                )
                # A resumed run may repeat steps: keep the last value logged for each.
                frame = frame.drop_duplicates("step", keep="last").sort_values("step", kind="stable")
            else:
                frame = pd.DataFrame({"step": pd.Series(dtype=int), "value": pd.Series(dtype=float)})
            self._cache[cache_key] = frame.reset_index(drop=True)
        return self._cache[cache_key]

    def steps_per_epoch(self, run: RunRecord, step_key: str) -> float | None:
        """Training steps per epoch, from the last logged step of a step-level metric."""
        frame = self.get(run, step_key)
        epochs = run.epochs
        if frame.empty or not epochs:
            return None
        return float(math.ceil((int(frame["step"].max()) + 1) / epochs))
