"""MLflow tracking: one run per job, params from the resolved config, metrics sent in batches.

:func:`tracked_run` owns a run's life: it opens the run (or reopens the run a checkpoint belongs
to), and closes it FINISHED, FAILED (with an ``error`` tag and ``error.txt``) or KILLED (Ctrl-C or
a preemption, with an ``interrupted`` tag) as the block it guards ends.

**Outages.** Training never waits on the tracking server for long. Metric sends are single HTTP
attempts with a short timeout; a batch that fails stays in the buffer and is retried on a later
flush, with exponential backoff (1 s doubling to 30 s) between attempts. Every point the run logs
also goes to a journal, ``<spool dir>/<run id>.jsonl`` (``$FRAMEWORK_SPOOL_DIR``, default
``./mlflow_spool``), deleted when the run has ended cleanly in the store. If the server is still
gone when the run ends (after waiting up to ``$FRAMEWORK_TRACKING_WAIT_S`` seconds, default 120),
the journal stays, with the run's end status in it, and ::

    python -m framework.tracking replay SPOOL [--tracking-uri URI]

sends it into the store (the run's own, or a fresh one, where the run is created again).

**Nothing doubled.** A point is identified by its (key, step): a run logs each key at most once per
step. A run that continues (``resume=true``, a requeue) skips the points whose (key, step) the
store already holds; so does a replay, and the points of several journals of one run (a killed
process's and its resume's, in one file or several) are merged first, the later one's point
winning. A batch whose send errored may still have been stored (the server committed, the answer
was lost): before it is sent again, the store's history of its last point's key is checked for
that exact (step, timestamp, value); SQL stores write a batch's metrics in one transaction, so
that point stands for the whole batch.

**No server at the start.** A run opens only once the store answers; a server that does not
answer within ``$FRAMEWORK_TRACKING_CONNECT_S`` seconds (default 60) fails the job before it
trains, with one line naming the URI (:class:`TrackingUnavailable`).
"""

from __future__ import annotations

import argparse
import json
import logging
import math
import os
import random
import time
import traceback
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager, suppress
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
# MLflow 3.x's experiment kind (the UI's ExperimentKind enum; "Machine learning" in its selector).
# The 3.17 UI does not open an experiment by it: it opens the view of the browser's workflow type
# (sidebar switch "GenAI" | "Model training", kept in localStorage "mlflow.workflowType_v1", GenAI
# until switched; the URL's ?workflowType= wins). RUNS_VIEW_QUERY opens the runs table and charts.
EXPERIMENT_KIND_TAG = "mlflow.experimentKind"
EXPERIMENT_KIND = "custom_model_development"
MODEL_TRAINING_KINDS = {EXPERIMENT_KIND, "finetuning", "forecasting", "classification", "regression", "automl"}
RUNS_VIEW_QUERY = "workflowType=machine_learning"
SEND_TIMEOUT_S = 10  # one HTTP attempt per send while the server may be gone
BACKOFF_START_S, BACKOFF_MAX_S = 1.0, 30.0
# store answers that no retry changes (the rest - connection errors, time-outs, 5xx - are outages)
PERMANENT_ERRORS = {"INVALID_PARAMETER_VALUE", "BAD_REQUEST", "RESOURCE_DOES_NOT_EXIST", "INVALID_STATE"}

log = logging.getLogger("framework")


def default_tracking_uri() -> str:
    """``$MLFLOW_TRACKING_URI`` if set, else the embedded store ``sqlite:///<cwd>/mlflow.db``."""
    return os.environ.get("MLFLOW_TRACKING_URI") or f"sqlite:///{Path.cwd() / 'mlflow.db'}"


def spool_dir() -> Path:
    """Where run journals and spools go: ``$FRAMEWORK_SPOOL_DIR``, else ``<cwd>/mlflow_spool``."""
    return Path(os.environ.get("FRAMEWORK_SPOOL_DIR") or Path.cwd() / "mlflow_spool")


class TrackingUnavailable(ConnectionError):
    """The tracking server did not answer when the run was to open."""


def connect_wait_s() -> float:
    """How long a job waits for the store to answer before its run opens:
    ``$FRAMEWORK_TRACKING_CONNECT_S`` (default 60)."""
    return float(os.environ.get("FRAMEWORK_TRACKING_CONNECT_S", "60"))


def wait_for_store(uri: str, wait_s: float | None = None) -> None:
    """Return once the store at ``uri`` answers; raise :class:`TrackingUnavailable` after
    ``wait_s`` (default :func:`connect_wait_s`) seconds of no answer. Embedded stores answer."""
    if not uri.startswith(("http://", "https://")):
        return
    wait_s = connect_wait_s() if wait_s is None else wait_s
    deadline = time.monotonic() + wait_s
    pause = 0.25
    waiting = False
    while True:
        left = deadline - time.monotonic()
        try:
            with bounded_http(max(1.0, min(SEND_TIMEOUT_S, left))):
                MlflowClient(uri).search_experiments(max_results=1)
            return
        except Exception as error:
            if is_permanent(error):
                raise
            text = str(error)
            reason = "connection refused" if "refused" in text.lower() else (text.splitlines() or [""])[0][:160]
            reason = reason or type(error).__name__
        if not waiting:
            log.warning("MLflow tracking server %s not answering (%s): waiting up to %.0f s", uri, reason, wait_s)
            waiting = True
        if time.monotonic() + pause > deadline:
            raise TrackingUnavailable(
                f"MLflow tracking server {uri} did not answer within {wait_s:.0f} s ({reason}); start it, or set "
                "MLFLOW_TRACKING_URI to a reachable store (FRAMEWORK_TRACKING_CONNECT_S sets the wait)"
            )
        time.sleep(pause)
        pause = min(pause * 2, 5.0)


def end_wait_s() -> float:
    """How long a run's end waits for a gone server: ``$FRAMEWORK_TRACKING_WAIT_S`` (default 120)."""
    return float(os.environ.get("FRAMEWORK_TRACKING_WAIT_S", "120"))


def is_permanent(error: BaseException) -> bool:
    return isinstance(error, MlflowException) and error.error_code in PERMANENT_ERRORS


@contextmanager
def bounded_http(timeout_s: float = SEND_TIMEOUT_S) -> Iterator[None]:
    """MLflow's REST calls inside the block make one attempt with a short timeout, instead of
    MLflow's default 7 retries with backoff (minutes against a gone server; it also retries POSTs,
    which could store a batch twice). No effect on embedded (sqlite) stores."""
    keys = {"MLFLOW_HTTP_REQUEST_MAX_RETRIES": "0", "MLFLOW_HTTP_REQUEST_TIMEOUT": str(int(timeout_s))}
    saved = {key: os.environ.get(key) for key in keys}
    os.environ.update(keys)
    try:
        yield
    finally:
        for key, value in saved.items():
            if value is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = value


def mark_model_training(client: MlflowClient, experiment_id: str) -> None:
    """Tag the experiment as model training (see ``EXPERIMENT_KIND_TAG``) unless it has a model
    training kind: one without the tag, or with a GenAI, inferred or unknown kind, gets ours."""
    experiment = client.get_experiment(experiment_id)
    if experiment.tags.get(EXPERIMENT_KIND_TAG) not in MODEL_TRAINING_KINDS:
        client.set_experiment_tag(experiment_id, EXPERIMENT_KIND_TAG, EXPERIMENT_KIND)


def runs_view_url(tracking_uri: str, experiment_id: str) -> str:
    """The UI address of the experiment's runs table (and its charts) in the model training view;
    for a store with no server, the address ``mlflow ui`` (port 5000) serves it at."""
    base = tracking_uri.rstrip("/") if tracking_uri.startswith(("http://", "https://")) else "http://127.0.0.1:5000"
    return f"{base}/#/experiments/{experiment_id}/runs?{RUNS_VIEW_QUERY}"


def held_steps(client: MlflowClient, run_id: str) -> dict[str, set[int]]:
    """The steps the store holds for each of the run's metric keys."""
    keys = client.get_run(run_id).data.metrics
    return {key: {m.step for m in client.get_metric_history(run_id, key)} for key in keys}


def same_point(a: Metric, b: Metric) -> bool:
    if a.key != b.key or a.step != b.step or a.timestamp != b.timestamp:
        return False
    return a.value == b.value or (math.isnan(a.value) and math.isnan(b.value))


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
        self._pending: list[Metric] = []
        self._unsure: list[Metric] | None = None  # a batch whose send errored: maybe stored
        self._retry_at = 0.0
        self._backoff = BACKOFF_START_S
        self.outages = 0  # failed sends (for logs and tests)
        self._journal_path = spool_dir() / f"{self.run_id}.jsonl"
        self._inherited = self._journal_path.is_file()  # an earlier process's journal of this run
        self._journal: Any = None
        self._open_journal(experiment, run.info.run_name or run_name)
        if run_id is None and tags:
            self._write({"tags": {k: str(v) for k, v in tags.items()}})  # a replay into a fresh store sets them

    # -- the journal: every point and the run's end, for the spool --------------------------------

    def _open_journal(self, experiment: str, run_name: str) -> None:
        for _ in range(3):  # another job's run may remove the (then empty) folder in between
            try:
                self._journal_path.parent.mkdir(parents=True, exist_ok=True)
                self._journal = self._journal_path.open("a", encoding="utf-8")
                break
            except FileNotFoundError:
                continue
            except OSError as error:
                log.warning("no MLflow journal (%s): metrics unsent at the end of an outage would be lost", error)
                return
        if self._journal is None:
            log.warning("no MLflow journal in %s", self._journal_path.parent)
            return
        self._write(
            {
                "run": {
                    "run_id": self.run_id,
                    "experiment": experiment,
                    "run_name": run_name,
                    "tracking_uri": self.tracking_uri,
                }
            }
        )

    def _write(self, record: Mapping[str, Any]) -> None:
        if self._journal is not None:
            self._journal.write(json.dumps(record, allow_nan=True) + "\n")
            self._journal.flush()

    def _close_journal(self, keep: bool) -> None:
        if self._journal is None:
            return
        self._journal.close()
        self._journal = None
        if not keep:
            self._journal_path.unlink(missing_ok=True)
            with suppress(OSError):
                self._journal_path.parent.rmdir()  # only when empty

    def journal_points(self) -> list[Metric]:
        """Every metric point this process logged for the run (from its journal)."""
        if self._journal is None:
            return []
        return read_spool(self._journal_path).metrics

    # -- the run --------------------------------------------------------------------------------

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

    @property
    def unsent(self) -> int:
        return len(self._pending) + len(self._unsure or [])

    def flush(self, force: bool = False) -> bool:
        """Send the buffered points; True when nothing is left. A failed send keeps its batch and
        skips the sends until the backoff has passed (``force`` ignores the backoff)."""
        if not force and time.monotonic() < self._retry_at:
            return False
        try:
            with bounded_http():
                if self._unsure is not None:
                    if not self._stored(self._unsure):
                        self.client.log_batch(self.run_id, metrics=self._unsure)
                    self._unsure = None
                while self._pending:
                    batch = self._pending[:BATCH_LIMIT]
                    self._unsure, self._pending = batch, self._pending[BATCH_LIMIT:]
                    self.client.log_batch(self.run_id, metrics=batch)
                    self._unsure = None
        except Exception as error:
            if is_permanent(error):
                raise
            self.outages += 1
            self._retry_at = time.monotonic() + self._backoff
            log.warning(
                "MLflow unreachable (%s): %d metric points kept, retry in %.0f s",
                str(error).splitlines()[0][:200],
                self.unsent,
                self._backoff,
            )
            self._backoff = min(self._backoff * 2, BACKOFF_MAX_S)
            return False
        if self.outages and self._backoff > BACKOFF_START_S:
            log.info("MLflow reachable again: buffered metrics sent")
        self._backoff = BACKOFF_START_S
        return True

    def _send_inherited(self) -> None:
        """Send the points of earlier processes' journals of this run (one killed during an
        outage) that the store lacks, before this process's clean end deletes the journal."""
        self._journal.flush()
        points = read_spool(self._journal_path).metrics
        missing = missing_points(self.client, self.run_id, points)
        for start in range(0, len(missing), BATCH_LIMIT):
            self.client.log_batch(self.run_id, metrics=missing[start : start + BATCH_LIMIT])
        if missing:
            log.info("sent %d points of an earlier process of run %s from its journal", len(missing), self.run_id)
        self._inherited = False

    def _stored(self, batch: list[Metric]) -> bool:
        last = batch[-1]
        return any(same_point(m, last) for m in self.client.get_metric_history(self.run_id, last.key))

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
    wait_for_store(spec.tracking_uri or default_tracking_uri())
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


def run_status(tracking_uri: str | None, run_id: str | None) -> str | None:
    """The status of run ``run_id`` in the store (``FINISHED``, ...), None when the store lacks it."""
    if run_id is None:
        return None
    uri = tracking_uri or default_tracking_uri()
    wait_for_store(uri)
    try:
        with bounded_http():
            return MlflowClient(uri).get_run(run_id).info.status
    except MlflowException as error:
        if error.error_code == "RESOURCE_DOES_NOT_EXIST":
            return None
        raise


@contextmanager
def tracked_run(
    spec: RunSpec, resume: Resumption | None = None, where: Callable[[], str] = lambda: ""
) -> Iterator[RunTracker]:
    """The job's MLflow run for the duration of the block, closed with the block's outcome.

    Normal exit: FINISHED. ``KeyboardInterrupt`` or ``SystemExit`` (Ctrl-C or SIGTERM, or submitit
    leaving a job it checkpointed and requeued): KILLED, tagged ``interrupted`` with the reason and
    ``where()`` (e.g. the epoch and the checkpoint that ``resume=true`` continues from); metrics
    still buffered are not sent, as a resume redoes that epoch. Any other exception: FAILED, with
    an ``error`` tag and the traceback as ``error.txt``. The exception is always re-raised.
    """
    tracker = open_run(spec, resume)
    try:
        yield tracker
    except (KeyboardInterrupt, SystemExit) as stop:
        # Ctrl-C, or SIGTERM (its exception says so), or SystemExit
        reason = (
            (str(stop) or "KeyboardInterrupt") if isinstance(stop, KeyboardInterrupt) else f"SystemExit({stop.code})"
        )
        tag = f"{reason}{where()}"
        tracker.end("KILLED", flush=False, tags={INTERRUPTED_TAG: tag})
        log.warning("run %s ended KILLED: %s", tracker.run_id, tag)
        raise
    except BaseException as error:
        try:
            with bounded_http():
                tracker.log_text(traceback.format_exc(), "error.txt")
        except Exception as failure:  # the server may be gone: the error tag still goes in the spool
            log.warning("could not store error.txt: %s", str(failure).splitlines()[0][:200])
        tracker.end("FAILED", tags={ERROR_TAG: f"{type(error).__name__}: {error}"[:5000]})
        raise
    log_run_figures(tracker)
    tracker.end("FINISHED")


@contextmanager
def failing_with(spec: RunSpec, run_id: str | None, who: str) -> Iterator[None]:
    """For a rank other than 0 of a data-parallel job: rank 0 owns the run (``run_id``) and logs;
    if this rank fails, it marks the run FAILED (tag ``error``, naming ``who``) unless rank 0
    has already ended it, so a run whose rank 0 was killed outright does not stay RUNNING. The
    exception is always re-raised."""
    try:
        yield
    except BaseException as error:
        if run_id is not None and not isinstance(error, (KeyboardInterrupt, SystemExit)):
            try:
                with bounded_http():
                    client = MlflowClient(spec.tracking_uri or default_tracking_uri())
                    if client.get_run(run_id).info.status == "RUNNING":
                        client.set_tag(run_id, ERROR_TAG, f"{who}: {type(error).__name__}: {error}"[:5000])
                        client.set_terminated(run_id, status="FAILED")
            except Exception as failure:  # the store may be gone: rank 0's spool tells
                log.warning("%s could not mark run %s FAILED: %s", who, run_id, str(failure).splitlines()[0][:200])
        raise


def log_run_figures(tracker: RunTracker) -> None:
    """The end-of-run figures (:mod:`framework.run_figures`) from the run's journal, when the
    store is reachable; a figure never fails a run."""
    if not tracker.flush(force=True):
        log.warning("MLflow unreachable: the run's figures are not drawn")
        return
    try:
        from .run_figures import log_figures

        with bounded_http(60):
            log_figures(tracker, tracker.journal_points())
    except Exception as error:
        log.warning("the run's figures failed: %s", str(error).splitlines()[0][:200])


@dataclass
class Spool:
    """A run's journal, read back: who the run is, and what it logged."""

    run: dict[str, Any]
    params: dict[str, str] = field(default_factory=dict)
    tags: dict[str, str] = field(default_factory=dict)
    metrics: list[Metric] = field(default_factory=list)
    end: dict[str, Any] | None = None


def unique_points(points: list[Metric]) -> list[Metric]:
    """One point per (key, step): the last one logged (a resumed process's, over a killed one's)."""
    last: dict[tuple[str, int], Metric] = {}
    for point in points:
        last.pop((point.key, point.step), None)
        last[(point.key, point.step)] = point
    return list(last.values())


def missing_points(client: MlflowClient, run_id: str, points: list[Metric]) -> list[Metric]:
    """The ``points`` whose (key, step) the run's history in the store lacks."""
    held: dict[str, set[int]] = {}
    missing = []
    for point in unique_points(points):
        if point.key not in held:
            held[point.key] = {m.step for m in client.get_metric_history(run_id, point.key)}
        if point.step not in held[point.key]:
            missing.append(point)
    return missing


def read_spool(path: str | Path) -> Spool:
    """Parse a journal (JSON lines): one section per process that logged the run (a ``run``
    record opens each). A ``discard`` record drops that many trailing points (the buffer of a
    KILLED run, whose epoch a resume redoes); a later section drops the ``interrupted`` tag and
    the end of the one before (the run went on). Points are unique by (key, step), the later
    kept (:func:`unique_points`); a torn last line is ignored."""
    spool: Spool | None = None
    with Path(path).open(encoding="utf-8") as handle:
        lines = handle.read().splitlines()
    for number, line in enumerate(lines, 1):
        try:
            record = json.loads(line)
        except json.JSONDecodeError:
            if number == len(lines):
                break
            raise ValueError(f"{path}:{number}: not a JSON line") from None
        if "run" in record:
            if spool is None:
                spool = Spool(run=record["run"])
            elif record["run"].get("run_id") != spool.run.get("run_id"):
                raise ValueError(f"{path}:{number}: a second run ({record['run'].get('run_id')}) in one journal")
            else:
                spool.tags.pop(INTERRUPTED_TAG, None)
                spool.end = None
        elif spool is None:
            raise ValueError(f"{path}: no run record before line {number}")
        elif "metrics" in record:
            spool.metrics.extend(Metric(k, float(v), int(t), int(s)) for k, v, t, s in record["metrics"])
        elif "params" in record:
            spool.params.update(record["params"])
        elif "tags" in record:
            spool.tags.update(record["tags"])
        elif "discard" in record:
            if record["discard"]:
                del spool.metrics[-int(record["discard"]) :]
        elif "end" in record:
            spool.end = record["end"]
    if spool is None:
        raise ValueError(f"{path}: empty spool")
    spool.metrics = unique_points(spool.metrics)
    return spool


def merge_spools(spools: list[Spool]) -> Spool:
    """The journals of one run (written by successive processes) as one, in the order they were
    logged (by their first point): the later journal's params, tags, end and points win."""
    run_ids = {spool.run.get("run_id") for spool in spools}
    if len(run_ids) != 1:
        raise ValueError(f"journals of several runs cannot merge: {sorted(map(str, run_ids))}")
    ordered = sorted(spools, key=lambda spool: min((m.timestamp for m in spool.metrics), default=0))
    merged = Spool(run=ordered[-1].run)
    for spool in ordered:
        if merged.end is not None:  # the run went on after that process ended
            merged.tags.pop(INTERRUPTED_TAG, None)
        merged.params.update(spool.params)
        merged.tags.update(spool.tags)
        merged.metrics.extend(spool.metrics)
        merged.end = spool.end
    merged.metrics = unique_points(merged.metrics)
    return merged


def replay(path: str | Path | list[str | Path], tracking_uri: str | None = None) -> dict[str, Any]:
    """Send a run's journals (one path, or several of the same run) into a store: the run's own
    (only the points whose (key, step) its history lacks), or one that lacks the run, where it is
    created again (experiment, name, params, tags; tagged ``replayed_from``, so a later replay of
    the same run finds it). Sets the end status the journals recorded. Safe to run twice.
    Returns a summary."""
    paths = [path] if isinstance(path, (str, Path)) else list(path)
    spool = merge_spools([read_spool(p) for p in paths])
    uri = tracking_uri or spool.run.get("tracking_uri") or default_tracking_uri()
    client = MlflowClient(uri)
    run_id = spool.run["run_id"]
    try:
        run = client.get_run(run_id)
    except MlflowException as error:
        if error.error_code != "RESOURCE_DOES_NOT_EXIST":
            raise
        run = None
    found = client.get_experiment_by_name(spool.run["experiment"])
    if run is None and found is not None:
        earlier = client.search_runs([found.experiment_id], f"tags.replayed_from = '{run_id}'", max_results=1)
        run = earlier[0] if earlier else None
    created = run is None
    if run is None:
        experiment_id = (
            found.experiment_id
            if found
            else client.create_experiment(spool.run["experiment"], tags={EXPERIMENT_KIND_TAG: EXPERIMENT_KIND})
        )
        run = client.create_run(experiment_id, run_name=spool.run.get("run_name"), tags={"replayed_from": run_id})
    new_id = run.info.run_id
    mark_model_training(client, run.info.experiment_id)
    if run.info.status != "RUNNING":  # a terminated run rejects metrics: reopen, the spool's end closes it
        client.update_run(new_id, status="RUNNING")
    existing = set(run.data.params)
    params = [mlflow.entities.Param(k, v) for k, v in spool.params.items() if k not in existing]
    for start in range(0, len(params), 100):
        client.log_batch(new_id, params=params[start : start + 100])
    missing = spool.metrics if created else missing_points(client, new_id, spool.metrics)
    for start in range(0, len(missing), BATCH_LIMIT):
        client.log_batch(new_id, metrics=missing[start : start + BATCH_LIMIT])
    if INTERRUPTED_TAG in run.data.tags and INTERRUPTED_TAG not in spool.tags:
        client.delete_tag(new_id, INTERRUPTED_TAG)
    if spool.tags:
        client.log_batch(new_id, tags=[mlflow.entities.RunTag(k, v) for k, v in spool.tags.items()])
    end = spool.end or {"status": "FAILED", "end_time": None}
    if spool.end is None and not created and run.info.status != "RUNNING":
        end = {"status": run.info.status, "end_time": run.info.end_time}  # a later process ended the run
    elif spool.end is None:
        client.set_tag(new_id, ERROR_TAG, "the process ended before its run did (replayed from a spool without an end)")
    client.set_terminated(new_id, status=end["status"], end_time=end.get("end_time"))
    return {
        "run_id": new_id,
        "created": created,
        "sent": len(missing),
        "points": len(spool.metrics),
        "status": end["status"],
        "tracking_uri": uri,
    }


class PrepareTrackingStore(Callback):
    """Hydra callback: create the MLflow store's tables once, in the launching process, before a
    multirun's jobs start. Jobs that open a new sqlite file at the same moment would otherwise
    run its schema migrations concurrently and leave it broken."""

    def on_multirun_start(self, config: DictConfig, **kwargs: Any) -> None:
        wait_for_store(config.tracking.uri or default_tracking_uri())
        MlflowClient(config.tracking.uri or default_tracking_uri()).search_experiments(max_results=1)


def cli(argv: list[str] | None = None) -> int:
    """``python -m framework.tracking replay SPOOL... [--tracking-uri URI]``."""
    parser = argparse.ArgumentParser(prog="python -m framework.tracking", description="MLflow maintenance")
    commands = parser.add_subparsers(dest="command", required=True)
    command = commands.add_parser("replay", help="send runs' spools (mlflow_spool/<run id>.jsonl) into a store")
    command.add_argument("spool", nargs="+", type=Path, help="journals; those of one run are merged")
    command.add_argument(
        "--tracking-uri", default=None, help="the store (default: the run's own, as its spool records)"
    )
    command.add_argument("--keep", action="store_true", help="keep each spool after it was replayed")
    args = parser.parse_args(argv)
    runs: dict[str, list[Path]] = {}  # the journals of one run are replayed together, each point once
    for path in args.spool:
        runs.setdefault(str(read_spool(path).run.get("run_id")), []).append(path)
    for paths in runs.values():
        summary = replay(paths, args.tracking_uri)
        print(json.dumps({"spool": ", ".join(map(str, paths)), **summary}))
        if not args.keep:
            for path in paths:
                path.unlink()
    return 0


if __name__ == "__main__":
    raise SystemExit(cli())
