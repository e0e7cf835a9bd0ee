"""The Optuna search conf/hparams_search/mmpareto_optuna.yaml, run both ways (the sweep
sweeps/mmpareto_optuna.yaml and `hparams_search=mmpareto_optuna`), end to end on the smoke experiment."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import optuna
import pytest
from hydra import compose, initialize_config_dir
from hydra.core.global_hydra import GlobalHydra
from mlflow.tracking import MlflowClient
from omegaconf import OmegaConf

ROOT = Path(__file__).resolve().parents[2]
STUDY = "mmpareto_gamma_lr_smoke"  # study_name: mmpareto_gamma_lr_${name}
SWEEP = ["-cd", "sweeps", "-cn", "mmpareto_optuna"]  # the sweep definition in sweeps/
GROUP = ["hparams_search=mmpareto_optuna"]  # the same search as a config group choice of conf/train.yaml


def composed(config_dir: Path, config_name: str, *overrides: str):
    GlobalHydra.instance().clear()
    try:
        with initialize_config_dir(config_dir=str(config_dir)):
            return compose(config_name=config_name, overrides=list(overrides), return_hydra_config=True)
    finally:
        GlobalHydra.instance().clear()


def test_the_sweep_and_the_hparams_search_choice_are_the_same_search():
    sweep = composed(
        ROOT / "sweeps", "mmpareto_optuna", f"hydra.searchpath=[file://{ROOT / 'conf'}]", "experiment=smoke"
    )
    group = composed(ROOT / "conf", "train", *GROUP, "experiment=smoke")
    for cfg in (sweep, group):
        assert cfg.hydra.runtime.choices["hparams_search"] == "mmpareto_optuna"
        assert cfg.hydra.runtime.choices["hydra/sweeper"] == "optuna"
        assert cfg.hydra.runtime.choices["hydra/sweeper/sampler"] == "tpe"
    assert OmegaConf.to_container(sweep.hydra.sweeper) == OmegaConf.to_container(group.hydra.sweeper)
    jobs = []
    for cfg in (sweep, group):
        job = OmegaConf.to_container(cfg, resolve=False)
        del job["hydra"]
        jobs.append(job)
    assert jobs[0] == jobs[1]
    assert jobs[0]["integrator"]["name"] == "mmpareto" and jobs[0]["objective"] == "best/val/acc/multimodal"
    assert jobs[0]["tracking"]["tags"] == {"sweep": "mmpareto_optuna", "study": "${hydra:sweeper.study_name}"}
    assert "hparams_search" in group.hydra.job.config.override_dirname.exclude_keys  # not in checkpoint paths


@pytest.mark.slow
def test_search_maximizes_val_accuracy_tags_runs_and_continues_its_study(tmp_path):
    """The sweep's command starts the study; `hparams_search=mmpareto_optuna` continues it."""
    storage = f"sqlite:///{tmp_path / 'optuna.db'}"
    env = {
        **os.environ,
        "MLFLOW_TRACKING_URI": f"sqlite:///{tmp_path / 'mlflow.db'}",
        "FRAMEWORK_CHECKPOINT_DIR": str(tmp_path / "checkpoints"),
    }
    options = ["experiment=smoke", "hydra.sweeper.n_trials=2", f"hydra.sweeper.storage={storage}"]

    def search(invocation: int, form: list[str]) -> str:
        result = subprocess.run(
            [
                sys.executable,
                "-m",
                "framework.main",
                *form,
                *options,
                f"hydra.sweep.dir={tmp_path}/multi{invocation}",
            ],
            cwd=ROOT,
            env=env,
            capture_output=True,
            text=True,
            timeout=900,
        )
        assert result.returncode == 0, result.stderr
        return result.stdout + result.stderr

    output = search(1, SWEEP)  # neither form needs -m: a search always sweeps
    assert "Sampler: TPESampler" in output and "Directions: ['maximize']" in output
    study = optuna.load_study(study_name=STUDY, storage=storage)
    assert len(study.trials) == 2
    assert study.direction == optuna.study.StudyDirection.MAXIMIZE

    output = search(2, GROUP)  # the same search again, by its config group, continues the same study
    assert "Sampler: TPESampler" in output and "Directions: ['maximize']" in output
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


@pytest.mark.parametrize(
    ("argv", "multirun"),
    [
        (["main", "hparams_search=mmpareto_optuna", "experiment=smoke"], True),
        (["main", "+hparams_search=mmpareto_optuna"], True),
        (["main", "-m", "hparams_search=mmpareto_optuna"], False),  # already a multirun: unchanged
        (["main", "hparams_search=mmpareto_optuna", "hparams_search=null"], False),  # the last choice wins
        (["main", "experiment=smoke", "scheduler=null"], False),
    ],
)
def test_choosing_a_search_makes_the_command_a_multirun(argv, multirun):
    from framework.main import search_as_multirun

    out = search_as_multirun(argv)
    assert out == (["main", "--multirun", *argv[1:]] if multirun else argv)
