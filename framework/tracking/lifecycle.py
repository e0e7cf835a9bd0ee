"""A job's run from start to end: opened (or reopened for a resume), closed with the outcome.

:func:`tracked_run` owns a run's life: it opens the run (or reopens the run a checkpoint belongs
to), and closes it FINISHED, FAILED (with an ``error`` tag and ``error.txt``) or KILLED (Ctrl-C or
a preemption, with an ``interrupted`` tag) as the block it guards ends. A run opens only once the
store answers (:func:`~framework.tracking.client.wait_for_store`).
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
from typing import Any

from mlflow.exceptions import MlflowException
from mlflow.tracking import MlflowClient

from .client import bounded_http, default_tracking_uri, wait_for_store
from .journal import ERROR_TAG, INTERRUPTED_TAG
from .run import RunTracker

OPEN_ATTEMPTS = 6

log = logging.getLogger("framework")


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
            tracker.set_tags({"resumes": str(resumes), "resumed_from_epoch": str(resume.from_epoch), **resume.tags})
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
    """The end-of-run figures (:mod:`framework.tracking.figures`) from the run's journal, when the
    store is reachable; a figure never fails a run."""
    if not tracker.flush(force=True):
        log.warning("MLflow unreachable: the run's figures are not drawn")
        return
    try:
        from .figures import log_figures

        with bounded_http(60):
            log_figures(tracker, tracker.journal_points())
    except Exception as error:
        log.warning("the run's figures failed: %s", str(error).splitlines()[0][:200])
