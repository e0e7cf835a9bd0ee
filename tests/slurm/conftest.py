"""A real Slurm cluster on localhost (scripts/slurm_up.sh), and sweeps submitted to it.

The cluster starts once per session. Where it cannot (exit code 3: not root, no apt-get, ...)
every test here skips with the script's reason, unless FRAMEWORK_REQUIRE_SLURM=1 (CI), which
makes that a failure; any other failure of the script fails them.
"""

from __future__ import annotations

import os
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

ROOT = Path(__file__).resolve().parents[2]
# the local cluster is CPU-only with 2 CPUs: one CPU and 1 GB per job, so two run side by side
CPU_JOB = (
    "hydra/launcher=submitit_slurm",
    "hydra.launcher.gpus_per_node=null",
    "hydra.launcher.cpus_per_task=1",
    "hydra.launcher.mem_gb=1",
)


@pytest.fixture(scope="session")
def slurm() -> Iterator[str]:
    """Start (or reuse) the cluster; yield its SLURM_CONF."""
    try:
        result = subprocess.run(["bash", "scripts/slurm_up.sh"], cwd=ROOT, capture_output=True, text=True, timeout=600)
    except subprocess.TimeoutExpired:
        pytest.fail("scripts/slurm_up.sh did not finish in 600 s")
    if result.returncode == 3:
        reason = (result.stderr.strip().splitlines() or ["cannot start here"])[-1]
        if os.environ.get("FRAMEWORK_REQUIRE_SLURM") == "1":  # CI: the Slurm tests must run
            pytest.fail(f"FRAMEWORK_REQUIRE_SLURM=1 but the local Slurm cluster cannot start: {reason}")
        print(f"\nSlurm tests skipped: {reason}", file=sys.stderr)
        pytest.skip(f"local Slurm cluster cannot start: {reason}")
    if result.returncode != 0:
        pytest.fail(f"scripts/slurm_up.sh failed ({result.returncode}):\n{result.stderr[-3000:]}")
    conf = result.stdout.strip().splitlines()[-1].removeprefix("export SLURM_CONF=")
    previous = os.environ.get("SLURM_CONF")
    os.environ["SLURM_CONF"] = conf
    yield conf
    if previous is None:
        os.environ.pop("SLURM_CONF", None)
    else:
        os.environ["SLURM_CONF"] = previous


class Sweep:
    """``python -m framework.main -m hydra/launcher=submitit_slurm ...`` from a test's directory."""

    def __init__(self, tmp_path: Path, tracking_uri: str) -> None:
        self.dir = tmp_path
        self.name = f"pytest-{uuid.uuid4().hex[:8]}"  # the Slurm job name, to find the jobs
        self.env = {
            **os.environ,
            "MLFLOW_TRACKING_URI": tracking_uri,
            "FRAMEWORK_CHECKPOINT_DIR": str(tmp_path / "checkpoints"),
        }

    def command(self, *overrides: str) -> list[str]:
        return [
            sys.executable,
            "-m",
            "framework.main",
            "-m",
            *CPU_JOB,
            f"hydra.launcher.name={self.name}",
            f"hydra.sweep.dir={self.dir}/multi",
            *overrides,
        ]

    def run(self, *overrides: str, timeout: float = 900) -> tuple[subprocess.CompletedProcess[str], float]:
        start = time.perf_counter()
        result = subprocess.run(
            self.command(*overrides), cwd=ROOT, env=self.env, capture_output=True, text=True, timeout=timeout
        )
        return result, time.perf_counter() - start

    def start(self, *overrides: str) -> subprocess.Popen[str]:
        return subprocess.Popen(
            self.command(*overrides),
            cwd=ROOT,
            env=self.env,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
        )

    def job_ids(self) -> list[str]:
        out = subprocess.run(["squeue", "-h", "-n", self.name, "-o", "%i"], capture_output=True, text=True, check=True)
        return out.stdout.split()

    def logs(self) -> str:
        return "\n".join(p.read_text(errors="replace") for p in sorted((self.dir / "multi").rglob("*_log.*")))


@pytest.fixture
def sweep(slurm: str, mlflow_server: Any, tmp_path: Path) -> Sweep:
    return Sweep(tmp_path, mlflow_server.uri)
