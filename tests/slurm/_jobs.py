"""Helpers of the Slurm tests: job states in accounting, a test's runs, checkpoints, preemption."""

from __future__ import annotations

import subprocess
import time
from pathlib import Path

import torch
from mlflow.tracking import MlflowClient

TWO_TASKS = ("hydra.launcher.tasks_per_node=2", "hydra.launcher.mem_gb=2")
"""The launcher overrides of a data-parallel job: two tasks (ranks) on the node."""


def job_states(job: str, until: str, timeout: float = 60) -> list[str]:
    """The job's states in accounting (all its requeues), polled until ``until`` shows: the
    accounting daemon records the end of a job a moment after the job itself has ended."""
    deadline = time.monotonic() + timeout
    while True:
        states = subprocess.run(
            ["sacct", "-n", "-X", "-D", "-j", job, "-o", "State"], capture_output=True, text=True
        ).stdout.split()
        if until in states or time.monotonic() > deadline:
            return states
        time.sleep(0.5)


def experiment_runs(uri: str, tmp_path: Path, name: str = "smoke"):
    """The runs of this test (the server is shared by the session): tagged with its sweep dir."""
    client = MlflowClient(uri)
    experiment = client.get_experiment_by_name(name)
    assert experiment is not None
    runs = client.search_runs([experiment.experiment_id], f"tags.test = '{tmp_path.name}'")
    return client, runs


def wait_for_checkpoint(folder: Path, epoch: int, process: subprocess.Popen, timeout: float) -> dict:
    """The job's checkpoint (``<folder>/<override dirname>/checkpoint.pt``) once it has ``epoch``."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        assert process.poll() is None, process.stdout.read() if process.stdout else "sweep ended"
        for path in folder.glob("*/checkpoint.pt"):
            try:
                state = torch.load(path, weights_only=False)
                if state["state"]["epoch"] >= epoch:
                    return state
            except Exception:
                pass
        time.sleep(0.2)
    raise AssertionError(f"no checkpoint of epoch {epoch} within {timeout} s")


def preempt_by_urgent_job(name: str, tmp_path: Path) -> str:
    """Submit a job that asks for the whole node in the ``urgent`` partition (PriorityTier 10), so
    Slurm preempts what runs in ``debug`` (PreemptMode=REQUEUE); return its id, to cancel."""
    submitted = subprocess.run(
        ["sbatch", "--parsable", "-p", "urgent", "-c", "2", "--mem=500M", "-J", f"{name}-urgent",
         f"--output={tmp_path}/urgent.out", "--wrap", "sleep 1"],
        capture_output=True, text=True, check=True,
    )  # fmt: skip
    return submitted.stdout.strip().split(";")[0]
