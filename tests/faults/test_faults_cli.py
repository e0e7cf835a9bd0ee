"""Exactly-once runs under faults, as a user meets them on the command line: a second submission
of a running job, ``kill -TERM``, and no tracking server at the start (never started, or late)."""

from __future__ import annotations

import signal
import socket
import sqlite3
import subprocess
import threading
import time
from pathlib import Path

import pytest
import torch
from mlflow.tracking import MlflowClient
from tests.cli import ROOT, main_command, main_env
from tests.mlflow_server import MlflowServer
from tests.ports import free_port

pytestmark = [pytest.mark.slow, pytest.mark.faults]

# 16 steps per epoch: long enough to be caught inside epoch 2
ARGS = ["experiment=smoke", "trainer.epochs=4", "dataset.train_size=1024", "trainer.statistics.log_every=4"]


def job(tmp_path: Path, uri: str, name: str = "job", **env: str) -> tuple[list[str], dict[str, str], Path]:
    """The command, environment and checkpoint of one job (its folder: ``tmp_path/name``)."""
    folder = tmp_path / name
    environment = main_env(folder, uri, FRAMEWORK_SPOOL_DIR=str(folder / "spool"), FRAMEWORK_TRACKING_WAIT_S="5", **env)
    return (
        main_command(folder, *ARGS),
        environment,
        folder / "checkpoints" / "smoke" / ",".join(sorted(ARGS)) / "checkpoint.pt",
    )


def start(command: list[str], env: dict[str, str]) -> subprocess.Popen:
    return subprocess.Popen(command, cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)


def wait_for_checkpoint(path: Path, epoch: int, process: subprocess.Popen, timeout: float = 300) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        assert process.poll() is None, process.stdout.read()
        try:
            if torch.load(path, weights_only=False)["state"]["epoch"] >= epoch:
                return
        except Exception:
            pass
        time.sleep(0.05)
    raise AssertionError(f"no checkpoint of epoch {epoch} in {timeout} s")


def rows(db: Path) -> list[tuple[str, int, float]]:
    with sqlite3.connect(db) as connection:
        return sorted(connection.execute("select key, step, value from metrics"))


def only_run(uri: str):
    client = MlflowClient(uri)
    (run,) = client.search_runs([client.get_experiment_by_name("smoke").experiment_id])
    return run


def test_a_second_submission_of_a_running_job_refuses_in_one_line(tmp_path):
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    command, env, path = job(tmp_path, uri)
    first = start(command, env)
    try:
        wait_for_checkpoint(path, 1, first)
        # stopped, the holder stays alive (and its heartbeat fresh enough) however long the second
        # process takes to start: without this the first job could finish before it is asked
        first.send_signal(signal.SIGSTOP)
        try:
            second = subprocess.run(
                [*command, "resume=true"], cwd=ROOT, env=env, capture_output=True, text=True, timeout=300
            )
        finally:
            first.send_signal(signal.SIGCONT)
        out, _ = first.communicate(timeout=300)
    finally:
        if first.poll() is None:
            first.kill()
    assert second.returncode == 1
    lines = second.stderr.strip().splitlines()
    assert len(lines) == 1, second.stderr
    assert f"process {first.pid} on host {socket.gethostname()}" in lines[0] and "already running" in lines[0]
    assert first.returncode == 0, out
    run = only_run(uri)
    assert run.info.status == "FINISHED" and "resumes" not in run.data.tags
    history = rows(tmp_path / "mlflow.db")
    assert len(history) == len(set((k, s) for k, s, _ in history)), "no point twice"
    assert not path.with_name("job.lock").exists(), "the lock goes with its process"


def test_kill_term_ends_the_run_killed_and_resume_reaches_the_same_final_metrics(tmp_path):
    reference_uri = f"sqlite:///{tmp_path / 'reference.db'}"
    command, env, _ = job(tmp_path, reference_uri, "reference")
    assert subprocess.run(command, cwd=ROOT, env=env, capture_output=True, timeout=600).returncode == 0

    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    command, env, path = job(tmp_path, uri)
    process = start(command, env)
    try:
        wait_for_checkpoint(path, 2, process)  # epoch 2 is running
        process.send_signal(signal.SIGTERM)
        out, _ = process.communicate(timeout=120)
    finally:
        if process.poll() is None:
            process.kill()
    assert process.returncode == 143, out
    assert "Traceback" not in out, out
    # the signal lands in epoch 2 or, when an epoch is shorter than the poll and the delivery, a
    # later one; the last checkpoint says which, and the tag and the resume must agree with it
    interrupted = torch.load(path, weights_only=False)["state"]["epoch"]
    assert 2 <= interrupted < 4
    run = only_run(uri)
    assert run.info.status == "KILLED"
    assert run.data.tags["interrupted"].startswith(f"SIGTERM in epoch {interrupted};"), run.data.tags
    assert not list((tmp_path / "job" / "spool").glob("*.jsonl")), "the journal went into the store"
    assert not path.with_name("job.lock").exists()

    resumed = subprocess.run([*command, "resume=true"], cwd=ROOT, env=env, capture_output=True, text=True, timeout=600)
    assert resumed.returncode == 0, resumed.stdout[-3000:] + resumed.stderr[-3000:]
    run = only_run(uri)
    assert run.info.status == "FINISHED" and "interrupted" not in run.data.tags
    assert run.data.tags["resumed_from_epoch"] == str(interrupted)
    assert rows(tmp_path / "mlflow.db") == rows(tmp_path / "reference.db"), "every point once, the same values"


@pytest.fixture
def late_server(tmp_path):
    """``mlflow server`` over a sqlite file on a free loopback port, started when the test says."""
    server = MlflowServer(tmp_path / "server.db", log=tmp_path / "server.log", artifacts=tmp_path / "art")
    yield server
    server.stop()


def test_no_server_ever_fails_within_the_configured_wait_in_one_line(tmp_path):
    uri = f"http://127.0.0.1:{free_port()}"
    command, env, _ = job(tmp_path, uri, FRAMEWORK_TRACKING_CONNECT_S="3")
    started = time.monotonic()
    result = subprocess.run(["timeout", "300", *command], cwd=ROOT, env=env, capture_output=True, text=True)
    elapsed = time.monotonic() - started
    assert result.returncode == 1, result.stdout[-2000:] + result.stderr[-2000:]
    (line,) = result.stderr.strip().splitlines()
    assert line.startswith(f"error: MLflow tracking server {uri} did not answer within 3 s"), line
    assert "Traceback" not in result.stdout + result.stderr
    assert elapsed < 120, elapsed  # start-up and 3 s, not MLflow's minutes of retries


def test_a_server_started_late_is_waited_for_and_gets_the_whole_run(tmp_path, late_server):
    command, env, _ = job(tmp_path, late_server.uri, FRAMEWORK_TRACKING_CONNECT_S="240")
    process = start(command, env)
    lines: list[str] = []
    reader = threading.Thread(target=lambda: lines.extend(process.stdout), daemon=True)
    reader.start()
    try:
        deadline = time.monotonic() + 180
        while not any("not answering" in line for line in lines):  # the job waits for the server
            assert process.poll() is None and time.monotonic() < deadline, "".join(lines)
            time.sleep(0.1)
        late_server.start()
        process.wait(timeout=600)
    finally:
        if process.poll() is None:
            process.kill()
    reader.join(timeout=10)
    assert process.returncode == 0, "".join(lines)[-3000:]
    run = only_run(late_server.uri)
    assert run.info.status == "FINISHED"
    assert sorted(m.step for m in MlflowClient(late_server.uri).get_metric_history(run.info.run_id, "lr")) == [
        0,
        1,
        2,
        3,
    ]
