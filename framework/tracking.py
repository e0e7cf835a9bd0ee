"""MLflow tracking: one run per job, params from the resolved config, metrics sent in batches."""

from __future__ import annotations

import os
import time
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import mlflow
from hydra.experimental.callback import Callback
from mlflow.entities import Metric, RunStatus
from mlflow.tracking import MlflowClient
from omegaconf import DictConfig

BATCH_LIMIT = 1000


def default_tracking_uri() -> str:
    """``$MLFLOW_TRACKING_URI`` if set, else the embedded store ``sqlite:///<cwd>/mlflow.db``."""
    return os.environ.get("MLFLOW_TRACKING_URI") or f"sqlite:///{Path.cwd() / 'mlflow.db'}"


def flatten(config: Mapping[str, Any], prefix: str = "") -> dict[str, str]:
    """Nested mapping -> ``{"a.b.c": "value"}`` with values as strings (MLflow params)."""
    flat: dict[str, str] = {}
    for key, value in config.items():
        name = f"{prefix}{key}"
        if isinstance(value, Mapping) and value:
            flat.update(flatten(value, f"{name}."))
        else:
            flat[name] = str(value)[:6000]
    return flat


class RunTracker:
    """An MLflow run with buffered metrics: :meth:`log_metrics` queues, :meth:`flush` sends batches."""

    def __init__(
        self,
        experiment: str,
        run_name: str,
        tracking_uri: str | None = None,
        tags: Mapping[str, str] | None = None,
        run_id: str | None = None,
    ) -> None:
        self.tracking_uri = tracking_uri or default_tracking_uri()
        mlflow.set_tracking_uri(self.tracking_uri)
        self.client = MlflowClient(self.tracking_uri)
        if run_id is None:
            found = self.client.get_experiment_by_name(experiment)
            experiment_id = found.experiment_id if found else self.client.create_experiment(experiment)
            run = self.client.create_run(experiment_id, run_name=run_name, tags=dict(tags or {}))
        else:
            run = self.client.get_run(run_id)
            self.client.update_run(run_id, status=RunStatus.to_string(RunStatus.RUNNING))
        self.run_id: str = run.info.run_id
        self.experiment_id: str = run.info.experiment_id
        self._pending: list[Metric] = []

    def log_params(self, params: Mapping[str, str]) -> None:
        existing = self.client.get_run(self.run_id).data.params
        fresh = {k: v for k, v in params.items() if k not in existing}
        items = list(fresh.items())
        for start in range(0, len(items), 100):
            batch = [mlflow.entities.Param(k, v) for k, v in items[start : start + 100]]
            self.client.log_batch(self.run_id, params=batch)

    def set_tags(self, tags: Mapping[str, str]) -> None:
        self.client.log_batch(self.run_id, tags=[mlflow.entities.RunTag(k, str(v)) for k, v in tags.items()])

    def log_metrics(self, metrics: Mapping[str, float], step: int) -> None:
        now = int(time.time() * 1000)
        self._pending.extend(Metric(k, float(v), now, step) for k, v in metrics.items())
        if len(self._pending) >= BATCH_LIMIT:
            self.flush()

    def flush(self) -> None:
        while self._pending:
            batch, self._pending = self._pending[:BATCH_LIMIT], self._pending[BATCH_LIMIT:]
            self.client.log_batch(self.run_id, metrics=batch)

    def log_text(self, text: str, artifact_file: str) -> None:
        self.client.log_text(self.run_id, text, artifact_file)

    def log_artifact(self, path: str | Path, artifact_path: str | None = None) -> None:
        self.client.log_artifact(self.run_id, str(path), artifact_path)

    def end(self, status: str = "FINISHED") -> None:
        self.flush()
        self.client.set_terminated(self.run_id, status=status)

    @property
    def url_hint(self) -> str:
        return f"experiment {self.experiment_id}, run {self.run_id} in {self.tracking_uri}"


class PrepareTrackingStore(Callback):
    """Hydra callback: create the MLflow store's tables once, in the launching process, before a
    multirun's jobs start. Jobs that open a new sqlite file at the same moment would otherwise
    run its schema migrations concurrently and leave it broken."""

    def on_multirun_start(self, config: DictConfig, **kwargs: Any) -> None:
        MlflowClient(config.tracking.uri or default_tracking_uri()).search_experiments(max_results=1)
