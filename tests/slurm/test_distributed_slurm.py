"""Data-parallel jobs on the local Slurm cluster: one submitit job of two tasks (ranks, gloo)."""

from __future__ import annotations

import subprocess

import pytest
from mlflow.tracking import MlflowClient

from ._jobs import experiment_runs, job_states, preempt_by_urgent_job, wait_for_checkpoint

pytestmark = [pytest.mark.slurm, pytest.mark.slow, pytest.mark.distributed]

TWO_TASKS = ("hydra.launcher.tasks_per_node=2", "hydra.launcher.mem_gb=2")


def test_a_two_task_job_trains_on_two_ranks_and_records_one_run(sweep, mlflow_server, tmp_path):
    uri, _ = mlflow_server
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


def test_a_preempted_two_task_job_is_requeued_and_both_ranks_resume_into_the_same_run(sweep, mlflow_server, tmp_path):
    """Slurm's own preemption (PreemptMode=REQUEUE) of a data-parallel job: every task gets SIGTERM,
    then SIGKILL. The requeued job's two ranks resume from rank 0's checkpoint into one run."""
    uri, _ = mlflow_server
    epochs = 8
    process = sweep.start(
        "experiment=smoke",
        f"trainer.epochs={epochs}",
        "dataset.train_size=4096",
        *TWO_TASKS,
        f"+tracking.tags.test={tmp_path.name}",
    )
    urgent = None
    try:
        before = wait_for_checkpoint(tmp_path / "checkpoints" / "smoke", 2, process, timeout=600)
        (job,) = sweep.job_ids()
        urgent = preempt_by_urgent_job(sweep.name, tmp_path)
        output, _ = process.communicate(timeout=900)
    finally:
        if process.poll() is None:
            process.kill()
        if urgent:
            subprocess.run(["scancel", urgent], check=False)
    logs = sweep.logs()
    assert process.returncode == 0, output[-3000:] + logs[-3000:]
    states = job_states(job, until="COMPLETED")
    assert "PREEMPTED" in states and "COMPLETED" in states, states
    assert logs.count("data parallel: 2 ranks (submitit), backend gloo") >= 2, "both starts ran on two ranks"

    client, runs = experiment_runs(uri, tmp_path)
    assert len(runs) == 1, [r.info.run_name for r in runs]  # the requeued job continued the run
    (run,) = runs
    assert run.info.run_id == before["run_id"] and run.info.status == "FINISHED"
    assert int(run.data.tags["slurm_restart_count"]) >= 1 and int(run.data.tags["resumed_from_epoch"]) >= 2
    assert run.data.tags["world_size"] == "2"
    epochs_logged = sorted(m.step for m in client.get_metric_history(run.info.run_id, "val/acc/multimodal"))
    assert epochs_logged == list(range(epochs)), "each epoch once: metrics continue where the checkpoint was"
