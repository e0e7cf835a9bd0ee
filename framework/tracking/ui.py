"""How the MLflow UI shows the runs: the experiment kind tag and the runs-view link.

MLflow 3.x's experiment kind is the UI's ExperimentKind enum ("Machine learning" in its selector).
The 3.17 UI does not open an experiment by it: it opens the view of the browser's workflow type
(sidebar switch "GenAI" | "Model training", kept in localStorage "mlflow.workflowType_v1", GenAI
until switched; the URL's ?workflowType= wins). ``RUNS_VIEW_QUERY`` opens the runs table and charts.
"""

from __future__ import annotations

from mlflow.tracking import MlflowClient

EXPERIMENT_KIND_TAG = "mlflow.experimentKind"
EXPERIMENT_KIND = "custom_model_development"
MODEL_TRAINING_KINDS = {EXPERIMENT_KIND, "finetuning", "forecasting", "classification", "regression", "automl"}
RUNS_VIEW_QUERY = "workflowType=machine_learning"


def mark_model_training(client: MlflowClient, experiment_id: str) -> None:
    """Tag the experiment as model training (see ``EXPERIMENT_KIND_TAG``) unless it has a model
    training kind: one without the tag, or with a GenAI, inferred or unknown kind, gets ours."""
    experiment = client.get_experiment(experiment_id)
    if experiment.tags.get(EXPERIMENT_KIND_TAG) not in MODEL_TRAINING_KINDS:
        client.set_experiment_tag(experiment_id, EXPERIMENT_KIND_TAG, EXPERIMENT_KIND)


def runs_view_url(tracking_uri: str, experiment_id: str) -> str:
    """The UI address of the experiment's runs table (and its charts) in the model training view;
    for a store with no server, the address ``mlflow ui`` (port 5000) serves it at."""
    base = tracking_uri.rstrip("/") if tracking_uri.startswith(("http://", "https://")) else "http://127.0.0.1:5000"
    return f"{base}/#/experiments/{experiment_id}/runs?{RUNS_VIEW_QUERY}"
