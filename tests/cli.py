"""``python -m framework.main`` run as a user runs it, writing into a test's own folder.

A run's MLflow store is ``<folder>/mlflow.db`` (or the ``uri`` given), its checkpoints go under
``<folder>/checkpoints``, Hydra's output under ``<folder>/out`` (a sweep's under
``<folder>/multi``). ``HYDRA_FULL_ERROR`` is unset, so an error is the one line a user sees.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]


def main_env(folder: Path, uri: str | None = None, **extra: str) -> dict[str, str]:
    """This process's environment with the run's store and checkpoints in ``folder``, plus ``extra``."""
    env = {k: v for k, v in os.environ.items() if k != "HYDRA_FULL_ERROR"}
    env["MLFLOW_TRACKING_URI"] = uri or f"sqlite:///{folder / 'mlflow.db'}"
    env["FRAMEWORK_CHECKPOINT_DIR"] = str(folder / "checkpoints")
    env.update(extra)
    return env


def main_command(folder: Path, *overrides: str) -> list[str]:
    """``python -m framework.main <overrides>`` with Hydra's output folders in ``folder``."""
    return [
        sys.executable, "-m", "framework.main", *overrides,
        f"hydra.run.dir={folder}/out", f"hydra.sweep.dir={folder}/multi",
    ]  # fmt: skip


def run_main(
    folder: Path, *overrides: str, env: dict[str, str] | None = None, timeout: float = 300, cwd: Path = ROOT
) -> subprocess.CompletedProcess[str]:
    """Run ``python -m framework.main <overrides>`` to its end (default environment: :func:`main_env`)."""
    return subprocess.run(
        main_command(folder, *overrides),
        cwd=cwd,
        env=env if env is not None else main_env(folder),
        capture_output=True,
        text=True,
        timeout=timeout,
    )


def all_runs(uri: str) -> list[Any]:
    """Every run of every experiment in the store at ``uri``."""
    from mlflow.tracking import MlflowClient

    client = MlflowClient(uri)
    return client.search_runs([e.experiment_id for e in client.search_experiments()])


def runs_in(folder: Path) -> list[Any]:
    """Every run in ``folder/mlflow.db``; none when no run created the store."""
    if not (folder / "mlflow.db").is_file():
        return []
    return all_runs(f"sqlite:///{folder / 'mlflow.db'}")
