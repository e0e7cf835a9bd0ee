"""The Optuna search in sweeps/mmpareto_optuna.yaml, end to end on the smoke experiment."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import optuna
import pytest
from mlflow.tracking import MlflowClient

ROOT = Path(__file__).resolve().parents[2]
STUDY = "mmpareto_gamma_lr_smoke"  # study_name: mmpareto_gamma_lr_${name}


@pytest.mark.slow
def test_search_maximizes_val_accuracy_tags_runs_and_continues_its_study(tmp_path):
    storage = f"sqlite:///{tmp_path / 'optuna.db'}"
    env = {
        **os.environ,
        "MLFLOW_TRACKING_URI": f"sqlite:///{tmp_path / 'mlflow.db'}",
        "FRAMEWORK_CHECKPOINT_DIR": str(tmp_path / "checkpoints"),
    }
    command = [
        sys.executable, "-m", "framework.main", "-m", "-cd", "sweeps", "-cn", "mmpareto_optuna",
        "experiment=smoke", "hydra.sweeper.n_trials=2", f"hydra.sweeper.storage={storage}",
    ]

    def search(invocation: int) -> str:
        result = subprocess.run(
            [*command, f"hydra.sweep.dir={tmp_path}/multi{invocation}"],
            cwd=ROOT, env=env, capture_output=True, text=True, timeout=900,
        )
        assert result.returncode == 0, result.stderr
        return result.stdout + result.stderr

    output = search(1)
    assert "Sampler: TPESampler" in output and "Directions: ['maximize']" in output
    study = optuna.load_study(study_name=STUDY, storage=storage)
    assert len(study.trials) == 2
    assert study.direction == optuna.study.StudyDirection.MAXIMIZE

    search(2)  # the same command again continues the same study
    study = optuna.load_study(study_name=STUDY, storage=storage)
    trials = study.trials
    assert len(trials) == 4 and all(t.state == optuna.trial.TrialState.COMPLETE for t in trials)
    for trial in trials:
        assert 0.5 <= trial.params["integrator.gamma"] <= 4.0
        assert 0.001 <= trial.params["optimizer.lr"] <= 0.3

    client = MlflowClient(env["MLFLOW_TRACKING_URI"])
    runs = client.search_runs([client.get_experiment_by_name("smoke").experiment_id])
    assert len(runs) == 4 and {r.info.status for r in runs} == {"FINISHED"}
    assert {r.data.tags["study"] for r in runs} == {STUDY}
    assert {r.data.params["integrator.name"] for r in runs} == {"mmpareto"}
    # each trial's value is its run's validation multimodal accuracy (what the task returned)
    by_params = {(float(r.data.params["integrator.gamma"]), float(r.data.params["optimizer.lr"])): r for r in runs}
    for trial in trials:
        run = by_params[(trial.params["integrator.gamma"], trial.params["optimizer.lr"])]
        assert trial.value == run.data.metrics["best/val/acc/multimodal"]
    assert study.best_value == max(t.value for t in trials)
