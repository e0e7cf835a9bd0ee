"""MLflow tracking: one run per job, params from the resolved config, metrics sent in batches.

:func:`tracked_run` owns a run's life: it opens the run (or reopens the run a checkpoint belongs
to), and closes it FINISHED, FAILED (with an ``error`` tag and ``error.txt``) or KILLED (Ctrl-C or
a preemption, with an ``interrupted`` tag) as the block it guards ends.
"""

from __future__ import annotations

import logging
import os
import random
import time
import traceback
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import mlflow
from hydra.experimental.callback import Callback
from mlflow.entities import Metric, RunStatus
from mlflow.exceptions import MlflowException
from mlflow.tracking import MlflowClient
from omegaconf import DictConfig

BATCH_LIMIT = 1000
OPEN_ATTEMPTS = 6
INTERRUPTED_TAG = "interrupted"
ERROR_TAG = "error"

log = logging.getLogger("framework")


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

    def tags(self) -> dict[str, str]:
        return dict(self.client.get_run(self.run_id).data.tags)

    def delete_tag(self, key: str) -> None:
        self.client.delete_tag(self.run_id, key)

    def log_text(self, text: str, artifact_file: str) -> None:
        self.client.log_text(self.run_id, text, artifact_file)

    def log_artifact(self, path: str | Path, artifact_path: str | None = None) -> None:
        self.client.log_artifact(self.run_id, str(path), artifact_path)

    def end(self, status: str = "FINISHED", flush: bool = True) -> None:
        if flush:
            self.flush()
        self.client.set_terminated(self.run_id, status=status)

    @property
    def url_hint(self) -> str:
        return f"experiment {self.experiment_id}, run {self.run_id} in {self.tracking_uri}"


@dataclass(frozen=True)
class RunSpec:
    """Where a job's run goes and how it is named and tagged."""

    experiment: str
    run_name: str
    tracking_uri: str | None = None
    tags: Mapping[str, str] = field(default_factory=dict)


@dataclass(frozen=True)
class Resumption:
    """The run a checkpoint belongs to, and what to tag it with when it continues."""

    run_id: str | None
    from_epoch: int
    tags: Mapping[str, str] = field(default_factory=dict)


def open_run(spec: RunSpec, resume: Resumption | None = None) -> RunTracker:
    """``resume``'s run when it is in the store, else a new one.

    Jobs of a sweep that start together may race to create the store's tables (a fresh sqlite
    file) or the experiment; a failed first attempt is retried after a random pause (drawn from
    the OS, never from the seeded RNGs, so training stays deterministic).
    """
    kwargs: dict[str, Any] = {
        "experiment": spec.experiment,
        "run_name": spec.run_name,
        "tracking_uri": spec.tracking_uri,
        "tags": dict(spec.tags),
    }
    if resume is not None and resume.run_id is not None:
        try:
            tracker = RunTracker(**kwargs, run_id=resume.run_id)
        except MlflowException as error:
            if error.error_code != "RESOURCE_DOES_NOT_EXIST":
                raise
            log.warning("run %s of the checkpoint is not in this store: resuming into a new run", resume.run_id)
        else:
            tags = tracker.tags()
            if INTERRUPTED_TAG in tags:
                tracker.delete_tag(INTERRUPTED_TAG)
            resumes = int(tags.get("resumes", 0)) + 1
            tracker.set_tags({"resumes": resumes, "resumed_from_epoch": resume.from_epoch, **resume.tags})
            return tracker
    jitter = random.Random(os.urandom(8))
    for attempt in range(1, OPEN_ATTEMPTS + 1):
        try:
            return RunTracker(**kwargs)
        except Exception as error:
            if attempt == OPEN_ATTEMPTS:
                raise
            log.warning("opening the MLflow run failed (%s), retrying (concurrent jobs?)", str(error).splitlines()[0])
            time.sleep(jitter.uniform(0.2, 1.0) * attempt)
    raise AssertionError("unreachable")


@contextmanager
def tracked_run(
    spec: RunSpec, resume: Resumption | None = None, where: Callable[[], str] = lambda: ""
) -> Iterator[RunTracker]:
    """The job's MLflow run for the duration of the block, closed with the block's outcome.

    Normal exit: FINISHED. ``KeyboardInterrupt`` or ``SystemExit`` (Ctrl-C, or submitit leaving a
    job it checkpointed and requeued): KILLED, tagged ``interrupted`` with the reason and
    ``where()`` (e.g. the epoch and the checkpoint that ``resume=true`` continues from); metrics
    still buffered are not sent, as a resume redoes that epoch. Any other exception: FAILED, with
    an ``error`` tag and the traceback as ``error.txt``. The exception is always re-raised.
    """
    tracker = open_run(spec, resume)
    try:
        yield tracker
    except (KeyboardInterrupt, SystemExit) as stop:
        reason = "KeyboardInterrupt" if isinstance(stop, KeyboardInterrupt) else f"SystemExit({stop.code})"
        tracker.set_tags({INTERRUPTED_TAG: f"{reason}{where()}"})
        tracker.end("KILLED", flush=False)
        raise
    except BaseException as error:
        tracker.set_tags({ERROR_TAG: f"{type(error).__name__}: {error}"[:5000]})
        tracker.log_text(traceback.format_exc(), "error.txt")
        tracker.end("FAILED")
        raise
    tracker.end("FINISHED")


class PrepareTrackingStore(Callback):
    """Hydra callback: create the MLflow store's tables once, in the launching process, before a
    multirun's jobs start. Jobs that open a new sqlite file at the same moment would otherwise
    run its schema migrations concurrently and leave it broken."""

    def on_multirun_start(self, config: DictConfig, **kwargs: Any) -> None:
        MlflowClient(config.tracking.uri or default_tracking_uri()).search_experiments(max_results=1)
