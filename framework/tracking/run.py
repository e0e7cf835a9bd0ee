"""One MLflow run: params from the resolved config, tags, metrics sent in batches, its end.

:class:`RunTracker` buffers metrics (sent by :class:`~framework.tracking.client.BatchedSends`) and
writes every point to the run's journal (:class:`~framework.tracking.journal.JournalWriter`). Its
:meth:`~RunTracker.end` waits up to ``$FRAMEWORK_TRACKING_WAIT_S`` seconds (default 120) for a gone
server; if the server is still gone, the journal stays as the run's spool, with the end status,
for ``python -m framework.tracking replay``.

**Nothing doubled.** A point is identified by its (key, step): a run logs each key at most once per
step. A run that continues (``resume=true``, a requeue) skips the points whose (key, step) the
store already holds.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import mlflow
from mlflow.entities import Metric, RunStatus
from mlflow.tracking import MlflowClient

from .client import BATCH_LIMIT, BatchedSends, bounded_http, default_tracking_uri, end_wait_s, held_steps, is_permanent
from .journal import JournalWriter
from .ui import EXPERIMENT_KIND, EXPERIMENT_KIND_TAG, mark_model_training, runs_view_url

log = logging.getLogger("framework")


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


class RunTracker(BatchedSends, JournalWriter):
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
            experiment_id = (
                found.experiment_id
                if found
                else self.client.create_experiment(experiment, tags={EXPERIMENT_KIND_TAG: EXPERIMENT_KIND})
            )
            run = self.client.create_run(experiment_id, run_name=run_name, tags=dict(tags or {}))
        else:
            run = self.client.get_run(run_id)
            self.client.update_run(run_id, status=RunStatus.to_string(RunStatus.RUNNING))
        # a continued run: what the store holds is not sent again (by key and step)
        self._held = held_steps(self.client, run.info.run_id) if run_id is not None else {}
        self.skipped = 0  # points not sent because the store held them
        self.run_id: str = run.info.run_id
        self.experiment_id: str = run.info.experiment_id
        mark_model_training(self.client, self.experiment_id)
        self._init_sends()
        self._open_journal(experiment, run.info.run_name or run_name)
        if run_id is None and tags:
            self._write({"tags": {k: str(v) for k, v in tags.items()}})  # a replay into a fresh store sets them

    def log_params(self, params: Mapping[str, str]) -> None:
        self._write({"params": dict(params)})
        existing = self.client.get_run(self.run_id).data.params
        fresh = {k: v for k, v in params.items() if k not in existing}
        items = list(fresh.items())
        for start in range(0, len(items), 100):
            batch = [mlflow.entities.Param(k, v) for k, v in items[start : start + 100]]
            self.client.log_batch(self.run_id, params=batch)

    def set_tags(self, tags: Mapping[str, str]) -> None:
        tags = {k: str(v) for k, v in tags.items()}
        self._write({"tags": tags})
        self.client.log_batch(self.run_id, tags=[mlflow.entities.RunTag(k, v) for k, v in tags.items()])

    def log_metrics(self, metrics: Mapping[str, float], step: int) -> None:
        now = int(time.time() * 1000)
        points = [Metric(k, float(v), now, step) for k, v in metrics.items() if step not in self._held.get(k, ())]
        self.skipped += len(metrics) - len(points)
        if not points:
            return
        self._write({"metrics": [[m.key, m.value, m.timestamp, m.step] for m in points]})
        self._pending.extend(points)
        if len(self._pending) >= BATCH_LIMIT:
            self.flush()

    def tags(self) -> dict[str, str]:
        return dict(self.client.get_run(self.run_id).data.tags)

    def delete_tag(self, key: str) -> None:
        self.client.delete_tag(self.run_id, key)

    def log_text(self, text: str, artifact_file: str) -> None:
        self.client.log_text(self.run_id, text, artifact_file)

    def log_artifact(self, path: str | Path, artifact_path: str | None = None) -> None:
        self.client.log_artifact(self.run_id, str(path), artifact_path)

    def end(self, status: str = "FINISHED", flush: bool = True, tags: Mapping[str, str] | None = None) -> bool:
        """Send what is buffered (waiting up to :func:`end_wait_s` for a gone server), set ``tags``
        and the end status. True when the store has it all; else the journal stays as the run's
        spool, with the status, for ``python -m framework.tracking replay``."""
        if not flush:
            # a resume redoes the epoch these belong to: never send them, not even from the spool
            self._write({"discard": self.unsent})
            self._pending, self._unsure = [], None
        if tags:
            self._write({"tags": {k: str(v) for k, v in tags.items()}})
        end_time = int(time.time() * 1000)
        self._write({"end": {"status": status, "end_time": end_time}})
        deadline = time.monotonic() + end_wait_s()
        while True:
            if self.flush(force=True):
                try:
                    with bounded_http():
                        if self._inherited:
                            self._send_inherited()
                        if tags:
                            run_tags = [mlflow.entities.RunTag(k, str(v)) for k, v in tags.items()]
                            self.client.log_batch(self.run_id, tags=run_tags)
                        self.client.set_terminated(self.run_id, status=status, end_time=end_time)
                except Exception as error:
                    if is_permanent(error):
                        raise
                    log.warning("MLflow unreachable at the run's end (%s)", str(error).splitlines()[0][:200])
                else:
                    self._close_journal(keep=False)
                    return True
            if time.monotonic() >= deadline:
                break
            time.sleep(min(self._backoff, max(0.0, deadline - time.monotonic()), 5.0))
        self._close_journal(keep=True)
        log.error(
            "MLflow server gone at the end of run %s: %s kept its metrics and end status %s; send them with: "
            "python -m framework.tracking replay %s --tracking-uri %s",
            self.run_id,
            self._journal_path,
            status,
            self._journal_path,
            self.tracking_uri,
        )
        return False

    @property
    def url_hint(self) -> str:
        runs = runs_view_url(self.tracking_uri, self.experiment_id)
        return f"experiment {self.experiment_id}, run {self.run_id} in {self.tracking_uri}, runs and charts at {runs}"
