"""A run's journal (its spool) and the replay of journals into a store.

Every point a run logs also goes to a journal, ``<spool dir>/<run id>.jsonl``
(``$FRAMEWORK_SPOOL_DIR``, default ``./mlflow_spool``), deleted when the run has ended cleanly in
the store. If the server is still gone when the run ends, the journal stays, with the run's end
status in it, and ::

    python -m framework.tracking replay SPOOL [--tracking-uri URI]

sends it into the store (the run's own, or a fresh one, where the run is created again).

**Nothing doubled.** A point is identified by its (key, step): a run logs each key at most once per
step. A replay skips the points whose (key, step) the store already holds, and the points of
several journals of one run (a killed process's and its resume's, in one file or several) are
merged first, the later one's point winning.
"""

from __future__ import annotations

import json
import logging
import os
from collections.abc import Mapping
from contextlib import suppress
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import mlflow
from mlflow.entities import Metric
from mlflow.exceptions import MlflowException
from mlflow.tracking import MlflowClient

from .client import BATCH_LIMIT, default_tracking_uri
from .ui import EXPERIMENT_KIND, EXPERIMENT_KIND_TAG, mark_model_training

INTERRUPTED_TAG = "interrupted"
ERROR_TAG = "error"

log = logging.getLogger("framework")


def spool_dir() -> Path:
    """Where run journals and spools go: ``$FRAMEWORK_SPOOL_DIR``, else ``<cwd>/mlflow_spool``."""
    return Path(os.environ.get("FRAMEWORK_SPOOL_DIR") or Path.cwd() / "mlflow_spool")


class JournalWriter:
    """The journal of a run: every point and the run's end, for the spool. Mixed into
    :class:`~framework.tracking.run.RunTracker`, whose ``client``, ``run_id`` and ``tracking_uri``
    it records and sends with."""

    client: MlflowClient
    run_id: str
    tracking_uri: str

    def _open_journal(self, experiment: str, run_name: str) -> None:
        self._journal_path = spool_dir() / f"{self.run_id}.jsonl"
        self._inherited = self._journal_path.is_file()  # an earlier process's journal of this run
        self._journal: Any = None
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
