"""Shared fixtures: an isolated MLflow store, Hydra config composition, and the dataset writers.

Tests are imported with ``--import-mode=importlib``, so ``tests/`` is not importable as a package;
``tests/fixtures/writers.py`` is loaded from its path, once per session, as the ``writers`` fixture.
"""

from __future__ import annotations

import importlib.util
import sys
from collections.abc import Callable, Iterator
from pathlib import Path
from types import ModuleType

import pytest
from hydra import compose, initialize_config_dir
from hydra.core.global_hydra import GlobalHydra
from hydra.core.hydra_config import HydraConfig
from omegaconf import DictConfig, open_dict

ROOT = Path(__file__).resolve().parents[1]
CONF = ROOT / "conf"
DATA = ROOT / "data"


@pytest.fixture
def tracking_uri(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> str:
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    monkeypatch.setenv("MLFLOW_TRACKING_URI", uri)
    monkeypatch.setenv("FRAMEWORK_CHECKPOINT_DIR", str(tmp_path / "checkpoints"))
    return uri


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
