"""``scancel`` of a running job (SIGTERM to its tasks, SIGKILL after KillWait): the run ends KILLED
with its ``interrupted`` tag instead of staying RUNNING, and its checkpoint stays for a resume."""

from __future__ import annotations

import subprocess
import time

import pytest

from ._jobs import experiment_runs, wait_for_checkpoint

pytestmark = [pytest.mark.slurm, pytest.mark.slow]


def test_scancel_ends_the_run_killed_with_the_interrupted_tag(sweep, mlflow_server, tmp_path):
    uri = mlflow_server.uri
    process = sweep.start(
        "experiment=smoke", "trainer.epochs=8", "dataset.train_size=4096", f"+tracking.tags.test={tmp_path.name}"
    )
    try:
        before = wait_for_checkpoint(tmp_path / "checkpoints" / "smoke", 2, process, timeout=600)
        (job,) = sweep.job_ids()
        subprocess.run(["scancel", job], check=True)
        output, _ = process.communicate(timeout=600)
    finally:
        if process.poll() is None:
            process.kill()
    assert process.returncode != 0, "a cancelled job fails its sweep"
    deadline = time.monotonic() + 60  # the job's own end reaches the store a moment after the sweep's
    while True:
        _, (run,) = experiment_runs(uri, tmp_path)
        if run.info.status != "RUNNING" or time.monotonic() > deadline:
            break
        time.sleep(0.5)
    assert run.info.run_id == before["run_id"]
    assert run.info.status == "KILLED", output[-3000:] + sweep.logs()[-3000:]
    assert run.data.tags["interrupted"].startswith("SIGTERM in epoch"), run.data.tags
    assert "resume=true continues from" in run.data.tags["interrupted"]
