"""The MLflow store as a run talks to it: batched metric sends with backoff, and the wait for a
store at the start.

**Outages.** Training never waits on the tracking server for long. Metric sends are single HTTP
attempts with a short timeout; a batch that fails stays in the buffer and is retried on a later
flush, with exponential backoff (1 s doubling to 30 s) between attempts. A run's end waits up to
``$FRAMEWORK_TRACKING_WAIT_S`` seconds (default 120) for a gone server.

**Nothing doubled.** A batch whose send errored may still have been stored (the server committed,
the answer was lost): before it is sent again, the store's history of its last point's key is
checked for that exact (step, timestamp, value); SQL stores write a batch's metrics in one
transaction, so that point stands for the whole batch.

**No server at the start.** A run opens only once the store answers; a server that does not
answer within ``$FRAMEWORK_TRACKING_CONNECT_S`` seconds (default 60) fails the job before it
trains, with one line naming the URI (:class:`TrackingUnavailable`).
"""

from __future__ import annotations

import logging
import math
import os
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from mlflow.entities import Metric
from mlflow.exceptions import MlflowException
from mlflow.tracking import MlflowClient

BATCH_LIMIT = 1000
SEND_TIMEOUT_S = 10  # one HTTP attempt per send while the server may be gone
BACKOFF_START_S, BACKOFF_MAX_S = 1.0, 30.0
# store answers that no retry changes (the rest - connection errors, time-outs, 5xx - are outages)
PERMANENT_ERRORS = {"INVALID_PARAMETER_VALUE", "BAD_REQUEST", "RESOURCE_DOES_NOT_EXIST", "INVALID_STATE"}

log = logging.getLogger("framework")


def default_tracking_uri() -> str:
    """``$MLFLOW_TRACKING_URI`` if set, else the embedded store ``sqlite:///<cwd>/mlflow.db``."""
    return os.environ.get("MLFLOW_TRACKING_URI") or f"sqlite:///{Path.cwd() / 'mlflow.db'}"


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


def held_steps(client: MlflowClient, run_id: str) -> dict[str, set[int]]:
    """The steps the store holds for each of the run's metric keys."""
    keys = client.get_run(run_id).data.metrics
    return {key: {m.step for m in client.get_metric_history(run_id, key)} for key in keys}


def same_point(a: Metric, b: Metric) -> bool:
    if a.key != b.key or a.step != b.step or a.timestamp != b.timestamp:
        return False
    return a.value == b.value or (math.isnan(a.value) and math.isnan(b.value))


class BatchedSends:
    """A run's buffered metric points, sent in batches of ``BATCH_LIMIT`` by :meth:`flush`, with
    backoff after a failed send. Mixed into :class:`~framework.tracking.run.RunTracker`, whose
    ``client`` and ``run_id`` it sends with."""

    client: MlflowClient
    run_id: str

    def _init_sends(self) -> None:
        self._pending: list[Metric] = []
        self._unsure: list[Metric] | None = None  # a batch whose send errored: maybe stored
        self._retry_at = 0.0
        self._backoff = BACKOFF_START_S
        self.outages = 0  # failed sends (for logs and tests)

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

    def _stored(self, batch: list[Metric]) -> bool:
        last = batch[-1]
        return any(same_point(m, last) for m in self.client.get_metric_history(self.run_id, last.key))
