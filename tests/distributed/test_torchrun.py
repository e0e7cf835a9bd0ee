"""``torchrun --nproc-per-node 2 -m framework.main``: one MLflow run, rank 0's, with a single
process's metric names; a resume with two ranks continues it; a killed rank fails it in time."""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from mlflow.tracking import MlflowClient
from tests.ports import free_port

pytestmark = [pytest.mark.distributed, pytest.mark.slow]

ROOT = Path(__file__).resolve().parents[2]
TORCHRUN = Path(sys.executable).parent / "torchrun"
SMOKE = ("experiment=smoke", "trainer.epochs=1", "trainer.statistics.noise_every=3")


def environment(tmp_path: Path) -> dict[str, str]:
    return {
        **os.environ,
        "MLFLOW_TRACKING_URI": f"sqlite:///{tmp_path / 'mlflow.db'}",
        "FRAMEWORK_CHECKPOINT_DIR": str(tmp_path / "checkpoints"),
        "PYTHONPATH": f"{ROOT}{os.pathsep}{os.environ.get('PYTHONPATH', '')}",
        "OMP_NUM_THREADS": "1",
    }


def torchrun(*overrides: str, ranks: int = 2) -> list[str]:
    return [
        str(TORCHRUN),
        "--nproc-per-node",
        str(ranks),
        "--master-addr",
        "127.0.0.1",
        "--master-port",
        str(free_port()),
        "-m",
        "framework.main",
        *overrides,
    ]


def runs(tmp_path: Path, name: str = "smoke"):
    client = MlflowClient(f"sqlite:///{tmp_path / 'mlflow.db'}")
    experiment = client.get_experiment_by_name(name)
    assert experiment is not None
    return client, client.search_runs([experiment.experiment_id])


def metric_names(client: MlflowClient, run_id: str) -> set[str]:
    return set(client.get_run(run_id).data.metrics)


def test_two_ranks_record_one_run_with_the_single_process_metric_names(tmp_path):
    env = environment(tmp_path)
    done = subprocess.run(
        torchrun(*SMOKE, "+tracking.tags.world=2"), cwd=tmp_path, env=env, capture_output=True, text=True, timeout=600
    )
    assert done.returncode == 0, done.stderr[-4000:]
    single = subprocess.run(
        [sys.executable, "-m", "framework.main", *SMOKE, "+tracking.tags.world=1"],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert single.returncode == 0, single.stderr[-4000:]
    client, found = runs(tmp_path)
    by_world = {r.data.tags["world"]: r for r in found}
    assert sorted(r.data.tags["world"] for r in found) == ["1", "2"], "exactly one run for the two ranks"
    two, one = by_world["2"], by_world["1"]
    assert two.info.status == "FINISHED" and two.info.run_name == "mmpareto-seed0"
    assert (two.data.tags["world_size"], one.data.tags["world_size"]) == ("2", "1")
    assert metric_names(client, two.info.run_id) == metric_names(client, one.info.run_id)
    assert any(k.startswith("grad/") and "/cos/" in k for k in two.data.metrics)
    steps = [m.step for m in client.get_metric_history(two.info.run_id, "grad/encoder.strong/conflict")]
    assert steps == list(range(8)), "each step logged once (by rank 0)"


def test_two_ranks_resume_into_the_same_run(tmp_path):
    env = environment(tmp_path)
    folder = f"checkpoint.dir={tmp_path / 'run'}"  # the same job's folder, though trainer.epochs changes
    first = subprocess.run(torchrun(*SMOKE, folder), cwd=tmp_path, env=env, capture_output=True, text=True, timeout=600)
    assert first.returncode == 0, first.stderr[-4000:]
    resumed = subprocess.run(
        torchrun(*SMOKE, "trainer.epochs=2", folder, "resume=true"),
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert resumed.returncode == 0, resumed.stderr[-4000:]
    client, (run,) = runs(tmp_path)
    assert run.info.status == "FINISHED" and run.data.tags["resumed_from_epoch"] == "1"
    assert sorted(m.step for m in client.get_metric_history(run.info.run_id, "val/acc/multimodal")) == [0, 1]


def rank_pid(parent: int, rank: int, timeout: float = 120) -> int:
    """The pid of the worker of ``rank`` under the torchrun process ``parent`` (from its environment)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        children = Path(f"/proc/{parent}/task/{parent}/children").read_text().split()
        for child in children:
            try:
                environ = Path(f"/proc/{child}/environ").read_bytes().split(b"\0")
            except OSError:
                continue
            if f"RANK={rank}".encode() in environ:
                return int(child)
        time.sleep(0.2)
    raise AssertionError(f"no rank {rank} under {parent}")


@pytest.mark.parametrize("victim_rank", [1, 0])
def test_a_killed_rank_fails_the_run_within_the_timeout(tmp_path, victim_rank):
    """Rank 1 killed: rank 0 sees its collective fail and ends the run FAILED. Rank 0 killed
    outright (it owns the run): rank 1 marks the run FAILED."""
    env = environment(tmp_path)
    timeout_s = 30
    command = torchrun(
        "experiment=smoke", "trainer.epochs=50", "dataset.train_size=4096", f"distributed.timeout_s={timeout_s}"
    )
    process = subprocess.Popen(
        command, cwd=tmp_path, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True
    )
    try:
        victim = rank_pid(process.pid, victim_rank)
        deadline = time.monotonic() + 300
        checkpoint = None
        while checkpoint is None and time.monotonic() < deadline:  # training has started
            assert process.poll() is None, process.stdout.read() if process.stdout else ""
            checkpoint = next((tmp_path / "checkpoints").rglob("checkpoint.pt"), None)
            time.sleep(0.2)
        assert checkpoint is not None
        time.sleep(1.0)
        os.kill(victim, signal.SIGKILL)
        killed = time.monotonic()
        output, _ = process.communicate(timeout=timeout_s + 60)
        took = time.monotonic() - killed
    finally:
        if process.poll() is None:
            process.kill()
    assert process.returncode != 0, output[-3000:]
    assert took < timeout_s + 30, f"{took:.0f} s after the kill"
    _, (run,) = runs(tmp_path)
    assert run.info.status == "FAILED", output[-3000:]
    assert run.data.tags.get("error"), run.data.tags
    print(
        f"\n[torchrun] rank {victim_rank} killed: run FAILED, torchrun exited {took:.1f} s later "
        f"({run.data.tags['error'][:160]})"
    )


def test_a_hung_rank_fails_the_run_after_the_collective_timeout(tmp_path):
    """Rank 1 stopped (SIGSTOP, alive but silent): rank 0's collective gives up after
    ``distributed.timeout_s`` and ends the run FAILED."""
    env = environment(tmp_path)
    timeout_s = 10
    command = torchrun(
        "experiment=smoke", "trainer.epochs=50", "dataset.train_size=4096", f"distributed.timeout_s={timeout_s}"
    )
    process = subprocess.Popen(
        command, cwd=tmp_path, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True
    )
    try:
        victim = rank_pid(process.pid, 1)
        deadline = time.monotonic() + 300
        while next((tmp_path / "checkpoints").rglob("checkpoint.pt"), None) is None:
            assert process.poll() is None and time.monotonic() < deadline
            time.sleep(0.2)
        time.sleep(1.0)
        os.kill(victim, signal.SIGSTOP)
        stopped = time.monotonic()
        while time.monotonic() < stopped + timeout_s + 60:  # rank 0 records the failure
            _, found = runs(tmp_path)
            if found and found[0].info.status == "FAILED":
                break
            time.sleep(0.5)
        took = time.monotonic() - stopped
    finally:
        with contextlib.suppress(ProcessLookupError):
            os.kill(victim, signal.SIGKILL)
        if process.poll() is None:
            process.wait(timeout=120)
    (run,) = found
    assert run.info.status == "FAILED", process.stdout.read() if process.stdout else ""
    assert timeout_s - 1 <= took < timeout_s + 60, f"{took:.0f} s"
    assert process.returncode != 0
    print(f"\n[torchrun] rank 1 hung: run FAILED {took:.1f} s later ({run.data.tags['error'][:160]})")
