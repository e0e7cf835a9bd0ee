"""MLflow store preparation before a sweep's jobs start."""

from __future__ import annotations

import sqlite3
from pathlib import Path

from hydra import compose, initialize_config_dir
from hydra.core.global_hydra import GlobalHydra
from omegaconf import OmegaConf

from framework.tracking import PrepareTrackingStore, flatten

CONF = Path(__file__).resolve().parents[2] / "conf"


def test_callback_creates_the_store_before_jobs_start(tmp_path):
    db = tmp_path / "mlflow.db"
    config = OmegaConf.create({"tracking": {"uri": f"sqlite:///{db}"}})
    PrepareTrackingStore().on_multirun_start(config)
    with sqlite3.connect(db) as connection:
        tables = {row[0] for row in connection.execute("select name from sqlite_master where type='table'")}
    assert {"experiments", "runs", "metrics", "tags"} <= tables
    assert not any(name.startswith("_alembic_tmp") for name in tables)


def test_callback_is_configured_for_every_run():
    GlobalHydra.instance().clear()
    with initialize_config_dir(config_dir=str(CONF)):
        cfg = compose(config_name="train", return_hydra_config=True)
    GlobalHydra.instance().clear()
    assert cfg.hydra.callbacks.tracking_store._target_ == "framework.tracking.PrepareTrackingStore"


def test_flatten_nested_config_into_dotted_params():
    assert flatten({"a": {"b": 1, "c": {"d": "x"}}, "e": [1, 2], "f": {}}) == {
        "a.b": "1", "a.c.d": "x", "e": "[1, 2]", "f": "{}"
    }
