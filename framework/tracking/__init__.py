"""MLflow tracking: one run per job, params from the resolved config, metrics sent in batches.

- :mod:`~framework.tracking.client`: the store as a run talks to it (batched sends with backoff
  through outages, the wait for a store at the start, :class:`TrackingUnavailable`);
- :mod:`~framework.tracking.journal`: every point a run logs, journaled to its spool, and the
  replay of spools into a store;
- :mod:`~framework.tracking.run`: :class:`RunTracker`, one run (params, tags, metrics, its end);
- :mod:`~framework.tracking.lifecycle`: a job's run opened, resumed and closed with its outcome
  (:func:`tracked_run`);
- :mod:`~framework.tracking.ui`: the experiment kind and the runs-view link of the MLflow UI;
- :mod:`~framework.tracking.figures`: the figures logged as a run ends FINISHED;
- :mod:`~framework.tracking.callback`: the Hydra callback that prepares the store for a multirun;
- :mod:`~framework.tracking.cli`: ``python -m framework.tracking replay SPOOL [--tracking-uri URI]``.
"""

from mlflow.tracking import MlflowClient

from .callback import PrepareTrackingStore
from .cli import cli
from .client import (
    TrackingUnavailable,
    bounded_http,
    connect_wait_s,
    default_tracking_uri,
    end_wait_s,
    held_steps,
    is_permanent,
    same_point,
    wait_for_store,
)
from .journal import (
    ERROR_TAG,
    INTERRUPTED_TAG,
    Spool,
    merge_spools,
    missing_points,
    read_spool,
    replay,
    spool_dir,
    unique_points,
)
from .lifecycle import Resumption, RunSpec, failing_with, log_run_figures, open_run, run_status, tracked_run
from .run import RunTracker, flatten
from .ui import (
    EXPERIMENT_KIND,
    EXPERIMENT_KIND_TAG,
    MODEL_TRAINING_KINDS,
    RUNS_VIEW_QUERY,
    mark_model_training,
    runs_view_url,
)

__all__ = [
    "ERROR_TAG",
    "EXPERIMENT_KIND",
    "EXPERIMENT_KIND_TAG",
    "INTERRUPTED_TAG",
    "MODEL_TRAINING_KINDS",
    "RUNS_VIEW_QUERY",
    "MlflowClient",
    "PrepareTrackingStore",
    "Resumption",
    "RunSpec",
    "RunTracker",
    "Spool",
    "TrackingUnavailable",
    "bounded_http",
    "cli",
    "connect_wait_s",
    "default_tracking_uri",
    "end_wait_s",
    "failing_with",
    "flatten",
    "held_steps",
    "is_permanent",
    "log_run_figures",
    "mark_model_training",
    "merge_spools",
    "missing_points",
    "open_run",
    "read_spool",
    "replay",
    "run_status",
    "runs_view_url",
    "same_point",
    "spool_dir",
    "tracked_run",
    "unique_points",
    "wait_for_store",
]
