"""Exactly-once runs under faults, in one process: the job lock, points identified by (key, step)
on a resume and in a replay of several journals, SIGTERM as a stop, a finished run left alone."""

from __future__ import annotations

import os
import signal
import socket
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
from mlflow.tracking import MlflowClient
from tests.ports import free_port

from framework import tracking
from framework.main import train
from framework.training.job_lock import JobLock, JobLocked
from framework.training.termination import Terminated
from framework.training.trainer import Trainer

pytestmark = [pytest.mark.slow, pytest.mark.faults]  # trainings killed and resumed, subprocesses racing for a lock

SMOKE = ("experiment=smoke", "trainer.epochs=3", "trainer.statistics.log_every=4")
STEPS_PER_EPOCH = 8  # smoke: 512 samples / 64 per batch


def metric_rows(db: Path) -> int:
    with sqlite3.connect(db) as connection:
        return connection.execute("select count(*) from metrics").fetchone()[0]


def duplicated(db: Path) -> int:
    with sqlite3.connect(db) as connection:
        distinct = connection.execute("select count(*) from (select distinct run_uuid, key, step from metrics)")
        return metric_rows(db) - distinct.fetchone()[0]


@pytest.fixture
def spool(tmp_path, monkeypatch):
    monkeypatch.setenv("FRAMEWORK_SPOOL_DIR", str(tmp_path / "spool"))
    monkeypatch.setenv("FRAMEWORK_TRACKING_WAIT_S", "0.5")
    return tmp_path / "spool"


# -- the job lock ------------------------------------------------------------------------------


@pytest.fixture
def sleeper():
    process = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(120)"])
    yield process
    process.kill()
    process.wait()


def write_lock(folder: Path, pid: int, host: str, age_s: float = 0.0) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / "job.lock"
    path.write_text(f'{{"pid": {pid}, "host": "{host}", "token": "other"}}')
    then = time.time() - age_s
    os.utime(path, (then, then))
    return path


def test_a_live_holder_refuses_a_second_process_in_one_line_naming_its_pid_and_host(tmp_path, sleeper):
    write_lock(tmp_path, sleeper.pid, socket.gethostname())
    with pytest.raises(JobLocked) as refused:
        JobLock(tmp_path).acquire()
    message = str(refused.value)
    assert "\n" not in message and f"process {sleeper.pid} on host {socket.gethostname()}" in message
    assert str(tmp_path) in message


def test_a_lock_of_a_dead_process_on_this_host_is_taken_over(tmp_path, sleeper):
    sleeper.kill()
    sleeper.wait()
    write_lock(tmp_path, sleeper.pid, socket.gethostname())
    lock = JobLock(tmp_path)
    lock.acquire()
    assert lock.held()
    lock.release()
    assert not (tmp_path / "job.lock").exists()


def test_a_lock_whose_heartbeat_is_older_than_the_timeout_is_taken_over(tmp_path):
    write_lock(tmp_path, 1, "another-host", age_s=5.0)  # another host: its PID cannot be checked
    with pytest.raises(JobLocked, match="another-host"):
        JobLock(tmp_path, stale_s=60).acquire()
    with JobLock(tmp_path, stale_s=2) as lock:
        assert lock.held()


def test_a_requeue_of_the_same_scheduler_job_takes_its_lock_over(tmp_path, sleeper, monkeypatch):
    monkeypatch.delenv("SUBMITIT_EXECUTOR", raising=False)
    monkeypatch.setenv("SLURM_JOB_ID", "7")
    path = write_lock(tmp_path, sleeper.pid, "node-that-died")
    path.write_text(path.read_text().replace('"token"', '"job": "slurm:7", "token"'))
    with JobLock(tmp_path) as lock:
        assert lock.held()
    monkeypatch.setenv("SLURM_JOB_ID", "8")  # another job for the same folder: refused
    path = write_lock(tmp_path, sleeper.pid, "node-that-lives")
    path.write_text(path.read_text().replace('"token"', '"job": "slurm:7", "token"'))
    with pytest.raises(JobLocked, match="node-that-lives"):
        JobLock(tmp_path).acquire()


def test_the_holder_renews_its_heartbeat(tmp_path):
    with JobLock(tmp_path, heartbeat_s=0.1, stale_s=60) as lock:
        os.utime(lock.path, (time.time() - 30, time.time() - 30))
        deadline = time.monotonic() + 10
        while time.time() - lock.path.stat().st_mtime > 5:
            assert time.monotonic() < deadline, "no heartbeat"
            time.sleep(0.05)


def test_two_takers_of_one_stale_lock_never_both_hold_it(tmp_path):
    """Many processes race for one dead holder's lock: at every moment at most one holds it."""
    write_lock(tmp_path, 1, "gone-host", age_s=3600)
    script = (
        "import sys, time; from framework.training.job_lock import JobLock, JobLocked\n"
        "lock = JobLock(sys.argv[1], stale_s=3000)\n"
        "try:\n    lock.acquire()\nexcept JobLocked:\n    print('refused'); sys.exit(0)\n"
        "print('held'); sys.stdout.flush(); time.sleep(2); lock.release()\n"
    )
    racers = [
        subprocess.Popen([sys.executable, "-c", script, str(tmp_path)], stdout=subprocess.PIPE, text=True)
        for _ in range(4)
    ]
    outcomes = [racer.communicate(timeout=120)[0].strip() for racer in racers]
    assert all(r.returncode == 0 for r in racers)
    assert sorted(outcomes).count("held") == 1, outcomes


def test_train_refuses_while_another_process_holds_the_jobs_lock(compose_cfg, tracking_uri, tmp_path, sleeper):
    cfg = compose_cfg(*SMOKE)
    write_lock(Path(cfg.checkpoint.dir), sleeper.pid, socket.gethostname())
    with pytest.raises(JobLocked, match=f"process {sleeper.pid}"):
        train(compose_cfg(*SMOKE, "resume=true"))
    assert not (tmp_path / "mlflow.db").exists() or metric_rows(tmp_path / "mlflow.db") == 0


# -- points identified by (key, step) ----------------------------------------------------------


def test_a_continued_run_skips_the_points_the_store_holds(tmp_path, spool):
    db = tmp_path / "m.db"
    first = tracking.RunTracker("e", "r", tracking_uri=f"sqlite:///{db}")
    for step in range(4):
        first.log_metrics({"a": float(step), "b": 1.0}, step=step)
    first.flush(force=True)  # then killed outright: no end
    again = tracking.open_run(
        tracking.RunSpec("e", "r", f"sqlite:///{db}"), tracking.Resumption(first.run_id, from_epoch=2)
    )
    for step in range(2, 6):  # the resume redoes steps 2 and 3
        again.log_metrics({"a": float(step), "b": 1.0}, step=step)
    assert again.end()
    assert metric_rows(db) == 12 and duplicated(db) == 0
    assert again.skipped == 4


def journal_of_a_killed_process_and_its_resume(tmp_path: Path) -> tuple[Path, list[str]]:
    """A process logs steps 0..4 of key ``a`` and is killed (its journal has no end); its resume
    logs steps 3..9 into the same journal, and the server is gone at its end. Returns the journal
    and its lines."""
    db = tmp_path / "m.db"
    killed = tracking.RunTracker("e", "r", tracking_uri=f"sqlite:///{db}", tags={"seed": "0"})
    killed.log_params({"lr": "0.1"})
    for step in range(5):
        killed.log_metrics({"a": float(step)}, step=step)
    killed._journal.close()  # kill -9: nothing sent, nothing ended
    resumed = tracking.RunTracker("e", "r", tracking_uri=f"sqlite:///{db}", run_id=killed.run_id)
    for step in range(3, 10):
        resumed.log_metrics({"a": float(step)}, step=step)
    resumed.client = tracking.MlflowClient(f"http://127.0.0.1:{free_port()}")  # the outage
    assert not resumed.end("FINISHED")
    [path] = (tmp_path / "spool").glob("*.jsonl")
    return path, path.read_text().splitlines()


def test_a_replay_of_a_killed_process_and_its_resume_sends_each_point_once(tmp_path, spool):
    path, _ = journal_of_a_killed_process_and_its_resume(tmp_path)
    fresh = tmp_path / "fresh.db"
    assert tracking.cli(["replay", str(path), "--keep", "--tracking-uri", f"sqlite:///{fresh}"]) == 0
    assert metric_rows(fresh) == 10 and duplicated(fresh) == 0
    assert tracking.cli(["replay", str(path), "--tracking-uri", f"sqlite:///{fresh}"]) == 0  # twice: nothing doubles
    assert metric_rows(fresh) == 10
    client = MlflowClient(f"sqlite:///{fresh}")
    [run] = client.search_runs([client.get_experiment_by_name("e").experiment_id])
    assert run.info.status == "FINISHED" and run.data.params == {"lr": "0.1"}


def test_a_replay_of_several_journals_of_one_run_sends_each_point_once_into_one_run(tmp_path, spool):
    _, lines = journal_of_a_killed_process_and_its_resume(tmp_path)
    second = next(i for i, line in enumerate(lines) if i and '"run"' in line)  # the resume's section
    killed, resumed = tmp_path / "killed.jsonl", tmp_path / "resumed.jsonl"
    killed.write_text("\n".join(lines[:second]) + "\n")
    resumed.write_text("\n".join(lines[second:]) + "\n")
    fresh = tmp_path / "fresh.db"
    command = ["replay", str(resumed), str(killed), "--keep", "--tracking-uri", f"sqlite:///{fresh}"]
    assert tracking.cli(command) == 0
    assert metric_rows(fresh) == 10 and duplicated(fresh) == 0
    assert tracking.cli(["replay", str(killed), "--tracking-uri", f"sqlite:///{fresh}"]) == 0  # later, alone
    client = MlflowClient(f"sqlite:///{fresh}")
    [run] = client.search_runs([client.get_experiment_by_name("e").experiment_id])  # found again, not made twice
    assert metric_rows(fresh) == 10 and run.info.status == "FINISHED"
    assert sorted(m.step for m in client.get_metric_history(run.info.run_id, "a")) == list(range(10))


def test_a_resume_sends_what_a_killed_process_left_unsent_in_its_journal(tmp_path, spool):
    db = tmp_path / "m.db"
    killed = tracking.RunTracker("e", "r", tracking_uri=f"sqlite:///{db}")
    killed.log_metrics({"a": 0.0}, step=0)
    killed.flush(force=True)
    killed.log_metrics({"a": 1.0}, step=1)  # unsent (an outage), then kill -9
    killed._journal.close()
    resumed = tracking.RunTracker("e", "r", tracking_uri=f"sqlite:///{db}", run_id=killed.run_id)
    resumed.log_metrics({"a": 2.0}, step=2)
    assert resumed.end()
    assert sorted(m.step for m in resumed.client.get_metric_history(killed.run_id, "a")) == [0, 1, 2]
    assert not list(spool.glob("*.jsonl"))


# -- the store's absence at the start ----------------------------------------------------------


def test_no_server_fails_within_the_configured_wait_naming_the_uri():
    uri = f"http://127.0.0.1:{free_port()}"
    start = time.monotonic()
    with pytest.raises(tracking.TrackingUnavailable) as failed:
        tracking.wait_for_store(uri, wait_s=2)
    assert time.monotonic() - start < 15
    assert "\n" not in str(failed.value) and uri in str(failed.value)


# -- SIGTERM and a finished run ----------------------------------------------------------------


def sigterm_at_step(monkeypatch: pytest.MonkeyPatch, step: int) -> None:
    original = Trainer.train_step

    def train_step(self, *args, **kwargs):
        if self.state.step == step:
            os.kill(os.getpid(), signal.SIGTERM)
        return original(self, *args, **kwargs)

    monkeypatch.setattr(Trainer, "train_step", train_step)


def test_sigterm_ends_the_run_killed_and_resume_reaches_the_same_final_metrics(
    compose_cfg, tracking_uri, tmp_path, monkeypatch, spool
):
    expected = train(compose_cfg(*SMOKE))
    client = MlflowClient(tracking_uri)
    experiment = client.get_experiment_by_name("smoke").experiment_id
    (straight,) = client.search_runs([experiment])
    monkeypatch.setenv("FRAMEWORK_CHECKPOINT_DIR", str(tmp_path / "terminated"))
    with monkeypatch.context() as patch:  # in epoch 2, after epoch 1's checkpoint
        sigterm_at_step(patch, 2 * STEPS_PER_EPOCH + 3)
        with pytest.raises(Terminated):
            train(compose_cfg(*SMOKE))
    assert signal.getsignal(signal.SIGTERM) is signal.SIG_DFL, "the handler is restored"
    (run,) = [r for r in client.search_runs([experiment]) if r.info.run_id != straight.info.run_id]
    assert run.info.status == "KILLED"
    assert run.data.tags["interrupted"].startswith("SIGTERM in epoch 2")
    assert not list(spool.glob("*.jsonl")), "the journal was flushed into the store"
    state = torch.load(next((tmp_path / "terminated").rglob("checkpoint.pt")), weights_only=False)
    assert state["state"]["epoch"] == 2
    assert train(compose_cfg(*SMOKE, "resume=true")) == expected
    run = client.get_run(run.info.run_id)
    assert run.info.status == "FINISHED" and "interrupted" not in run.data.tags
    got = sorted((m.key, m.step) for k in run.data.metrics for m in client.get_metric_history(run.info.run_id, k))
    want = sorted(
        (m.key, m.step) for k in straight.data.metrics for m in client.get_metric_history(straight.info.run_id, k)
    )
    assert got == want


def test_sigterm_during_evaluation_writes_that_epochs_checkpoint_first(compose_cfg, tracking_uri, monkeypatch):
    original = Trainer.evaluate

    def evaluate(self, dataset):
        if self.state.epoch == 1 and dataset is self.splits.val:
            os.kill(os.getpid(), signal.SIGTERM)
        return original(self, dataset)

    monkeypatch.setattr(Trainer, "evaluate", evaluate)
    cfg = compose_cfg(*SMOKE)
    with pytest.raises(Terminated):
        train(cfg)
    state = torch.load(Path(cfg.checkpoint.dir) / "checkpoint.pt", weights_only=False)
    assert state["state"]["epoch"] == 2, "epoch 1 ended and was checkpointed before the stop"


def test_resuming_a_finished_run_says_so_and_changes_nothing(compose_cfg, tracking_uri, tmp_path, caplog):
    results = train(compose_cfg(*SMOKE))
    db = tmp_path / "mlflow.db"
    rows = metric_rows(db)
    client = MlflowClient(tracking_uri)
    (before,) = client.search_runs([client.get_experiment_by_name("smoke").experiment_id])
    with caplog.at_level("WARNING", logger="framework"):
        assert train(compose_cfg(*SMOKE, "resume=true")) == results
    (line,) = [r.getMessage() for r in caplog.records if "FINISHED" in r.getMessage()]
    assert "\n" not in line and before.info.run_id in line and "nothing to resume" in line
    after = client.get_run(before.info.run_id)
    assert metric_rows(db) == rows
    assert after.data.tags == before.data.tags and after.info.end_time == before.info.end_time
