"""The command line as a user runs it: ``python -m framework.main ...`` in a subprocess."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest
from mlflow.tracking import MlflowClient
from tests.cli import run_main

pytestmark = pytest.mark.slow  # runs the CLI in subprocesses (~1 min)


def test_single_run_prints_accuracies_and_where_the_run_is(tmp_path):
    result = run_main(tmp_path, "experiment=smoke", timeout=600)
    assert result.returncode == 0, result.stderr
    output = result.stdout + result.stderr
    assert "[mmpareto] test accuracy at best validation epoch" in output
    assert "mlflow ui --backend-store-uri" in output


def test_multirun_of_every_integrator_and_three_seeds_lands_twelve_runs(tmp_path):
    result = run_main(
        tmp_path, "-m", "experiment=smoke", "trainer.epochs=1", "integrator=sum,pcgrad,mgda,mmpareto", "seed=0,1,2",
        timeout=600,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    client = MlflowClient(f"sqlite:///{tmp_path / 'mlflow.db'}")
    runs = client.search_runs([client.get_experiment_by_name("smoke").experiment_id])
    assert sorted(r.info.run_name for r in runs) == sorted(
        f"{i}-seed{s}" for i in ("sum", "pcgrad", "mgda", "mmpareto") for s in (0, 1, 2)
    )
    assert {r.info.status for r in runs} == {"FINISHED"}


def test_unknown_integrator_gets_hydras_error_listing_the_choices(tmp_path):
    result = run_main(tmp_path, "experiment=smoke", "integrator=foo")
    assert result.returncode != 0
    assert "Could not find 'integrator/foo'" in result.stderr
    assert "mmpareto" in result.stderr and "pcgrad" in result.stderr
    assert "framework/" not in result.stderr


def test_invalid_parameter_value_is_one_clear_line(tmp_path):
    result = run_main(tmp_path, "experiment=smoke", "integrator.gamma=-1")
    assert result.returncode == 1
    assert result.stderr.strip().splitlines()[-1] == "error: integrator.gamma=-1: must be > 0"
    assert "Traceback" not in result.stderr


def test_default_run_from_outside_the_repository_finds_the_prepared_data_and_prints_no_warnings(tmp_path):
    """An installed user starts the default experiment from any folder: set-up's cached digits are
    found, the store and outputs land in that folder, and Hydra's callback deprecation is not shown."""
    env = {
        k: v
        for k, v in os.environ.items()
        if k not in ("MLFLOW_TRACKING_URI", "FRAMEWORK_DATA_DIR", "FRAMEWORK_CHECKPOINT_DIR")
    }
    fast = (
        "trainer.epochs=1",
        "trainer.max_steps_per_epoch=2",
        "trainer.num_workers=0",
        "trainer.statistics.probe_size=4",
    )
    result = subprocess.run(
        [sys.executable, "-m", "framework.main", *fast],
        cwd=tmp_path, env=env, capture_output=True, text=True, timeout=600,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr[-3000:]
    assert "Warning" not in result.stderr, result.stderr[-3000:]
    assert "[mmpareto] test accuracy at best validation epoch 0" in result.stdout + result.stderr
    assert (tmp_path / "mlflow.db").is_file() and (tmp_path / "outputs").is_dir()
