"""examples/own_project: a user's own dataset, GRU encoder and configs, outside the package, run by
the command its README documents, from a folder that is not the repository."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
from mlflow.tracking import MlflowClient

from framework import metric_names as names
from framework.training.statistics import NOISE_PROBE_TAG

pytestmark = pytest.mark.slow  # installs and runs an own project in a subprocess

ROOT = Path(__file__).resolve().parents[2]
PROJECT = ROOT / "examples" / "own_project"
GROUPS = ("encoder.audio", "encoder.image", "encoder.text")
FAST = (  # a few seconds per run on 2 cores: 3 steps, the covariance probe on steps 2 and 3's epoch end
    "trainer.epochs=1",
    "trainer.max_steps_per_epoch=3",
    "trainer.statistics.noise_every=2",
    "trainer.statistics.probe_size=4",
    "dataset.train_size=96",
    "dataset.val_size=32",
    "dataset.test_size=32",
)


def test_documented_command_runs_the_own_project_from_another_folder(tmp_path):
    readme = (PROJECT / "README.md").read_text()
    command = "-cd examples/own_project/conf -cn experiment -m integrator=sum,mmpareto"
    assert f"PYTHONPATH=examples/own_project python -m framework.main {command}" in readme

    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    env = {
        **os.environ,
        "PYTHONPATH": os.pathsep.join([str(PROJECT), os.environ.get("PYTHONPATH", "")]).rstrip(os.pathsep),
        "MLFLOW_TRACKING_URI": uri,
        "FRAMEWORK_CHECKPOINT_DIR": str(tmp_path / "checkpoints"),
    }
    cwd = tmp_path / "elsewhere"
    cwd.mkdir()
    args = ["-cd", str(PROJECT / "conf"), "-cn", "experiment", "-m", "integrator=sum,mmpareto", *FAST]
    result = subprocess.run(
        [sys.executable, "-m", "framework.main", *args],
        cwd=cwd, env=env, capture_output=True, text=True, timeout=300,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr[-3000:]

    client = MlflowClient(uri)
    experiment = client.get_experiment_by_name("own_project")
    assert experiment is not None, [e.name for e in client.search_experiments()]
    runs = client.search_runs([experiment.experiment_id])
    assert sorted(r.info.run_name for r in runs) == ["mmpareto-seed0", "sum-seed0"]
    for run in runs:
        assert run.info.status == "FINISHED", run.info.run_name
        assert run.data.tags[NOISE_PROBE_TAG] == "loop", run.data.tags
        metrics = set(run.data.metrics)
        for group in GROUPS:
            modality = group.removeprefix("encoder.")
            cosines = {k for k in metrics if k.startswith(names.grad(group, names.COSINE) + "/")}
            assert names.cosine(group, names.MULTIMODAL, modality) in cosines, sorted(cosines)
            for loss in (names.MULTIMODAL, modality):
                assert names.grad(group, names.COV_TRACE, loss) in metrics, sorted(metrics)
        assert names.FINAL_MULTIMODAL in metrics
