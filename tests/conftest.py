"""Shared fixtures: an isolated MLflow store, one MLflow server per session, Hydra config
composition, and the dataset writers.

``tracking_uri`` gives each test its own sqlite store, copied from one store migrated once per
session (MLflow's schema migration takes 1-3 s a store; a copy takes a millisecond). ``mlflow_server``
is one ``mlflow server`` for the whole session, started on first use by ``scripts/mlflow_server.sh``.

Tests are imported with ``--import-mode=importlib``, so ``tests/`` is not importable as a package;
``tests/fixtures/writers.py`` is loaded from its path, once per session, as the ``writers`` fixture.
"""

from __future__ import annotations

import importlib.util
import os
import shutil
import sqlite3
import subprocess
import sys
from collections.abc import Callable, Iterator
from pathlib import Path
from types import ModuleType
from typing import NamedTuple

import pytest
from hydra import compose, initialize_config_dir
from hydra.core.global_hydra import GlobalHydra
from hydra.core.hydra_config import HydraConfig
from omegaconf import DictConfig, open_dict
from tests.ports import free_port

ROOT = Path(__file__).resolve().parents[1]
CONF = ROOT / "conf"
DATA = ROOT / "data"


@pytest.fixture(scope="session")
def migrated_store(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """An empty sqlite store at MLflow's current schema, migrated once per session; copy, don't write.

    MLflow creates the tables and its Default experiment on the first use of a store; the template
    is made the same way (from the tests' working directory), then frozen with sqlite's backup API
    so that the copy holds every page whatever journal mode the store's engine used.
    """
    from mlflow.tracking import MlflowClient

    folder = tmp_path_factory.mktemp("migrated_store")
    live = folder / "live.db"
    MlflowClient(f"sqlite:///{live}").search_experiments()  # runs the migrations
    frozen = folder / "mlflow.db"
    with sqlite3.connect(live) as source, sqlite3.connect(frozen) as target:
        source.backup(target)
    source.close()
    target.close()
    return frozen


@pytest.fixture
def tracking_uri(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, migrated_store: Path) -> str:
    """``MLFLOW_TRACKING_URI`` on this test's own store (``tmp_path/mlflow.db``, already migrated)."""
    shutil.copyfile(migrated_store, tmp_path / "mlflow.db")
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    monkeypatch.setenv("MLFLOW_TRACKING_URI", uri)
    monkeypatch.setenv("FRAMEWORK_CHECKPOINT_DIR", str(tmp_path / "checkpoints"))
    return uri


class ServedStore(NamedTuple):
    """A running ``mlflow server``: its URI, its sqlite backend and its artifacts folder."""

    uri: str
    backend: Path
    artifacts: Path


@pytest.fixture(scope="session")
def mlflow_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServedStore]:
    """One ``mlflow server`` for the whole session, started on first use by the documented script
    (``scripts/mlflow_server.sh``) over a fresh sqlite backend, stopped at the session's end.

    Tests share its store: each writes under its own experiment name or tag, and reads only that.
    A test that stops the server, needs it late or needs an empty store makes its own
    :class:`tests.mlflow_server.MlflowServer`.
    """
    base = tmp_path_factory.mktemp("mlflow_server")
    port = free_port()
    env = {**os.environ, "MLFLOW_SERVER_STATE": str(base / "state")}
    store = ServedStore(f"http://127.0.0.1:{port}", base / "server.db", base / "artifacts")
    args = ["--backend-store-uri", f"sqlite:///{store.backend}", "--artifacts-destination", str(store.artifacts)]
    started = subprocess.run(
        ["bash", "scripts/mlflow_server.sh", *args, "--port", str(port)],
        cwd=ROOT, env=env, capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    assert started.returncode == 0, started.stderr
    assert started.stdout.strip().splitlines()[-1] == f"export MLFLOW_TRACKING_URI={store.uri}"
    try:
        yield store
    finally:
        stop = ["bash", "scripts/mlflow_server.sh", "--stop", "--port", str(port)]
        subprocess.run(stop, cwd=ROOT, env=env, timeout=60)


@pytest.fixture
def compose_cfg(tracking_uri: str) -> Iterator[Callable[..., DictConfig]]:
    """Compose ``conf/train.yaml`` with overrides, as ``python -m framework.main`` would."""

    def _compose(*overrides: str) -> DictConfig:
        GlobalHydra.instance().clear()
        with initialize_config_dir(config_dir=str(CONF)):
            cfg = compose(config_name="train", overrides=list(overrides), return_hydra_config=True)
        HydraConfig.instance().set_config(cfg)
        with open_dict(cfg):
            del cfg.hydra
        return cfg

    yield _compose
    GlobalHydra.instance().clear()


def real_data_available() -> bool:
    return (DATA / "mnist" / "digits.npz").is_file()


needs_mnist = pytest.mark.skipif(not real_data_available(), reason="run 'python -m framework.data.prepare' first")


WRITERS = Path(__file__).resolve().parent / "fixtures" / "writers.py"


@pytest.fixture(scope="session")
def writers() -> ModuleType:
    name = "mmgrad_tests_fixtures_writers"
    if name not in sys.modules:
        spec = importlib.util.spec_from_file_location(name, WRITERS)
        assert spec is not None and spec.loader is not None
        module = importlib.util.module_from_spec(spec)
        sys.modules[name] = module
        spec.loader.exec_module(module)
    return sys.modules[name]
