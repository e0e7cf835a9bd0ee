"""The Hydra callback that prepares the MLflow store before a multirun's jobs start
(``hydra.callbacks.tracking_store`` in ``conf/train.yaml``)."""

from __future__ import annotations

from typing import Any

from hydra.experimental.callback import Callback
from mlflow.tracking import MlflowClient
from omegaconf import DictConfig

from .client import default_tracking_uri, wait_for_store


class PrepareTrackingStore(Callback):
    """Hydra callback: create the MLflow store's tables once, in the launching process, before a
    multirun's jobs start. Jobs that open a new sqlite file at the same moment would otherwise
    run its schema migrations concurrently and leave it broken."""

    def on_multirun_start(self, config: DictConfig, **kwargs: Any) -> None:
        wait_for_store(config.tracking.uri or default_tracking_uri())
        MlflowClient(config.tracking.uri or default_tracking_uri()).search_experiments(max_results=1)
