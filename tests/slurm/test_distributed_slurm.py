"""A data-parallel job on the local Slurm cluster: one submitit job of two tasks (ranks, gloo).

Its preemption and requeue is the 2-task case of test_slurm.py's preemption test."""

from __future__ import annotations

import pytest
from mlflow.tracking import MlflowClient

from ._jobs import TWO_TASKS

pytestmark = [pytest.mark.slurm, pytest.mark.slow, pytest.mark.distributed]


def test_a_two_task_job_trains_on_two_ranks_and_records_one_run(sweep, mlflow_server, tmp_path):
    uri = mlflow_server.uri
    result, wall = sweep.run("experiment=smoke", "trainer.epochs=1", *TWO_TASKS, f"+tracking.tags.test={tmp_path.name}")
    logs = sweep.logs()
    assert result.returncode == 0, result.stderr[-3000:] + logs[-3000:]
    script = next((tmp_path / "multi").rglob("*_submission.sh")).read_text()
    assert "#SBATCH --ntasks-per-node=2" in script, script
    assert "data parallel: 2 ranks (submitit), backend gloo" in logs, logs[-3000:]
    client = MlflowClient(uri)
    experiment = client.get_experiment_by_name("smoke")
    runs = client.search_runs([experiment.experiment_id], f"tags.test = '{tmp_path.name}'")
    assert len(runs) == 1, [r.info.run_name for r in runs]
    (run,) = runs
    assert run.info.status == "FINISHED"
    assert 0.0 <= run.data.metrics["best/test/acc/multimodal"] <= 1.0
    # both tasks ran the job (two logs), rank 0 alone logged the run
    logs_found = sorted(p.name for p in (tmp_path / "multi").rglob("*_log.*"))
    assert len([n for n in logs_found if n.endswith("_1_log.out")]) == 1, logs_found
    print(f"\n[slurm] 2-task data-parallel job: {wall:.1f} s wall")
