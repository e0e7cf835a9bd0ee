"""MLflow store preparation before a sweep's jobs start."""

from __future__ import annotations

import sqlite3
import time
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
        "a.b": "1",
        "a.c.d": "x",
        "e": "[1, 2]",
        "f": "{}",
    }


# -- outages: kept, retried, never doubled --------------------------------------------------------

import sqlite3 as _sqlite3  # noqa: E402

import pytest  # noqa: E402

from framework import tracking  # noqa: E402


class Flaky:
    """Wraps a client's log_batch: the first metric send stores the batch, then raises (the
    server committed, the answer was lost); the next ``down`` sends fail before storing."""

    def __init__(self, client, down: int = 0) -> None:
        self.client, self.down, self.sends, self.first = client, down, 0, True

    def __call__(self, run_id, metrics=(), **kwargs):
        if metrics:
            self.sends += 1
            if self.first:
                self.first = False
                self.client.__class__.log_batch(self.client, run_id, metrics=metrics, **kwargs)
                raise ConnectionError("answer lost")
            if self.down:
                self.down -= 1
                raise ConnectionError("server gone")
        return self.client.__class__.log_batch(self.client, run_id, metrics=metrics, **kwargs)


def metric_rows(db):
    with _sqlite3.connect(db) as connection:
        return connection.execute("select count(*) from metrics").fetchone()[0]


@pytest.fixture
def spool(tmp_path, monkeypatch):
    monkeypatch.setenv("FRAMEWORK_SPOOL_DIR", str(tmp_path / "spool"))
    monkeypatch.setenv("FRAMEWORK_TRACKING_WAIT_S", "0.5")
    return tmp_path / "spool"


def test_a_batch_stored_before_its_error_is_not_sent_again(tmp_path, spool, monkeypatch):
    db = tmp_path / "mlflow.db"
    tracker = tracking.RunTracker("e", "r", tracking_uri=f"sqlite:///{db}")
    flaky = Flaky(tracker.client, down=2)
    monkeypatch.setattr(tracker.client, "log_batch", flaky)
    monkeypatch.setattr(tracking.client, "BACKOFF_START_S", 0.0)
    tracker._backoff = 0.0
    tracker.log_metrics({"a": 1.0, "b": 2.0}, step=0)
    assert not tracker.flush()  # stored, but the answer was lost
    tracker.log_metrics({"a": 3.0}, step=1)
    assert not tracker.flush() and not tracker.flush()  # then the server is gone twice
    assert tracker.unsent == 1  # the first batch was found in the history; the later point waits
    assert tracker.flush()
    assert metric_rows(db) == 3, "the stored batch was checked in the history, not resent"
    assert flaky.sends == 4  # 1 stored + 2 failed + 1 for the later point alone
    assert tracker.end()
    assert not list(spool.glob("*.jsonl"))
    kind = tracker.client.get_experiment(tracker.experiment_id).tags[tracking.EXPERIMENT_KIND_TAG]
    assert kind == "custom_model_development"


def test_sends_against_a_gone_server_do_not_block_training(tmp_path, spool):
    port = 9  # discard port on loopback: nothing listens, connections are refused at once
    db = tmp_path / "mlflow.db"
    tracker = tracking.RunTracker("e", "r", tracking_uri=f"sqlite:///{db}")
    tracker.client = tracking.MlflowClient(f"http://127.0.0.1:{port}")
    start = time.monotonic()
    for step in range(3000):
        tracker.log_metrics({"a": float(step)}, step=step)  # crosses BATCH_LIMIT: sends, fails, backs off
        tracker.flush()
    assert time.monotonic() - start < 10
    assert tracker.unsent == 3000 and tracker.outages >= 1
    assert not tracker.end()  # server never back: the spool stays
    [path] = spool.glob("*.jsonl")
    read = tracking.read_spool(path)
    assert len(read.metrics) == 3000 and read.end["status"] == "FINISHED"
    summary = tracking.replay(path, f"sqlite:///{tmp_path / 'fresh.db'}")
    assert summary["created"] and summary["sent"] == 3000
    assert metric_rows(tmp_path / "fresh.db") == 3000


def test_a_killed_runs_buffer_is_dropped_from_its_spool(tmp_path, spool):
    tracker = tracking.RunTracker("e", "r", tracking_uri=f"sqlite:///{tmp_path / 'm.db'}")
    tracker.log_metrics({"a": 1.0}, step=0)
    tracker.flush()
    tracker.log_metrics({"a": 2.0}, step=1)
    tracker.client = tracking.MlflowClient("http://127.0.0.1:9")
    assert not tracker.end("KILLED", flush=False, tags={"interrupted": "KeyboardInterrupt"})
    [path] = spool.glob("*.jsonl")
    read = tracking.read_spool(path)
    assert [m.value for m in read.metrics] == [1.0]
    assert read.tags == {"interrupted": "KeyboardInterrupt"} and read.end["status"] == "KILLED"


def test_a_replay_into_a_fresh_store_recreates_the_run_with_its_tags_and_params(tmp_path, spool):
    tracker = tracking.RunTracker("e", "r", tracking_uri=f"sqlite:///{tmp_path / 'm.db'}", tags={"seed": "3"})
    tracker.log_params({"lr": "0.1"})
    tracker.log_metrics({"a": 1.0}, step=0)
    tracker.client = tracking.MlflowClient("http://127.0.0.1:9")
    assert not tracker.end("FINISHED")
    [path] = spool.glob("*.jsonl")
    assert tracking.cli(["replay", str(path), "--tracking-uri", f"sqlite:///{tmp_path / 'fresh.db'}"]) == 0
    assert not path.exists()
    client = tracking.MlflowClient(f"sqlite:///{tmp_path / 'fresh.db'}")
    [run] = client.search_runs([client.get_experiment_by_name("e").experiment_id])
    assert run.info.status == "FINISHED" and run.info.run_name == "r"
    assert run.data.tags["seed"] == "3" and run.data.params == {"lr": "0.1"} and run.data.metrics == {"a": 1.0}
