"""Load: 32 concurrent training jobs (submitit_local, all at once) writing to one store.

Against the PostgreSQL-backed server of ``scripts/mlflow_server.sh --postgres``: every run ends
FINISHED with exactly the metric rows of a reference run. The same load against the embedded
sqlite store is measured (wall time, runs not FINISHED, rows lost or doubled) and reported, by
``pytest -m benchmark`` only (a measurement, in neither test tier); the figures go to
``$FRAMEWORK_LOAD_REPORT`` (JSON) when set.
"""

from __future__ import annotations

import collections
import json
import os
import shutil
import sqlite3
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import pytest
from tests.ports import free_port

ROOT = Path(__file__).resolve().parents[2]
JOBS = int(os.environ.get("FRAMEWORK_LOAD_JOBS", "32"))
# full statistics: per-step cosines, norms and weights every step, covariance traces every 2 steps
JOB = [
    "experiment=smoke",
    "trainer.epochs=1",
    "trainer.max_steps_per_epoch=4",
    "trainer.statistics.log_every=1",
    "trainer.statistics.noise_every=2",
    "trainer.progress=false",
]
pytestmark = pytest.mark.slow


def env_for(tmp_path: Path, uri: str) -> dict[str, str]:
    return {
        **os.environ,
        "MLFLOW_TRACKING_URI": uri,
        "FRAMEWORK_CHECKPOINT_DIR": str(tmp_path / "checkpoints"),
        "FRAMEWORK_SPOOL_DIR": str(tmp_path / "spool"),
    }


def cli(tmp_path: Path, uri: str, *args: str) -> tuple[subprocess.CompletedProcess[str], float]:
    start = time.monotonic()
    result = subprocess.run(
        [sys.executable, "-m", "framework.main", *args],
        cwd=ROOT,
        env=env_for(tmp_path, uri),
        capture_output=True,
        text=True,
        timeout=900,
    )
    return result, time.monotonic() - start


def counts(rows) -> dict[str, collections.Counter]:
    """{run name: Counter((key, step) -> rows)} from (name, key, step) rows."""
    by_run: dict[str, collections.Counter] = collections.defaultdict(collections.Counter)
    for name, key, step in rows:
        by_run[name][(key, step)] += 1
    return dict(by_run)


QUERY_ROWS = "select r.name, m.key, m.step from metrics m join runs r on r.run_uuid = m.run_uuid"
QUERY_STATUS = "select name, status from runs"


def sqlite_store(db: Path) -> tuple[dict[str, collections.Counter], dict[str, str]]:
    with sqlite3.connect(db) as connection:
        return counts(connection.execute(QUERY_ROWS)), dict(connection.execute(QUERY_STATUS))


def postgres_store(folder: Path) -> tuple[dict[str, collections.Counter], dict[str, str]]:
    import psycopg2

    connection = psycopg2.connect(host=str(folder), user="postgres", dbname="mlflow")
    try:
        with connection.cursor() as cursor:
            cursor.execute(QUERY_ROWS)
            rows = counts(cursor.fetchall())
            cursor.execute(QUERY_STATUS)
            return rows, dict(cursor.fetchall())
    finally:
        connection.close()


@pytest.fixture(scope="module")
def reference(tmp_path_factory) -> collections.Counter:
    """One job alone: the (key, step) rows every job of the load must have."""
    tmp_path = tmp_path_factory.mktemp("reference")
    result, _ = cli(tmp_path, f"sqlite:///{tmp_path / 'mlflow.db'}", *JOB, f"hydra.run.dir={tmp_path}/out")
    assert result.returncode == 0, result.stderr
    rows, status = sqlite_store(tmp_path / "mlflow.db")
    assert list(status.values()) == ["FINISHED"]
    return next(iter(rows.values()))


def load(tmp_path: Path, uri: str) -> tuple[subprocess.CompletedProcess[str], float]:
    return cli(
        tmp_path,
        uri,
        "-m",
        "hydra/launcher=submitit_local",
        *JOB,
        f"seed=range(0,{JOBS})",
        f"hydra.sweep.dir={tmp_path}/multi",
    )


def measure(rows, status, reference, wall_s, returncode) -> dict:
    expected = sum(reference.values())
    return {
        "jobs": JOBS,
        "wall_s": round(wall_s, 1),
        "returncode": returncode,
        "runs": len(status),
        "finished": sum(s == "FINISHED" for s in status.values()),
        "not_finished": sorted(n for n, s in status.items() if s != "FINISHED"),
        "metric_rows": sum(sum(c.values()) for c in rows.values()),
        "expected_rows": expected * JOBS,
        "runs_with_wrong_rows": sorted(n for n in status if rows.get(n, collections.Counter()) != reference),
    }


def report(name: str, figures: dict) -> None:
    print(f"\nload [{name}]: {json.dumps(figures)}")
    path = os.environ.get("FRAMEWORK_LOAD_REPORT")
    if path:
        data = json.loads(Path(path).read_text()) if Path(path).exists() else {}
        data[name] = figures
        Path(path).write_text(json.dumps(data, indent=1))


@pytest.fixture
def postgres_server():
    """scripts/mlflow_server.sh --postgres: a PostgreSQL in a fresh folder, the server in front."""
    if not any(Path("/usr/lib/postgresql").glob("*/bin/initdb")) and os.geteuid() != 0:
        pytest.skip("PostgreSQL is not installed and installing it needs root")
    # the postgres user must reach the data folder: not under pytest's private (0700) tmp folder
    base = Path(tempfile.mkdtemp(prefix="mmgrad-pg-", dir="/tmp"))
    base.chmod(0o755)
    port = free_port()
    env = {**os.environ, "MLFLOW_SERVER_STATE": str(base / "server")}
    args = [
        "--postgres",
        str(base / "pg"),
        "--port",
        str(port),
        "--workers",
        "2",
        "--artifacts-destination",
        str(base / "artifacts"),
    ]
    started = subprocess.run(
        ["bash", "scripts/mlflow_server.sh", *args], cwd=ROOT, env=env, capture_output=True, text=True, timeout=600
    )
    assert started.returncode == 0, started.stderr
    uri = started.stdout.strip().splitlines()[-1].removeprefix("export MLFLOW_TRACKING_URI=")
    try:
        yield uri, base / "pg"
    finally:
        subprocess.run(
            ["bash", "scripts/mlflow_server.sh", "--stop", "--port", str(port)], cwd=ROOT, env=env, timeout=120
        )
        assert not (base / "pg" / "postmaster.pid").exists(), "--stop stops PostgreSQL too"
        shutil.rmtree(base, ignore_errors=True)


def test_32_concurrent_jobs_against_a_postgresql_backed_server(postgres_server, tmp_path, reference):
    uri, folder = postgres_server
    result, wall_s = load(tmp_path, uri)
    rows, status = postgres_store(folder)
    figures = measure(rows, status, reference, wall_s, result.returncode)
    report("postgresql", figures)
    assert result.returncode == 0, result.stderr[-3000:]
    assert sorted(status) == sorted(f"mmpareto-seed{seed}" for seed in range(JOBS))
    assert figures["finished"] == JOBS
    assert figures["runs_with_wrong_rows"] == [], "every run has exactly the reference's metric rows"
    assert figures["metric_rows"] == figures["expected_rows"]


@pytest.mark.benchmark  # a measurement, not a requirement: pytest -m benchmark (in no tier)
def test_the_same_load_against_the_embedded_sqlite_store_is_measured(tmp_path, reference):
    db = tmp_path / "mlflow.db"
    result, wall_s = load(tmp_path, f"sqlite:///{db}")
    rows, status = sqlite_store(db) if db.exists() else ({}, {})
    figures = measure(rows, status, reference, wall_s, result.returncode)
    report("sqlite", figures)
    assert figures["runs"] > 0, result.stderr[-3000:]  # measured, not required to be exact
