"""The experiment's kind tag and the UI link that opens its runs table (MLflow 3.17's UI opens the
browser's workflow type, GenAI until switched, whatever the tag says: see framework/tracking/ui.py)."""

from __future__ import annotations

import pytest
from mlflow.tracking import MlflowClient

from framework import tracking


@pytest.mark.parametrize("found", [None, "genai_development", "no_inferred_type", "custom_model_development_inferred"])
def test_a_run_tags_its_experiment_as_model_training(tmp_path, monkeypatch, found):
    monkeypatch.setenv("FRAMEWORK_SPOOL_DIR", str(tmp_path / "spool"))
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    client = MlflowClient(uri)
    experiment_id = client.create_experiment("e", tags={tracking.EXPERIMENT_KIND_TAG: found} if found else None)
    tracker = tracking.RunTracker("e", "r", tracking_uri=uri)
    assert tracker.experiment_id == experiment_id
    assert client.get_experiment(experiment_id).tags[tracking.EXPERIMENT_KIND_TAG] == "custom_model_development"
    assert tracker.end()


def test_a_model_training_kind_stays(tmp_path):
    client = MlflowClient(f"sqlite:///{tmp_path / 'mlflow.db'}")
    experiment_id = client.create_experiment("e", tags={tracking.EXPERIMENT_KIND_TAG: "finetuning"})
    tracking.mark_model_training(client, experiment_id)
    assert client.get_experiment(experiment_id).tags[tracking.EXPERIMENT_KIND_TAG] == "finetuning"


def test_the_runs_view_link():
    assert (
        tracking.runs_view_url("http://127.0.0.1:5077/", "3")
        == "http://127.0.0.1:5077/#/experiments/3/runs?workflowType=machine_learning"
    )
    # no server: where `mlflow ui --backend-store-uri <store>` serves it
    assert tracking.runs_view_url("sqlite:////x/mlflow.db", "3").startswith(
        "http://127.0.0.1:5000/#/experiments/3/runs?"
    )
