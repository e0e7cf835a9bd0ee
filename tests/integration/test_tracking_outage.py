"""A real MLflow server that goes away mid-run: training goes on, nothing is lost or doubled.

The reference is the same run (same seed, same config) into an embedded store with no outage; the
metric rows are compared as (run, key, step, value) multisets, so a lost or doubled point fails.
"""

from __future__ import annotations

import collections
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

import pytest
from tests.cli import ROOT, main_command, main_env
from tests.mlflow_server import MlflowServer
from tests.ports import free_port

OVERRIDES = ["experiment=smoke", "trainer.epochs=6", "seed=0", "trainer.progress=false"]


@pytest.fixture
def server(tmp_path):
    srv = MlflowServer(tmp_path / "server.db", free_port(), tmp_path / "server.log", start_timeout=90, stop_timeout=20)
    srv.start()
    yield srv
    srv.stop()


def env_for(tmp_path: Path, uri: str, wait_s: float) -> dict[str, str]:
    return main_env(tmp_path, uri, FRAMEWORK_SPOOL_DIR=str(tmp_path / "spool"), FRAMEWORK_TRACKING_WAIT_S=str(wait_s))


def train(tmp_path: Path, uri: str, wait_s: float = 120, name: str = "job") -> subprocess.Popen:
    folder = tmp_path / name
    folder.mkdir()
    return subprocess.Popen(
        main_command(folder, *OVERRIDES),
        cwd=ROOT,
        env=env_for(folder, uri, wait_s),
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )


def rows(db: Path) -> collections.Counter:
    with sqlite3.connect(db) as connection:
        return collections.Counter(connection.execute("select key, step, value from metrics"))


def statuses(db: Path) -> list[str]:
    with sqlite3.connect(db) as connection:
        return [r[0] for r in connection.execute("select status from runs")]


def wait_for_first_epoch(db: Path, process: subprocess.Popen, timeout: float = 120) -> None:
    """Until the server's store has the run's first epoch (its ``lr`` point)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        assert process.poll() is None, process.stdout.read()
        try:
            with sqlite3.connect(db) as connection:
                if connection.execute("select count(*) from metrics where key='lr'").fetchone()[0]:
                    return
        except sqlite3.OperationalError:
            pass
        time.sleep(0.1)
    raise AssertionError("no epoch reached the store")


@pytest.fixture(scope="module")
def reference(tmp_path_factory) -> collections.Counter:
    """The rows of the same run with no outage (an embedded store)."""
    tmp_path = tmp_path_factory.mktemp("reference")
    db = tmp_path / "mlflow.db"
    process = train(tmp_path, f"sqlite:///{db}")
    out, _ = process.communicate(timeout=300)
    assert process.returncode == 0, out
    assert statuses(db) == ["FINISHED"]
    return rows(db)


@pytest.mark.slow
def test_server_gone_for_longer_than_an_epoch_then_back(server, tmp_path, reference):
    process = train(tmp_path, server.uri)
    wait_for_first_epoch(server.db, process)
    server.stop()
    stopped = time.monotonic()
    time.sleep(4.0)  # with the ~8 s restart: the outage spans more than one smoke epoch (~1 s)
    server.start()
    outage_s = time.monotonic() - stopped
    out, _ = process.communicate(timeout=300)
    assert process.returncode == 0, out
    assert "MLflow unreachable" in out, "the outage was seen by the run"
    got = rows(server.db)
    assert sum(got.values()) == sum(reference.values()), f"outage {outage_s:.1f} s"
    assert got == reference, "exactly the rows of an uninterrupted run: nothing lost, nothing doubled"
    assert statuses(server.db) == ["FINISHED"]
    assert not list((tmp_path / "job" / "spool").glob("*.jsonl")), "a run that ended in the store leaves no spool"
    print(f"outage {outage_s:.1f} s, {sum(got.values())} metric rows (reference {sum(reference.values())})")


@pytest.mark.slow
def test_server_never_back_spool_replays_exactly(server, tmp_path, reference):
    process = train(tmp_path, server.uri, wait_s=3)
    wait_for_first_epoch(server.db, process)
    server.stop()
    out, _ = process.communicate(timeout=300)
    assert process.returncode == 0, out  # training itself went on to its end
    spools = list((tmp_path / "job" / "spool").glob("*.jsonl"))
    assert len(spools) == 1 and "framework.tracking replay" in out, out
    assert statuses(server.db) == ["RUNNING"]
    partial = rows(server.db)
    assert 0 < sum(partial.values()) < sum(reference.values())

    def replay(uri: str) -> None:
        command = [sys.executable, "-m", "framework.tracking", "replay", str(spools[0]), "--tracking-uri", uri]
        command.append("--keep")
        result = subprocess.run(command, cwd=ROOT, capture_output=True, text=True, timeout=120)
        assert result.returncode == 0, result.stderr

    fresh = tmp_path / "fresh.db"
    replay(f"sqlite:///{fresh}")
    assert rows(fresh) == reference, "a fresh store gets the whole run"
    assert statuses(fresh) == ["FINISHED"]
    with sqlite3.connect(fresh) as connection:
        assert connection.execute("select count(*) from params").fetchone()[0] > 10

    replay(f"sqlite:///{server.db}")  # the run's own store, which has the first epochs already
    replay(f"sqlite:///{server.db}")  # twice: nothing doubles
    assert rows(server.db) == reference
    assert statuses(server.db) == ["FINISHED"]
