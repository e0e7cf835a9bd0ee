"""Sweeps on a real Slurm cluster through hydra/launcher=submitit_slurm, into an MLflow server."""

from __future__ import annotations

import subprocess

import pytest
from mlflow.tracking import MlflowClient

from ._jobs import TWO_TASKS, experiment_runs, job_states, preempt_by_urgent_job, wait_for_checkpoint

pytestmark = [pytest.mark.slurm, pytest.mark.slow]


def test_two_by_two_sweep_lands_four_finished_runs(sweep, mlflow_server, tmp_path, record_property, capsys):
    uri, backend = mlflow_server.uri, mlflow_server.backend
    result, wall = sweep.run(
        "experiment=smoke", "integrator=sum,mmpareto", "seed=0,1", f"+tracking.tags.test={tmp_path.name}"
    )
    assert result.returncode == 0, result.stderr + sweep.logs()
    client, runs = experiment_runs(uri, tmp_path)
    assert sorted(r.info.run_name for r in runs) == ["mmpareto-seed0", "mmpareto-seed1", "sum-seed0", "sum-seed1"]
    assert {r.info.status for r in runs} == {"FINISHED"}
    assert all(0.0 <= r.data.metrics["best/test/acc/multimodal"] <= 1.0 for r in runs)
    # the jobs wrote through the server (MLFLOW_TRACKING_URI inherited), into its backend
    assert {r.info.run_id for r in runs} <= {
        r.info.run_id
        for r in MlflowClient(f"sqlite:///{backend}").search_runs(
            [client.get_experiment_by_name("smoke").experiment_id]
        )
    }
    assert "export MLFLOW_TRACKING_URI" in next((tmp_path / "multi").rglob("*_submission.sh")).read_text()
    record_property("slurm_2x2_sweep_wall_s", round(wall, 1))
    with capsys.disabled():
        print(f"\n[slurm] 2x2 submitit_slurm sweep (4 jobs, 2 at a time on 2 CPUs): {wall:.1f} s wall")


def test_a_job_failing_on_a_bad_value_leaves_the_others_finished(sweep, mlflow_server, tmp_path):
    uri = mlflow_server.uri
    result, _ = sweep.run(
        "experiment=smoke",
        "integrator.gamma=1.5,-1,3",
        f"+tracking.tags.test={tmp_path.name}",
        # the launcher's options reach sbatch
        "hydra.launcher.partition=debug",
        "hydra.launcher.timeout_min=30",
        "hydra.launcher.array_parallelism=2",
        "hydra.launcher.additional_parameters={comment: from-additional-parameters}",
    )
    script = next((tmp_path / "multi").rglob("*_submission.sh")).read_text()
    for line in ("--partition=debug", "--time=30", "--array=0-2%2", "--comment=from-additional-parameters"):
        assert f"#SBATCH {line}" in script, script
    assert result.returncode != 0, "a failed job fails the sweep (after all jobs ran)"
    assert "integrator.gamma=-1: must be > 0" in result.stderr
    _, runs = experiment_runs(uri, tmp_path)
    status = {r.data.params["integrator.gamma"]: r for r in runs}
    # the bad value is refused by validation before its run opens: no FAILED run to clean up
    assert sorted(status) == ["1.5", "3"]
    assert {r.info.status for r in runs} == {"FINISHED"}


def test_preempted_job_is_requeued_and_resumes_into_the_same_run(sweep, mlflow_server, tmp_path):
    uri = mlflow_server.uri
    epochs = 8
    overrides = ["experiment=smoke", f"trainer.epochs={epochs}", "dataset.train_size=4096"]
    process = sweep.start(*overrides, f"+tracking.tags.test={tmp_path.name}")
    try:
        before = wait_for_checkpoint(tmp_path / "checkpoints" / "smoke", 2, process, timeout=600)
        (job,) = sweep.job_ids()
        # preemption as submitit.SlurmJob._interrupt() does it: SIGTERM, then the USR2 that
        # submitit handles: checkpoint the launcher's call, `scontrol requeue`, exit
        for signal in ("TERM", "USR2"):
            subprocess.run(["scancel", f"--signal={signal}", job], check=True)
        output, _ = process.communicate(timeout=900)
    finally:
        if process.poll() is None:
            process.kill()
    logs = sweep.logs()
    assert process.returncode == 0, output + logs
    assert "this job is preempted" in logs and f"Requeued job {job}" in logs
    states = job_states(job, until="COMPLETED")
    assert "REQUEUED" in states and "COMPLETED" in states, states

    client, (run,) = experiment_runs(uri, tmp_path)  # one run: the requeued job continued it
    assert run.info.run_id == before["run_id"]
    assert run.info.status == "FINISHED"
    assert int(run.data.tags["slurm_restart_count"]) >= 1 and int(run.data.tags["resumed_from_epoch"]) >= 2
    epochs_logged = sorted(m.step for m in client.get_metric_history(run.info.run_id, "val/acc/multimodal"))
    assert epochs_logged == list(range(epochs)), "each epoch once: metrics continue where the checkpoint was"


@pytest.mark.parametrize("tasks", [1, pytest.param(2, marks=pytest.mark.distributed, id="2-data-parallel")])
def test_job_preempted_by_a_higher_priority_partition_resumes_into_the_same_run(sweep, mlflow_server, tmp_path, tasks):
    """Slurm's own preemption (PreemptMode=REQUEUE): SIGTERM, then SIGKILL (to every task), no USR2
    and no submitit checkpoint. The requeued job (SLURM_RESTART_COUNT=1, same job id) resumes; with
    two tasks both ranks resume from rank 0's checkpoint into the one run."""
    uri = mlflow_server.uri
    epochs = 8
    process = sweep.start(
        "experiment=smoke",
        f"trainer.epochs={epochs}",
        "dataset.train_size=4096",
        *(TWO_TASKS if tasks == 2 else ()),
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
    if tasks == 2:
        assert logs.count("data parallel: 2 ranks (submitit), backend gloo") >= 2, "both starts ran on two ranks"

    client, runs = experiment_runs(uri, tmp_path)
    assert len(runs) == 1, [r.info.run_name for r in runs]  # the requeued job continued the run
    (run,) = runs
    assert run.info.run_id == before["run_id"] and run.info.status == "FINISHED"
    assert int(run.data.tags["slurm_restart_count"]) >= 1 and int(run.data.tags["resumed_from_epoch"]) >= 2
    assert run.data.tags["world_size"] == str(tasks)
    epochs_logged = sorted(m.step for m in client.get_metric_history(run.info.run_id, "val/acc/multimodal"))
    assert epochs_logged == list(range(epochs)), "each epoch once: metrics continue where the checkpoint was"
